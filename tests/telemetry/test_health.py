"""Readiness checks, from a compiled config and the audit writer's stats."""

from __future__ import annotations

from pathlib import Path

from gateway.routing.table import Runtime
from gateway.telemetry.health import readiness
from tests.telemetry.conftest import compile_config

CONFIG = """
backends:
  a: {type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
  b: {type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
  cloud: {type: openai, api_key: "${NO_SUCH_KEY:-}"}
models:
  pair: {chain: [{backend: a}, {backend: b}]}
  mixed: {chain: [{backend: cloud}, {backend: b}]}
audit: {buffer_records: 100}
failover: {circuit_breaker: {failure_threshold: 1, cooldown_seconds: 60}}
"""
AUDIT_UP = {"enabled": True, "db_up": True, "buffered": 0}


def runtime(tmp_path: Path, text: str = CONFIG) -> Runtime:
    return compile_config(tmp_path, text)


def open_circuit(runtime: Runtime, backend: str) -> None:
    runtime.backends[backend].breaker.record_failure(runtime.config.failover.circuit_breaker)


def test_ready_with_a_config_a_database_and_usable_targets(tmp_path: Path) -> None:
    ok, checks = readiness(runtime(tmp_path), AUDIT_UP)
    assert ok
    assert checks["config"]["ok"] and checks["audit"]["ok"] and checks["models"]["ok"]
    assert checks["models"]["models"]["mixed"] == {
        "ok": True,
        "usable": ["b"],
        "unusable": {"cloud": "disabled"},
    }


def test_not_ready_before_a_config_is_loaded() -> None:
    ok, checks = readiness(None, {"enabled": False})
    assert not ok and checks["config"]["ok"] is False and checks["audit"]["ok"] is True


def test_a_model_whose_every_target_is_open_or_disabled(tmp_path: Path) -> None:
    live = runtime(tmp_path)
    open_circuit(live, "a")
    ok, checks = readiness(live, AUDIT_UP)
    assert ok  # pair still has b
    open_circuit(live, "b")
    ok, checks = readiness(live, AUDIT_UP)
    assert not ok
    models = checks["models"]["models"]
    assert models["pair"] == {
        "ok": False,
        "usable": [],
        "unusable": {"a": "circuit open", "b": "circuit open"},
    }
    assert models["mixed"]["unusable"] == {"cloud": "disabled", "b": "circuit open"}


def test_an_open_circuit_past_its_cooldown_counts_as_usable(tmp_path: Path) -> None:
    live = runtime(tmp_path)
    policy = live.config.failover.circuit_breaker
    for name in ("a", "b"):
        live.backends[name].breaker.record_failure(policy, now=0.0)  # opened long ago
    ok, _ = readiness(live, AUDIT_UP)
    assert ok


def test_audit_trouble_is_reported_but_never_makes_the_process_not_ready(tmp_path: Path) -> None:
    """The gateway still serves with the audit database down (records wait, then spill): readiness
    says so in the audit check, and stays true, buffer full or not."""
    live = runtime(tmp_path)
    ok, checks = readiness(live, AUDIT_UP)
    assert ok and checks["audit"]["status"] == "ok"
    down = {"enabled": True, "db_up": False, "buffered": 99, "last_error": "cannot open: OSError"}
    ok, checks = readiness(live, down)
    assert ok and checks["audit"]["ok"] is True and checks["audit"]["status"] == "degraded"
    assert (
        checks["audit"]["last_error"] == "cannot open: OSError" and "spill file" in checks["audit"]["detail"]
    )
    full = {**down, "buffered": 100, "spilled": 250, "spill_bytes": 90_000}
    ok, checks = readiness(live, full)
    assert ok and checks["audit"]["status"] == "degraded"
    assert (checks["audit"]["spilled"], checks["audit"]["spill_bytes"]) == (250, 90_000)
    ok, checks = readiness(live, {**AUDIT_UP, "lost": 3})  # up again; what was lost is still told
    assert ok and checks["audit"]["status"] == "ok" and checks["audit"]["lost"] == 3


def test_not_ready_while_draining(tmp_path: Path) -> None:
    ok, checks = readiness(runtime(tmp_path), AUDIT_UP, draining=True)
    assert not ok and checks["draining"]["ok"] is False and "shutting down" in checks["draining"]["detail"]
