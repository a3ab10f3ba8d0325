"""Reading an upstream stream (SSE, or another framing: AWS event-stream), for the two stream forms of
`gateway.backends.upstream`: pass-through (the client speaks the upstream's protocol: events go out as
they came, usage is read on the way) and canonical (the upstream's events decoded; the surface encodes
them for the client).

Either way `send` returns only once the first event has arrived (within the first-byte limit), and a
stream that is cut short or malformed raises UpstreamFailure mid-stream, never a silent end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Protocol

import aiohttp
import orjson

from gateway.backends.upstream import AttemptLimits, EventStream, PassThroughStream, UpstreamFailure
from gateway.protocol.canonical import StreamEnd, StreamError, StreamEvent, UpstreamProtocolError, UsageEvent
from gateway.protocol.sse import SSEEvent, sse_events
from gateway.protocol.usage import anthropic_usage, openai_usage, responses_usage

__all__ = [
    "AnthropicPassThrough",
    "Frame",
    "Framing",
    "OpenAIPassThrough",
    "PassThroughRelay",
    "ResponsesPassThrough",
    "StreamDecoder",
    "open_event_stream",
    "open_pass_through",
]


class StreamDecoder(Protocol):
    """A protocol's stream decoder (`OpenAIStreamDecoder`, `AnthropicStreamDecoder`)."""

    def feed_data(self, data: bytes, event: bytes | None = None) -> list[StreamEvent]: ...

    def finish(self) -> list[StreamEvent]: ...


def _object(data: bytes | None) -> dict:
    """An event's JSON object (raises orjson.JSONDecodeError, which ends the stream as malformed)."""
    value = orjson.loads(data or b"{}")
    if not isinstance(value, dict):
        raise orjson.JSONDecodeError("not a JSON object", (data or b"").decode("utf-8", "replace"), 0)
    return value


class PassThroughRelay:
    """Looks at each upstream event with data on its way to the client: reads usage, knows the end.
    `feed` returns the bytes to send (the event's own, or b"" to drop it)."""

    done = False
    usage = None

    def feed(self, event: SSEEvent) -> bytes:  # pragma: no cover - interface
        return event.raw

    def finish(self) -> None:
        """The upstream body ended; raises UpstreamFailure if that was before the stream's end marker."""
        if not self.done:
            raise UpstreamFailure("http_5xx", "the backend's stream ended before its end marker")


class OpenAIPassThrough(PassThroughRelay):
    """OpenAI upstream, OpenAI client. The gateway always asks for usage; the usage-only chunk is dropped
    when the client did not ask for it."""

    def __init__(self, client_wants_usage: bool) -> None:
        self.client_wants_usage = client_wants_usage

    def feed(self, event: SSEEvent) -> bytes:
        data = event.data
        assert data is not None
        if data == b"[DONE]":
            self.done = True
        elif data.startswith(b'{"error"'):
            self.done = True  # the backend's own error event ends the stream; relay it
        elif b'"usage"' in data and b'"usage":null' not in data:
            # Parsed only when a usage may be there: OpenAI sends `"usage":null` on every other chunk.
            # Servers that write JSON with spaces (`"usage": {`) are read too.
            chunk = _object(data)
            usage = openai_usage(chunk.get("usage"))
            if usage is not None:
                self.usage = usage
                if not self.client_wants_usage and chunk.get("choices") == []:
                    return b""
        return event.raw


class AnthropicPassThrough(PassThroughRelay):
    """Anthropic upstream, Anthropic client: events go out as they came. Usage: input counts in
    `message_start`, the output count (and maybe updated input counts) in `message_delta`."""

    def feed(self, event: SSEEvent) -> bytes:
        name = event.event
        if name == b"message_start":
            message = _object(event.data).get("message")
            self.usage = anthropic_usage(message.get("usage") if isinstance(message, dict) else None)
        elif name == b"message_delta":
            self.usage = anthropic_usage(_object(event.data).get("usage"), self.usage)
        elif name == b"message_stop" or name == b"error":
            self.done = True
        return event.raw


#: The events that end a Responses API stream (each but `error` carries the response, usage included).
_RESPONSES_ENDS = frozenset({b"response.completed", b"response.incomplete", b"response.failed", b"error"})


class ResponsesPassThrough(PassThroughRelay):
    """OpenAI Responses upstream, Responses client: events go out as they came; the usage is in the
    response object of the final event."""

    def feed(self, event: SSEEvent) -> bytes:
        name = event.event
        if name is None:  # an unnamed event: its name is the data's `type`
            name = str(_object(event.data).get("type", "")).encode()
        if name in _RESPONSES_ENDS:
            self.done = True
            if name != b"error":
                response = _object(event.data).get("response")
                if isinstance(response, dict):
                    self.usage = responses_usage(response.get("usage"))
        return event.raw


