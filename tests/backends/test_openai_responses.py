"""The `openai` and `openai_compatible` backends given a Responses API call, against the fake OpenAI
over real loopback HTTP: `openai` forwards the body to `/responses` and relays the answer untouched
(usage read from the response object, or from the stream's final event); `openai_compatible` translates
it to chat completions and answers in the canonical form. And the relay's view of a stream's events."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.backends.streaming import ResponsesPassThrough
from gateway.backends.upstream import (
    AttemptLimits,
    EventStream,
    PassThroughReply,
    PassThroughStream,
    UpstreamCall,
)
from gateway.protocol.canonical import ChatResponse, StreamEnd, TextDelta, Usage
from gateway.protocol.responses import parse_responses_request
from gateway.protocol.sse import SSEEvent
from gateway.runtime.live import LiveRuntime
from gateway.testing import FakeOpenAI


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def backend(fake: FakeOpenAI, tmp_path: Path) -> AsyncIterator[Callable[[str], Any]]:
    lives: list[LiveRuntime] = []

    async def build(kind: str) -> Any:
        path = tmp_path / f"gateway-{len(lives)}.yaml"
        path.write_text(
            f'backends:\n  b: {{type: {kind}, base_url: "{fake.base_url}", api_key: "${{K}}"}}\n'
            "models:\n  m: {chain: [{backend: b, model: gpt-4o}]}\nreload: {watch: false}\n"
        )
        live = LiveRuntime(path, env={"K": "k"})
        lives.append(live)
        runtime = await live.start()
        return runtime.routes["m"].chain[0].backend

    yield build
    for live in lives:
        await live.close()


def call(*, stream: bool = False, **members: Any) -> UpstreamCall:
    body = {"model": "m", "input": "Tell me about the sea", "stream": stream, **members}
    return UpstreamCall("chat", "responses", body, parse_responses_request(body), stream, "req_t", "m")


def limits() -> AttemptLimits:
    return AttemptLimits(connect=5, first_byte=10, deadline=time.monotonic() + 30)


async def test_openai_forwards_the_body_to_responses(backend: Callable[[str], Any], fake: FakeOpenAI) -> None:
    reply = await (await backend("openai")).send(call(store=True, metadata={"k": "v"}), "gpt-4o", limits())
    assert isinstance(reply, PassThroughReply)
    answer = orjson.loads(reply.body)
    assert answer["object"] == "response" and answer["model"] == "gpt-4o"
    assert fake.last_body is not None and fake.last_body["store"] is True
    assert fake.stats.requests.get("/v1/responses") == 1
    usage = answer["usage"]
    assert reply.usage == Usage(usage["input_tokens"], usage["output_tokens"])


async def test_openai_relays_the_stream_and_reads_its_usage(backend: Callable[[str], Any]) -> None:
    stream = await (await backend("openai")).send(call(stream=True), "gpt-4o", limits())
    assert isinstance(stream, PassThroughStream)
    chunks = [stream.first]
    try:
        chunks += [chunk async for chunk in stream.rest]
    finally:
        await stream.aclose()
    raw = b"".join(chunks)
    assert raw.startswith(b"event: response.created\n")
    assert b"event: response.completed\n" in raw
    assert stream.usage is not None and stream.usage.completion_tokens == 16


async def test_openai_compatible_translates_to_chat(backend: Callable[[str], Any], fake: FakeOpenAI) -> None:
    compatible = await backend("openai_compatible")
    reply = await compatible.send(call(instructions="Be brief."), "gpt-4o", limits())
    assert isinstance(reply, ChatResponse) and reply.text
    assert fake.last_body is not None
    assert fake.last_body["messages"][0] == {"role": "system", "content": "Be brief."}
    stream = await compatible.send(call(stream=True), "gpt-4o", limits())
    assert isinstance(stream, EventStream)
    events = list(stream.first)
    try:
        events += [event async for event in stream.rest]
    finally:
        await stream.aclose()
    assert "".join(e.text for e in events if type(e) is TextDelta) and type(events[-1]) is StreamEnd


def test_the_relay_ends_at_the_final_event_with_its_usage() -> None:
    relay = ResponsesPassThrough()
    delta = b'{"type":"response.output_text.delta","delta":"x","sequence_number":3}'
    assert relay.feed(SSEEvent(b"raw", b"response.output_text.delta", delta)) == b"raw"
    assert not relay.done
    usage = {"input_tokens": 9, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 2}
    final = orjson.dumps({"type": "response.completed", "response": {"usage": usage}})
    relay.feed(SSEEvent(b"raw", None, final))  # no event line: the data's type names it
    assert relay.done and relay.usage == Usage(9, 2, 4)
