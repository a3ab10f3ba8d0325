"""Failover through the real server: what moves to the next target, what does not, mid-stream
failures, and the circuit breaker opening and closing."""

from __future__ import annotations

import time
from collections.abc import Iterator

import anthropic
import openai
import pytest
import requests

from gateway.testing import Behaviour, FakeAnthropic, FakeOpenAI
from gateway.testing.process import free_port

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hello there"}]}


@pytest.fixture(scope="module")
def primary() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.in_thread() as fake:
        yield fake


@pytest.fixture(scope="module")
def secondary() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.in_thread() as fake:
        yield fake


@pytest.fixture(scope="module")
def claude() -> Iterator[FakeAnthropic]:
    with FakeAnthropic.in_thread() as fake:
        yield fake


@pytest.fixture(autouse=True)
def healthy(primary: FakeOpenAI, secondary: FakeOpenAI, claude: FakeAnthropic) -> None:
    for fake in (primary, secondary, claude):
        fake.behaviour = Behaviour()
        fake.reset_stats()


def config(primary_url: str, secondary_url: str, *, extra: str = "", first_byte: float = 1.0) -> str:
    return f"""
backends:
  primary: {{type: openai_compatible, base_url: "{primary_url}"}}
  secondary: {{type: openai_compatible, base_url: "{secondary_url}"}}
models:
  chat:
    chain:
      - {{backend: primary, model: big}}
      - {{backend: secondary, model: small}}
timeouts:
  chat: {{total: 30, connect: 1, first_byte: {first_byte}}}
failover:
  circuit_breaker: {{failure_threshold: 1000}}
{extra}
"""


def post(gateway, body: dict = CHAT, **headers: str) -> requests.Response:
    return requests.post(gateway.url("/v1/chat/completions"), json=body, headers=headers, timeout=30)


def chat_calls(fake: FakeOpenAI) -> int:
    return fake.stats.requests.get("/v1/chat/completions", 0)


@pytest.fixture(scope="module")
def gateway(gateway_server_module, primary: FakeOpenAI, secondary: FakeOpenAI):
    return gateway_server_module(config(primary.base_url, secondary.base_url))


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_primary_error_status_is_served_by_the_second_target(
    gateway, primary, secondary, status: int
) -> None:
    primary.behaviour = Behaviour(status=status)
    response = post(gateway)
    assert response.status_code == 200
    assert response.headers["x-gateway-backend"] == "secondary"
    assert response.headers["x-gateway-attempts"] == "2"
    assert response.json()["model"] == "small"
    assert (chat_calls(primary), chat_calls(secondary)) == (1, 1)


def test_primary_hanging_past_first_byte_limit_fails_over(gateway, primary, secondary) -> None:
    primary.behaviour = Behaviour(hang=True)
    started = time.monotonic()
    response = post(gateway)
    assert response.status_code == 200
    assert response.headers["x-gateway-backend"] == "secondary"
    assert 1.0 <= time.monotonic() - started < 10


def test_streaming_primary_hanging_fails_over_before_the_first_byte(gateway, primary, secondary) -> None:
    primary.behaviour = Behaviour(hang=True)
    client = openai.OpenAI(base_url=gateway.url("/v1"), api_key="x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="chat", messages=CHAT["messages"], stream=True
    )
    assert raw.headers["x-gateway-backend"] == "secondary"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices)
    assert len(text.split()) == 16


def test_client_error_does_not_fail_over(gateway, primary, secondary) -> None:
    primary.behaviour = Behaviour(status=400)
    response = post(gateway)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert (chat_calls(primary), chat_calls(secondary)) == (1, 0)


def test_every_target_failing_is_a_502_naming_each(gateway, primary, secondary) -> None:
    primary.behaviour = Behaviour(status=500)
    secondary.behaviour = Behaviour(status=503)
    response = post(gateway)
    assert response.status_code == 502
    body = response.json()
    assert "primary: HTTP 500" in body["detail"] and "secondary: HTTP 503" in body["detail"]
    assert [a["backend"] for a in body["attempts"]] == ["primary", "secondary"]
    assert body["request_id"] == response.headers["x-request-id"]


def test_every_target_rate_limited_is_a_429_with_retry_after(gateway, primary, secondary) -> None:
    primary.behaviour = Behaviour(status=429)
    secondary.behaviour = Behaviour(status=429)
    response = post(gateway)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"


def test_mid_stream_failure_ends_with_an_error_event_and_no_done(gateway, primary, secondary) -> None:
    primary.behaviour = Behaviour(drop_after_chunks=4)
    response = requests.post(
        gateway.url("/v1/chat/completions"), json={**CHAT, "stream": True}, stream=True, timeout=30
    )
    assert response.status_code == 200
    lines = [line for line in response.iter_lines() if line]
    assert lines[-1].startswith(b'data: {"error"')
    assert b"[DONE]" not in b"".join(lines)
    assert b"failed mid-stream" in lines[-1]
    assert chat_calls(secondary) == 0, "no failover once the first byte was sent"
    client = openai.OpenAI(base_url=gateway.url("/v1"), api_key="x", max_retries=0)
    with pytest.raises(openai.APIError, match="failed mid-stream"):
        for _ in client.chat.completions.create(model="chat", messages=CHAT["messages"], stream=True):
            pass


def test_refused_connection_fails_over(gateway_server, secondary) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    gateway = gateway_server(config(dead, secondary.base_url))
    response = post(gateway)
    assert response.status_code == 200
    assert response.headers["x-gateway-backend"] == "secondary"
    assert response.headers["x-gateway-attempts"] == "2"


