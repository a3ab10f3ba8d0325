"""AWS event-stream framing (`application/vnd.amazon.eventstream`), the binary frames Bedrock's
ConverseStream answers in: a decoder that takes bytes as they arrive (a frame may be split anywhere)
and an encoder (for the fake upstream and tests).

One message on the wire, all integers big-endian:

    total length (4) | headers length (4) | prelude CRC32 (4, over the 8 bytes before it)
    headers: name length (1) | name (UTF-8) | value type (1) | value
    payload (total - headers - 16 bytes)
    message CRC32 (4, over everything before it)

`frames` turns the messages into what the stream readers of `gateway.backends.streaming` expect
(`event`, `data`): the event name is the member of the API's stream union the message stands for
(`contentBlockDelta`, or the exception's name such as `throttlingException`).
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.protocol.canonical import UpstreamProtocolError

__all__ = [
    "CONTENT_TYPE",
    "EventFrame",
    "EventMessage",
    "EventStreamDecoder",
    "EventStreamError",
    "encode_message",
    "frame_of",
    "frames",
]

CONTENT_TYPE = "application/vnd.amazon.eventstream"

_PRELUDE = struct.Struct(">III")
_PRELUDE_LENGTH = 12
_CRC_LENGTH = 4
_MIN_LENGTH = _PRELUDE_LENGTH + _CRC_LENGTH
#: The service's own limits (botocore's parser keeps the same): 128 KiB of headers, 16 MiB of payload.
_MAX_HEADERS = 128 * 1024
_MAX_PAYLOAD = 16 * 1024 * 1024

# Header value types.
_TRUE, _FALSE, _BYTE, _SHORT, _INT, _LONG, _BYTES, _STRING, _TIMESTAMP, _UUID = range(10)
_FIXED = {_BYTE: ">b", _SHORT: ">h", _INT: ">i", _LONG: ">q", _TIMESTAMP: ">q"}


class EventStreamError(UpstreamProtocolError):
    """A frame that breaks the framing rules: a CRC mismatch, a length out of range, a bad header."""


@dataclass(frozen=True, slots=True)
class EventMessage:
    headers: Mapping[str, Any]
    payload: bytes


class EventStreamDecoder:
    """Bytes in (any split), whole messages out. `finish()` raises if the input ended mid-message."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[EventMessage]:
        """Take `data`; return the messages it completes."""
        self._buffer += data
        return list(self.messages())

    def add(self, data: bytes) -> None:
        self._buffer += data

    def messages(self) -> Iterator[EventMessage]:
        """The complete messages buffered, one at a time: a broken one raises only once the messages
        before it have been taken."""
        buffer = self._buffer
        while len(buffer) >= _PRELUDE_LENGTH:
            total, headers_length, prelude_crc = _PRELUDE.unpack_from(buffer)
            if zlib.crc32(memoryview(buffer)[:8]) != prelude_crc:
                raise EventStreamError("event-stream prelude CRC mismatch")
            if headers_length > _MAX_HEADERS:
                raise EventStreamError(f"event-stream headers of {headers_length} bytes: too long")
            payload_length = total - headers_length - _MIN_LENGTH
            if payload_length < 0 or payload_length > _MAX_PAYLOAD:
                raise EventStreamError(f"event-stream message length {total} is out of range")
            if len(buffer) < total:
                return
            frame = bytes(buffer[:total])
            del buffer[:total]
            (message_crc,) = struct.unpack_from(">I", frame, total - _CRC_LENGTH)
            if zlib.crc32(memoryview(frame)[: total - _CRC_LENGTH]) != message_crc:
                raise EventStreamError("event-stream message CRC mismatch")
            end = _PRELUDE_LENGTH + headers_length
            yield EventMessage(_headers(frame, _PRELUDE_LENGTH, end), frame[end : total - _CRC_LENGTH])

    def finish(self) -> None:
        if self._buffer:
            raise EventStreamError(f"the event stream ended inside a message ({len(self._buffer)} bytes)")


