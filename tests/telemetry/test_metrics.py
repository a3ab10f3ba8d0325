"""GatewayMetrics on its own: what one finished request counts, and the state copied into gauges."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.protocol.canonical import Usage
from gateway.routing.failover import Attempt
from gateway.routing.trail import RequestTrail
from gateway.telemetry.metrics import MULTIPROC_ENV, GatewayMetrics, prepare_multiprocess_dir
from tests.telemetry.conftest import compile_config

ROUTES = {"chat": object(), "alias": object()}


def scrape(metrics: GatewayMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    return scrape(metrics).get((name, frozenset(labels.items())), 0.0)


def trail(model: str | None = "chat", **fields: object) -> RequestTrail:
    result = RequestTrail("openai", "chat", "req_1", model=model)
    for name, field_value in fields.items():
        setattr(result, name, field_value)
    return result


@pytest.fixture
def metrics() -> GatewayMetrics:
    return GatewayMetrics(multiprocess_dir=None)


def test_reasoning_tokens_are_counted_apart_as_part_of_output(metrics: GatewayMetrics) -> None:
    reasoned = trail(
        backend="oa",
        http_status=200,
        usage=Usage(prompt_tokens=7, completion_tokens=21, reasoning_tokens=16),
        attempts=[Attempt("oa", "m", "ok", 200)],
    )
    metrics.observe(reasoned, reasoned.status(), 0.25, ROUTES)
    assert value(metrics, "gateway_tokens_total", model="chat", backend="oa", direction="output") == 21
    assert value(metrics, "gateway_tokens_total", model="chat", backend="oa", direction="reasoning") == 16


def test_a_success_counts_latency_and_tokens(metrics: GatewayMetrics) -> None:
    done = trail(
        backend="oa",
        http_status=200,
        usage=Usage(prompt_tokens=7, completion_tokens=5),
        attempts=[Attempt("oa", "m", "ok", 200)],
    )
    metrics.observe(done, done.status(), 0.25, ROUTES)
    labels = {"model": "chat", "backend": "oa", "surface": "openai", "endpoint": "chat", "status": "success"}
    assert value(metrics, "gateway_requests_total", **labels) == 1
    assert (
        value(metrics, "gateway_request_duration_seconds_sum", model="chat", backend="oa", status="success")
        == 0.25
    )
    bucket = {"model": "chat", "backend": "oa", "status": "success"}
    assert value(metrics, "gateway_request_duration_seconds_bucket", le="0.25", **bucket) == 1
    assert value(metrics, "gateway_request_duration_seconds_bucket", le="0.1", **bucket) == 0
    assert value(metrics, "gateway_tokens_total", model="chat", backend="oa", direction="input") == 7
    assert value(metrics, "gateway_tokens_total", model="chat", backend="oa", direction="output") == 5
    assert value(metrics, "gateway_tokens_total", model="chat", backend="oa", direction="reasoning") == 0
    assert value(metrics, "gateway_time_to_first_token_seconds_count", model="chat", backend="oa") == 0
    assert value(metrics, "gateway_failovers_total", model="chat") == 0
    assert value(metrics, "gateway_backend_attempts_total", backend="oa", outcome="ok") == 1


def test_a_stream_records_its_time_to_first_token(metrics: GatewayMetrics) -> None:
    started = time.monotonic()
    done = trail(backend="oa", http_status=200, stream=True, started=started, first_byte_at=started + 0.04)
    metrics.observe(done, "success", 1.0, ROUTES)
    assert value(metrics, "gateway_time_to_first_token_seconds_count", model="chat", backend="oa") == 1
    sum_ = value(metrics, "gateway_time_to_first_token_seconds_sum", model="chat", backend="oa")
    assert sum_ == pytest.approx(0.04)


def test_failovers_count_tried_attempts_beyond_the_first(metrics: GatewayMetrics) -> None:
    steps = [
        Attempt("a", "m", "disabled"),
        Attempt("b", "m", "circuit_open"),
        Attempt("c", "m", "http_5xx", 500),
        Attempt("d", "m", "timeout"),
        Attempt("e", "m", "ok", 200),
    ]
    done = trail(backend="e", http_status=200, attempts=steps)
    metrics.observe(done, done.status(), 0.1, ROUTES)
    assert value(metrics, "gateway_failovers_total", model="chat") == 2
    for step in steps:
        assert (
            value(metrics, "gateway_backend_attempts_total", backend=step.backend, outcome=step.outcome) == 1
        )


def test_client_chosen_model_names_do_not_become_labels(metrics: GatewayMetrics) -> None:
    for name in ("made-up-1", "made-up-2", None, "alias"):
        done = trail(model=name, http_status=404)
        metrics.observe(done, done.status(), 0.001, ROUTES)
    base = {"backend": "", "surface": "openai", "endpoint": "chat", "status": "rejected"}
    assert value(metrics, "gateway_requests_total", model="unknown", **base) == 2
    assert value(metrics, "gateway_requests_total", model="", **base) == 1
    assert value(metrics, "gateway_requests_total", model="alias", **base) == 1


def test_reloads_and_the_config_version(metrics: GatewayMetrics) -> None:
    metrics.set_version("v1")
    metrics.on_reload("rejected", "bad")
    metrics.on_reload("applied", "v2")
    metrics.on_reload("unchanged", "v2")
    assert value(metrics, "gateway_config_reloads_total", outcome="rejected") == 1
    assert value(metrics, "gateway_config_reloads_total", outcome="applied") == 1
    assert value(metrics, "gateway_config_reloads_total", outcome="unchanged") == 1
    assert value(metrics, "gateway_config_info", version="v2") == 1
    assert value(metrics, "gateway_config_info", version="v1") == 0
    assert ("gateway_config_info", frozenset({("version", "bad")})) not in scrape(metrics)


def test_audit_counters_follow_the_writer_even_across_a_restart(metrics: GatewayMetrics) -> None:
    stats = {"enabled": True, "buffered": 4, "recorded": 10, "written": 6, "spilled": 0, "replayed": 0}
    metrics.sync(None, {**stats, "lost": 0, "failed_batches": 1, "db_up": True})
    metrics.sync(None, {**stats, "written": 8, "lost": 0, "failed_batches": 1, "db_up": False})
    assert value(metrics, "gateway_audit_records_total", outcome="written") == 8
    assert value(metrics, "gateway_audit_failed_batches_total") == 1
    assert value(metrics, "gateway_audit_buffered_records") == 4
    assert value(metrics, "gateway_audit_database_up") == 0
    # A reload restarted the writer: its counts start again from zero.
    restarted = {"enabled": True, "buffered": 0, "recorded": 3, "written": 3, "spilled": 2, "replayed": 0}
    metrics.sync(None, {**restarted, "lost": 0, "failed_batches": 0, "db_up": True})
    assert value(metrics, "gateway_audit_records_total", outcome="written") == 11
    assert value(metrics, "gateway_audit_records_total", outcome="spilled") == 2
    metrics.sync(None, {"enabled": False})
    assert value(metrics, "gateway_audit_buffered_records") == 0


def test_breaker_states_and_gone_backends(tmp_path: Path, metrics: GatewayMetrics) -> None:
    runtime = compile_config(
        tmp_path,
        """
