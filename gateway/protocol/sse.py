"""Server-sent events parsing for backend response bodies: network chunks in, `(event name, data)` out.

Follows the WHATWG event-stream rules: lines end in `\\n`, `\\r\\n` or `\\r`; a blank line dispatches;
`data` lines join with `\\n`; `:` lines are comments; `id` and `retry` are ignored. One leniency: at the
end of the body a final event that lacks its blank line (or its last newline) is still dispatched; a
truncated JSON payload then fails loudly in the decoder instead of vanishing.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

__all__ = ["iter_sse_events"]

_BOM = b"\xef\xbb\xbf"


async def iter_sse_events(chunks: AsyncIterable[bytes]) -> AsyncIterator[tuple[str | None, str]]:
    """Yield `(event_name or None, data)` for each event in a byte stream split at arbitrary points."""
    buf = b""
    event: str | None = None
    data: list[str] = []
    first = True
    async for chunk in chunks:
        if not chunk:
            continue
        if first:
            first = False
            if chunk.startswith(_BOM):
                chunk = chunk[3:]
        buf = buf + chunk if buf else chunk
        hold = b""
        if b"\r" in buf:
            # A trailing CR may be the first half of a CRLF split across chunks: decide next time.
            if buf[-1:] == b"\r":
                buf, hold = buf[:-1], b"\r"
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = buf.rfind(b"\n")
        if end < 0:
            buf += hold
            continue
        # Only whole lines are decoded, so a UTF-8 character split across chunks stays intact.
        lines = buf[:end].decode("utf-8", "replace").split("\n")
        buf = buf[end + 1 :] + hold
        for line in lines:
            if not line:
                if data:
                    yield event, data[0] if len(data) == 1 else "\n".join(data)
                    data = []
                event = None
                continue
            if line[0] == ":":
                continue
            name, colon, value = line.partition(":")
            if colon and value[:1] == " ":
                value = value[1:]
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value
    if buf:
        line = buf.replace(b"\r", b"").decode("utf-8", "replace")
        if line and line[0] != ":":
            name, colon, value = line.partition(":")
            if colon and value[:1] == " ":
                value = value[1:]
            if name == "data":
                data.append(value)
    if data:
        yield event, "\n".join(data)