def _headers(frame: bytes, at: int, end: int) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    try:
        while at < end:
            name_length = frame[at]
            name = frame[at + 1 : at + 1 + name_length].decode()
            at += 1 + name_length
            kind = frame[at]
            at += 1
            value: Any
            if kind in (_TRUE, _FALSE):
                value = kind == _TRUE
            elif kind in _FIXED:
                layout = struct.Struct(_FIXED[kind])
                (value,) = layout.unpack_from(frame, at)
                at += layout.size
            elif kind in (_BYTES, _STRING):
                (length,) = struct.unpack_from(">H", frame, at)
                raw = frame[at + 2 : at + 2 + length]
                if len(raw) != length:
                    raise EventStreamError("event-stream header value runs past the headers")
                value = raw.decode() if kind == _STRING else raw
                at += 2 + length
            elif kind == _UUID:
                value = uuid.UUID(bytes=frame[at : at + 16])
                at += 16
            else:
                raise EventStreamError(f"event-stream header {name!r} has unknown value type {kind}")
            if name in headers:
                raise EventStreamError(f"event-stream header {name!r} appears twice")
            headers[name] = value
    except (IndexError, struct.error, UnicodeDecodeError, ValueError) as error:
        if isinstance(error, EventStreamError):
            raise
        raise EventStreamError(f"malformed event-stream headers ({type(error).__name__})") from None
    if at != end:
        raise EventStreamError("event-stream headers run past their stated length")
    return headers


def encode_message(headers: Mapping[str, str | bytes | bool | int], payload: bytes) -> bytes:
    """One message: string, bytes, boolean and (32-bit) integer header values."""
    encoded = bytearray()
    for name, value in headers.items():
        raw_name = name.encode()
        encoded += bytes([len(raw_name)]) + raw_name
        if isinstance(value, bool):
            encoded.append(_TRUE if value else _FALSE)
        elif isinstance(value, int):
            encoded.append(_INT)
            encoded += struct.pack(">i", value)
        else:
            raw = value.encode() if isinstance(value, str) else value
            encoded.append(_STRING if isinstance(value, str) else _BYTES)
            encoded += struct.pack(">H", len(raw)) + raw
    total = _MIN_LENGTH + len(encoded) + len(payload)
    prelude = struct.pack(">II", total, len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + bytes(encoded) + payload
    return message + struct.pack(">I", zlib.crc32(message))


@dataclass(frozen=True, slots=True)
class EventFrame:
    """One message as a stream decoder reads it: `event` the union member it stands for, `data` its
    JSON payload (for a generic `error` message, `{"message": ...}` built from its headers)."""

    event: bytes
    data: bytes
    #: `event`, `exception` or `error`.
    message_type: str


def frame_of(message: EventMessage) -> EventFrame:
    headers = message.headers
    kind = headers.get(":message-type", "event")
    if kind == "event":
        name = headers.get(":event-type")
    elif kind == "exception":
        name = headers.get(":exception-type")
    elif kind == "error":
        code = headers.get(":error-code") or "error"
        body = orjson.dumps({"message": headers.get(":error-message") or code})
        return EventFrame(str(code).encode(), body, "error")
    else:
        raise EventStreamError(f"event-stream message of unknown :message-type {kind!r}")
    if not isinstance(name, str) or not name:
        raise EventStreamError(f"event-stream {kind} message without its type header")
    return EventFrame(name.encode(), message.payload or b"{}", str(kind))


async def frames(chunks: AsyncIterator[bytes]) -> AsyncIterator[EventFrame]:
    """The messages of an event-stream body, as they complete; raises `EventStreamError` on a broken
    frame or a body that ends inside one."""
    decoder = EventStreamDecoder()
    async for chunk in chunks:
        decoder.add(chunk)
        for message in decoder.messages():
            yield frame_of(message)
    decoder.finish()
