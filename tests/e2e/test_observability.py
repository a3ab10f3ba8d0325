"""Metrics and logs of the real server (`gateway serve`): exact counts after a known sequence of
requests and reloads, counts that add up across two workers, and one JSON log line per request."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from gateway.testing import FakeAnthropic, FakeOpenAI
from gateway.testing.otlp import FakeCollector
from gateway.testing.process import GatewayProcess
from tests.conftest import wait_until

FAKE_KEY = "sk-fake-upstream-0123456789"
#: A client's mistake that puts a key where a model name goes: it must not reach the log.
KEY_AS_MODEL = "sk-live-abcdefghijklmnopqrstuv"


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeOpenAI, FakeAnthropic]]:
    with FakeOpenAI.in_thread() as oa, FakeAnthropic.in_thread() as an:
        yield oa, an


def config(upstreams: tuple[FakeOpenAI, FakeAnthropic], comment: str = "") -> str:
    oa, an = upstreams
    return f"""# {comment}
backends:
  oa: {{type: openai_compatible, base_url: "{oa.base_url}"}}
  broken:
    {{type: openai_compatible, base_url: "{oa.base_url}", headers: {{x-fake-behaviour: '{{"status": 500}}'}}}}
  an: {{type: anthropic, base_url: "{an.base_url}", api_key: "${{FAKE_KEY}}"}}
models:
  chat: {{chain: [{{backend: oa}}]}}
  flaky: {{chain: [{{backend: broken}}, {{backend: oa}}]}}
  down: {{chain: [{{backend: broken}}]}}
  claude: {{chain: [{{backend: an}}]}}
failover:
  circuit_breaker: {{failure_threshold: 1000}}
reload: {{watch: false}}
"""


def samples(gateway: GatewayProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = requests.get(gateway.url("/metrics"), timeout=10)
    assert response.status_code == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """One sample's value; 0 for a series that does not exist (a counter never incremented)."""
    return scrape.get((name, frozenset(labels.items())), 0.0)


def total(scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str) -> float:
    return sum(v for (n, _), v in scrape.items() if n == name)


def chat(gateway: GatewayProcess, model: str) -> requests.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hello there"}]}
    return requests.post(gateway.url("/v1/chat/completions"), json=body, timeout=30)


