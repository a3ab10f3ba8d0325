"""`gateway.backends.streaming` in process: the pass-through relays on single events (no network), then
both stream forms (`open_pass_through`, `open_event_stream`) reading real HTTP bodies over loopback from a
scripted upstream whose every step the test controls (bytes, a gate it waits on, a cut connection), and
from the fake OpenAI and Anthropic servers: the normal end with usage, in-stream errors, a body that ends
or breaks off early, no first event within the first-byte limit, and the connection released on close,
on cancel and on failure."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from gateway.backends.streaming import (
    AnthropicPassThrough,
    OpenAIPassThrough,
    PassThroughRelay,
    ResponsesPassThrough,
    open_event_stream,
    open_pass_through,
)
from gateway.backends.upstream import AttemptLimits, EventStream, PassThroughStream, UpstreamFailure
from gateway.protocol.anthropic_stream import AnthropicStreamDecoder
from gateway.protocol.canonical import (
    StreamEnd,
    StreamError,
    StreamEvent,
    StreamStart,
    TextDelta,
    Usage,
    UsageEvent,
)
from gateway.protocol.openai_stream import OpenAIStreamDecoder
from gateway.protocol.sse import parse_block
from gateway.testing import Behaviour, FakeAnthropic, FakeOpenAI
from tests.backends.loopback import serving

# ---------------------------------------------------------------- upstream events

_HEAD = b'data: {"id":"chatcmpl-1","model":"gpt-4o","object":"chat.completion.chunk","choices":'
ROLE = (
    _HEAD + b'[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}\n\n'
)
HI = _HEAD + b'[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"usage":null}\n\n'
FINISH = _HEAD + b'[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}\n\n'
USAGE_ONLY = (
    _HEAD + b'[],"usage":{"prompt_tokens":20,"completion_tokens":1,'
    b'"prompt_tokens_details":{"cached_tokens":5}}}\n\n'
)
OPENAI_USAGE = Usage(20, 1, cached_tokens=5)
DONE = b"data: [DONE]\n\n"
OPENAI_ERROR = b'data: {"error":{"message":"the model fell over","type":"server_error"}}\n\n'
PING = b": keep-alive\n\n"
NOT_JSON = b"data: not json\n\n"


def anthropic_event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


MESSAGE_START = anthropic_event(
    "message_start",
    {
        "type": "message_start",
        "message": {"id": "msg_1", "model": "claude-x", "usage": {"input_tokens": 12, "output_tokens": 1}},
    },
)
BLOCK_START = anthropic_event(
    "content_block_start",
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
)
BLOCK_DELTA = anthropic_event(
    "content_block_delta",
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
)
BLOCK_STOP = anthropic_event("content_block_stop", {"type": "content_block_stop", "index": 0})
MESSAGE_DELTA = anthropic_event(
    "message_delta",
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}},
)
MESSAGE_STOP = anthropic_event("message_stop", {"type": "message_stop"})
#: A whole Anthropic message, start to stop.
ANTHROPIC_MESSAGE = (MESSAGE_START, BLOCK_START, BLOCK_DELTA, BLOCK_STOP, MESSAGE_DELTA, MESSAGE_STOP)
ANTHROPIC_ERROR = anthropic_event(
    "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
)
ANTHROPIC_USAGE = Usage(12, 7)


# ---------------------------------------------------------------- the relays, one event at a time


def test_openai_relay_forwards_chunks_and_ends_at_done() -> None:
    relay = OpenAIPassThrough(client_wants_usage=True)
    assert relay.feed(parse_block(ROLE)) == ROLE
    # A chunk with no usage in it is not parsed, only forwarded: the client judges its own protocol.
    assert relay.feed(parse_block(NOT_JSON)) == NOT_JSON
    assert (relay.done, relay.usage) == (False, None)
    with pytest.raises(UpstreamFailure) as failure:
        relay.finish()
    assert failure.value.kind == "http_5xx" and "end marker" in failure.value.detail
    assert relay.feed(parse_block(DONE)) == DONE
    assert relay.done
    relay.finish()  # past the end marker: no failure


@pytest.mark.parametrize("wants", [True, False])
def test_openai_relay_reads_the_usage_chunk_and_drops_it_unless_asked(wants: bool) -> None:
    relay = OpenAIPassThrough(client_wants_usage=wants)
    assert relay.feed(parse_block(USAGE_ONLY)) == (USAGE_ONLY if wants else b"")
    assert relay.usage == OPENAI_USAGE
    assert not relay.done


@pytest.mark.parametrize("wants", [True, False])
def test_openai_relay_reads_usage_written_with_spaces(wants: bool) -> None:
    """JSON as Python's `json.dumps` writes it (`"usage": {`), as some OpenAI-compatible servers send."""
    usage = {"prompt_tokens": 20, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 5}}
    relay = OpenAIPassThrough(client_wants_usage=wants)
    spaced = b"data: " + json.dumps({"id": "c", "choices": [], "usage": usage}).encode() + b"\n\n"
    assert relay.feed(parse_block(spaced)) == (spaced if wants else b"")
    assert relay.usage == OPENAI_USAGE
    quiet = b"data: " + json.dumps({"id": "c", "choices": [{"delta": {}}], "usage": None}).encode() + b"\n\n"
    assert relay.feed(parse_block(quiet)) == quiet
    assert relay.usage == OPENAI_USAGE  # a later `"usage": null` does not erase it


