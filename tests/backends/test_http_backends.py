"""The HTTP backends below the end-to-end level, over real HTTP: which result form each answers in
(pass-through bytes when the client speaks the backend's protocol, the canonical form otherwise), the
pass-through stream forwarded byte for byte, usage read on every path, and the stream guarantees (the
first event within the first-byte limit, a stream cut short or malformed is a failure mid-stream,
`aclose()` releases the upstream connection)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.backends.base import Backend
from gateway.backends.upstream import (
    AttemptLimits,
    EventStream,
    PassThroughReply,
    PassThroughStream,
    UpstreamCall,
    UpstreamFailure,
)
from gateway.protocol import anthropic as anthropic_protocol
from gateway.protocol import openai as openai_protocol
from gateway.protocol.canonical import ChatResponse, StreamEnd, StreamStart, TextDelta, Usage
from gateway.runtime.live import LiveRuntime
from gateway.testing import Behaviour, FakeAnthropic, FakeOpenAI
from tests.conftest import wait_for

_HEAD = b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":'
OPENAI_STREAM = (
    b": OPENROUTER PROCESSING\n\n"
    + _HEAD
    + b'[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],'
    b'"usage":null}\n\n'
    + _HEAD
    + b'[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
    + _HEAD
    + b'[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}\n\n'
)
OPENAI_USAGE_CHUNK = (
    _HEAD + b'[],"usage":{"prompt_tokens":20,"completion_tokens":1,"total_tokens":21,'
    b'"prompt_tokens_details":{"cached_tokens":5,"audio_tokens":0}}}\n\n'
)
OPENAI_DONE = b"data: [DONE]\n\n"
OPENAI_USAGE = Usage(20, 1, cached_tokens=5)

ANTHROPIC_STREAM = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant",'
    b'"model":"claude-x","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,'
    b'"cache_creation_input_tokens":3,"cache_read_input_tokens":5,"output_tokens":1}}}\n\n'
    b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
    b'event: ping\ndata: {"type": "ping"}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}\n\n'
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    b"event: message_delta\n"
    b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
    b'"usage":{"output_tokens":7}}\n\n'
)
ANTHROPIC_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
ANTHROPIC_USAGE = Usage(20, 7, cached_tokens=5, cache_creation_tokens=3)

OPENAI_BODY = (
    b'{"id":"chatcmpl-2","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"Hi"},"logprobs":null,"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":20,"completion_tokens":1,"total_tokens":21,'
    b'"prompt_tokens_details":{"cached_tokens":5}}}'
)
ANTHROPIC_BODY = (
    b'{"id":"msg_2","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text",'
    b'"text":"Hi"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,'
    b'"cache_creation_input_tokens":3,"cache_read_input_tokens":5,"output_tokens":7}}'
)


class Recorded:
    """An upstream that answers every POST with fixed bytes: SSE when the request asks to stream."""

    def __init__(self) -> None:
        self.stream = b""
        self.body = b""
        self.wait_before_first_event = 0.0
        self.url = ""

    async def answer(self, request: web.Request) -> web.StreamResponse:
        if not (await request.json()).get("stream"):
            return web.Response(body=self.body, content_type="application/json")
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await asyncio.sleep(self.wait_before_first_event)
        await response.write(self.stream)
        await response.write_eof()
        return response


@pytest.fixture
async def recorded() -> AsyncIterator[Recorded]:
    upstream = Recorded()
    app = web.Application()
    app.router.add_post("/{tail:.*}", upstream.answer)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    upstream.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield upstream
    await runner.cleanup()


@pytest.fixture
async def backends(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """`await backend(type, base_url)`: the backend object the gateway builds from a config."""
    lives: list[LiveRuntime] = []

    async def build(kind: str, base_url: str) -> Backend:
        path = tmp_path / f"gateway-{len(lives)}.yaml"
        path.write_text(
            f'backends:\n  b: {{type: {kind}, base_url: "{base_url}", api_key: "${{B_KEY}}"}}\n'
            "models:\n  m: {chain: [{backend: b, model: up}]}\nreload: {watch: false}\n"
        )
        live = LiveRuntime(path, env={"B_KEY": "k"})
        lives.append(live)
        runtime = await live.start()
        return runtime.routes["m"].chain[0].backend

    yield build
    for live in lives:
        await live.close()


def call(client: str, *, stream: bool, include_usage: bool = False) -> UpstreamCall:
    messages = [{"role": "user", "content": "hello"}]
    if client == "openai":
        body: dict[str, Any] = {"model": "m", "messages": messages, "stream": stream}
        if include_usage:
            body["stream_options"] = {"include_usage": True}
        request = openai_protocol.parse_chat_request(body)
    else:
        body = {"model": "m", "max_tokens": 50, "messages": messages, "stream": stream}
        request = anthropic_protocol.parse_messages_request(body)
    return UpstreamCall("chat", client, body, request, stream, "req_test", "m")  # type: ignore[arg-type]


def limits(first_byte: float = 10) -> AttemptLimits:
    return AttemptLimits(connect=5, first_byte=first_byte, deadline=time.monotonic() + 30)


async def read_all(stream: PassThroughStream | EventStream) -> list[Any]:
    items = [stream.first]
    try:
        async for item in stream.rest:
            items.append(item)
    finally:
        await stream.aclose()
    return items


@pytest.mark.parametrize(
    ("kind", "client_wants_usage", "upstream", "forwarded", "usage"),
    [
        (
            "openai_compatible",
            True,
            OPENAI_STREAM + OPENAI_USAGE_CHUNK + OPENAI_DONE,
            OPENAI_STREAM + OPENAI_USAGE_CHUNK + OPENAI_DONE,
            OPENAI_USAGE,
        ),
        # The gateway always asks for usage; the client that did not gets no usage chunk.
        (
            "openai_compatible",
            False,
            OPENAI_STREAM + OPENAI_USAGE_CHUNK + OPENAI_DONE,
            OPENAI_STREAM + OPENAI_DONE,
            OPENAI_USAGE,
        ),
        (
            "anthropic",
            True,
            ANTHROPIC_STREAM + ANTHROPIC_STOP,
            ANTHROPIC_STREAM + ANTHROPIC_STOP,
            ANTHROPIC_USAGE,
        ),
    ],
    ids=["openai", "openai-usage-not-asked", "anthropic"],
)
async def test_pass_through_stream_is_forwarded_byte_for_byte(
    recorded: Recorded,
    backends: Callable[..., Any],
    kind: str,
    client_wants_usage: bool,
    upstream: bytes,
    forwarded: bytes,
    usage: Usage,
) -> None:
    recorded.stream = upstream
    backend = await backends(kind, recorded.url)
    client = "anthropic" if kind == "anthropic" else "openai"
    stream = await backend.send(call(client, stream=True, include_usage=client_wants_usage), "up", limits())
    assert type(stream) is PassThroughStream
    assert b"".join(await read_all(stream)) == forwarded
    assert stream.usage == usage


@pytest.mark.parametrize(
    ("kind", "body", "usage"),
    [("openai_compatible", OPENAI_BODY, OPENAI_USAGE), ("anthropic", ANTHROPIC_BODY, ANTHROPIC_USAGE)],
)
async def test_pass_through_reply_is_the_upstreams_body(
    recorded: Recorded, backends: Callable[..., Any], kind: str, body: bytes, usage: Usage
) -> None:
    recorded.body = body
    backend = await backends(kind, recorded.url)
    reply = await backend.send(
        call("anthropic" if kind == "anthropic" else "openai", stream=False), "up", limits()
    )
    assert reply == PassThroughReply(body, usage)


@pytest.mark.parametrize(
    ("kind", "client", "stream", "body", "usage"),
    [
        (
            "openai_compatible",
            "anthropic",
            OPENAI_STREAM + OPENAI_USAGE_CHUNK + OPENAI_DONE,
            OPENAI_BODY,
            OPENAI_USAGE,
        ),
        ("anthropic", "openai", ANTHROPIC_STREAM + ANTHROPIC_STOP, ANTHROPIC_BODY, ANTHROPIC_USAGE),
    ],
)
async def test_the_other_protocol_gets_the_canonical_form(
    recorded: Recorded,
    backends: Callable[..., Any],
    kind: str,
    client: str,
    stream: bytes,
    body: bytes,
    usage: Usage,
) -> None:
    recorded.stream, recorded.body = stream, body
    backend = await backends(kind, recorded.url)
    whole = await backend.send(call(client, stream=False), "up", limits())
    assert type(whole) is ChatResponse and whole.text == "Hi" and whole.usage == usage

    events = await backend.send(call(client, stream=True), "up", limits())
    assert type(events) is EventStream
    assert type(events.first[0]) is StreamStart
    [first, *rest] = await read_all(events)
    kinds = [type(e) for e in (*first, *rest)]
    assert kinds[0] is StreamStart and kinds[-1] is StreamEnd and TextDelta in kinds
    assert events.usage == usage


@pytest.mark.parametrize(
    ("kind", "client", "stream"),
    [
        ("openai_compatible", "openai", OPENAI_STREAM),
        ("openai_compatible", "anthropic", OPENAI_STREAM.rsplit(b"data: ", 1)[0]),  # cut before finish_reason
        ("anthropic", "anthropic", ANTHROPIC_STREAM),
        ("anthropic", "openai", ANTHROPIC_STREAM),
    ],
    ids=["openai-passthrough", "openai-translated", "anthropic-passthrough", "anthropic-translated"],
)
async def test_a_stream_cut_short_fails_mid_stream(
    recorded: Recorded, backends: Callable[..., Any], kind: str, client: str, stream: bytes
) -> None:
    """The upstream ends its body before the end marker: never a silent end."""
    recorded.stream = stream
    backend = await backends(kind, recorded.url)
    result = await backend.send(call(client, stream=True), "up", limits())
    with pytest.raises(UpstreamFailure) as failure:
        await read_all(result)
    assert failure.value.kind == "http_5xx"


@pytest.mark.parametrize(
    ("kind", "client"),
    [("anthropic", "anthropic"), ("anthropic", "openai")],
    ids=["passthrough", "translated"],
)
async def test_a_malformed_event_fails_mid_stream(
    recorded: Recorded, backends: Callable[..., Any], kind: str, client: str
) -> None:
    recorded.stream = (
        ANTHROPIC_STREAM.replace(b'"usage":{"output_tokens":7}}', b'"usage":{"output_tok') + ANTHROPIC_STOP
    )
    backend = await backends(kind, recorded.url)
    result = await backend.send(call(client, stream=True), "up", limits())
    with pytest.raises(UpstreamFailure, match="malformed stream"):
        await read_all(result)


@pytest.mark.parametrize(
    ("kind", "client"),
    [("openai_compatible", "openai"), ("openai_compatible", "anthropic"), ("anthropic", "anthropic")],
)
async def test_the_first_event_is_awaited_within_the_first_byte_limit(
    recorded: Recorded, backends: Callable[..., Any], kind: str, client: str
) -> None:
    """The headers came at once, the first event did not: a timeout, so failover can still move on."""
    recorded.stream = (
        OPENAI_STREAM + OPENAI_DONE if kind != "anthropic" else ANTHROPIC_STREAM + ANTHROPIC_STOP
    )
    recorded.wait_before_first_event = 5
    backend = await backends(kind, recorded.url)
    with pytest.raises(UpstreamFailure) as failure:
        await backend.send(call(client, stream=True), "up", limits(first_byte=0.2))
    assert failure.value.kind == "timeout" and "first-byte limit" in failure.value.detail


@pytest.mark.parametrize(
    ("fake", "kind", "client"),
    [
        (FakeOpenAI, "openai_compatible", "openai"),
        (FakeOpenAI, "openai_compatible", "anthropic"),
        (FakeAnthropic, "anthropic", "anthropic"),
        (FakeAnthropic, "anthropic", "openai"),
    ],
)
async def test_aclose_releases_the_upstream_connection(
    backends: Callable[..., Any], fake: type[FakeOpenAI | FakeAnthropic], kind: str, client: str
) -> None:
    async with fake(Behaviour(reply_tokens=500, token_delay_ms=20)) as upstream:
        backend = await backends(kind, upstream.base_url)
        stream = await backend.send(call(client, stream=True), "up", limits())
        assert upstream.stats.in_flight == 1
        await stream.aclose()
        # The fake's handler ends once the connection is gone.
        await wait_for(lambda: upstream.stats.in_flight == 0)
        assert upstream.stats.in_flight == 0
