"""The mlx backend below the end-to-end level: it answers in the canonical form whatever the client
speaks (the surface encodes), with usage on every path, and `aclose()` mid-stream stops the generation."""

from __future__ import annotations

import pytest

from gateway.backends.mlx.backend import LocalModelBackend
from gateway.backends.upstream import EventStream, UpstreamCall
from gateway.protocol import anthropic as anthropic_protocol
from gateway.protocol import openai as openai_protocol
from gateway.protocol.canonical import ChatResponse, StreamEnd, StreamStart, TextDelta, TokenCount, UsageEvent
from tests.backends.mlx.conftest import limits
from tests.conftest import wait_for

MESSAGES = [{"role": "user", "content": "Tell me a story about the sea."}]
# One event loop for the module: the engine (loaded once, `local`) posts its events to the loop it
# started on.
pytestmark = pytest.mark.asyncio(loop_scope="module")


def openai_call(stream: bool, **extra: object) -> UpstreamCall:
    body = {
        "model": "tiny",
        "messages": MESSAGES,
        "stream": stream,
        "max_tokens": 8,
        "temperature": 0,
        **extra,
    }
    return UpstreamCall("chat", "openai", body, openai_protocol.parse_chat_request(body), stream, "r", "tiny")


def anthropic_call(endpoint: str = "chat") -> UpstreamCall:
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 8, "temperature": 0}
    parse = (
        anthropic_protocol.parse_count_tokens_request
        if endpoint == "count_tokens"
        else anthropic_protocol.parse_messages_request
    )
    return UpstreamCall(endpoint, "anthropic", body, parse(body), False, "r", "tiny")  # type: ignore[arg-type]


async def test_whole_answers_are_canonical_whatever_the_client(local: LocalModelBackend) -> None:
    openai_answer = await local.send(openai_call(stream=False), "tiny", limits())
    anthropic_answer = await local.send(anthropic_call(), "tiny", limits())
    assert type(openai_answer) is ChatResponse and type(anthropic_answer) is ChatResponse
    assert openai_answer.text == anthropic_answer.text  # greedy: the same answer for both clients
    assert openai_answer.usage is not None and openai_answer.usage.completion_tokens == 8
    count = await local.send(anthropic_call("count_tokens"), "tiny", limits())
    assert type(count) is TokenCount and count.input_tokens == openai_answer.usage.prompt_tokens


async def test_streams_are_canonical_events_with_usage_at_the_end(local: LocalModelBackend) -> None:
    stream = await local.send(openai_call(stream=True), "tiny", limits())
    assert type(stream) is EventStream
    assert type(stream.first[0]) is StreamStart and type(stream.first[1]) is TextDelta
    events = list(stream.first)
    async for event in stream.rest:
        events.append(event)
    await stream.aclose()
    assert [type(e) for e in events[-2:]] == [UsageEvent, StreamEnd]
    assert stream.usage is not None and stream.usage.completion_tokens == 8
    assert events[-2].usage == stream.usage  # type: ignore[union-attr]


async def test_aclose_mid_stream_stops_the_generation(local: LocalModelBackend) -> None:
    stream = await local.send(openai_call(stream=True, max_tokens=4000, ignore_eos=True), "tiny", limits())
    engine = local.engine
    assert engine is not None and engine.active == 1
    await stream.aclose()  # what the surface does when the client goes away
    await wait_for(lambda: engine.active == 0)
    assert engine.active == 0