def test_openai_relay_keeps_a_chunk_with_choices_and_usage() -> None:
    """Only the usage-only chunk (`choices: []`) is the gateway's own addition; a chunk that also carries
    an answer goes out whatever the client asked."""
    chunk = (
        _HEAD
        + b'[{"index":0,"delta":{"content":"x"}}],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'
    )
    relay = OpenAIPassThrough(client_wants_usage=False)
    assert relay.feed(parse_block(chunk)) == chunk
    assert relay.usage == Usage(3, 2)


def test_openai_relay_ends_at_the_backends_error_chunk() -> None:
    relay = OpenAIPassThrough(client_wants_usage=False)
    assert relay.feed(parse_block(OPENAI_ERROR)) == OPENAI_ERROR
    assert relay.done and relay.usage is None


def test_anthropic_relay_reads_usage_from_start_and_delta_and_ends_at_stop() -> None:
    relay = AnthropicPassThrough()
    assert relay.feed(parse_block(MESSAGE_START)) == MESSAGE_START
    assert relay.usage == Usage(12, 1)
    for event in (BLOCK_START, BLOCK_DELTA, BLOCK_STOP):
        assert relay.feed(parse_block(event)) == event
    assert relay.feed(parse_block(MESSAGE_DELTA)) == MESSAGE_DELTA
    assert relay.usage == ANTHROPIC_USAGE  # the input count of the start kept, the output count updated
    assert not relay.done
    assert relay.feed(parse_block(MESSAGE_STOP)) == MESSAGE_STOP
    assert relay.done


def test_anthropic_relay_ends_at_an_error_event() -> None:
    relay = AnthropicPassThrough()
    assert relay.feed(parse_block(ANTHROPIC_ERROR)) == ANTHROPIC_ERROR
    assert relay.done


def test_anthropic_relay_takes_a_start_without_a_message_as_no_usage() -> None:
    relay = AnthropicPassThrough()
    relay.feed(parse_block(anthropic_event("message_start", {"type": "message_start", "message": None})))
    assert relay.usage is None and not relay.done


def test_a_relay_refuses_an_event_that_is_not_a_json_object() -> None:
    with pytest.raises(orjson.JSONDecodeError):
        AnthropicPassThrough().feed(parse_block(b"event: message_start\ndata: [1]\n\n"))


def test_the_base_relay_forwards_events_as_they_came_and_is_done_only_when_told() -> None:
    relay = PassThroughRelay()
    assert relay.feed(parse_block(HI)) == HI
    with pytest.raises(UpstreamFailure):
        relay.finish()
    relay.done = True
    relay.finish()


RESPONSE_USAGE = {"input_tokens": 9, "output_tokens": 4, "input_tokens_details": {"cached_tokens": 2}}


