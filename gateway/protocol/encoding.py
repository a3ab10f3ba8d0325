"""How a client endpoint writes canonical answers in its own protocol: the whole reply, the stream, and
the in-stream error event. Each protocol module defines one `ClientEncoding` per endpoint; the surface
picks the one of the route the client called and encodes at the edge, so backends never know what the
client speaks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

import orjson

from gateway.protocol.canonical import ChatResponse, EmbeddingResponse, StreamEvent, TokenCount

__all__ = ["ClientEncoding", "StreamEncoder", "WholeAnswer", "not_streamed", "whole_reply"]

#: The canonical forms of a whole answer.
WholeAnswer: TypeAlias = ChatResponse | TokenCount | EmbeddingResponse


class StreamEncoder(Protocol):
    """Writes one stream's canonical events as SSE bytes for the client (b"" when an event writes nothing
    yet); `error()` ends the stream with the protocol's error event."""

    def encode(self, event: StreamEvent) -> bytes: ...

    def error(self, message: str, type: str = ...) -> bytes: ...


@dataclass(frozen=True, slots=True)
class ClientEncoding:
    #: The whole, non-streamed answer's body; the `str` is the model name to report.
    reply: Callable[[WholeAnswer, str], bytes]
    #: A new encoder for one stream: (model name, whether the client asked for usage in the stream).
    stream: Callable[[str, bool], StreamEncoder]
    #: The protocol's in-stream error event, for a stream that fails after it started (pass-through
    #: streams too): (message, error type). Nothing may follow it.
    error_event: Callable[[str, str], bytes]
    #: For a protocol whose answers repeat the request's settings (the Responses API): the encoding
    #: for one request, given its body. None: the same encoding serves every request.
    bind: Callable[[dict[str, Any]], ClientEncoding] | None = None


def whole_reply(
    kind: type[WholeAnswer],
    what: str,
    encode: Callable[[Any, str], dict[str, Any]],
    option: int = 0,
) -> Callable[[WholeAnswer, str], bytes]:
    """A `ClientEncoding.reply` that writes `encode(response, model)` as JSON (with orjson's `option`),
    for a response of `kind` only (`what` names the client's body in the error a mismatch raises: a
    gateway bug, never input)."""

    def reply(response: WholeAnswer, model: str) -> bytes:
        if type(response) is not kind:
            raise TypeError(f"{what} cannot carry {type(response).__name__}")
        return orjson.dumps(encode(response, model), option=option)

    return reply


def not_streamed(what: str) -> Callable[[str, bool], StreamEncoder]:
    """A `ClientEncoding.stream` for an endpoint whose answers are never streamed (calling it is a
    gateway bug, never input)."""

    def stream(model: str, include_usage: bool) -> StreamEncoder:
        raise TypeError(f"{what} is never streamed")

    return stream
