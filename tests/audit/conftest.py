"""Audit fixtures: every store and writer test runs on SQLite and on PostgreSQL.

PostgreSQL: one throwaway database per test module (`gateway_test_<random>`, dropped afterwards),
emptied of the audit tables before each test; skipped only when nothing answers at 127.0.0.1:5432, and
then failed instead under CI (`CI` set), where .ci/run promised it.
`outage` gives a database that refuses connections until `bring_up()`: a SQLite path whose directory
does not exist yet, or PostgreSQL behind a TCP proxy that is not listening yet (and can go away again).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway.audit.record import AuditEntry
from gateway.audit.service import AuditService
from gateway.audit.writer import AuditWriter
from gateway.config.model import AuditConfig
from gateway.protocol.canonical import Usage
from gateway.routing.failover import Attempt
from gateway.routing.trail import RequestTrail
from gateway.testing.forwarder import TcpForwarder
from tests.conftest import service_missing, wait_for

__all__ = ["wait_for"]  # re-exported: the audit tests import it from here

PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_SKIP = f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT} (user postgres, trust auth)"


def postgres_available() -> bool:
    with contextlib.suppress(OSError), socket.create_connection((PG_HOST, PG_PORT), timeout=1):
        return True
    return False


def run_sync(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine to completion on a fresh loop in a thread (safe whether or not a loop runs here)."""
    result: list[Any] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coroutine))
        except BaseException as error:  # re-raised in the caller
            errors.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


async def pg_execute(sql: str, database: str = "postgres") -> None:
    connection = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user="postgres", database=database)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def query(url: str, sql: str) -> list[dict[str, Any]]:
    """Rows straight from the database (not through AuditStore)."""
    if url.startswith("sqlite://"):

        def read() -> list[dict[str, Any]]:
            connection = sqlite3.connect(url.removeprefix("sqlite://"))
            connection.row_factory = sqlite3.Row
            try:
                return [dict(row) for row in connection.execute(sql)]
            finally:
                connection.close()

        return await asyncio.to_thread(read)
    database = url.rsplit("/", 1)[1]
    port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    connection = await asyncpg.connect(host=PG_HOST, port=port, user="postgres", database=database)
    try:
        return [dict(row) for row in await connection.fetch(sql)]
    finally:
        await connection.close()


