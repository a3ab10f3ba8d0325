"""AWS event-stream framing: what the encoder writes, botocore's own parser reads (and the reverse
direction round-trips), a message split anywhere still decodes, and a broken frame or a body cut
inside a message is an error, never a silent end."""

from __future__ import annotations

import struct
import zlib

import pytest
from botocore.eventstream import EventStreamBuffer

from gateway.protocol.eventstream import (
    EventStreamDecoder,
    EventStreamError,
    encode_message,
    frame_of,
    frames,
)

HEADERS = {":event-type": "contentBlockDelta", ":content-type": "application/json", ":message-type": "event"}
PAYLOAD = b'{"contentBlockIndex":0,"delta":{"text":"Hi \xc3\xa9"},"p":"abcd"}'


def test_botocore_reads_what_the_encoder_writes() -> None:
    extra = {"flag": True, "off": False, "count": -7, "blob": b"\x00\x01"}
    buffer = EventStreamBuffer()
    buffer.add_data(encode_message({**HEADERS, **extra}, PAYLOAD) + encode_message(HEADERS, b""))
    messages = list(buffer)
    assert [m.payload for m in messages] == [PAYLOAD, b""]
    assert messages[0].headers == {**HEADERS, **extra}


def test_a_message_split_at_every_byte_decodes_once_complete() -> None:
    wire = encode_message(HEADERS, PAYLOAD) + encode_message({**HEADERS, "n": 2}, b"{}")
    for cut in range(len(wire) + 1):
        decoder = EventStreamDecoder()
        got = decoder.feed(wire[:cut]) + decoder.feed(wire[cut:])
        assert [(dict(m.headers), m.payload) for m in got] == [
            (HEADERS, PAYLOAD),
            ({**HEADERS, "n": 2}, b"{}"),
        ]
        decoder.finish()


def test_byte_by_byte_feeding_yields_each_message_when_its_last_byte_arrives() -> None:
    wire = encode_message(HEADERS, PAYLOAD)
    decoder = EventStreamDecoder()
    counts = [len(decoder.feed(wire[i : i + 1])) for i in range(len(wire))]
    assert counts == [0] * (len(wire) - 1) + [1]


@pytest.mark.parametrize(
    ("where", "message"),
    [(-1, "message CRC mismatch"), (20, "message CRC mismatch"), (2, "prelude CRC mismatch")],
    ids=["message-crc", "payload-byte", "prelude"],
)
def test_a_corrupted_byte_is_a_crc_mismatch(where: int, message: str) -> None:
    wire = bytearray(encode_message(HEADERS, PAYLOAD))
    wire[where] ^= 0x01
    with pytest.raises(EventStreamError, match=message):
        EventStreamDecoder().feed(bytes(wire))


def test_a_body_that_ends_inside_a_message_is_an_error() -> None:
    decoder = EventStreamDecoder()
    assert decoder.feed(encode_message(HEADERS, PAYLOAD)[:-3]) == []
    with pytest.raises(EventStreamError, match="ended inside a message"):
        decoder.finish()


def test_a_length_out_of_range_is_refused_before_waiting_for_it() -> None:
    prelude = struct.pack(">II", 8, 0)  # shorter than a message can be
    with pytest.raises(EventStreamError, match="out of range"):
        EventStreamDecoder().feed(prelude + struct.pack(">I", zlib.crc32(prelude)))


def test_exception_and_error_messages_become_frames_named_by_their_type() -> None:
    decoder = EventStreamDecoder()
    exception = {":exception-type": "throttlingException", ":message-type": "exception"}
    error = {":error-code": "InternalFailure", ":error-message": "boom", ":message-type": "error"}
    [first, second, third] = decoder.feed(
        encode_message(HEADERS, PAYLOAD)
        + encode_message(exception, b'{"message":"slow down"}')
        + encode_message(error, b"")
    )
    assert (frame_of(first).event, frame_of(first).data) == (b"contentBlockDelta", PAYLOAD)
    assert (frame_of(second).event, frame_of(second).message_type) == (b"throttlingException", "exception")
    assert (frame_of(third).event, frame_of(third).data) == (b"InternalFailure", b'{"message":"boom"}')


async def test_frames_reads_an_async_body_and_fails_on_a_cut() -> None:
    wire = encode_message(HEADERS, PAYLOAD) * 2

    async def body(data: bytes):
        for i in range(0, len(data), 7):
            yield data[i : i + 7]

    assert [f.data async for f in frames(body(wire))] == [PAYLOAD, PAYLOAD]
    with pytest.raises(EventStreamError):
        [f async for f in frames(body(wire[:-1]))]


async def test_the_messages_before_a_broken_one_are_read_first() -> None:
    good = encode_message(HEADERS, PAYLOAD)
    broken = bytearray(good)
    broken[-1] ^= 0x01

    async def body():
        yield good + bytes(broken)  # one chunk holding both

    got: list[bytes] = []
    with pytest.raises(EventStreamError, match="message CRC mismatch"):
        async for frame in frames(body()):
            got.append(frame.data)
    assert got == [PAYLOAD]
