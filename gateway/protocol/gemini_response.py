"""Gemini API answers read into the canonical form: a whole `GenerateContentResponse`, the stream of them
that `:streamGenerateContent?alt=sse` sends (each SSE event a complete response chunk whose text parts
are the new text), and `batchEmbedContents` vectors.

* The first candidate is the answer (routing never asks Gemini for several). Its `text` parts are the
  text (parts marked `thought` are the model's thinking summaries and are left out), `functionCall` parts
  are tool calls (`args` object ⇄ arguments JSON text; a call without an `id` gets one).
* `finishReason`: `STOP` ⇄ `stop` (`tool_calls` when the answer calls tools), `MAX_TOKENS` ⇄ `length`,
  the safety stops (`SAFETY`, `RECITATION`, `BLOCKLIST`, `PROHIBITED_CONTENT`, `SPII`, `LANGUAGE`, the
  `IMAGE_*` ones) ⇄ `content_filter`, a malformed or unexpected tool call ⇄ `error`, anything else ⇄
  `stop`.
* A prompt the API blocked (`promptFeedback.blockReason`, no candidate) raises `GeminiBlocked` (whole
  answers) or ends the stream with a `StreamError` naming the reason.
* Usage is `usageMetadata` (`gateway.protocol.usage.gemini_usage`).
"""

from __future__ import annotations

import struct
from typing import Any, Literal

import orjson

from gateway.protocol._maps import new_id
from gateway.protocol.canonical import (
    ChatResponse,
    EmbeddingResponse,
    FinishReason,
    Part,
    StreamEnd,
    StreamError,
    StreamEvent,
    StreamStart,
    TextDelta,
    TextPart,
    TokenCount,
    ToolCallDelta,
    ToolCallPart,
    ToolCallStart,
    UpstreamProtocolError,
    Usage,
    UsageEvent,
)
from gateway.protocol.usage import gemini_usage

__all__ = [
    "GeminiBlocked",
    "GeminiStreamDecoder",
    "blocked_message",
    "finish_from_gemini",
    "parse_count_tokens_response",
    "parse_embeddings_response",
    "parse_generate_response",
]

_FILTERED = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "LANGUAGE",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)
_TOOL_ERRORS = frozenset({"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS"})


class GeminiBlocked(Exception):
    """The API refused the prompt itself (`promptFeedback.blockReason`): nothing was generated."""

    def __init__(self, reason: str, usage: Usage | None) -> None:
        super().__init__(blocked_message(reason))
        self.reason = reason
        self.usage = usage


def blocked_message(reason: str) -> str:
    return f"the Gemini API blocked the prompt (blockReason {reason}): nothing was generated"


def finish_from_gemini(value: Any, calls_tools: bool = False) -> FinishReason:
    if value in _FILTERED:
        return "content_filter"
    if value == "MAX_TOKENS":
        return "length"
    if value in _TOOL_ERRORS:
        return "error"
    return "tool_calls" if calls_tools else "stop"


def _block_reason(body: dict[str, Any]) -> str | None:
    feedback = body.get("promptFeedback")
    reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
    return str(reason) if reason else None


def _parts(candidate: dict[str, Any]) -> list[dict[str, Any]]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return parts if isinstance(parts, list) else []


def _call(part: dict[str, Any]) -> ToolCallPart:
    call = part["functionCall"]
    args = call.get("args")
    return ToolCallPart(call.get("id") or new_id("call_"), call["name"], orjson.dumps(args or {}).decode())


def parse_generate_response(body: Any) -> ChatResponse:
    """Read a whole `GenerateContentResponse`; raises `GeminiBlocked` for a blocked prompt and
    `UpstreamProtocolError` when malformed."""
    if not isinstance(body, dict):
        raise UpstreamProtocolError("malformed Gemini response from the backend: not a JSON object")
    candidates = body.get("candidates")
    if not candidates:
        reason = _block_reason(body)
        if reason is not None:
            raise GeminiBlocked(reason, gemini_usage(body.get("usageMetadata")))
        raise UpstreamProtocolError("malformed Gemini response from the backend: no candidates")
    try:
        candidate = candidates[0]
        content: list[Part] = []
        for part in _parts(candidate):
            if "functionCall" in part:
                content.append(_call(part))
            elif isinstance(part.get("text"), str) and not part.get("thought"):
                if content and type(content[-1]) is TextPart:
                    content[-1] = TextPart(content[-1].text + part["text"])
                else:
                    content.append(TextPart(part["text"]))
        calls = any(type(p) is ToolCallPart for p in content)
        return ChatResponse(
            id=body.get("responseId") or new_id("gemini-"),
            model=body.get("modelVersion") or "",
            content=tuple(content),
            finish_reason=finish_from_gemini(candidate.get("finishReason"), calls),
            usage=gemini_usage(body.get("usageMetadata")),
        )
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        raise UpstreamProtocolError(
            f"malformed Gemini response from the backend ({type(e).__name__}: {e})"
        ) from e


class GeminiStreamDecoder:
    """Turns each SSE `data` payload of `:streamGenerateContent?alt=sse` (a whole response chunk) into
    canonical events. The stream has no end marker: it is complete when a chunk carried a
    `finishReason` and the body ended; `finish()` raises `UpstreamProtocolError` otherwise."""

    __slots__ = ("_calls", "_done", "_finish", "_started")

    def __init__(self) -> None:
        self._started = False
        self._done = False
        self._finish: str | None = None
        self._calls = 0

    def feed_data(self, data: str | bytes, event: str | bytes | None = None) -> list[StreamEvent]:
        """Decode one SSE `data` payload; Gemini names no events, so `event` is ignored."""
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise UpstreamProtocolError(f"backend stream chunk is not JSON: {data[:200]!r}") from e
        if self._done:
            return []
        try:
            return self._feed(chunk)
        except (KeyError, TypeError, AttributeError, IndexError) as e:
            raise UpstreamProtocolError(
                f"malformed Gemini stream chunk from the backend ({type(e).__name__}: {e})"
            ) from e

    def _feed(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        if not self._started:
            self._started = True
            out.append(
                StreamStart(chunk.get("responseId") or new_id("gemini-"), chunk.get("modelVersion") or "")
            )
        error = chunk.get("error")
        if error is not None:
            self._done = True
            message = error.get("message") if isinstance(error, dict) else error
            out.append(StreamError(str(message or "upstream error"), "api_error"))
            return out
        usage = gemini_usage(chunk.get("usageMetadata"))
        candidates = chunk.get("candidates")
        if not candidates:
            reason = _block_reason(chunk)
            if reason is not None:
                self._done = True
                if usage is not None:
                    out.append(UsageEvent(usage))
                out.append(StreamError(blocked_message(reason), "invalid_request_error"))
                return out
        else:
            candidate = candidates[0]
            for part in _parts(candidate):
                if "functionCall" in part:
                    call = _call(part)
                    out.append(ToolCallStart(self._calls, call.id, call.name))
                    out.append(ToolCallDelta(self._calls, call.arguments))
                    self._calls += 1
                elif isinstance(part.get("text"), str) and part["text"] and not part.get("thought"):
                    out.append(TextDelta(part["text"]))
            reason = candidate.get("finishReason")
            if reason:
                self._finish = str(reason)
        if usage is not None:
            out.append(UsageEvent(usage))
        return out

    def finish(self) -> list[StreamEvent]:
        """The upstream body ended; returns the final events, or raises if the stream was truncated."""
        if self._done:
            return []
        self._done = True
        if not self._started:
            raise UpstreamProtocolError("backend stream ended before any chunk")
        if self._finish is None:
            raise UpstreamProtocolError("backend stream ended without a finishReason")
        return [StreamEnd(finish_from_gemini(self._finish, self._calls > 0))]


def parse_embeddings_response(
    body: Any, count: int, encoding_format: Literal["float", "base64"] | None
) -> EmbeddingResponse:
    """Read a `batchEmbedContents` answer holding `count` vectors. The API reports no token counts for
    embeddings, so the usage is zero."""
    try:
        embeddings = body["embeddings"]
        values = [e["values"] for e in embeddings]
        if len(values) != count or not values:
            raise UpstreamProtocolError(f"the backend returned {len(values)} embeddings for {count} inputs")
        size = len(values[0])
        if any(len(v) != size for v in values):
            raise UpstreamProtocolError("the backend returned embeddings of different sizes")
        vectors = tuple(struct.pack(f"<{size}f", *v) for v in values)
    except (KeyError, TypeError, struct.error) as e:
        raise UpstreamProtocolError(
            f"malformed Gemini embeddings from the backend ({type(e).__name__}: {e})"
        ) from e
    return EmbeddingResponse(vectors, size, Usage(), encoding_format or "float")


def parse_count_tokens_response(body: Any) -> TokenCount:
    """Read a `countTokens` answer (`totalTokens`)."""
    total = body.get("totalTokens") if isinstance(body, dict) else None
    if type(total) is not int:
        raise UpstreamProtocolError("malformed Gemini token count from the backend: no totalTokens")
    return TokenCount(total)
