"""The audit databases of a faults run, read and broken from outside the gateway: the records per
request id (SQLite or PostgreSQL), a PostgreSQL database made for the run and dropped after it, and
the two outages: SQLite held under an exclusive lock (the gateway's writes wait, then fail), and
PostgreSQL behind a TCP forwarder that stops listening and cuts its connections."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "PG_HOST",
    "PG_PORT",
    "PostgresDatabases",
    "SqliteLock",
    "request_id_counts",
]

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"


async def request_id_counts(url: str, prefix: str) -> Counter[str]:
    """How many audit records each request id starting with `prefix` has in the database at `url`
    (the database itself, never through a forwarder). An empty count if the table is not there."""
    sql = (
        'SELECT "request_id", COUNT(*) FROM "audit_records" WHERE "request_id" LIKE $1 GROUP BY "request_id"'
    )
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")

        def read() -> Counter[str]:
            if not Path(path).exists():
                return Counter()
            connection = sqlite3.connect(path, timeout=30)
            try:
                rows = connection.execute(sql.replace("$1", "?"), (prefix + "%",)).fetchall()
            except sqlite3.OperationalError:  # no table yet
                return Counter()
            finally:
                connection.close()
            return Counter({rid: n for rid, n in rows})

        return await asyncio.to_thread(read)
    import asyncpg

    database = url.rsplit("/", 1)[1]
    connection = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=database)
    try:
        rows = await connection.fetch(sql, prefix + "%")
    except asyncpg.UndefinedTableError:
        return Counter()
    finally:
        await connection.close()
    return Counter({row[0]: int(row[1]) for row in rows})


@dataclass
class PostgresDatabases:
    """Databases created for one run (`bench_faults_<random>_<n>`), dropped by `drop_all()`."""

    created: list[str] = field(default_factory=list)
    tag: str = field(default_factory=lambda: secrets.token_hex(4))

    async def create(self) -> str:
        import asyncpg

        name = f"bench_faults_{self.tag}_{len(self.created)}"
        connection = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        self.created.append(name)
        return name

    async def drop_all(self) -> None:
        import asyncpg

        connection = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
        try:
            for name in self.created:
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()
        self.created.clear()


class SqliteLock:
    """Hold SQLite's write lock on a database (`BEGIN EXCLUSIVE` in a thread of ours): every write
    of the gateway waits its busy timeout and fails, as if the disk had gone away. The connection
    the gateway already has open is untouched, which is why a `chmod` would not do."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._release = threading.Event()
        self._held = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    def _hold(self) -> None:
        connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            connection.execute("BEGIN EXCLUSIVE")
            self._held.set()
            self._release.wait()
            connection.execute("ROLLBACK")
        except sqlite3.Error as error:
            self.error = str(error)
            self._held.set()
        finally:
            connection.close()

    async def take(self) -> None:
        self._thread = threading.Thread(target=self._hold, name="sqlite-lock", daemon=True)
        self._thread.start()
        await asyncio.to_thread(self._held.wait, 60)

    async def give_back(self) -> None:
        self._release.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)