backends:
  a: {type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
  b: {type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
models:
  m: {chain: [{backend: a}, {backend: b}]}
failover: {circuit_breaker: {failure_threshold: 1, cooldown_seconds: 60}}
""",
    )
    policy = runtime.config.failover.circuit_breaker
    runtime.backends["a"].breaker.record_failure(policy)
    metrics.sync(runtime, {"enabled": False})
    assert value(metrics, "gateway_circuit_breaker_state", backend="a") == 2
    assert value(metrics, "gateway_circuit_breaker_state", backend="b") == 0
    assert value(metrics, "gateway_config_info", version=runtime.version) == 1
    smaller = compile_config(
        tmp_path,
        """
backends:
  b: {type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
models:
  m: {chain: [{backend: b}]}
""",
    )
    metrics.sync(smaller, {"enabled": False})
    assert ("gateway_circuit_breaker_state", frozenset({("backend", "a")})) not in scrape(metrics)
    assert value(metrics, "gateway_config_info", version=smaller.version) == 1
    assert value(metrics, "gateway_config_info", version=runtime.version) == 0


def test_two_apps_in_one_process_have_separate_metrics() -> None:
    one, two = GatewayMetrics(multiprocess_dir=None), GatewayMetrics(multiprocess_dir=None)
    done = trail(backend="oa", http_status=200)
    one.observe(done, "success", 0.1, ROUTES)
    labels = {"model": "chat", "backend": "oa", "surface": "openai", "endpoint": "chat", "status": "success"}
    assert value(one, "gateway_requests_total", **labels) == 1
    assert value(two, "gateway_requests_total", **labels) == 0


def test_the_supervisor_wipes_an_operators_directory_and_makes_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path / "metrics"))
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "counter_123.db").write_bytes(b"stale")
    path, made = prepare_multiprocess_dir()
    assert (path, made) == (tmp_path / "metrics", False)
    assert list(path.iterdir()) == []
    monkeypatch.delenv(MULTIPROC_ENV)
    path, made = prepare_multiprocess_dir(tmp_path)
    assert made and path.parent == tmp_path and os.environ[MULTIPROC_ENV] == str(path)


def test_cost_counts_by_model_backend_and_client_when_known(metrics: GatewayMetrics) -> None:
    for cost in (0.000125, 0.5, None):
        done = trail(backend="oa", http_status=200, client_key="billing", cost_usd=cost)
        metrics.observe(done, "success", 0.1, ROUTES)
    local = trail(backend="local", http_status=200, client_key="billing", cost_usd=0.0)
    metrics.observe(local, "success", 0.1, ROUTES)
    assert value(metrics, "gateway_cost_usd_total", model="chat", backend="oa", client="billing") == 0.500125
    assert value(metrics, "gateway_cost_usd_total", model="chat", backend="local", client="billing") == 0.0
    series = [key for key in scrape(metrics) if key[0] == "gateway_cost_usd_total"]
    assert len(series) == 2  # a free local model has its series at 0; an unknown cost is not counted
