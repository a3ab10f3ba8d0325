"""`telemetry.logfire` applies on reload: a reload that turns it off stops the spans, one that turns it
on starts them (with the new service name), without a restart. The app runs in this process and
exports to a fake OTLP collector over loopback, as `gateway serve` does to a real one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from gateway.telemetry.requests import REQUEST_SPAN
from gateway.testing import FakeAnthropic, FakeOpenAI
from gateway.testing.inprocess import InProcessGateway, gateway_in_thread
from gateway.testing.otlp import FakeCollector
from tests.conftest import wait_until
from tests.telemetry.conftest import ENV, gateway_yaml

ADMIN_KEY = "admin-key-tracing-reload"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCollector]:
    receiver = FakeCollector()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.delenv("LOGFIRE_TOKEN", raising=False)
    yield receiver
    receiver.close()


def config(openai_fake: FakeOpenAI, anthropic_fake: FakeAnthropic, logfire: str) -> str:
    admin = "auth: {admin_keys: [{name: ops, key: '${ADMIN_KEY}'}]}\n"
    extra = f"{admin}telemetry: {{logfire: {logfire}}}\n"
    return gateway_yaml(openai_fake.base_url, anthropic_fake.base_url, extra)


def reload_with(gateway: InProcessGateway, path: Path, text: str, *, tracing_on: bool) -> None:
    """Write the file, reload it through the admin API, and wait until tracing has switched."""
    path.write_text(text)
    answer = requests.post(gateway.url("/admin/api/config/reload"), headers=ADMIN, timeout=10)
    assert answer.status_code == 200 and answer.json()["outcome"] == "applied"

    def switched() -> bool:
        status = requests.get(gateway.url("/admin/api/config"), headers=ADMIN, timeout=10).json()
        return status["tracing"]["settled"] and status["tracing"]["on"] is tracing_on

    wait_until(switched, timeout=15)


def traced(collector: FakeCollector) -> set[str]:
    """The request ids of the request spans received."""
    found = set()
    for span in list(collector.spans):
        if span.name == REQUEST_SPAN:
            found |= {a.value.string_value for a in span.attributes if a.key == "request_id"}
    return found


def chat(gateway: InProcessGateway) -> str:
    body = {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}
    response = requests.post(gateway.url("/v1/chat/completions"), json=body, timeout=30)
    assert response.status_code == 200
    return response.headers["x-request-id"]


def services(collector: FakeCollector) -> set[str]:
    return {resource.get("service.name", "") for resource in list(collector.resources)}


def test_a_reload_turns_tracing_off_and_on_and_renames_the_service(
    tmp_path: Path, openai_fake: FakeOpenAI, anthropic_fake: FakeAnthropic, collector: FakeCollector
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(config(openai_fake, anthropic_fake, "{service_name: gw-first}"))
    env = {**ENV, "ADMIN_KEY": ADMIN_KEY}
    with gateway_in_thread(path, env=env) as gateway:
        first = chat(gateway)
        wait_until(lambda: first in traced(collector), timeout=15)
        assert services(collector) == {"gw-first"}

        reload_with(gateway, path, config(openai_fake, anthropic_fake, "{enabled: false}"), tracing_on=False)
        dark = chat(gateway)

        on_again = config(openai_fake, anthropic_fake, "{service_name: gw-second, environment: ci}")
        reload_with(gateway, path, on_again, tracing_on=True)
        second = chat(gateway)
        wait_until(lambda: second in traced(collector), timeout=15)
        # Spans are exported in the order they end: the request served while tracing was off would
        # have arrived before this one.
        assert dark not in traced(collector)
        assert services(collector) == {"gw-first", "gw-second"}
        [resource] = [r for r in collector.resources if r.get("service.name") == "gw-second"][:1]
        assert resource["deployment.environment.name"] == "ci"


def test_a_tracing_fault_on_reload_is_logged_and_the_reload_stands(
    tmp_path: Path,
    openai_fake: FakeOpenAI,
    anthropic_fake: FakeAnthropic,
    collector: FakeCollector,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(config(openai_fake, anthropic_fake, "{enabled: false}"))
    env = {**ENV, "ADMIN_KEY": ADMIN_KEY}
    with gateway_in_thread(path, env=env) as gateway:
        # A Logfire credentials file it cannot read: configuring tracing fails on the reload.
        credentials = tmp_path / "logfire-credentials"
        credentials.mkdir()
        (credentials / "logfire_credentials.json").write_text("{not json")
        monkeypatch.setenv("LOGFIRE_CREDENTIALS_DIR", str(credentials))
        reload_with(gateway, path, config(openai_fake, anthropic_fake, "{enabled: true}"), tracing_on=False)
        status = requests.get(gateway.url("/admin/api/config"), headers=ADMIN, timeout=10).json()
        assert "enabled: true" in path.read_text() and status["version"] == status["history"][0]["version"]
        assert chat(gateway)
    assert any(getattr(r, "event", None) == "tracing_failed" for r in caplog.records)
