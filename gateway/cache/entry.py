"""What a cache entry holds and how it travels: one canonical answer (text and tool calls, finish reason,
usage), who served it, and when. Stored as compact JSON bytes in either store.

Answers are stored in the canonical form whatever form they came in (a pass-through body or stream is
decoded with the client protocol's own decoder), so a hit is encoded for the client like any canonical
answer: whole, or replayed as a stream of events, chunked like a real one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.protocol.anthropic_stream import AnthropicStreamDecoder
from gateway.protocol.canonical import (
    ChatResponse,
    FinishReason,
    Part,
    StreamEnd,
    StreamError,
    StreamEvent,
    StreamStart,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallPart,
    ToolCallStart,
    Usage,
    UsageEvent,
)
from gateway.protocol.openai_stream import OpenAIStreamDecoder
from gateway.protocol.sse import parse_block

__all__ = ["CachedAnswer", "PassThroughAssembler", "StreamAssembler", "storable"]

#: Finish reasons of answers that ended normally (an error or a content filter is never stored).
_STORED_FINISH: frozenset[str] = frozenset({"stop", "length", "tool_calls"})
_FORMAT = 1
#: A replayed stream's text goes out in pieces of about this many characters, cut after whitespace.
_CHUNK_CHARS = 24
_WORDS = re.compile(r"\S*\s*")


def storable(response: ChatResponse) -> bool:
    """Whether `response` ended normally and fits an entry (text and tool calls only)."""
    if response.finish_reason not in _STORED_FINISH:
        return False
    return all(type(part) is TextPart or type(part) is ToolCallPart for part in response.content)


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    response: ChatResponse
    #: Wall-clock time (time.time()) the answer was stored: a hit's `age`.
    created: float
    #: Who served it: the backend's name and the upstream model (a hit's saved cost is at its price).
    backend: str
    upstream_model: str

    def to_bytes(self) -> bytes:
        resp = self.response
        content: list[Any] = []
        for part in resp.content:
            if type(part) is TextPart:
                content.append(["t", part.text])
            elif type(part) is ToolCallPart:
                content.append(["c", part.id, part.name, part.arguments])
        usage = resp.usage
        return orjson.dumps(
            {
                "v": _FORMAT,
                "created": self.created,
                "backend": self.backend,
                "upstream_model": self.upstream_model,
                "id": resp.id,
                "model": resp.model,
                "content": content,
                "finish": resp.finish_reason,
                "stop_sequence": resp.stop_sequence,
                "usage": None
                if usage is None
                else [
                    usage.prompt_tokens,
                    usage.completion_tokens,
                    usage.cached_tokens,
                    usage.cache_creation_tokens,
                    usage.reasoning_tokens,
                ],
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> CachedAnswer | None:
        """The entry, or None when `data` is not one this version wrote (read as a miss)."""
        try:
            raw = orjson.loads(data)
            if raw.get("v") != _FORMAT:
                return None
            parts: list[Part] = []
            for item in raw["content"]:
                if item[0] == "t":
                    parts.append(TextPart(item[1]))
                else:
                    parts.append(ToolCallPart(item[1], item[2], item[3]))
            usage = raw["usage"]
            response = ChatResponse(
                id=raw["id"],
                model=raw["model"],
                content=tuple(parts),
                finish_reason=raw["finish"],
                usage=None if usage is None else Usage(*usage),
                stop_sequence=raw["stop_sequence"],
            )
            return cls(response, float(raw["created"]), raw["backend"], raw["upstream_model"])
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError, ValueError):
            return None

    def events(self) -> list[StreamEvent]:
        """The answer as a stream: start, usage, text in pieces, tool calls, end."""
        resp = self.response
        out: list[StreamEvent] = [StreamStart(resp.id, resp.model)]
        if resp.usage is not None:  # known from the start (an Anthropic client sees it in message_start)
            out.append(UsageEvent(resp.usage))
        calls = 0
        for part in resp.content:
            if type(part) is TextPart:
                out.extend(TextDelta(piece) for piece in _pieces(part.text))
            elif type(part) is ToolCallPart:
                out.append(ToolCallStart(calls, part.id, part.name))
                if part.arguments:
                    out.append(ToolCallDelta(calls, part.arguments))
                calls += 1
        out.append(StreamEnd(resp.finish_reason or "stop", resp.stop_sequence))
        return out


def _pieces(text: str) -> list[str]:
    pieces: list[str] = []
    current = ""
    for word in _WORDS.findall(text):
        current += word
        if len(current) >= _CHUNK_CHARS:
            pieces.append(current)
            current = ""
    if current:
        pieces.append(current)
    return pieces


class StreamAssembler:
    """Builds the canonical answer of a stream from its events as they pass (in the order
    `gateway.protocol.canonical` states). `answer()` is the whole answer once the stream ended
    normally, else None."""

    __slots__ = ("_calls", "_end", "_failed", "_id", "_model", "_segments", "_usage")

    def __init__(self) -> None:
        self._id = ""
        self._model = ""
        #: In order of appearance: a list of text pieces, or a tool call's index.
        self._segments: list[list[str] | int] = []
        self._calls: dict[int, list[Any]] = {}
        self._usage: Usage | None = None
        self._end: StreamEnd | None = None
        self._failed = False

    def feed(self, event: StreamEvent) -> None:
        kind = type(event)
        if kind is TextDelta:
            last = self._segments[-1] if self._segments else None
            if type(last) is list:
                last.append(event.text)  # type: ignore[union-attr]
            else:
                self._segments.append([event.text])  # type: ignore[union-attr]
        elif kind is ToolCallDelta:
            call = self._calls.get(event.index)  # type: ignore[union-attr]
            if call is None:
                self._failed = True
            else:
                call[2].append(event.arguments)  # type: ignore[union-attr]
        elif kind is ToolCallStart:
            self._calls[event.index] = [event.id, event.name, []]  # type: ignore[union-attr]
            self._segments.append(event.index)  # type: ignore[union-attr]
        elif kind is UsageEvent:
            self._usage = event.usage  # type: ignore[union-attr]
        elif kind is StreamStart:
            self._id, self._model = event.id, event.model  # type: ignore[union-attr]
        elif kind is StreamEnd:
            self._end = event  # type: ignore[assignment]
        elif kind is StreamError:
            self._failed = True

    def answer(self, usage: Usage | None = None) -> ChatResponse | None:
        """The answer, with `usage` (the stream's final usage) when given; None unless it ended normally."""
        end = self._end
        if self._failed or end is None:
            return None
        finish: FinishReason = end.finish_reason
        parts: list[Part] = []
        for segment in self._segments:
            if type(segment) is list:
                parts.append(TextPart("".join(segment)))
            else:
                call_id, name, args = self._calls[segment]  # type: ignore[index]
                parts.append(ToolCallPart(call_id, name, "".join(args)))
        return ChatResponse(
            id=self._id,
            model=self._model,
            content=tuple(parts),
            finish_reason=finish,
            usage=usage if usage is not None else self._usage,
            stop_sequence=end.stop_sequence,
        )


class PassThroughAssembler:
    """The same for a pass-through stream: its raw SSE bytes (whole blocks, as a relay forwards them)
    decoded with the client protocol's own decoder. Malformed input makes `answer()` None (it is the
    relay's business to fail the stream, not the cache's)."""

    __slots__ = ("_buffer", "_decoder", "events")

    def __init__(self, protocol: str) -> None:
        self._decoder = AnthropicStreamDecoder() if protocol == "anthropic" else OpenAIStreamDecoder()
        self._buffer = b""
        self.events = StreamAssembler()

    def feed(self, chunk: bytes) -> None:
        buffer = self._buffer + chunk if self._buffer else chunk
        start = 0
        feed = self.events.feed
        try:
            while True:
                end = buffer.find(b"\n\n", start)
                if end < 0:
                    break
                block = parse_block(buffer[start : end + 2])
                start = end + 2
                if block.data is not None:
                    for event in self._decoder.feed_data(block.data, block.event):
                        feed(event)
        except Exception:
            self.events._failed = True
        self._buffer = buffer[start:]

    def answer(self, usage: Usage | None = None) -> ChatResponse | None:
        return self.events.answer(usage)
