"""A TCP forwarder on loopback that a test or benchmark can break: `127.0.0.1:<port>` → a target
(a database server), only while up. `take_down()` stops listening and cuts every connection (the
server went away); `freeze()` keeps the connections open but passes nothing (the server stopped
answering); `bring_up()` and `thaw()` undo them."""

from __future__ import annotations

import asyncio
import contextlib

from gateway.testing.process import free_port

__all__ = ["TcpForwarder"]


class TcpForwarder:
    def __init__(self, target_host: str, target_port: int, port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    def freeze(self) -> None:
        """Keep every connection open but pass nothing along: a server that stopped answering."""
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    async def bring_up(self) -> None:
        """Listen (again) on the same port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    async def take_down(self) -> None:
        """Stop listening and cut every open connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        self._flowing.set()  # let the frozen pipes notice their connections are gone
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers |= {client_writer, upstream_writer}

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await reader.read(65536):
                    await self._flowing.wait()
                    writer.write(data)
                    await writer.drain()
            writer.transport.abort()

        await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))
        self._writers -= {client_writer, upstream_writer}