def _stream_failure(error: BaseException) -> UpstreamFailure:
    """What a failure while reading the upstream's stream is, as an UpstreamFailure."""
    if isinstance(error, UpstreamProtocolError | orjson.JSONDecodeError):
        return UpstreamFailure("http_5xx", f"malformed stream: {error}")
    return UpstreamFailure("http_5xx", f"the connection dropped mid-stream ({type(error).__name__})")


_STREAM_ERRORS = (UpstreamProtocolError, orjson.JSONDecodeError, aiohttp.ClientError, ConnectionError)


class Frame(Protocol):
    """One event of an upstream stream, as a decoder reads it: an SSE event, or a binary frame
    (`gateway.protocol.eventstream`). `data` None: a comment or keep-alive, no event."""

    @property
    def event(self) -> bytes | None: ...

    @property
    def data(self) -> bytes | None: ...


#: How a response body becomes frames: `sse_events` (the default) or AWS event-stream `frames`.
Framing = Callable[[AsyncIterator[bytes]], AsyncIterator[Any]]


async def _first(
    response: aiohttp.ClientResponse,
    limits: AttemptLimits,
    until: Callable[[AsyncIterator[Any]], Awaitable[None]],
    framing: Framing = sse_events,
) -> AsyncIterator[Any]:
    """Run `until(events)` (which reads the first event) within the first-byte limit; return the events
    iterator for the rest. Releases the connection if it fails."""
    events = framing(response.content.iter_any())
    wait = limits.until_first_byte()
    try:
        async with asyncio.timeout(wait):
            await until(events)
    except BaseException as error:
        await events.aclose()
        response.release()
        if isinstance(error, TimeoutError):
            raise UpstreamFailure(
                "timeout", f"no streamed event within {wait:g} s (first-byte limit)"
            ) from None
        if isinstance(error, _STREAM_ERRORS):
            raise _stream_failure(error) from None
        raise
    return events


async def open_pass_through(
    response: aiohttp.ClientResponse, relay: PassThroughRelay, limits: AttemptLimits
) -> PassThroughStream:
    """The upstream's stream, forwarded as it comes, once its first event has arrived."""
    first = b""

    async def until(events: AsyncIterator[SSEEvent]) -> None:
        nonlocal first
        # Comments and keep-alives before the first event go out with it, but do not end failover.
        async for event in events:
            if event.data is None:
                first += event.raw
                continue
            out = relay.feed(event)
            first += out
            if out or relay.done:
                return
        relay.finish()
        raise UpstreamFailure("http_5xx", "the backend's stream ended before any event")

    events = await _first(response, limits, until)

    async def close() -> None:
        await events.aclose()
        response.release()

    stream = PassThroughStream(close=close, usage=relay.usage, first=first)

    async def rest() -> AsyncIterator[bytes]:
        try:
            if relay.done:
                return
            async for event in events:
                if event.data is None:
                    yield event.raw
                    continue
                out = relay.feed(event)
                if out:
                    yield out
                if relay.done:
                    return
            relay.finish()
        except _STREAM_ERRORS as error:
            raise _stream_failure(error) from None
        finally:
            stream.usage = relay.usage

    stream.rest = rest()
    return stream


def _ends(events: Iterable[StreamEvent]) -> bool:
    return any(type(event) is StreamEnd or type(event) is StreamError for event in events)


async def open_event_stream(
    response: aiohttp.ClientResponse,
    decoder: StreamDecoder,
    limits: AttemptLimits,
    *,
    framing: Framing = sse_events,
) -> EventStream:
    """The upstream's stream decoded into canonical events, once the first of them has arrived.
    `framing`: how the body splits into events (SSE unless told otherwise)."""
    first: list[StreamEvent] = []

    async def until(events: AsyncIterator[Frame]) -> None:
        async for event in events:
            if event.data is not None:
                first.extend(decoder.feed_data(event.data, event.event))
                if first:
                    return
        first.extend(decoder.finish())

    events = await _first(response, limits, until, framing)

    async def close() -> None:
        await events.aclose()
        response.release()

    stream = EventStream(close=close, first=tuple(first))
    for event in first:
        if type(event) is UsageEvent:
            stream.usage = event.usage

    async def rest() -> AsyncIterator[StreamEvent]:
        if _ends(first):
            return
        try:
            async for sse in events:
                if sse.data is None:
                    continue
                for event in decoder.feed_data(sse.data, sse.event):
                    kind = type(event)
                    if kind is UsageEvent:
                        stream.usage = event.usage
                    yield event
                    if kind is StreamEnd or kind is StreamError:
                        return
            for event in decoder.finish():
                if type(event) is UsageEvent:
                    stream.usage = event.usage
                yield event
        except _STREAM_ERRORS as error:
            raise _stream_failure(error) from None

    stream.rest = rest()
    return stream
