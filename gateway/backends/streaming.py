"""Relaying an upstream SSE stream to the client: pass-through when both speak the same protocol,
translation through the canonical events otherwise. Either way the gateway reads usage and knows
whether the stream ended properly (a stream cut short is an error, never a silent end)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import orjson

from gateway.backends.http import sse_events, sse_fields
from gateway.backends.upstream import AttemptLimits, Stream, UpstreamFailure
from gateway.protocol.anthropic import AnthropicStreamDecoder, AnthropicStreamEncoder
from gateway.protocol.canonical import UpstreamProtocolError, Usage, UsageEvent
from gateway.protocol.openai import OpenAIStreamDecoder, OpenAIStreamEncoder

__all__ = [
    "AnthropicPassThrough",
    "OpenAIPassThrough",
    "Translation",
    "open_stream",
]


class Relay:
    """Turns one raw upstream event into the bytes to send to the client (b"" for nothing)."""

    done = False
    usage: Usage | None = None

    def feed(self, raw: bytes) -> bytes:  # pragma: no cover - interface
        return raw

    def finish(self) -> bytes:
        """Called at the end of the upstream body; raises UpstreamFailure if it ended too early."""
        if not self.done:
            raise UpstreamFailure("http_5xx", "the backend's stream ended before its end marker")
        return b""


class OpenAIPassThrough(Relay):
    """OpenAI upstream, OpenAI client: chunks go out as they came. The gateway always asks for usage;
    the usage-only chunk is dropped when the client did not ask for it."""

    def __init__(self, client_wants_usage: bool) -> None:
        self.client_wants_usage = client_wants_usage

    def feed(self, raw: bytes) -> bytes:
        _, data = sse_fields(raw)
        if data == b"[DONE]":
            self.done = True
            return raw
        if data.startswith(b'{"error"'):
            self.done = True  # the backend's own error event ends the stream; relay it
            return raw
        if b'"usage":{' in data:
            usage = orjson.loads(data).get("usage") or {}
            self.usage = Usage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
            if not self.client_wants_usage and b'"choices":[]' in data:
                return b""
        return raw


class AnthropicPassThrough(Relay):
    """Anthropic upstream, Anthropic client: events go out as they came; usage is read on the way."""

    def __init__(self) -> None:
        self.input_tokens = 0

    def feed(self, raw: bytes) -> bytes:
        name, data = sse_fields(raw)
        if name in (b"message_stop", b"error"):
            self.done = True
        elif name == b"message_start":
            usage = orjson.loads(data).get("message", {}).get("usage") or {}
            self.input_tokens = usage.get("input_tokens", 0) + usage.get("cache_read_input_tokens", 0)
            self.usage = Usage(self.input_tokens, usage.get("output_tokens", 0))
        elif name == b"message_delta":
            usage = orjson.loads(data).get("usage") or {}
            self.usage = Usage(self.input_tokens, usage.get("output_tokens", 0))
        return raw


class Translation(Relay):
    """Upstream and client speak different protocols: decode to canonical events, encode for the client."""

    def __init__(
        self,
        decoder: OpenAIStreamDecoder | AnthropicStreamDecoder,
        encoder: OpenAIStreamEncoder | AnthropicStreamEncoder,
    ) -> None:
        self.decoder = decoder
        self.encoder = encoder

    def _encode(self, events: list) -> bytes:
        for event in events:
            if type(event) is UsageEvent:
                self.usage = event.usage
        return self.encoder.encode_all(events)

    def feed(self, raw: bytes) -> bytes:
        name, data = sse_fields(raw)
        if not data:
            return b""
        return self._encode(self.decoder.feed_data(data.decode(), name.decode() if name else None))

    def finish(self) -> bytes:
        return self._encode(self.decoder.finish())


async def open_stream(response: aiohttp.ClientResponse, relay: Relay, limits: AttemptLimits) -> Stream:
    """Wait (within the first-byte limit) for the first bytes to send; return the Stream for the rest."""
    events = sse_events(response)

    async def close() -> None:
        await events.aclose()
        response.release()

    first = b""
    wait = limits.until_first_byte()
    try:
        async with asyncio.timeout(wait):
            async for raw in events:
                first = relay.feed(raw)
                if first:
                    break
            else:
                first = relay.finish()
                if not first:
                    raise UpstreamFailure("http_5xx", "the backend's stream ended before any event")
    except TimeoutError:
        await close()
        raise UpstreamFailure("timeout", f"no streamed event within {wait:g} s (first-byte limit)") from None
    except UpstreamProtocolError as error:
        await close()
        raise UpstreamFailure("http_5xx", f"malformed stream: {error}") from None
    except aiohttp.ClientError as error:
        await close()
        raise UpstreamFailure("http_5xx", f"the stream broke: {type(error).__name__}") from None
    except UpstreamFailure:
        await close()
        raise

    stream = Stream(first=first, rest=_empty(), close=close)

    async def rest() -> AsyncIterator[bytes]:
        try:
            if not relay.done:
                async for raw in events:
                    out = relay.feed(raw)
                    if out:
                        yield out
                    if relay.done:
                        break
            tail = relay.finish()
            if tail:
                yield tail
        except UpstreamProtocolError as error:
            raise UpstreamFailure("http_5xx", f"malformed stream: {error}") from None
        except (aiohttp.ClientError, ConnectionError) as error:
            raise UpstreamFailure(
                "http_5xx", f"the connection dropped mid-stream ({type(error).__name__})"
            ) from None
        finally:
            stream.usage = relay.usage

    stream.rest = rest()
    stream.usage = relay.usage
    return stream


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover
