"""OpenAI `chat.completion.chunk` streams ⇄ canonical stream events: a decoder for backend streams and an
encoder that writes `data: ...` SSE bytes for OpenAI clients.

The decoder translates choice 0 only (a backend is asked for one choice); the encoder writes every
choice of a local model's `n` > 1 stream with its index (`TextDelta.choice`, `ChoiceEnd`). The
decoder holds `StreamEnd` back until `[DONE]` or the end of the stream, because with
`stream_options.include_usage` the usage chunk (`choices: []`) comes after the chunk carrying
`finish_reason`.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.protocol._maps import error_type_to_openai, finish_from_openai, finish_to_openai, new_id
from gateway.protocol.canonical import (
    ChoiceEnd,
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
from gateway.protocol.usage import openai_usage, usage_to_openai

__all__ = ["OpenAIStreamDecoder", "OpenAIStreamEncoder", "stream_error_event"]

_DONE = b"data: [DONE]\n\n"


def stream_error_event(message: str, error_type: str = "server_error") -> bytes:
    """The in-stream error of OpenAI streams (chat and legacy completions): a `data:` chunk holding an
    `error` object, which the OpenAI SDK raises as an APIError. No `[DONE]` may follow it. A foreign
    error type name is translated to the nearest one OpenAI uses."""
    error = {"message": message, "type": error_type_to_openai(error_type), "param": None, "code": None}
    return b"data: " + orjson.dumps({"error": error}) + b"\n\n"


class OpenAIStreamDecoder:
    """Turns the parsed JSON of each upstream `data:` chunk into canonical events.

    Call `feed(chunk)` per chunk (or `feed_data(text)`, which also understands `[DONE]`), then `finish()`
    when the upstream body ends. `finish()` raises `UpstreamProtocolError` if the stream was cut short.
    """

    __slots__ = ("_done", "_finish", "_started", "_stop_sequence", "_tools")

    def __init__(self) -> None:
        self._started = False
        self._done = False
        self._finish: FinishReason | None = None
        self._stop_sequence: str | None = None
        self._tools: set[int] = set()

    def feed_data(self, data: str | bytes, event: str | bytes | None = None) -> list[StreamEvent]:
        """Decode one SSE `data` payload (text or bytes): JSON, or the `[DONE]` sentinel.

        OpenAI names no events, so `event` is ignored; it is accepted so that both decoders take exactly
        what the SSE parser yields.
        """
        if len(data) < 16 and data.strip() in (b"[DONE]", "[DONE]"):
            return self._end(complete=True)
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise UpstreamProtocolError(f"backend stream chunk is not JSON: {data[:200]!r}") from e
        return self.feed(chunk)

    def feed(self, chunk: Any) -> list[StreamEvent]:
        if self._done:
            return []
        try:
            return self._feed(chunk)
        except (KeyError, IndexError, TypeError, AttributeError) as e:
            raise UpstreamProtocolError(
                f"malformed OpenAI stream chunk from the backend ({type(e).__name__}: {e})"
            ) from e

    def _feed(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        error = chunk.get("error")
        if error is not None:
            self._done = True
            if isinstance(error, dict):
                return [
                    StreamError(
                        str(error.get("message") or "upstream error"),
                        str(error.get("type") or "server_error"),
                    )
                ]
            return [StreamError(str(error), "server_error")]
        out: list[StreamEvent] = []
        if not self._started:
            self._started = True
            out.append(StreamStart(chunk.get("id") or "", chunk.get("model") or ""))
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if delta:
                text = delta.get("content")
                if text:
                    out.append(TextDelta(text))
                calls = delta.get("tool_calls")
                if calls:
                    self._tool_deltas(calls, out)
            reason = choice.get("finish_reason")
            if reason:
                self._finish = finish_from_openai(reason)
                stop = choice.get("stop_reason")
                if isinstance(stop, str):
                    self._stop_sequence = stop
        usage = chunk.get("usage")
        if usage:
            parsed = openai_usage(usage)
            if parsed is not None:
                out.append(UsageEvent(parsed))
        return out

    def _tool_deltas(self, calls: list[dict[str, Any]], out: list[StreamEvent]) -> None:
        for position, call in enumerate(calls):
            index = call.get("index")
            if type(index) is not int:  # some OpenAI-compatible servers omit it
                index = position
            fn = call.get("function") or {}
            if index not in self._tools:
                self._tools.add(index)
                out.append(ToolCallStart(index, call.get("id") or new_id("call_"), fn.get("name") or ""))
            # Some backends (vLLM, Ollama) send a whole call, arguments included, in its first delta.
            args = fn.get("arguments")
            if args:
                out.append(ToolCallDelta(index, args))

    def finish(self) -> list[StreamEvent]:
        """The upstream body ended; returns the final events, or raises if the stream was truncated."""
        return self._end(complete=False)

    def _end(self, *, complete: bool) -> list[StreamEvent]:
        if self._done:
            return []
        self._done = True
        if not self._started:
            raise UpstreamProtocolError("backend stream ended before any chunk")
        if self._finish is None and not complete:
            raise UpstreamProtocolError("backend stream ended without a finish_reason or [DONE]")
        return [StreamEnd(self._finish or "stop", self._stop_sequence)]


class OpenAIStreamEncoder:
    """Writes canonical events as OpenAI `chat.completion.chunk` SSE bytes.

    `model` is the name the client asked for. Output: a role chunk at `StreamStart`, content chunks, a
    finish chunk, a usage chunk (`choices: []`) when `include_usage`, then `data: [DONE]`. `error()` ends
    the stream with an error chunk and no `[DONE]`, which the OpenAI SDK raises as an APIError.
    """

    __slots__ = (
        "_closed",
        "_created",
        "_ended_first",
        "_head",
        "_id",
        "_include_usage",
        "_model",
        "_started",
        "_tail",
        "_usage",
    )

    def __init__(
        self, model: str, *, include_usage: bool = False, id: str | None = None, created: int | None = None
    ) -> None:
        self._model = model
        self._include_usage = include_usage
        self._id = id
        self._created = created
        self._head = b""
        self._tail = b""
        self._usage: Usage | None = None
        self._closed = False
        #: Choices > 0 that have had their role chunk (OpenAI `n`).
        self._started: set[int] = set()
        #: Whether choice 0's finish chunk went out with its `ChoiceEnd`.
        self._ended_first = False

    def _start(self, upstream_id: str) -> bytes:
        # Every chunk shares one prefix and suffix; build them once and splice each delta in between.
        chunk_id = self._id or upstream_id or new_id("chatcmpl-")
        created = self._created if self._created is not None else int(time.time())
        self._id, self._created = chunk_id, created
        self._head = (
            b'data: {"id":'
            + orjson.dumps(chunk_id)
            + b',"object":"chat.completion.chunk","created":'
            + str(created).encode()
            + b',"model":'
            + orjson.dumps(self._model)
            + b',"choices":[{"index":0,"delta":'
        )
        self._tail = b',"logprobs":null,"finish_reason":null}]' + (
            b',"usage":null}\n\n' if self._include_usage else b"}\n\n"
        )
        return self._head + b'{"role":"assistant","content":""}' + self._tail

    def encode(self, event: StreamEvent) -> bytes:
        """SSE bytes for one event (b"" when the event produces nothing)."""
        if self._closed:
            return b""
        kind = type(event)
        prefix = b""
        if not self._head:
            prefix = self._start(event.id if kind is StreamStart else "")
            if kind is StreamStart:
                return prefix
        if kind is TextDelta:
            if not event.text:
                return prefix
            if event.choice:
                return prefix + self._other_choice(event.choice, {"content": event.text}, None)
            return prefix + self._head + orjson.dumps({"content": event.text}) + self._tail
        if kind is ReasoningDelta:
            if not event.text:
                return prefix
            return prefix + self._head + orjson.dumps({"reasoning_content": event.text}) + self._tail
        if kind is ReasoningBlock:
            return prefix + self._head + orjson.dumps({"thinking_blocks": [event.block]}) + self._tail
        if kind is ChoiceEnd:
            reason = finish_to_openai(event.finish_reason)
            if event.choice == 0:
                self._ended_first = True
                return prefix + self._finish_chunk(orjson.dumps(reason))
            return prefix + self._other_choice(event.choice, {}, reason)
        if kind is ToolCallDelta:
            delta = {"tool_calls": [{"index": event.index, "function": {"arguments": event.arguments}}]}
            return prefix + self._head + orjson.dumps(delta) + self._tail
        if kind is ToolCallStart:
            call = {
                "index": event.index,
                "id": event.id,
                "type": "function",
                "function": {"name": event.name, "arguments": ""},
            }
            return prefix + self._head + orjson.dumps({"tool_calls": [call]}) + self._tail
        if kind is UsageEvent:
            self._usage = event.usage
            return prefix
        if kind is StreamEnd:
            return prefix + self._end(event.finish_reason)
        if kind is StreamError:
            return prefix + self.error(event.message, event.type)
        return prefix

    def encode_all(self, events: list[StreamEvent]) -> bytes:
        return b"".join([self.encode(e) for e in events])

    def _finish_chunk(self, reason: bytes) -> bytes:
        """Choice 0's last chunk: an empty delta and its finish reason."""
        tail = b',"usage":null}\n\n' if self._include_usage else b"}\n\n"
        return self._head + b'{},"logprobs":null,"finish_reason":' + reason + b"}]" + tail

    def _other_choice(self, index: int, delta: dict[str, Any], finish_reason: str | None) -> bytes:
        """A chunk of choice `index` > 0, after its role chunk if it has had none yet."""
        out = b""
        if index not in self._started:
            self._started.add(index)
            out = self._other_choice(index, {"role": "assistant", "content": ""}, None)
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if self._include_usage:
            chunk["usage"] = None
        return out + b"data: " + orjson.dumps(chunk) + b"\n\n"

    def _end(self, finish_reason: FinishReason) -> bytes:
        self._closed = True
        out = b""
        if not self._ended_first:
            out = self._finish_chunk(orjson.dumps(finish_to_openai(finish_reason)))
        if self._include_usage and self._usage is not None:
            usage_chunk = {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self._model,
                "choices": [],
                "usage": usage_to_openai(self._usage),
            }
            out += b"data: " + orjson.dumps(usage_chunk) + b"\n\n"
        return out + _DONE

    def error(self, message: str, type: str = "server_error") -> bytes:
        """An error chunk that ends the stream (no `[DONE]` follows)."""
        self._closed = True
        return stream_error_event(message, type)
