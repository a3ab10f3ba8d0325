"""The one server-sent events parser, for backend response bodies: network chunks in, events out, each
with its raw bytes (what a pass-through relay forwards) beside its event name and data.

Follows the WHATWG event-stream rules: lines end in `\\n`, `\\r\\n` or `\\r`; a leading BOM is dropped; a
blank line dispatches; `data` lines join with `\\n`; `:` lines are comments; `id` and `retry` are
ignored. One leniency: at the end of the body a final event that lacks its blank line (or its last
newline) is still dispatched; a truncated JSON payload then fails loudly in the decoder instead of
vanishing.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import NamedTuple

__all__ = ["SSEEvent", "iter_sse_events", "parse_block", "sse_events"]

_BOM = b"\xef\xbb\xbf"


class SSEEvent(NamedTuple):
    """One blank-line-terminated block of the stream.

    `raw` is the block as received, blank line included (line ends normalised to `\\n` when the
    upstream used CR). `data` is None when the block dispatches no event under the WHATWG rules (a
    comment or keep-alive, an `event:` line without data); such blocks are yielded anyway so that a
    relay can forward them unchanged.
    """

    raw: bytes
    event: bytes | None
    data: bytes | None


def _parse(block: bytes) -> SSEEvent:
    # The two shapes providers send, `data: X` (OpenAI) and `event: N` + `data: X` (Anthropic), are
    # read without a split or a loop; anything else takes the general path below.
    head = block[:7]
    if head[:6] == b"data: ":
        end = block.find(b"\n")
        if end < 0 or end >= len(block) - 2:
            return SSEEvent(block, None, block[6:end] if end >= 0 else block[6:])
    elif head == b"event: ":
        line = block.find(b"\n")
        if line > 0 and block[line + 1 : line + 7] == b"data: ":
            end = block.find(b"\n", line + 7)
            if end < 0 or end >= len(block) - 2:
                return SSEEvent(
                    block, block[7:line], block[line + 7 : end] if end >= 0 else block[line + 7 :]
                )
    name: bytes | None = None
    data: bytes | None = None
    for line in block.split(b"\n"):
        if not line or line[0] == 0x3A:  # empty, or a ":" comment
            continue
        colon = line.find(b":")
        if colon < 0:
            field, value = line, b""
        else:
            field, value = line[:colon], line[colon + 1 :]
            if value[:1] == b" ":
                value = value[1:]
        if field == b"data":
            data = value if data is None else data + b"\n" + value
        elif field == b"event":
            name = value
    return SSEEvent(block, name, data)


async def sse_events(chunks: AsyncIterable[bytes]) -> AsyncIterator[SSEEvent]:
    """Every block of a byte stream split at arbitrary points (see `SSEEvent`), in order."""
    buf = b""
    start_of_stream = True
    held_cr = False
    async for chunk in chunks:
        if not chunk:
            continue
        if start_of_stream:
            if len(buf) + len(chunk) < len(_BOM) and _BOM.startswith(buf + chunk):
                buf += chunk  # maybe a BOM split across chunks: decide once three bytes are in
                continue
            chunk, buf, start_of_stream = buf + chunk, b"", False
            if chunk.startswith(_BOM):
                chunk = chunk[len(_BOM) :]
        if held_cr:
            chunk, held_cr = b"\r" + chunk, False
        if b"\r" in chunk:
            # A trailing CR may be the first half of a CRLF split across chunks: decide next time.
            if chunk[-1:] == b"\r":
                chunk, held_cr = chunk[:-1], True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buf = buf + chunk if buf else chunk
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            yield _parse(buf[start : end + 2])
            start = end + 2
        if start:
            buf = buf[start:]
    if held_cr:
        buf += b"\n"
    if start_of_stream and buf.startswith(_BOM):
        buf = buf[len(_BOM) :]
    if buf:
        yield _parse(buf)


async def iter_sse_events(chunks: AsyncIterable[bytes]) -> AsyncIterator[tuple[str | None, str]]:
    """`(event name or None, data)` for each dispatched event, as text (the WHATWG view)."""
    async for event in sse_events(chunks):
        if event.data is not None:
            name = event.event
            yield (
                name.decode("utf-8", "replace") if name is not None else None,
                event.data.decode("utf-8", "replace"),
            )


def parse_block(block: bytes) -> SSEEvent:
    """One complete block (its blank line included, line ends `\\n`), e.g. the raw bytes a pass-through
    relay forwarded, read as `sse_events` reads it."""
    return _parse(block)
