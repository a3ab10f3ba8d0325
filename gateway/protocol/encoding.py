"""How a client endpoint writes canonical answers in its own protocol: the whole reply, the stream, and
the in-stream error event. Each protocol module defines one `ClientEncoding` per endpoint; the surface
picks the one of the route the client called and encodes at the edge, so backends never know what the
client speaks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from gateway.protocol.canonical import ChatResponse, StreamEvent, TokenCount

__all__ = ["ClientEncoding", "StreamEncoder", "whole_reply"]


class StreamEncoder(Protocol):
    """Writes one stream's canonical events as SSE bytes for the client (b"" when an event writes nothing
    yet); `error()` ends the stream with the protocol's error event."""

    def encode(self, event: StreamEvent) -> bytes: ...

    def error(self, message: str, type: str = ...) -> bytes: ...


@dataclass(frozen=True, slots=True)
class ClientEncoding:
    #: The whole, non-streamed answer's body; the `str` is the model name to report.
    reply: Callable[[ChatResponse | TokenCount, str], bytes]
    #: A new encoder for one stream: (model name, whether the client asked for usage in the stream).
    stream: Callable[[str, bool], StreamEncoder]
    #: The protocol's in-stream error event, for a stream that fails after it started (pass-through
    #: streams too): (message, error type). Nothing may follow it.
    error_event: Callable[[str, str], bytes]


def whole_reply(
    kind: type[ChatResponse] | type[TokenCount], what: str, encode: Callable[[Any, str], dict[str, Any]]
) -> Callable[[ChatResponse | TokenCount, str], bytes]:
    """A `ClientEncoding.reply` that writes `encode(response, model)` as JSON, for a response of `kind`
    only (`what` names the client's body in the error a mismatch raises: a gateway bug, never input)."""

    def reply(response: ChatResponse | TokenCount, model: str) -> bytes:
        if type(response) is not kind:
            raise TypeError(f"{what} cannot carry {type(response).__name__}")
        return orjson.dumps(encode(response, model))

    return reply
