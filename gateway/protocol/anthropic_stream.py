"""Anthropic Messages streams ⇄ canonical stream events: a decoder for backend SSE events and an encoder that
writes `event: X\\ndata: {...}` bytes for Anthropic clients.

Anthropic numbers content blocks (text and tool_use alike) from 0; canonical tool calls are numbered among
tool calls only, so both sides keep a block-index ⇄ tool-index map. Thinking blocks become
`ReasoningDelta`s (their text) and, at their end, a `ReasoningBlock` (the whole block, signature included);
citation deltas have no canonical form and are skipped.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.protocol._maps import error_type_to_anthropic, finish_from_anthropic, finish_to_anthropic, new_id
from gateway.protocol.anthropic_body import tool_id
from gateway.protocol.canonical import (
    FinishReason,
    ReasoningBlock,
    ReasoningDelta,
    StreamEnd,
    StreamError,
    StreamEvent,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    UpstreamProtocolError,
    Usage,
    UsageEvent,
)
from gateway.protocol.usage import anthropic_usage, usage_to_anthropic

__all__ = ["AnthropicStreamDecoder", "AnthropicStreamEncoder", "stream_error_event"]

_MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
_BLOCK_STOP = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":%d}\n\n'
_TEXT_DELTA = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
    b'"delta":{"type":"text_delta","text":'
)
_JSON_DELTA = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
    b'"delta":{"type":"input_json_delta","partial_json":'
)


def _event(name: bytes, payload: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def stream_error_event(message: str, error_type: str = "api_error") -> bytes:
    """The in-stream error of Anthropic streams: an `error` event, which the Anthropic SDK raises as an
    APIError. No `message_stop` may follow it. A foreign error type name is translated to the nearest
    one Anthropic uses."""
    payload = {"type": "error", "error": {"type": error_type_to_anthropic(error_type), "message": message}}
    return _event(b"error", payload)


class AnthropicStreamDecoder:
    """Turns upstream Anthropic stream events (parsed `data` JSON) into canonical events.

    Call `feed(event)` per event (or `feed_data(data)` with the raw SSE data), then `finish()` when the
    upstream body ends; `finish()` raises `UpstreamProtocolError` if no `message_stop` (or error) arrived.
    """

    __slots__ = ("_done", "_reason", "_reasoning", "_started", "_stop_sequence", "_tools", "_usage")

    def __init__(self) -> None:
        self._started = False
        self._done = False
        self._tools: dict[int, int] = {}  # content block index -> canonical tool-call index
        # content block index -> the thinking block being streamed: its members, the text in pieces
        self._reasoning: dict[int, dict[str, Any]] = {}
        # Usage arrives as cumulative counts, some only in message_start and some only in message_delta.
        self._usage: Usage | None = None
        self._reason: Any = None
        self._stop_sequence: str | None = None

    def feed_data(self, data: str | bytes, event: str | bytes | None = None) -> list[StreamEvent]:
        """Decode one SSE event's data; its `event` name repeats the payload's `type`, so it is not needed."""
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise UpstreamProtocolError(f"backend stream event is not JSON: {data[:200]!r}") from e
        return self.feed(payload)

    def feed(self, event: Any) -> list[StreamEvent]:
        if self._done:
            return []
        try:
            return self._feed(event)
        except (KeyError, TypeError, AttributeError) as e:
            raise UpstreamProtocolError(
                f"malformed Anthropic stream event from the backend ({type(e).__name__}: {e})"
            ) from e

    def _feed(self, event: dict[str, Any]) -> list[StreamEvent]:
        kind = event["type"]
        if kind == "content_block_delta":
            delta = event["delta"]
            delta_kind = delta["type"]
            if delta_kind == "text_delta":
                text = delta["text"]
                return [TextDelta(text)] if text else []
            if delta_kind == "input_json_delta":
                tool = self._tools.get(event["index"])
                fragment = delta["partial_json"]
                return [ToolCallDelta(tool, fragment)] if tool is not None and fragment else []
            if delta_kind == "thinking_delta":
                block = self._reasoning.get(event["index"])
                text = delta["thinking"]
                if block is None or not text:
                    return []
                block["thinking"].append(text)
                return [ReasoningDelta(text)]
            if delta_kind == "signature_delta":
                block = self._reasoning.get(event["index"])
                if block is not None:
                    block["signature"] = delta["signature"]
            return []
        if kind == "content_block_stop":
            block = self._reasoning.pop(event["index"], None)
            if block is None:
                return []
            if block["type"] == "thinking":
                block = {**block, "thinking": "".join(block["thinking"])}
            return [ReasoningBlock(block)]
        if kind == "ping":
            return []
        if kind == "error":
            self._done = True
            error = event.get("error") or {}
            return [StreamError(error.get("message") or "upstream error", error.get("type") or "api_error")]
        if kind == "message_start":
            message = event["message"]
            self._started = True
            out: list[StreamEvent] = [StreamStart(message["id"], message.get("model") or "")]
            usage = message.get("usage")
            if usage:
                out.append(self._report(usage))
            return out
        if not self._started:
            raise UpstreamProtocolError(f"backend stream sent {kind!r} before message_start")
        if kind == "content_block_start":
            return self._block_start(event["index"], event["content_block"])
        if kind == "message_delta":
            delta = event["delta"]
            self._reason = delta.get("stop_reason")
            self._stop_sequence = delta.get("stop_sequence")
            usage = event.get("usage")
            return [self._report(usage)] if usage else []
        if kind == "message_stop":
            self._done = True
            stop = self._stop_sequence if self._reason == "stop_sequence" else None
            return [StreamEnd(finish_from_anthropic(self._reason), stop)]
        return []

    def _block_start(self, index: int, block: dict[str, Any]) -> list[StreamEvent]:
        kind = block["type"]
        if kind == "text":
            text = block.get("text")
            return [TextDelta(text)] if text else []
        if kind == "tool_use":
            tool = self._tools[index] = len(self._tools)
            out: list[StreamEvent] = [ToolCallStart(tool, block["id"], block["name"])]
            if block.get("input"):
                out.append(ToolCallDelta(tool, orjson.dumps(block["input"]).decode()))
            return out
        if kind == "thinking":
            text = block.get("thinking") or ""
            self._reasoning[index] = {**block, "thinking": [text] if text else []}
            return [ReasoningDelta(text)] if text else []
        if kind == "redacted_thinking":
            self._reasoning[index] = dict(block)
        return []

    def _report(self, usage: dict[str, Any]) -> UsageEvent:
        self._usage = anthropic_usage(usage, self._usage)
        return UsageEvent(self._usage or Usage())

    def finish(self) -> list[StreamEvent]:
        """The upstream body ended; raises if the stream was cut short."""
        if self._done:
            return []
        self._done = True
        raise UpstreamProtocolError("backend stream ended before message_stop")


class AnthropicStreamEncoder:
    """Writes canonical events as Anthropic Messages SSE bytes, in Anthropic's order: `message_start`, then
    per content block `content_block_start` / `content_block_delta`s / `content_block_stop`, then
    `message_delta` (stop reason and usage) and `message_stop`.

    `message_start` is written with the first content (or the end), so usage reported by the upstream's own
    start is in it. `error()` ends the stream with an `error` event and no `message_stop`.
    """

    __slots__ = (
        "_closed",
        "_id",
        "_model",
        "_next",
        "_open",
        "_open_text",
        "_open_thinking",
        "_started",
        "_tools",
        "_usage",
    )

    def __init__(self, model: str, *, id: str | None = None) -> None:
        self._model = model
        self._id = id
        self._started = False
        self._closed = False
        self._next = 0  # index of the next content block
        self._open: int | None = None
        self._open_text = False
        self._open_thinking = False
        self._tools: dict[int, int] = {}  # canonical tool-call index -> content block index
        self._usage: Usage | None = None

    def encode(self, event: StreamEvent) -> bytes:
        """SSE bytes for one event (b"" when the event produces nothing yet)."""
        if self._closed:
            return b""
        kind = type(event)
        if kind is TextDelta:
            if not event.text:
                return b""
            out = b"" if self._started else self._message_start()
            if not self._open_text:
                out += self._open_block({"type": "text", "text": ""}, text=True)
            return out + (_TEXT_DELTA % self._open) + orjson.dumps(event.text) + b"}}\n\n"
        if kind is ReasoningDelta:
            if not event.text:
                return b""
            out = b"" if self._started else self._message_start()
            if not self._open_thinking:
                out += self._open_block({"type": "thinking", "thinking": "", "signature": ""}, text=False)
                self._open_thinking = True
            return out + self._delta({"type": "thinking_delta", "thinking": event.text})
        if kind is ReasoningBlock:
            return self._reasoning_block(event)
        if kind is ToolCallDelta:
            if not event.arguments:
                return b""
            out = b"" if self._started else self._message_start()
            block = self._tools.get(event.index)
            if block is None:  # a delta without its start: open the block so the client can still follow
                out += self._tool_start(ToolCallStart(event.index, new_id("toolu_"), ""))
                block = self._tools[event.index]
            return out + (_JSON_DELTA % block) + orjson.dumps(event.arguments) + b"}}\n\n"
        if kind is ToolCallStart:
            out = b"" if self._started else self._message_start()
            return out + self._tool_start(event)
        if kind is StreamStart:
            if self._id is None:
                self._id = event.id
            return b""
        if kind is UsageEvent:
            self._usage = event.usage
            return b""
        if kind is StreamEnd:
            return self._end(event.finish_reason, event.stop_sequence)
        if kind is StreamError:
            return self.error(event.message, event.type)
        return b""

    def encode_all(self, events: list[StreamEvent]) -> bytes:
        return b"".join([self.encode(e) for e in events])

    def _message_start(self) -> bytes:
        self._started = True
        usage = self._usage
        counts = usage_to_anthropic(usage) if usage is not None else {"input_tokens": 0, "output_tokens": 0}
        message = {
            "id": self._id or new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": counts,
        }
        return _event(b"message_start", {"type": "message_start", "message": message})

    def _delta(self, delta: dict[str, Any]) -> bytes:
        payload = {"type": "content_block_delta", "index": self._open, "delta": delta}
        return _event(b"content_block_delta", payload)

    def _reasoning_block(self, event: ReasoningBlock) -> bytes:
        """A whole thinking block: ends the one its deltas opened (with its signature), or is written
        whole (a redacted block, or thinking that came without deltas)."""
        if event.protocol != "anthropic":
            return b""
        block = event.block
        out = b"" if self._started else self._message_start()
        if block.get("type") == "thinking":
            if not self._open_thinking:
                out += self._open_block({"type": "thinking", "thinking": "", "signature": ""}, text=False)
                if block.get("thinking"):
                    out += self._delta({"type": "thinking_delta", "thinking": block["thinking"]})
            if block.get("signature"):
                out += self._delta({"type": "signature_delta", "signature": block["signature"]})
            return out + self._close_block()
        return out + self._open_block(dict(block), text=False) + self._close_block()

    def _close_block(self) -> bytes:
        if self._open is None:
            return b""
        index, self._open, self._open_text, self._open_thinking = self._open, None, False, False
        return _BLOCK_STOP % index

    def _open_block(self, block: dict[str, Any], *, text: bool) -> bytes:
        out = self._close_block()
        index = self._open = self._next
        self._next += 1
        self._open_text = text
        return out + _event(
            b"content_block_start", {"type": "content_block_start", "index": index, "content_block": block}
        )

    def _tool_start(self, event: ToolCallStart) -> bytes:
        block = {"type": "tool_use", "id": tool_id(event.id), "name": event.name, "input": {}}
        out = self._open_block(block, text=False)
        self._tools[event.index] = self._open  # type: ignore[assignment]
        return out

    def _end(self, finish_reason: FinishReason, stop_sequence: str | None) -> bytes:
        out = b"" if self._started else self._message_start()
        self._closed = True
        out += self._close_block()
        reason = finish_to_anthropic(finish_reason, stop_sequence)
        # Newer Anthropic streams repeat the input counts here; an OpenAI backend only reports them now.
        usage = usage_to_anthropic(self._usage) if self._usage is not None else {"output_tokens": 0}
        delta = {"stop_reason": reason, "stop_sequence": stop_sequence if reason == "stop_sequence" else None}
        out += _event(b"message_delta", {"type": "message_delta", "delta": delta, "usage": usage})
        return out + _MESSAGE_STOP

    def error(self, message: str, type: str = "api_error") -> bytes:
        """An `error` event that ends the stream (no `message_stop` follows)."""
        self._closed = True
        return stream_error_event(message, type)
