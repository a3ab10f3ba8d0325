"""The alerting rules (examples/observability/alerts.yml): well formed, on metrics the gateway exposes,
each pointing at its runbook; `promtool check rules` and the unit tests in alerts_test.yml where
promtool is installed (.ci/run installs it)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from gateway.telemetry.metrics import GatewayMetrics
from tests.conftest import service_missing

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "examples" / "observability"
RULES = OBSERVABILITY / "alerts.yml"
UNIT_TESTS = Path(__file__).with_name("alerts_test.yml")
SEVERITIES = {"critical", "warning", "info"}
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


NO_PROMTOOL = "promtool is not installed (.ci/run installs it)"


def exposed_names() -> set[str]:
    """Every series name the gateway's registry exposes (counters with _total, histograms' parts)."""
    registry = GatewayMetrics(multiprocess_dir=None).registry
    assert registry is not None
    return {family.name + suffix for family in registry.collect() for suffix in _SUFFIXES[family.type]}


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def promtool() -> str | None:
    return shutil.which("promtool") or shutil.which("promtool", path=str(Path(sys.executable).parent))


def test_every_rule_is_an_alert_with_severity_summary_and_runbook() -> None:
    document = yaml.safe_load(RULES.read_text())
    names = [group["name"] for group in document["groups"]]
    assert len(names) == len(set(names))
    alerts = [rule["alert"] for rule in rules()]
    assert len(alerts) == len(set(alerts))
    for rule in rules():
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        runbook = annotations["runbook_url"]
        assert re.fullmatch(r"docs/runbooks/[a-z-]+\.md", runbook), runbook
        assert (ROOT / runbook).is_file(), f"{rule['alert']}: {runbook} does not exist"


def test_expressions_use_only_metrics_the_gateway_exposes() -> None:
    exposed = exposed_names()
    for rule in rules():
        used = set(re.findall(r"\bgateway_[a-z_]+\b", rule["expr"]))
        assert used, rule["alert"]
        unknown = used - exposed
        assert not unknown, f"{rule['alert']} uses metrics the gateway does not expose: {sorted(unknown)}"


def test_the_failures_the_runbooks_cover_each_have_an_alert() -> None:
    by_name = {rule["alert"]: rule["expr"] for rule in rules()}
    expected = {
        "GatewayCircuitOpen": "gateway_circuit_breaker_state",
        "GatewayModelUnavailable": 'status="success"',
        "GatewayHighErrorRate": "gateway_requests_total",
        "GatewayAuditDatabaseDown": "gateway_audit_database_up",
        "GatewayAuditSpillGrowing": "gateway_audit_spill_bytes",
        "GatewayAuditRecordsLost": 'outcome="lost"',
        "GatewayConfigReloadRejected": 'gateway_config_reloads_total{outcome="rejected"}',
        "GatewayLocalQueueFull": 'outcome="overloaded"',
        "GatewayClientRateLimited": "gateway_limit_rejections_total",
        "GatewayClientBudgetExhausted": 'limit=~"budget_usd.*"',
    }
    assert set(by_name) == set(expected)
    for alert, fragment in expected.items():
        assert fragment in by_name[alert], alert


def test_both_prometheus_configs_load_the_rules() -> None:
    standalone = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    assert [(OBSERVABILITY / path).resolve() for path in standalone["rule_files"]] == [RULES]
    compose = yaml.safe_load((ROOT / "examples" / "compose" / "prometheus" / "prometheus.yml").read_text())
    assert compose["rule_files"] == ["/etc/prometheus/alerts.yml"]  # test_compose.py: mounted from RULES


def test_promtool_checks_the_rules_and_the_standalone_config() -> None:
    if promtool() is None:
        service_missing(NO_PROMTOOL)
    for command in (
        ["check", "rules", str(RULES)],
        ["check", "config", str(OBSERVABILITY / "prometheus.yml")],
    ):
        result = subprocess.run([str(promtool()), *command], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_fire_each_alert_as_meant(tmp_path: Path) -> None:
    if promtool() is None:
        service_missing(NO_PROMTOOL)
    document = yaml.safe_load(RULES.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            del rule["annotations"]  # alerts_test.yml checks what fires and its labels, not the prose
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(document, sort_keys=False))
    cases = yaml.safe_load(UNIT_TESTS.read_text())
    assert cases["rule_files"] == ["alerts.yml"]
    tested = {test["alertname"] for case in cases["tests"] for test in case["alert_rule_test"]}
    assert tested == {rule["alert"] for rule in rules()}, "every alert has a unit test"
    (tmp_path / "alerts_test.yml").write_text(UNIT_TESTS.read_text())
    result = subprocess.run(
        [str(promtool()), "test", "rules", "alerts_test.yml"], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
