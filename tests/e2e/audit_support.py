"""Audit databases for the end-to-end tests: a SQLite file or a throwaway PostgreSQL database, read
directly (not through the gateway), and a TCP proxy that takes PostgreSQL away and brings it back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.testing.process import GatewayProcess, free_port
from tests.conftest import service_missing

__all__ = [
    "PG_HOST",
    "PG_PORT",
    "AuditDatabase",
    "TcpProxy",
    "audit_database",
    "live_tail_handshake",
    "postgres_available",
]

PG_HOST, PG_PORT = "127.0.0.1", 5432


def postgres_available() -> bool:
    with contextlib.suppress(OSError), socket.create_connection((PG_HOST, PG_PORT), timeout=1):
        return True
    return False


def _pg(sql: str, database: str = "postgres", port: int = PG_PORT) -> list[dict[str, Any]]:
    import asyncpg

    async def run() -> list[dict[str, Any]]:
        connection = await asyncpg.connect(host=PG_HOST, port=port, user="postgres", database=database)
        try:
            return [dict(row) for row in await connection.fetch(sql)]
        finally:
            await connection.close()

    return asyncio.run(run())


@dataclass
class AuditDatabase:
    kind: str  # "sqlite" or "postgres"
    #: SQLite: the database file. PostgreSQL: the database name.
    name: str

    def url(self, port: int = PG_PORT) -> str:
        if self.kind == "sqlite":
            return f"sqlite://{self.name}"
        return f"postgres://postgres@{PG_HOST}:{port}/{self.name}"

    def query(self, sql: str) -> list[dict[str, Any]]:
        if self.kind == "sqlite":
            connection = sqlite3.connect(self.name)
            connection.row_factory = sqlite3.Row
            try:
                return [dict(row) for row in connection.execute(sql)]
            finally:
                connection.close()
        return _pg(sql, self.name)

    def rows(self) -> list[dict[str, Any]]:
        """Every audit record, oldest first; failover_path decoded."""
        rows = self.query("SELECT * FROM audit_records ORDER BY id")
        for row in rows:
            if isinstance(row.get("failover_path"), str):
                row["failover_path"] = json.loads(row["failover_path"])
        return rows

    def count(self) -> int:
        try:
            return self.query("SELECT count(*) AS n FROM audit_records")[0]["n"]
        except Exception:  # not created yet
            return 0

    def everything_as_text(self) -> str:
        """All the database holds, as text: the SQLite file and its WAL byte for byte; every row of
        every PostgreSQL table in the public schema."""
        if self.kind == "sqlite":
            parts = []
            for suffix in ("", "-wal", "-journal"):
                path = Path(self.name + suffix)
                if path.exists():
                    parts.append(path.read_bytes().decode("utf-8", "replace"))
            return "\n".join(parts)
        tables = self.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        texts = []
        for table in tables:
            name = table["tablename"]
            texts += [str(r["t"]) for r in self.query(f'SELECT row_to_json(x)::text AS t FROM "{name}" x')]
        return "\n".join(texts)


@contextlib.contextmanager
def audit_database(kind: str, directory: Path) -> Iterator[AuditDatabase]:
    if kind == "sqlite":
        yield AuditDatabase("sqlite", str(directory / "audit.sqlite3"))
        return
    if not postgres_available():
        service_missing(f"no PostgreSQL answers at {PG_HOST}:{PG_PORT} (.ci/run starts one)")
    name = f"gateway_e2e_{secrets.token_hex(6)}"
    _pg(f'CREATE DATABASE "{name}"')
    try:
        yield AuditDatabase("postgres", name)
    finally:
        _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class TcpProxy:
    """A loopback TCP proxy to PostgreSQL: `down()` closes the listener and cuts every connection (the
    database is gone: connections are refused), `up()` listens again on the same port."""

    def __init__(self, target_port: int = PG_PORT) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()

    def up(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((PG_HOST, self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            listener.close()
        with self._lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
                connection.close()
            self._connections.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection((PG_HOST, self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def live_tail_handshake(gateway: GatewayProcess, headers: dict[str, str]) -> int:
    """The live tail's WebSocket handshake: 101 when it opens, else the HTTP status refusing it."""
    import aiohttp

    async def run() -> int:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(gateway.url("/admin/api/logs/live"), headers=headers):
                    return 101
            except aiohttp.WSServerHandshakeError as error:
                return error.status

    return asyncio.run(run())