def log_lines(gateway: GatewayProcess) -> list[dict[str, Any]]:
    lines = []
    for line in gateway.log().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_exact_counts_after_a_known_sequence(
    gateway_server: Callable[..., GatewayProcess], upstreams: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    gateway = gateway_server(config(upstreams), env={"FAKE_KEY": FAKE_KEY})
    first_version = requests.get(
        gateway.url("/admin/api/config"), headers=gateway.admin_headers, timeout=10
    ).json()["version"]
    usages = []
    for _ in range(3):
        response = chat(gateway, "chat")
        assert response.status_code == 200
        usages.append(response.json()["usage"])
    assert chat(gateway, "flaky").status_code == 200  # one failover
    assert chat(gateway, "down").status_code == 502
    assert chat(gateway, KEY_AS_MODEL).status_code == 404
    bad_json = requests.post(gateway.url("/v1/chat/completions"), data=b"{", timeout=10)
    assert bad_json.status_code == 400
    body = {
        "model": "claude",
        "max_tokens": 20,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    with requests.post(gateway.url("/v1/messages"), json=body, timeout=30, stream=True) as streamed:
        assert streamed.status_code == 200 and "message_stop" in streamed.text

    path: Path = gateway.config_path
    good = path.read_text()
    path.write_text(good + "\nmodels: {oops: 1}\n")  # duplicate key: rejected
    assert (
        requests.post(
            gateway.url("/admin/api/config/reload"), headers=gateway.admin_headers, timeout=10
        ).status_code
        == 422
    )
    path.write_text(config(upstreams, comment="second version"))
    assert (
        requests.post(
            gateway.url("/admin/api/config/reload"), headers=gateway.admin_headers, timeout=10
        ).status_code
        == 200
    )
    second_version = requests.get(
        gateway.url("/admin/api/config"), headers=gateway.admin_headers, timeout=10
    ).json()["version"]

    scrape = samples(gateway)
    requests_total = "gateway_requests_total"
    success = {"surface": "openai", "endpoint": "chat", "status": "success"}
    assert value(scrape, requests_total, model="chat", backend="oa", **success) == 3
    assert value(scrape, requests_total, model="flaky", backend="oa", **success) == 1
    error = {"surface": "openai", "endpoint": "chat", "status": "error"}
    assert value(scrape, requests_total, model="down", backend="", **error) == 1
    rejected = {"surface": "openai", "endpoint": "chat", "status": "rejected"}
    assert value(scrape, requests_total, model="unknown", backend="", **rejected) == 1
    assert value(scrape, requests_total, model="", backend="", **rejected) == 1
    anthropic = {"surface": "anthropic", "endpoint": "chat", "status": "success"}
    assert value(scrape, requests_total, model="claude", backend="an", **anthropic) == 1
    assert total(scrape, requests_total) == 8

    assert value(scrape, "gateway_failovers_total", model="flaky") == 1
    assert total(scrape, "gateway_failovers_total") == 1
    assert value(scrape, "gateway_backend_attempts_total", backend="broken", outcome="http_5xx") == 2
    assert value(scrape, "gateway_backend_attempts_total", backend="oa", outcome="ok") == 4
    assert value(scrape, "gateway_backend_attempts_total", backend="an", outcome="ok") == 1

    duration = "gateway_request_duration_seconds_count"
    assert value(scrape, duration, model="chat", backend="oa", status="success") == 3
    assert total(scrape, duration) == 8
    assert value(scrape, "gateway_time_to_first_token_seconds_count", model="claude", backend="an") == 1
    assert value(scrape, "gateway_time_to_first_token_seconds_count", model="chat", backend="oa") == 0
    tokens = "gateway_tokens_total"
    assert value(scrape, tokens, model="chat", backend="oa", direction="input") == sum(
        u["prompt_tokens"] for u in usages
    )
    assert value(scrape, tokens, model="chat", backend="oa", direction="output") == sum(
        u["completion_tokens"] for u in usages
    )

    assert value(scrape, "gateway_config_reloads_total", outcome="rejected") == 1
    assert value(scrape, "gateway_config_reloads_total", outcome="applied") == 1
    assert value(scrape, "gateway_config_info", version=second_version) == 1
    assert value(scrape, "gateway_config_info", version=first_version) == 0
    assert value(scrape, "gateway_in_flight_requests") == 0
    assert value(scrape, "gateway_circuit_breaker_state", backend="broken") == 0
    assert value(scrape, "gateway_audit_database_up") == 1

    def all_written() -> bool:
        return value(samples(gateway), "gateway_audit_records_total", outcome="written") == 8

    wait_until(all_written)

    # One JSON line per request, with its id, and the lifecycle events; no key anywhere. Request
    # lines are info: written within the log's 50 ms coalescing window, so they may trail the answer.
    def request_lines_written() -> bool:
        return sum(1 for line in log_lines(gateway) if line.get("event") == "request") >= 8

    wait_until(request_lines_written, timeout=10)
    lines = log_lines(gateway)
    request_lines = [line for line in lines if line.get("event") == "request"]
    assert len(request_lines) == 8
    assert all(line["request_id"].startswith("req_") and "trace_id" in line for line in request_lines)
    assert {line["status"] for line in request_lines} == {"success", "error", "rejected"}
    events = {line.get("event") for line in lines}
    assert {"listening", "config_applied", "config_rejected", "audit_on"} <= events
    log = gateway.log()
    assert KEY_AS_MODEL not in log and FAKE_KEY not in log
    assert "[REDACTED]" in log


def test_two_workers_report_the_whole_process_group(
    gateway_server: Callable[..., GatewayProcess], upstreams: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    gateway = gateway_server(config(upstreams), env={"FAKE_KEY": FAKE_KEY}, workers=2)

    def serving_pids() -> set[int]:
        return {line["pid"] for line in log_lines(gateway) if line.get("event") == "request"}

    def logged_requests() -> int:
        return sum(1 for line in log_lines(gateway) if line.get("event") == "request")

    sent = 0
    while len(serving_pids()) < 2:
        if sent >= 400:
            pytest.fail(f"{sent} requests on new connections all went to one worker")
        # A new connection per request (no session), so the kernel hands them to either worker.
        for _ in range(10):
            assert chat(gateway, "flaky").status_code == 200
            sent += 1
        expected = sent
        wait_until(lambda: logged_requests() == expected)  # noqa: B023 (called before the loop goes on)
    assert (
        requests.post(
            gateway.url("/admin/api/config/reload"), headers=gateway.admin_headers, timeout=10
        ).status_code
        == 200
    )

    for _ in range(12):  # each scrape is answered by either worker: every one must see the whole group
        scrape = samples(gateway)
        labels = {"model": "flaky", "backend": "oa", "surface": "openai", "endpoint": "chat"}
        assert value(scrape, "gateway_requests_total", status="success", **labels) == sent
        assert value(scrape, "gateway_failovers_total", model="flaky") == sent
        assert value(scrape, "gateway_backend_attempts_total", backend="broken", outcome="http_5xx") == sent
        assert (
            value(
                scrape,
                "gateway_request_duration_seconds_count",
                model="flaky",
                backend="oa",
                status="success",
            )
            == sent
        )
        assert value(scrape, "gateway_in_flight_requests") == 0
        assert value(scrape, "gateway_config_reloads_total", outcome="unchanged") == 1
    assert len(serving_pids()) == 2

    # A worker that dies: its live gauges go, its counts stay, its replacement adds to them.
    [directory] = [
        line["directory"] for line in log_lines(gateway) if line.get("event") == "metrics_directory"
    ]
    victim = min(serving_pids())
    assert list(Path(directory).glob(f"gauge_livesum_{victim}.db"))
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        return sum(1 for line in log_lines(gateway) if line.get("event") == "worker_started") == 3

    wait_until(replaced, timeout=30)
    wait_until(lambda: requests.get(gateway.url("/health"), timeout=10).status_code == 200)
    assert not list(Path(directory).glob(f"gauge_live*_{victim}.db"))
    assert chat(gateway, "flaky").status_code == 200
    scrape = samples(gateway)
    labels = {"model": "flaky", "backend": "oa", "surface": "openai", "endpoint": "chat"}
    assert value(scrape, "gateway_requests_total", status="success", **labels) == sent + 1
    assert value(scrape, "gateway_in_flight_requests") == 0
    gateway.stop()
    assert not Path(directory).exists()


def test_an_otlp_endpoint_in_the_environment_receives_the_traces(
    gateway_server: Callable[..., GatewayProcess], upstreams: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    collector = FakeCollector()
    gateway: GatewayProcess | None = None
    try:
        env = {
            "FAKE_KEY": FAKE_KEY,
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "LOGFIRE_TOKEN": "",
        }
        extra = "telemetry: {logfire: {service_name: gw-under-test, environment: ci}}\n"
        gateway = gateway_server(config(upstreams) + extra, env=env)
        response = chat(gateway, "flaky")
        assert response.status_code == 200

        def names() -> list[str]:
            return [span.name for span in collector.spans]

        wait_until(lambda: "model request" in names(), timeout=15)
        [request] = [span for span in collector.spans if span.name == "model request"]
        attributes = {a.key: a.value for a in request.attributes}
        assert attributes["request_id"].string_value == response.headers["x-request-id"]
        assert attributes["status"].string_value == "success"
        assert attributes["attempts"].int_value == 2
        attempts = [span for span in collector.spans if span.name == "backend attempt"]
        assert len(attempts) == 2 and all(span.parent_span_id == request.span_id for span in attempts)
        assert all(span.trace_id == request.trace_id for span in attempts)
        assert {"service.name": "gw-under-test", "deployment.environment.name": "ci"}.items() <= {
            k: v for resource in collector.resources for k, v in resource.items()
        }.items()

        # The request's log line (info, coalesced for up to 50 ms) may come after its span.
        def request_line() -> list[dict[str, Any]]:
            request_id = response.headers["x-request-id"]
            return [ln for ln in log_lines(gateway) if ln.get("request_id") == request_id]

        wait_until(lambda: bool(request_line()), timeout=10)
        [line] = request_line()
        assert line["trace_id"] == request.trace_id.hex()
        assert any(ln.get("event") == "tracing_on" for ln in log_lines(gateway))
    finally:
        if gateway is not None:  # first: at exit it sends its last spans, retrying while none answers
            gateway.stop()
        collector.close()


def test_a_reload_applies_the_log_level(
    gateway_server: Callable[..., GatewayProcess], upstreams: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    gateway = gateway_server(config(upstreams), env={"FAKE_KEY": FAKE_KEY})

    def request_lines() -> int:
        return sum(1 for line in log_lines(gateway) if line.get("event") == "request")

    assert chat(gateway, "chat").status_code == 200
    wait_until(lambda: request_lines() == 1)
    gateway.config_path.write_text(config(upstreams) + "telemetry: {logging: {level: warning}}\n")
    assert (
        requests.post(
            gateway.url("/admin/api/config/reload"), headers=gateway.admin_headers, timeout=10
        ).status_code
        == 200
    )
    assert chat(gateway, "chat").status_code == 200
    assert chat(gateway, "down").status_code == 502
    gateway.stop()
    assert request_lines() == 1