@pytest.mark.parametrize("end", ["response.completed", "response.incomplete", "response.failed"])
@pytest.mark.parametrize("named", [True, False], ids=["named", "unnamed"])
def test_responses_relay_ends_at_a_final_event_with_its_usage(end: str, named: bool) -> None:
    def block(kind: str, data: dict[str, Any]) -> bytes:
        head = b"event: " + kind.encode() + b"\n" if named else b""
        return head + b"data: " + orjson.dumps({"type": kind, **data}) + b"\n\n"

    relay = ResponsesPassThrough()
    delta = block("response.output_text.delta", {"delta": "Hi"})
    assert relay.feed(parse_block(delta)) == delta
    assert not relay.done and relay.usage is None
    final = block(end, {"response": {"id": "resp_1", "usage": RESPONSE_USAGE}})
    assert relay.feed(parse_block(final)) == final
    assert relay.done
    assert relay.usage == Usage(9, 4, 2)


def test_responses_relay_ends_at_an_error_without_usage() -> None:
    relay = ResponsesPassThrough()
    error = (
        b'event: error\ndata: {"type":"error","message":"bad","response":{"usage":{"input_tokens":1}}}\n\n'
    )
    assert relay.feed(parse_block(error)) == error
    assert relay.done and relay.usage is None


# ---------------------------------------------------------------- a scripted upstream over loopback

#: A step of `ScriptedUpstream.steps`: cut the connection here, without ending the body.
DROP = "drop"


