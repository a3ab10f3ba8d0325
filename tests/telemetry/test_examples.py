"""The observability examples use the gateway's real metric names and path."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from gateway.config.schema import load_schema
from gateway.telemetry.metrics import GatewayMetrics

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "observability"
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exposed_names() -> set[str]:
    registry = GatewayMetrics(multiprocess_dir=None).registry
    assert registry is not None
    return {family.name + suffix for family in registry.collect() for suffix in _SUFFIXES[family.type]}


def test_the_dashboard_queries_only_metrics_the_gateway_exposes() -> None:
    dashboard = json.loads((EXAMPLES / "grafana-dashboard.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 10
    exprs = [target["expr"] for panel in panels for target in panel["targets"]]
    assert all(exprs)
    used = {name for expr in exprs for name in re.findall(r"\bgateway_[a-z_]+\b", expr)}
    unknown = used - exposed_names()
    assert not unknown, f"the dashboard queries metrics the gateway does not expose: {sorted(unknown)}"
    families = {name.removesuffix("_total").removesuffix("_bucket") for name in used}
    for expected in (
        "gateway_requests",
        "gateway_request_duration_seconds",
        "gateway_time_to_first_token_seconds",
        "gateway_tokens",
        "gateway_failovers",
        "gateway_circuit_breaker_state",
        "gateway_in_flight_requests",
        "gateway_local_queue_depth",
        "gateway_config_reloads",
        "gateway_audit_records",
    ):
        assert expected in families, expected
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_the_scrape_config_points_at_the_metrics_path() -> None:
    config = yaml.safe_load((EXAMPLES / "prometheus.yml").read_text())
    [job] = [job for job in config["scrape_configs"] if job["job_name"] == "gateway"]
    default_path = load_schema()["properties"]["telemetry"]["properties"]["prometheus"]["properties"]["path"][
        "default"
    ]
    assert job["metrics_path"] == default_path == "/metrics"
