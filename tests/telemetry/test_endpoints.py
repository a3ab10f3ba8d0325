"""/health, /ready and the metrics endpoint of an in-process gateway (tracing off)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from logfire.testing import CaptureLogfire
from prometheus_client.parser import text_string_to_metric_families

from gateway.testing import Behaviour, FakeOpenAI
from gateway.testing.inprocess import gateway_in_thread
from tests.conftest import wait_until

ADMIN_KEY = "gw-admin-key-0123456789"
CLIENT_KEY = "gw-client-key-0123456789"
CHAT = {"model": "pair", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.in_thread() as fake:
        yield fake


def write_config(directory: Path, upstream: FakeOpenAI, extra: str = "") -> Path:
    path = directory / "gateway.yaml"
    path.write_text(
        f"""
backends:
  first: {{type: openai_compatible, base_url: "{upstream.base_url}"}}
  second: {{type: openai_compatible, base_url: "{upstream.base_url}"}}
models:
  pair: {{chain: [{{backend: first}}, {{backend: second}}]}}
  solo: {{chain: [{{backend: second}}]}}
failover:
  circuit_breaker: {{failure_threshold: 1, cooldown_seconds: 3}}
reload: {{watch: false}}
{extra}
"""
    )
    return path


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def test_health_answers_without_keys(tmp_path: Path, upstream: FakeOpenAI) -> None:
    extra = "auth: {client_keys: [{name: app, key: '${CLIENT_KEY}'}]}"
    path = write_config(tmp_path, upstream, extra)
    with gateway_in_thread(path, env={"CLIENT_KEY": CLIENT_KEY}) as gateway:
        assert requests.post(gateway.url("/v1/chat/completions"), json=CHAT, timeout=10).status_code == 401
        response = requests.get(gateway.url("/health"), timeout=10)
        assert response.status_code == 200 and response.json()["status"] == "ok"
        ready = requests.get(gateway.url("/ready"), timeout=10)
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        metrics = requests.get(gateway.url("/metrics"), timeout=10)
        assert metrics.status_code == 200 and "gateway_in_flight_requests" in metrics.text


def test_ready_flips_when_every_target_of_a_model_has_an_open_circuit(
    tmp_path: Path, upstream: FakeOpenAI
) -> None:
    with gateway_in_thread(write_config(tmp_path, upstream)) as gateway:
        ready = requests.get(gateway.url("/ready"), timeout=10)
        assert ready.status_code == 200
        checks = ready.json()["checks"]
        assert set(checks) == {"config", "draining", "audit", "limits", "models"}
        assert checks["models"]["models"]["pair"] == {
            "ok": True,
            "usable": ["first", "second"],
            "unusable": {},
        }

        upstream.behaviour = Behaviour(status=500)
        assert requests.post(gateway.url("/v1/chat/completions"), json=CHAT, timeout=10).status_code == 502
        ready = requests.get(gateway.url("/ready"), timeout=10)
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "not ready"
        assert body["checks"]["config"]["ok"] is True
        assert body["checks"]["models"]["ok"] is False
        pair = body["checks"]["models"]["models"]["pair"]
        assert pair == {
            "ok": False,
            "usable": [],
            "unusable": {"first": "circuit open", "second": "circuit open"},
        }
        metrics = requests.get(gateway.url("/metrics"), timeout=10).text
        assert sample(metrics, "gateway_circuit_breaker_state", backend="first") == 2

        # The upstream recovers; once the cooldown is over a probe may go, so the process is ready
        # again (it must be: out of rotation it would never get the request that closes the circuit).
        upstream.behaviour = Behaviour()
        wait_until(lambda: requests.get(gateway.url("/ready"), timeout=10).status_code == 200, timeout=15)
        metrics = requests.get(gateway.url("/metrics"), timeout=10).text
        assert sample(metrics, "gateway_circuit_breaker_state", backend="first") == 1  # half-open
        assert requests.post(gateway.url("/v1/chat/completions"), json=CHAT, timeout=10).status_code == 200
        assert requests.get(gateway.url("/ready"), timeout=10).status_code == 200
        metrics = requests.get(gateway.url("/metrics"), timeout=10).text
        assert sample(metrics, "gateway_circuit_breaker_state", backend="first") == 0


def test_metrics_path_and_admin_key_come_from_the_config(tmp_path: Path, upstream: FakeOpenAI) -> None:
    extra = """
auth: {admin_keys: [{name: ops, key: '${ADMIN_KEY}'}]}
telemetry: {prometheus: {path: /internal/metrics, require_admin_key: true}}
"""
    path = write_config(tmp_path, upstream, extra)
    with gateway_in_thread(path, env={"ADMIN_KEY": ADMIN_KEY}) as gateway:
        assert requests.get(gateway.url("/metrics"), timeout=10).status_code == 404
        refused = requests.get(gateway.url("/internal/metrics"), timeout=10)
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"
        wrong = requests.get(
            gateway.url("/internal/metrics"), headers={"authorization": "Bearer nope"}, timeout=10
        )
        assert wrong.status_code == 401
        allowed = requests.get(
            gateway.url("/internal/metrics"), headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
        )
        assert allowed.status_code == 200
        assert allowed.headers["content-type"].startswith("text/plain")
        assert sample(allowed.text, "gateway_config_info", version=gateway.app.live.current.version) == 1
        openmetrics = requests.get(
            gateway.url("/internal/metrics"),
            headers={"authorization": f"Bearer {ADMIN_KEY}", "accept": "application/openmetrics-text"},
            timeout=10,
        )
        assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
        assert openmetrics.text.rstrip().endswith("# EOF")


def test_metrics_can_be_switched_off(tmp_path: Path, upstream: FakeOpenAI) -> None:
    path = write_config(tmp_path, upstream, "telemetry: {prometheus: {enabled: false}}")
    with gateway_in_thread(path) as gateway:
        assert requests.post(gateway.url("/v1/chat/completions"), json=CHAT, timeout=10).status_code == 200
        assert requests.get(gateway.url("/metrics"), timeout=10).status_code == 404
        assert gateway.app.telemetry is not None and gateway.app.telemetry.metrics_on is False


def test_no_spans_are_made_when_tracing_is_off(
    tmp_path: Path, upstream: FakeOpenAI, capfire: CaptureLogfire, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("LOGFIRE_TOKEN", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    with gateway_in_thread(write_config(tmp_path, upstream)) as gateway:
        for _ in range(3):
            assert (
                requests.post(gateway.url("/v1/chat/completions"), json=CHAT, timeout=10).status_code == 200
            )
    assert capfire.exporter.exported_spans_as_dict() == []
