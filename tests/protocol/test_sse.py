"""The one SSE parser: events split across network chunks, line endings, comments and multi-line data,
and the raw bytes of each event that a pass-through relay forwards."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import pytest

from gateway.protocol.sse import SSEEvent, iter_sse_events, sse_events


async def _chunks(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def parse(*parts: bytes) -> list[tuple[str | None, str]]:
    return [event async for event in iter_sse_events(_chunks(parts))]


async def blocks(*parts: bytes) -> list[SSEEvent]:
    return [event async for event in sse_events(_chunks(parts))]


OPENAI = (
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":" there"}}]}\n\n'
    b"data: [DONE]\n\n"
)
OPENAI_EVENTS = [
    (None, '{"id":"c1","choices":[{"index":0,"delta":{"content":"Hi"}}]}'),
    (None, '{"id":"c1","choices":[{"index":0,"delta":{"content":" there"}}]}'),
    (None, "[DONE]"),
]

ANTHROPIC = (
    b"event: message_start\n"
    b'data: {"type":"message_start"}\n\n'
    b"event: ping\n"
    b'data: {"type": "ping"}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"caf\xc3\xa9 \xe2\x98\x95"}}\n\n'
    b"event: message_stop\n"
    b'data: {"type":"message_stop"}\n\n'
)
ANTHROPIC_EVENTS = [
    ("message_start", '{"type":"message_start"}'),
    ("ping", '{"type": "ping"}'),
    (
        "content_block_delta",
        '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"café ☕"}}',
    ),
    ("message_stop", '{"type":"message_stop"}'),
]


async def test_whole_stream_in_one_chunk() -> None:
    assert await parse(OPENAI) == OPENAI_EVENTS
    assert await parse(ANTHROPIC) == ANTHROPIC_EVENTS


@pytest.mark.parametrize("stream,expected", [(OPENAI, OPENAI_EVENTS), (ANTHROPIC, ANTHROPIC_EVENTS)])
async def test_split_at_every_position(stream: bytes, expected: list[tuple[str | None, str]]) -> None:
    # Includes splits inside the UTF-8 sequences of "é" and "☕".
    for cut in range(1, len(stream)):
        assert await parse(stream[:cut], stream[cut:]) == expected, cut


async def test_one_byte_chunks() -> None:
    assert await parse(*(ANTHROPIC[i : i + 1] for i in range(len(ANTHROPIC)))) == ANTHROPIC_EVENTS


@pytest.mark.parametrize("newline", [b"\r\n", b"\r"])
async def test_crlf_and_cr_line_endings(newline: bytes) -> None:
    stream = ANTHROPIC.replace(b"\n", newline)
    assert await parse(stream) == ANTHROPIC_EVENTS
    for cut in range(1, len(stream)):
        assert await parse(stream[:cut], stream[cut:]) == ANTHROPIC_EVENTS, cut


async def test_comments_are_skipped() -> None:
    stream = b": keep-alive\n\n: OPENROUTER PROCESSING\n\ndata: {}\n\n:\n\n"
    assert await parse(stream) == [(None, "{}")]


async def test_multi_line_data_joins_with_newline() -> None:
    stream = b"event: note\ndata: first\ndata:second\ndata\ndata:  indented\n\n"
    assert await parse(stream) == [("note", "first\nsecond\n\n indented")]


async def test_event_name_resets_after_dispatch_and_unknown_fields_ignored() -> None:
    stream = b"event: a\nid: 7\nretry: 100\ndata: 1\n\ndata: 2\n\nevent: orphan\n\ndata: 3\n\n"
    assert await parse(stream) == [("a", "1"), (None, "2"), (None, "3")]


async def test_bom_is_stripped() -> None:
    assert await parse(b"\xef\xbb\xbfdata: x\n\n") == [(None, "x")]


async def test_final_event_without_blank_line_is_dispatched() -> None:
    assert await parse(b"data: a\n\ndata: [DONE]\n") == [(None, "a"), (None, "[DONE]")]
    assert await parse(b"data: a\n\ndata: [DONE]") == [(None, "a"), (None, "[DONE]")]


async def test_empty_chunks_and_empty_stream() -> None:
    assert await parse() == []
    assert await parse(b"", b"data: x\n", b"", b"\n") == [(None, "x")]


KEEPALIVE = b": keep-alive\n\n"


@pytest.mark.parametrize("stream", [OPENAI, ANTHROPIC, KEEPALIVE + OPENAI + KEEPALIVE])
async def test_raw_bytes_are_the_stream_itself(stream: bytes) -> None:
    """What a relay forwards: the events' raw bytes join back to the upstream's bytes, however split."""
    whole = await blocks(stream)
    assert b"".join(event.raw for event in whole) == stream
    assert [(e.event, e.data) for e in whole if e.data is not None] == [
        (name.encode() if name else None, data.encode()) for name, data in await parse(stream)
    ]
    for cut in range(1, len(stream)):
        assert await blocks(stream[:cut], stream[cut:]) == whole, cut


async def test_blocks_without_data_are_yielded_but_not_dispatched() -> None:
    """Comments and keep-alives come out (so a relay can forward them) with data None."""
    stream = b": keep-alive\n\nevent: orphan\n\ndata: {}\n\n"
    assert await blocks(stream) == [
        SSEEvent(b": keep-alive\n\n", None, None),
        SSEEvent(b"event: orphan\n\n", b"orphan", None),
        SSEEvent(b"data: {}\n\n", None, b"{}"),
    ]
    assert await parse(stream) == [(None, "{}")]


async def test_raw_bytes_use_newlines_when_the_upstream_used_cr() -> None:
    stream = b"event: a\r\ndata: 1\r\n\r\ndata: 2\r\rdata: 3"
    assert await blocks(stream) == [
        SSEEvent(b"event: a\ndata: 1\n\n", b"a", b"1"),
        SSEEvent(b"data: 2\n\n", None, b"2"),
        SSEEvent(b"data: 3", None, b"3"),
    ]


async def test_bom_split_across_chunks() -> None:
    assert await parse(b"\xef", b"\xbb", b"\xbfdata: x\n\n") == [(None, "x")]
    assert await parse(b"\xef\xbb\xbf") == []
