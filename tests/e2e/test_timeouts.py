"""Timeout tiers through the real server: one deadline per request, across attempts; past it a
non-streamed request gets a 504 problem and a started stream ends with an error event."""

from __future__ import annotations

import time
from collections.abc import Iterator

import anthropic
import openai
import pytest
import requests

from gateway.testing import Behaviour, FakeAnthropic, FakeOpenAI

MESSAGES = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def slow_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.in_thread() as fake:
        yield fake


@pytest.fixture(scope="module")
def slow_anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic.in_thread() as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(gateway_server_module, slow_openai, slow_anthropic):
    return gateway_server_module(
        f"""
backends:
  oa: {{type: openai_compatible, base_url: "{slow_openai.base_url}"}}
  oa2: {{type: openai_compatible, base_url: "{slow_openai.base_url}"}}
  an: {{type: anthropic, base_url: "{slow_anthropic.base_url}", api_key: "${{FAKE_KEY}}"}}
models:
  gpt: {{chain: [{{backend: oa}}]}}
  gpt-twice: {{chain: [{{backend: oa}}, {{backend: oa2}}]}}
  claude: {{chain: [{{backend: an}}]}}
timeouts:
  chat: {{total: 1.5, connect: 1, first_byte: 1}}
  completions: {{total: 1, first_byte: 5}}
  embeddings: {{total: 0.5, first_byte: 5}}
""",
        env={"FAKE_KEY": "k"},
    )


def assert_timeout_problem(response: requests.Response, tier: str, limit: str) -> None:
    assert response.status_code == 504
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["request_id"] == response.headers["x-request-id"]
    assert f"{tier} timeout tier (total {limit} s)" in body["detail"]
    assert f"timeouts.{tier}.total" in body["detail"]


def test_non_stream_past_the_deadline_is_504(gateway, slow_openai) -> None:
    slow_openai.behaviour = Behaviour(latency_ms=3000)
    started = time.monotonic()
    # first_byte (1 s) fails over to oa2, which is just as slow; the deadline (1.5 s) ends the request.
    response = requests.post(
        gateway.url("/v1/chat/completions"), json={"model": "gpt-twice", "messages": MESSAGES}, timeout=10
    )
    took = time.monotonic() - started
    assert_timeout_problem(response, "chat", "1.5")
    assert 1.4 < took < 4.5, "one deadline (1.5 s, 3x margin) for the whole request, across both attempts"


def test_each_endpoint_uses_its_own_tier(gateway, slow_openai) -> None:
    slow_openai.behaviour = Behaviour(latency_ms=2000)
    response = requests.post(
        gateway.url("/v1/completions"), json={"model": "gpt", "prompt": "hi"}, timeout=10
    )
    assert_timeout_problem(response, "completions", "1")
    response = requests.post(gateway.url("/v1/embeddings"), json={"model": "gpt", "input": "hi"}, timeout=10)
    assert_timeout_problem(response, "embeddings", "0.5")


def test_sdks_raise_their_timeout_status_error(gateway, slow_openai, slow_anthropic) -> None:
    slow_openai.behaviour = Behaviour(latency_ms=3000)
    client = openai.OpenAI(base_url=gateway.url("/v1"), api_key="x", max_retries=0)
    with pytest.raises(openai.InternalServerError, match="chat timeout tier") as raised:
        client.chat.completions.create(model="gpt-twice", messages=MESSAGES)
    assert raised.value.status_code == 504
    assert raised.value.request_id == raised.value.response.headers["x-request-id"]
    slow_anthropic.behaviour = Behaviour(latency_ms=3000)
    claude = anthropic.Anthropic(base_url=gateway.base_url, api_key="x", max_retries=0)
    # One target, silent past the first-byte limit (1 s) but within the deadline: a 504 that says so.
    with pytest.raises(anthropic.InternalServerError, match="no backend for model 'claude' answered in time"):
        claude.messages.create(model="claude", max_tokens=20, messages=MESSAGES)


def test_openai_stream_past_the_deadline_ends_with_an_error_event(gateway, slow_openai) -> None:
    slow_openai.behaviour = Behaviour(token_delay_ms=300, reply_tokens=16)
    response = requests.post(
        gateway.url("/v1/chat/completions"),
        json={"model": "gpt", "messages": MESSAGES, "stream": True},
        stream=True,
        timeout=10,
    )
    assert response.status_code == 200
    events = [line for line in response.iter_lines() if line]
    assert any(b'"content":"' in e for e in events[:-1]), "the stream had started"
    assert events[-1].startswith(b'data: {"error"') and b"chat timeout tier" in events[-1]
    assert all(b"[DONE]" not in e for e in events)
    client = openai.OpenAI(base_url=gateway.url("/v1"), api_key="x", max_retries=0)
    with pytest.raises(openai.APIError, match="chat timeout tier"):
        for _ in client.chat.completions.create(model="gpt", messages=MESSAGES, stream=True):
            pass


def test_anthropic_stream_past_the_deadline_ends_with_an_error_event(gateway, slow_anthropic) -> None:
    slow_anthropic.behaviour = Behaviour(token_delay_ms=300, reply_tokens=16)
    response = requests.post(
        gateway.url("/v1/messages"),
        json={"model": "claude", "max_tokens": 100, "messages": MESSAGES, "stream": True},
        stream=True,
        timeout=10,
    )
    body = response.content
    assert b"event: content_block_delta" in body
    assert body.rstrip().split(b"\n\n")[-1].startswith(b"event: error")
    assert b"chat timeout tier" in body
    assert b"message_stop" not in body
    claude = anthropic.Anthropic(base_url=gateway.base_url, api_key="x", max_retries=0)
    with (
        pytest.raises(anthropic.APIError, match="chat timeout tier"),
        claude.messages.stream(model="claude", max_tokens=100, messages=MESSAGES) as stream,
    ):
        for _ in stream:
            pass


def test_responses_api_uses_the_chat_tier(gateway, slow_openai) -> None:
    # Whole: a 504 problem naming the chat tier; a started stream: response.failed, nothing after it.
    slow_openai.behaviour = Behaviour(latency_ms=3000)
    response = requests.post(
        gateway.url("/v1/responses"), json={"model": "gpt-twice", "input": "hello there"}, timeout=10
    )
    assert_timeout_problem(response, "chat", "1.5")
    slow_openai.behaviour = Behaviour(token_delay_ms=300, reply_tokens=16)
    client = openai.OpenAI(base_url=gateway.url("/v1"), api_key="x", max_retries=0)
    events = list(client.responses.create(model="gpt", input="hello there", stream=True))
    kinds = [event.type for event in events]
    assert "response.output_text.delta" in kinds, "the stream had started"
    assert kinds[-1] == "response.failed" and "response.completed" not in kinds
    assert "chat timeout tier" in events[-1].response.error.message  # type: ignore[union-attr]