async def uid_counts(url: str) -> dict[str, int]:
    rows = await query(url, 'SELECT "uid", COUNT(*) AS n FROM "audit_records" GROUP BY "uid"')
    return {row["uid"]: int(row["n"]) for row in rows}


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """The name of a PostgreSQL database for this module, dropped at its end."""
    if not postgres_available():
        service_missing(PG_SKIP)
    name = f"gateway_test_{secrets.token_hex(5)}"
    run_sync(pg_execute(f'CREATE DATABASE "{name}"'))
    yield name
    run_sync(pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _pg_reset(name: str) -> None:
    run_sync(
        pg_execute(
            'DROP TABLE IF EXISTS "audit_records", "audit_schema_version", "bench_runs"', database=name
        )
    )


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty audit database (no tables yet)."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'audit.sqlite3'}"
    name = request.getfixturevalue("pg_database")
    _pg_reset(name)
    return f"postgres://postgres@{PG_HOST}:{PG_PORT}/{name}"


@pytest.fixture
def dialect(database_url: str) -> str:
    return "sqlite" if database_url.startswith("sqlite://") else "postgres"


@dataclass
class Outage:
    """A database that refuses connections until `bring_up()`. `url` is the database once up."""

    url: str
    dialect: str
    directory: Path | None = None
    proxy: TcpForwarder | None = None

    async def bring_up(self) -> None:
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        if self.proxy is not None:
            await self.proxy.bring_up()

    async def take_down(self) -> None:
        """PostgreSQL only: stop listening and cut every connection."""
        assert self.proxy is not None, "take_down needs the PostgreSQL proxy"
        await self.proxy.take_down()


@pytest.fixture(params=["sqlite", "postgres"])
async def outage(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        directory = tmp_path / "not-yet"
        yield Outage(f"sqlite://{directory / 'audit.sqlite3'}", "sqlite", directory=directory)
        return
    name = request.getfixturevalue("pg_database")
    await asyncio.to_thread(_pg_reset, name)
    proxy = TcpForwarder(PG_HOST, PG_PORT)
    yield Outage(f"postgres://postgres@{PG_HOST}:{proxy.port}/{name}", "postgres", proxy=proxy)
    await proxy.take_down()


def make_entry(index: int = 0, *, ts: datetime | None = None, **overrides: Any) -> AuditEntry:
    values: dict[str, Any] = {
        "ts": ts or datetime.now(UTC),
        "request_id": f"req-{index}",
        "trace_id": None,
        "instance": "test-host:1",
        "client_key": "team-a",
        "surface": "openai",
        "endpoint": "chat",
        "model": "small",
        "backend": "local",
        "backend_type": "mlx",
        "upstream_model": "mlx-community/tiny",
        "stream": index % 2 == 0,
        "status": "success",
        "http_status": 200,
        "error_type": None,
        "attempts": 1,
        "failover_path": [
            {"backend": "local", "model": "tiny", "outcome": "ok", "status": 200, "duration_ms": 12.5}
        ],
        "latency_ms": 15.25,
        "ttft_ms": 3.5,
        "prompt_tokens": 10,
        "completion_tokens": 20,
        "cached_tokens": 4,
        "cache_creation_tokens": 2,
        "config_version": "abc123",
    }
    values.update(overrides)
    return AuditEntry(**values)


def make_trail(
    index: int = 0, *, usage: Usage | None = None, attempts: list[Attempt] | None = None
) -> RequestTrail:
    """A finished request's trail as the model API leaves it (one attempt that succeeded, by default)."""
    trail = RequestTrail("openai", "chat", f"req-trail-{index}")
    trail.config_version, trail.client_key, trail.model, trail.stream = "abc123", "team-a", "small", False
    trail.attempts = [Attempt("local", "tiny", "ok", 200, 12.345)] if attempts is None else attempts
    trail.backend, trail.backend_type, trail.upstream_model = "local", "mlx", "tiny"
    trail.http_status = 200
    trail.usage = Usage(100, 20, 64, 8) if usage is None else usage
    return trail


def make_entries(
    count: int, *, start: datetime | None = None, step: timedelta | None = None
) -> list[AuditEntry]:
    start = start or datetime.now(UTC) - timedelta(hours=1)
    step = step or timedelta(milliseconds=1)
    return [make_entry(i, ts=start + step * i) for i in range(count)]


def audit_config(tmp_path: Path, url: str, **overrides: Any) -> AuditConfig:
    values: dict[str, Any] = {
        "enabled": True,
        "database_url": url,
        "retention_days": 30,
        "buffer_records": 1000,
        "batch_size": 100,
        "flush_interval_ms": 20,
        "spill_path": tmp_path / "spill" / "audit.spill.jsonl",
    }
    values.update(overrides)
    return AuditConfig(**values)


@pytest.fixture
async def writers() -> AsyncIterator[Callable[..., AuditWriter]]:
    """`writers(store_factory, config, **options)`: an AuditWriter that is stopped when the test ends,
    however it ends. A failed assert must not leave a writer's task running (with aiosqlite's
    non-daemon thread, which would hang pytest at exit instead of reporting the failure)."""
    made: list[AuditWriter] = []

    def make(*args: Any, **kwargs: Any) -> AuditWriter:
        writer = AuditWriter(*args, **kwargs)
        made.append(writer)
        return writer

    yield make
    for writer in made:
        await writer.stop()  # a no-op for a writer the test stopped itself


@pytest.fixture
async def service() -> AsyncIterator[AuditService]:
    """An AuditService closed when the test ends, however it ends (its writers with it)."""
    made = AuditService()
    yield made
    await made.close()  # safe after the test closed it itself
