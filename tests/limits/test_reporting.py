"""What the limits report: the metrics counted from a request's trail (refusals by limit and key,
backend quota skips) and copied from the store (its errors), and the /ready check."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from gateway.limits import Rules
from gateway.routing.failover import Attempt
from gateway.routing.trail import RequestTrail
from gateway.telemetry.health import readiness
from gateway.telemetry.metrics import GatewayMetrics
from tests.telemetry.conftest import compile_config

CONFIG = """
backends:
  a: {type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
models:
  m: {chain: [{backend: a}]}
limits: {store: "redis://127.0.0.1:9/0", store_timeout_ms: 50}
"""


def samples(metrics: GatewayMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    body, _ = metrics.render()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_refusals_and_quota_skips_are_counted_from_the_trail() -> None:
    metrics = GatewayMetrics(multiprocess_dir=None)
    refused = RequestTrail("openai", "chat", "req_1", model="m", client_key="team-a", http_status=429)
    refused.limit_name = "requests_per_minute"
    metrics.observe(refused, refused.status(), 0.001, {"m": object()})
    skipped = RequestTrail("openai", "chat", "req_2", model="m", http_status=200, backend="b")
    skipped.attempts = [Attempt("a", "x", "quota", retry_after=3), Attempt("b", "y", "ok", 200)]
    metrics.observe(skipped, skipped.status(), 0.01, {"m": object()})
    found = samples(metrics)
    key = frozenset({"limit": "requests_per_minute", "client": "team-a"}.items())
    assert found[("gateway_limit_rejections_total", key)] == 1
    assert found[("gateway_backend_quota_skips_total", frozenset({"backend": "a"}.items()))] == 1
    assert (
        found[("gateway_backend_attempts_total", frozenset({"backend": "a", "outcome": "quota"}.items()))]
        == 1
    )
    assert skipped.tried() == 1 and refused.status() == "rejected"


async def test_store_errors_reach_the_metrics_and_ready_says_degraded(tmp_path: Path) -> None:
    runtime = compile_config(tmp_path, CONFIG)  # Redis on a port nobody listens on
    metrics = GatewayMetrics(multiprocess_dir=None)
    ok, checks = readiness(runtime, {"enabled": False})
    assert checks["limits"] == {
        "ok": True,
        "status": "ok",
        "store": "redis",
        "up": True,
        "errors": 0,
        "last_error": None,
        "on_store_down": "allow",
        "limited_keys": 0,
    }
    rules = Rules(subject="backend:a", who="backend 'a'", name="a", requests_per_minute=1)
    assert await runtime.limits.take_quota(rules, 0) is None  # down: the backend is called anyway
    metrics.sync(runtime, {"enabled": False})
    assert samples(metrics)[("gateway_limit_store_errors_total", frozenset())] == 1
    metrics.sync(runtime, {"enabled": False})  # copied once, not again at every scrape
    assert samples(metrics)[("gateway_limit_store_errors_total", frozenset())] == 1
    ok, checks = readiness(runtime, {"enabled": False})
    assert ok  # reported, never a reason to leave the load balancer
    assert checks["limits"]["status"] == "degraded" and checks["limits"]["last_error"] == "ConnectionError"
    assert checks["limits"]["detail"].startswith("the limits store is unreachable: requests are served")
    await runtime.limits.store.close()