class ScriptedUpstream:
    """Answers every POST with a 200 event stream made of `steps`, in order: bytes are written, an
    `asyncio.Event` is waited for (the test sets it, or never does), DROP cuts the connection; after the
    last step the body ends cleanly. `waiting` is set once the server waits at a gate; `left` once the
    client went away while it did (the handler is cancelled then)."""

    def __init__(self) -> None:
        self.steps: list[bytes | asyncio.Event | str] = []
        self.waiting = asyncio.Event()
        self.left = asyncio.Event()
        self.url = ""

    async def answer(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        try:
            for step in self.steps:
                if isinstance(step, asyncio.Event):
                    self.waiting.set()
                    await step.wait()
                elif step == DROP:
                    assert request.transport is not None
                    request.transport.abort()
                    return response
                else:
                    assert isinstance(step, bytes)
                    await response.write(step)
        except asyncio.CancelledError:
            self.left.set()
            raise
        await response.write_eof()
        return response


@pytest.fixture
async def upstream() -> AsyncIterator[ScriptedUpstream]:
    scripted = ScriptedUpstream()
    async with serving(scripted.answer) as base:
        scripted.url = f"{base}/v1/stream"
        yield scripted


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def limits(first_byte: float = 10, deadline: float = 30) -> AttemptLimits:
    return AttemptLimits(connect=5, first_byte=first_byte, deadline=time.monotonic() + deadline)


async def rest_of(stream: PassThroughStream | EventStream, into: list[Any] | None = None) -> list[Any]:
    """The items of `stream.rest` (appended to `into` as they come, so a test sees those before a
    failure); the stream is closed either way. Bounded, so a stream that never ends fails the test."""
    items = [] if into is None else into
    try:
        async with asyncio.timeout(10):
            async for item in stream.rest:
                items.append(item)
    finally:
        await stream.aclose()
    return items


async def pass_through(
    session: aiohttp.ClientSession, url: str, relay: PassThroughRelay, attempt: AttemptLimits | None = None
) -> PassThroughStream:
    response = await session.post(url, data=b"{}")
    return await open_pass_through(response, relay, attempt or limits())


async def event_stream(
    session: aiohttp.ClientSession,
    url: str,
    decoder: Any,
    attempt: AttemptLimits | None = None,
    **options: Any,
) -> EventStream:
    response = await session.post(url, data=b"{}")
    return await open_event_stream(response, decoder, attempt or limits(), **options)


def never() -> asyncio.Event:
    """A gate the test never opens: the upstream hangs there."""
    return asyncio.Event()


# ---------------------------------------------------------------- pass-through streams


async def test_pass_through_forwards_each_event_up_to_the_end_marker(
    upstream: ScriptedUpstream, session: aiohttp.ClientSession
) -> None:
    """Keep-alives before the first event go out with it; nothing after `[DONE]` goes out; the usage is
    read on the way and is on the stream once it has been read to its end."""
    upstream.steps = [PING, ROLE, HI, PING, FINISH, USAGE_ONLY, DONE, b'data: {"after":"done"}\n\n']
    stream = await pass_through(session, upstream.url, OpenAIPassThrough(client_wants_usage=True))
    assert stream.first == PING + ROLE
    assert stream.usage is None
    assert await rest_of(stream) == [HI, PING, FINISH, USAGE_ONLY, DONE]
    assert stream.usage == OPENAI_USAGE


async def test_pass_through_drops_the_usage_chunk_the_client_did_not_ask_for(
    upstream: ScriptedUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.steps = [ROLE, HI, FINISH, USAGE_ONLY, DONE]
    stream = await pass_through(session, upstream.url, OpenAIPassThrough(client_wants_usage=False))
    assert stream.first == ROLE
    assert await rest_of(stream) == [HI, FINISH, DONE]
    assert stream.usage == OPENAI_USAGE


async def test_a_dropped_first_event_does_not_count_as_the_first(
    upstream: ScriptedUpstream, session: aiohttp.ClientSession
) -> None:
    """The first event forwarded is the first one the client gets; a usage-only chunk dropped on the way
    is read but not sent, and the wait goes on to the next."""
    upstream.steps = [USAGE_ONLY, DONE, b'data: {"after":"done"}\n\n']
    stream = await pass_through(session, upstream.url, OpenAIPassThrough(client_wants_usage=False))
    assert stream.first == DONE
    assert stream.usage == OPENAI_USAGE
    assert await rest_of(stream) == []


@pytest.mark.parametrize(
    ("relay", "first", "later"),
    [
        (OpenAIPassThrough(client_wants_usage=True), OPENAI_ERROR, HI),
        (AnthropicPassThrough(), ANTHROPIC_ERROR, MESSAGE_DELTA),
    ],
    ids=["openai", "anthropic"],
)
async def test_an_error_event_first_is_the_whole_stream(
    upstream: ScriptedUpstream,
    session: aiohttp.ClientSession,
    relay: PassThroughRelay,
    first: bytes,
    later: bytes,
) -> None:
    """The backend's own error event ends the stream: relayed, and nothing after it."""
    upstream.steps = [first, later, never()]
    stream = await pass_through(session, upstream.url, relay)
    assert stream.first == first
    assert await rest_of(stream) == []


async def test_an_error_event_mid_stream_ends_the_relay(
    upstream: ScriptedUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.steps = [MESSAGE_START, BLOCK_START, ANTHROPIC_ERROR, never()]
    stream = await pass_through(session, upstream.url, AnthropicPassThrough())
    assert stream.first == MESSAGE_START
    assert stream.usage == Usage(12, 1)
    assert await rest_of(stream) == [BLOCK_START, ANTHROPIC_ERROR]


async def test_pass_through_anthropic_reads_usage_to_the_end(
    upstream: ScriptedUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.steps = [*ANTHROPIC_MESSAGE, never()]
    stream = await pass_through(session, upstream.url, AnthropicPassThrough())
    assert await rest_of(stream) == [BLOCK_START, BLOCK_DELTA, BLOCK_STOP, MESSAGE_DELTA, MESSAGE_STOP]
    assert stream.usage == ANTHROPIC_USAGE


async def test_a_body_ending_before_the_end_marker_fails_mid_stream(
    upstream: ScriptedUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.steps = [ROLE, HI, FINISH]
    stream = await pass_through(session, upstream.url, OpenAIPassThrough(client_wants_usage=True))
    got: list[bytes] = []
    with pytest.raises(UpstreamFailure) as failure:
        await rest_of(stream, got)
    assert got == [HI, FINISH]  # everything that came went out first
    assert failure.value.kind == "http_5xx" and "end marker" in failure.value.detail


@pytest.mark.parametrize("body", [[], [PING]], ids=["empty", "keep-alive-only"])
async def test_a_body_without_any_event_fails_before_the_first(
    upstream: ScriptedUpstream, session: aiohttp.ClientSession, body: list[bytes]
) -> None:
    upstream.steps = list(body)
    with pytest.raises(UpstreamFailure) as failure:
        await pass_through(session, upstream.url, OpenAIPassThrough(client_wants_usage=True))
    assert failure.value.kind == "http_5xx"


async def test_a_connection_dropped_mid_stream_fails_mid_stream(
    upstream: ScriptedUpstream, session: aiohttp.ClientSession
) -> None:
    gate = asyncio.Event()
    upstream.steps = [ROLE, HI, gate, DROP]
    stream = await pass_through(session, upstream.url, OpenAIPassThrough(client_wants_usage=True))
    gate.set()
    got: list[bytes] = []
    with pytest.raises(UpstreamFailure) as failure:
        await rest_of(stream, got)
    assert got == [HI]
    assert failure.value.kind == "http_5xx" and "dropped mid-stream" in failure.value.detail


async def test_a_malformed_first_event_fails_before_the_first(
    upstream: ScriptedUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.steps = [b'event: message_start\ndata: {"type":"message_st\n\n']
    with pytest.raises(UpstreamFailure) as failure:
        await pass_through(session, upstream.url, AnthropicPassThrough())
    assert failure.value.kind == "http_5xx" and "malformed stream" in failure.value.detail


async def test_a_malformed_event_mid_stream_fails_mid_stream(
    upstream: ScriptedUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.steps = [MESSAGE_START, b'event: message_delta\ndata: {"usage":{"output_tok\n\n', MESSAGE_STOP]
    stream = await pass_through(session, upstream.url, AnthropicPassThrough())
    with pytest.raises(UpstreamFailure) as failure:
        await rest_of(stream)
    assert failure.value.kind == "http_5xx" and "malformed stream" in failure.value.detail
    assert stream.usage == Usage(12, 1)  # what was read before the break stays


# ---------------------------------------------------------------- canonical streams


async def test_event_stream_decodes_up_to_the_end_without_waiting_for_the_body_to_close(
    upstream: ScriptedUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.steps = [PING, ROLE, HI, PING, FINISH, USAGE_ONLY, DONE, never()]
    stream = await event_stream(session, upstream.url, OpenAIStreamDecoder())
    assert stream.first == (StreamStart("chatcmpl-1", "gpt-4o"),)
    assert stream.usage is None
    assert await rest_of(stream) == [TextDelta("Hi"), UsageEvent(OPENAI_USAGE), StreamEnd("stop")]
    assert stream.usage == OPENAI_USAGE


async def test_event_stream_has_the_usage_of_its_first_events(
    upstream: ScriptedUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.steps = [*ANTHROPIC_MESSAGE, never()]
    stream = await event_stream(session, upstream.url, AnthropicStreamDecoder())
    assert stream.first == (StreamStart("msg_1", "claude-x"), UsageEvent(Usage(12, 1)))
    assert stream.usage == Usage(12, 1)
    events = await rest_of(stream)
    assert TextDelta("Hi") in events and events[-1] == StreamEnd("stop")
    assert stream.usage == ANTHROPIC_USAGE


@pytest.mark.parametrize(
    ("decoder", "steps", "error"),
    [
        (OpenAIStreamDecoder, [OPENAI_ERROR], StreamError("the model fell over", "server_error")),
        (AnthropicStreamDecoder, [ANTHROPIC_ERROR], StreamError("Overloaded", "overloaded_error")),
    ],
    ids=["openai", "anthropic"],
)
async def test_an_in_stream_error_first_is_the_whole_event_stream(
    upstream: ScriptedUpstream,
    session: aiohttp.ClientSession,
    decoder: Any,
    steps: list[bytes],
    error: StreamError,
) -> None:
    upstream.steps = [*steps, never()]
    stream = await event_stream(session, upstream.url, decoder())
    assert stream.first == (error,)
    assert await rest_of(stream) == []


async def test_an_in_stream_error_ends_the_event_stream(
    upstream: ScriptedUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.steps = [ROLE, HI, OPENAI_ERROR, never()]
    stream = await event_stream(session, upstream.url, OpenAIStreamDecoder())
    assert await rest_of(stream) == [TextDelta("Hi"), StreamError("the model fell over", "server_error")]


async def test_a_body_ending_after_a_finish_reason_still_ends_the_event_stream(
    upstream: ScriptedUpstream, session: aiohttp.ClientSession
) -> None:
    """No `[DONE]`, but the finish reason came: the decoder's own end closes the stream."""
    upstream.steps = [ROLE, HI, FINISH]
    stream = await event_stream(session, upstream.url, OpenAIStreamDecoder())
    assert await rest_of(stream) == [TextDelta("Hi"), StreamEnd("stop")]


class UsageAtTheEnd:
    """A decoder that reports its usage only when the body ends (as a provider that counts at the end)."""

    def feed_data(self, data: bytes, event: bytes | None = None) -> list[StreamEvent]:
        return [StreamStart("s", "m")] if data == b"start" else [TextDelta(data.decode())]

    def finish(self) -> list[StreamEvent]:
        return [UsageEvent(Usage(3, 4)), StreamEnd("stop")]


async def test_usage_reported_at_the_body_end_is_the_streams(
    upstream: ScriptedUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.steps = [b"data: start\n\n", b"data: a\n\n"]
    stream = await event_stream(session, upstream.url, UsageAtTheEnd())
    assert await rest_of(stream) == [TextDelta("a"), UsageEvent(Usage(3, 4)), StreamEnd("stop")]
    assert stream.usage == Usage(3, 4)


async def test_a_body_ending_without_an_end_fails_the_event_stream(
    upstream: ScriptedUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.steps = [ROLE, HI]
    stream = await event_stream(session, upstream.url, OpenAIStreamDecoder())
    got: list[StreamEvent] = []
    with pytest.raises(UpstreamFailure) as failure:
        await rest_of(stream, got)
    assert got == [TextDelta("Hi")]
    assert failure.value.kind == "http_5xx" and "malformed stream" in failure.value.detail


@pytest.mark.parametrize("body", [[], [PING]], ids=["empty", "keep-alive-only"])
async def test_an_event_stream_without_any_event_fails_before_the_first(
    upstream: ScriptedUpstream, session: aiohttp.ClientSession, body: list[bytes]
) -> None:
    upstream.steps = list(body)
    with pytest.raises(UpstreamFailure) as failure:
        await event_stream(session, upstream.url, OpenAIStreamDecoder())
    assert failure.value.kind == "http_5xx" and "malformed stream" in failure.value.detail


async def test_a_malformed_chunk_fails_the_event_stream(
    upstream: ScriptedUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.steps = [ROLE, NOT_JSON, DONE]
    stream = await event_stream(session, upstream.url, OpenAIStreamDecoder())
    with pytest.raises(UpstreamFailure) as failure:
        await rest_of(stream)
    assert failure.value.kind == "http_5xx" and "malformed stream" in failure.value.detail
    upstream.steps = [NOT_JSON, DONE]
    with pytest.raises(UpstreamFailure, match="malformed stream"):
        await event_stream(session, upstream.url, OpenAIStreamDecoder())


async def test_a_connection_dropped_mid_stream_fails_the_event_stream(
    upstream: ScriptedUpstream, session: aiohttp.ClientSession
) -> None:
    gate = asyncio.Event()
    upstream.steps = [ROLE, gate, DROP]
    stream = await event_stream(session, upstream.url, OpenAIStreamDecoder())
    gate.set()
    with pytest.raises(UpstreamFailure) as failure:
        await rest_of(stream)
    assert failure.value.kind == "http_5xx" and "dropped mid-stream" in failure.value.detail


async def line_frames(chunks: AsyncIterator[bytes]) -> AsyncIterator[SimpleNamespace]:
    """A framing of one JSON document per line (no SSE field names)."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield SimpleNamespace(event=None, data=line or None)


async def test_event_stream_reads_frames_of_the_framing_it_is_given(
    upstream: ScriptedUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.steps = [line[len(b"data: ") :].rstrip(b"\n") + b"\n" for line in (ROLE, HI, FINISH, DONE)]
    stream = await event_stream(session, upstream.url, OpenAIStreamDecoder(), framing=line_frames)
    assert stream.first == (StreamStart("chatcmpl-1", "gpt-4o"),)
    assert await rest_of(stream) == [TextDelta("Hi"), StreamEnd("stop")]


# ---------------------------------------------------------------- the first-byte limit, close and cancel

FORMS = ["pass-through", "canonical"]


async def open_form(form: str, session: aiohttp.ClientSession, url: str, attempt: AttemptLimits) -> Any:
    if form == "pass-through":
        return await pass_through(session, url, OpenAIPassThrough(client_wants_usage=True), attempt)
    return await event_stream(session, url, OpenAIStreamDecoder(), attempt)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("before", [[], [PING, PING]], ids=["nothing", "keep-alives"])
async def test_no_first_event_within_the_first_byte_limit_is_a_timeout_that_releases_the_connection(
    upstream: ScriptedUpstream, session: aiohttp.ClientSession, form: str, before: list[bytes]
) -> None:
    """The headers came, the first event did not (keep-alives do not count): a timeout, so failover can
    still move on, and the upstream's connection is closed."""
    upstream.steps = [*before, never(), ROLE, DONE]
    with pytest.raises(UpstreamFailure) as failure:
        await open_form(form, session, upstream.url, limits(first_byte=0.2))
    assert failure.value.kind == "timeout" and "first-byte limit" in failure.value.detail
    await asyncio.wait_for(upstream.left.wait(), 10)


@pytest.mark.parametrize("form", FORMS)
async def test_the_request_deadline_shortens_the_first_byte_limit(
    upstream: ScriptedUpstream, session: aiohttp.ClientSession, form: str
) -> None:
    """A first-byte limit longer than what is left of the request's deadline: the deadline is the wait."""
    upstream.steps = [never()]
    async with asyncio.timeout(60):  # a wait of the first-byte limit (600 s) fails the test here
        with pytest.raises(UpstreamFailure) as failure:
            await open_form(form, session, upstream.url, limits(first_byte=600, deadline=0.3))
    assert failure.value.kind == "timeout"
    waited = re.search(r"within ([0-9.e-]+) s", failure.value.detail)
    assert waited is not None and float(waited.group(1)) <= 0.3


@pytest.mark.parametrize("form", FORMS)
async def test_aclose_mid_stream_closes_the_upstream_connection(
    upstream: ScriptedUpstream, session: aiohttp.ClientSession, form: str
) -> None:
    """The client went away mid-stream: the surface closes the stream, the upstream sees its client go."""
    upstream.steps = [ROLE, HI, never(), FINISH, DONE]
    stream = await open_form(form, session, upstream.url, limits())
    await upstream.waiting.wait()
    await stream.aclose()
    await asyncio.wait_for(upstream.left.wait(), 10)


@pytest.mark.parametrize("form", FORMS)
async def test_a_cancel_while_waiting_for_the_first_event_releases_the_connection(
    upstream: ScriptedUpstream, session: aiohttp.ClientSession, form: str
) -> None:
    """Cancelled (the client left during failover's wait): the cancel goes on as a cancel, not a failure
    to fail over on, and the upstream's connection is closed."""
    upstream.steps = [PING, never(), ROLE, DONE]
    waiting = asyncio.create_task(open_form(form, session, upstream.url, limits()))
    await upstream.waiting.wait()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.wait_for(upstream.left.wait(), 10)


async def test_a_stream_read_to_its_end_gives_its_connection_back_to_the_pool(
    upstream: ScriptedUpstream,
) -> None:
    """With one connection in the pool, a second stream opens only if the first gave it back."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as one:
        for _ in range(2):
            upstream.steps = [ROLE, FINISH, DONE]
            async with asyncio.timeout(10):
                stream = await pass_through(one, upstream.url, OpenAIPassThrough(client_wants_usage=True))
            assert await rest_of(stream) == [FINISH, DONE]


# ---------------------------------------------------------------- against the fake providers


def fake_body(fake: FakeOpenAI | FakeAnthropic, **extra: Any) -> tuple[str, bytes]:
    messages = [{"role": "user", "content": "hello there"}]
    if isinstance(fake, FakeOpenAI):
        body = {"model": "m", "messages": messages, "stream": True, "stream_options": {"include_usage": True}}
        return fake.base_url + "/chat/completions", orjson.dumps({**body, **extra})
    body = {"model": "m", "max_tokens": 50, "messages": messages, "stream": True}
    return fake.base_url + "/v1/messages", orjson.dumps({**body, **extra})


def fake_reader(fake: FakeOpenAI | FakeAnthropic, form: str) -> Any:
    openai = isinstance(fake, FakeOpenAI)
    if form == "pass-through":
        return OpenAIPassThrough(client_wants_usage=True) if openai else AnthropicPassThrough()
    return OpenAIStreamDecoder() if openai else AnthropicStreamDecoder()


async def open_fake(
    fake: FakeOpenAI | FakeAnthropic, session: aiohttp.ClientSession, form: str
) -> PassThroughStream | EventStream:
    url, body = fake_body(fake)
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
    response = await session.post(url, data=body, headers=headers)
    assert response.status == 200
    reader = fake_reader(fake, form)
    if form == "pass-through":
        return await open_pass_through(response, reader, limits())
    return await open_event_stream(response, reader, limits())


@pytest.fixture(params=["openai", "anthropic"])
async def fake(request: pytest.FixtureRequest) -> AsyncIterator[FakeOpenAI | FakeAnthropic]:
    server = FakeOpenAI() if request.param == "openai" else FakeAnthropic()
    async with server:
        yield server


@pytest.mark.parametrize("form", FORMS)
async def test_a_fake_providers_stream_ends_with_its_usage(
    fake: FakeOpenAI | FakeAnthropic, session: aiohttp.ClientSession, form: str
) -> None:
    fake.behaviour = Behaviour(reply_tokens=5)
    stream = await open_fake(fake, session, form)
    items = await rest_of(stream)
    assert stream.usage is not None and stream.usage.completion_tokens == 5
    assert stream.usage.prompt_tokens > 0
    if form == "canonical":
        text = "".join(event.text for event in (*stream.first, *items) if type(event) is TextDelta)
        assert len(text.split()) == 5
        assert type(items[-1]) is StreamEnd


@pytest.mark.parametrize("form", FORMS)
async def test_a_fake_provider_dying_mid_stream_fails_mid_stream(
    fake: FakeOpenAI | FakeAnthropic, session: aiohttp.ClientSession, form: str
) -> None:
    fake.behaviour = Behaviour(reply_tokens=8, drop_after_chunks=4)
    stream = await open_fake(fake, session, form)
    with pytest.raises(UpstreamFailure) as failure:
        await rest_of(stream)
    assert failure.value.kind == "http_5xx"


async def test_a_fake_providers_malformed_stream_fails_the_event_stream(
    fake: FakeOpenAI | FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    fake.behaviour = Behaviour(malformed=True)
    with pytest.raises(UpstreamFailure, match="malformed stream"):
        stream = await open_fake(fake, session, "canonical")
        await rest_of(stream)


@pytest.mark.parametrize("form", FORMS)
async def test_closing_a_fake_providers_slow_stream_ends_its_handler(
    fake: FakeOpenAI | FakeAnthropic, session: aiohttp.ClientSession, form: str
) -> None:
    fake.behaviour = Behaviour(reply_tokens=500, token_delay_ms=20)
    stream = await open_fake(fake, session, form)
    assert fake.stats.in_flight == 1
    await stream.aclose()
    async with asyncio.timeout(10):
        while fake.stats.in_flight:
            await asyncio.sleep(0.01)