def test_policy_decides_which_failures_move_on(gateway_server, primary, secondary) -> None:
    gateway = gateway_server(
        config(primary.base_url, secondary.base_url).replace(
            "failover:\n", "failover:\n  retry_on: [connect_error, timeout, http_5xx]\n"
        )
    )
    primary.behaviour = Behaviour(status=429)
    response = post(gateway)
    assert response.status_code == 429
    assert chat_calls(secondary) == 0


@pytest.mark.parametrize("max_attempts", [1, 2])
def test_max_attempts_caps_the_targets_tried(gateway_server, primary, secondary, max_attempts: int) -> None:
    """`failover.max_attempts` counts the targets sent the request: with every target failing, a chain
    of three stops after that many, and the ones past the cap are never called."""
    with FakeOpenAI.in_thread() as third:
        text = config(primary.base_url, secondary.base_url).replace(
            "      - {backend: secondary, model: small}\n",
            "      - {backend: secondary, model: small}\n      - {backend: third, model: tiny}\n",
        )
        text = text.replace(
            "backends:\n", f'backends:\n  third: {{type: openai_compatible, base_url: "{third.base_url}"}}\n'
        )
        text = text.replace("failover:\n", f"failover:\n  max_attempts: {max_attempts}\n")
        gateway = gateway_server(text)
        for fake in (primary, secondary, third):
            fake.behaviour = Behaviour(status=500)
        response = post(gateway)
        assert response.status_code == 502
        tried = [a["backend"] for a in response.json()["attempts"]]
        assert tried == ["primary", "secondary"][:max_attempts]
        calls = (chat_calls(primary), chat_calls(secondary), chat_calls(third))
        assert calls == ((1, 0, 0) if max_attempts == 1 else (1, 1, 0))
        # The cap is what stopped it: the same chain with every target healthy past it still serves.
        third.behaviour = Behaviour()
        assert post(gateway).status_code == 502
        assert chat_calls(third) == 0


def test_anthropic_client_mid_stream_failure_is_an_error_event(gateway_server, claude, secondary) -> None:
    text = f"""
backends:
  claude: {{type: anthropic, base_url: "{claude.base_url}", api_key: "${{FAKE_KEY}}"}}
models:
  sonnet: {{chain: [{{backend: claude, model: claude-x}}]}}
"""
    gateway = gateway_server(text, env={"FAKE_KEY": "k"})
    claude.behaviour = Behaviour(drop_after_chunks=5)
    response = requests.post(
        gateway.url("/v1/messages"),
        json={"model": "sonnet", "max_tokens": 50, "stream": True, "messages": CHAT["messages"]},
        stream=True,
        timeout=30,
    )
    body = response.content
    assert b"event: error" in body and b"event: message_stop" not in body
    client = anthropic.Anthropic(base_url=gateway.base_url, api_key="x", max_retries=0)
    with (
        pytest.raises(anthropic.APIError, match="failed mid-stream"),
        client.messages.stream(model="sonnet", max_tokens=50, messages=CHAT["messages"]) as stream,
    ):
        for _ in stream:
            pass


def test_circuit_opens_after_threshold_and_closes_after_a_good_probe(
    gateway_server, primary, secondary
) -> None:
    text = config(primary.base_url, secondary.base_url).replace(
        "failure_threshold: 1000", "failure_threshold: 2, cooldown_seconds: 1"
    )
    gateway = gateway_server(text)
    primary.behaviour = Behaviour(status=500)
    for _ in range(2):
        assert post(gateway).headers["x-gateway-attempts"] == "2"
    assert chat_calls(primary) == 2
    # Open: the primary is skipped without being called.
    response = post(gateway)
    assert response.headers["x-gateway-backend"] == "secondary"
    assert response.headers["x-gateway-attempts"] == "1"
    assert chat_calls(primary) == 2
    # After the cooldown one probe goes through; it succeeds and the circuit closes.
    time.sleep(1.1)
    primary.behaviour = Behaviour()
    assert post(gateway).headers["x-gateway-backend"] == "primary"
    assert post(gateway).headers["x-gateway-backend"] == "primary"
    assert chat_calls(primary) == 4


def test_failed_probe_reopens_the_circuit(gateway_server, primary, secondary) -> None:
    text = config(primary.base_url, secondary.base_url).replace(
        "failure_threshold: 1000", "failure_threshold: 1, cooldown_seconds: 1"
    )
    gateway = gateway_server(text)
    primary.behaviour = Behaviour(status=500)
    post(gateway)
    assert post(gateway).headers["x-gateway-attempts"] == "1"  # open
    time.sleep(1.1)
    assert post(gateway).headers["x-gateway-attempts"] == "2"  # the probe, failed
    assert post(gateway).headers["x-gateway-attempts"] == "1"  # open again
    assert chat_calls(primary) == 2


def test_all_circuits_open_is_a_503(gateway_server, primary) -> None:
    text = f"""
backends:
  only: {{type: openai_compatible, base_url: "{primary.base_url}"}}
models:
  chat: {{chain: [{{backend: only}}]}}
failover:
  circuit_breaker: {{failure_threshold: 1, cooldown_seconds: 60}}
"""
    gateway = gateway_server(text)
    primary.behaviour = Behaviour(status=500)
    assert post(gateway).status_code == 502
    response = post(gateway)
    assert response.status_code == 503
    assert "circuit_open" in response.text and response.headers["retry-after"] == "1"
