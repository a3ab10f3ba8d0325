"""The audit log's database: SQLite (one host) or PostgreSQL (several instances sharing one log).

Tortoise ORM owns the connections (one private `TortoiseContext` per store, connection and app both
named `gateway_audit`, so a store never touches another Tortoise setup in the process); the
statements are ours, written once per dialect: a batched insert that ignores duplicate uids and
returns the new ids, keyset pages, bounded purges. Every operation runs under a timeout, so a
database that is down or stuck surfaces as an exception instead of a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import asyncpg
import orjson
from tortoise.context import TortoiseContext

from gateway.audit.migrations import apply_postgres, apply_sqlite
from gateway.audit.models import TEXT_LIMITS
from gateway.audit.query import LogFilter, decode_cursor, encode_cursor
from gateway.audit.record import ENTRY_FIELDS, AuditEntry, AuditRow, parse_ts
from gateway.audit.usage import MAX_GROUPS, SpendPeriods, UsageQuery

__all__ = ["CHANNEL", "DEFAULT_TIMEOUT", "MAX_PAGE_SIZE", "AuditStore"]

log = logging.getLogger("gateway.audit")

T = TypeVar("T")

#: Name of the Tortoise connection and app of every store (each store has its own context).
CONNECTION = "gateway_audit"
#: PostgreSQL channel on which each committed batch's ids are announced.
CHANNEL = "gateway_audit"
#: Seconds any single database operation may take before it fails.
DEFAULT_TIMEOUT = 5.0
#: Seconds applying migrations may take at open (another instance may hold the lock meanwhile).
MIGRATE_TIMEOUT = 60.0
MAX_PAGE_SIZE = 1000
#: Rows per multi-row INSERT … RETURNING on SQLite (x 29 parameters stays under its limit of 32,766).
_ROWS_PER_STATEMENT = 500
#: NOTIFY payloads must stay under 8000 bytes.
_NOTIFY_BYTES = 7900
_SQLITE_BUSY_MS = 5000

_COLUMNS = ENTRY_FIELDS  # every column but id, in AuditEntry's order (an AuditRow's)
_SELECT = 'SELECT "id", ' + ", ".join(f'"{name}"' for name in _COLUMNS) + ' FROM "audit_records"'
_INT_LIMIT = 2**31 - 1
_BIGINT_LIMIT = 2**63 - 1
#: Where `_fit` looks in a row: text columns with their longest value, integers with their range.
_TEXT_AT = tuple((i, TEXT_LIMITS[name]) for i, name in enumerate(_COLUMNS) if name in TEXT_LIMITS)
_INT_AT = tuple(
    (i, _INT_LIMIT if name in ("http_status", "attempts") else _BIGINT_LIMIT)
    for i, name in enumerate(_COLUMNS)
    if name in ("http_status", "attempts") or name.endswith("_tokens")
)
_FLOAT_AT = tuple(
    i for i, name in enumerate(_COLUMNS) if name in ("latency_ms", "ttft_ms", "cost_usd", "saved_usd")
)
_TS = _COLUMNS.index("ts")
_STREAM = _COLUMNS.index("stream")
_PATH = _COLUMNS.index("failover_path")
_COLUMN_LIST = ", ".join(f'"{name}"' for name in _COLUMNS)
_SQLITE_INSERT = (
    f'INSERT INTO "audit_records" ({_COLUMN_LIST}) VALUES ({", ".join("?" * len(_COLUMNS))}) '
    'ON CONFLICT ("uid") DO NOTHING'
)
_POSTGRES_TYPES = {
    "ts": "timestamptz",
    "stream": "bool",
    "http_status": "int4",
    "attempts": "int4",
    "failover_path": "jsonb",
    "latency_ms": "float8",
    "ttft_ms": "float8",
    "prompt_tokens": "int8",
    "completion_tokens": "int8",
    "cached_tokens": "int8",
    "cache_creation_tokens": "int8",
    "cost_usd": "float8",
    "saved_tokens": "int8",
    "saved_usd": "float8",
}
#: The batch travels as one JSON array of rows (orjson makes it in one call; binding 25 values a row,
#: or 25 arrays, cost asyncpg several times more CPU) and PostgreSQL takes it apart. One prepared
#: statement for any batch size.
_POSTGRES_INSERT = (
    f'INSERT INTO "audit_records" ({_COLUMN_LIST}) SELECT '
    + ", ".join(
        f"(r->>{i})::{_POSTGRES_TYPES[name]}" if name in _POSTGRES_TYPES else f"r->>{i}"
        for i, name in enumerate(_COLUMNS)
    )
    + ' FROM jsonb_array_elements($1::text::jsonb) AS r ON CONFLICT ("uid") DO NOTHING RETURNING "id", "uid"'
)


class AuditStore:
    """One connection (SQLite) or pool (PostgreSQL) to the audit database. Build with `await open()`."""

    def __init__(
        self,
        context: TortoiseContext,
        client: Any,
        dialect: str,
        connect_kwargs: dict[str, Any],
        timeout: float,
    ) -> None:
        self._context = context
        self._client = client
        self._dialect = dialect
        self._connect_kwargs = connect_kwargs
        self._timeout = timeout
        self._listeners: set[_Listener] = set()
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------------

    @classmethod
    async def open(cls, database_url: str, *, timeout: float = DEFAULT_TIMEOUT) -> AuditStore:
        """Connect, create the schema and apply pending migrations. Raises if the database is unreachable.

        `database_url`: `sqlite://ABS_PATH` (or `sqlite://:memory:`, private to this store) or
        `postgres://user:password@host:port/db` (also `postgresql://`, `asyncpg://`).
        """
        dialect, credentials, connect_kwargs = _parse_url(database_url, timeout)
        if dialect == "sqlite" and credentials["file_path"] != ":memory:":
            directory = Path(credentials["file_path"]).parent
            if not directory.is_dir():  # a clearer error than SQLite's "unable to open database file"
                raise FileNotFoundError(f"the audit database's directory does not exist: {directory}")
        engine = "tortoise.backends.sqlite" if dialect == "sqlite" else "tortoise.backends.asyncpg"
        context = TortoiseContext()
        config = {
            "connections": {CONNECTION: {"engine": engine, "credentials": credentials}},
            "apps": {CONNECTION: {"models": ["gateway.audit.models"], "default_connection": CONNECTION}},
            "use_tz": True,
            "timezone": "UTC",
        }
        # The context is current only while it registers the models (Tortoise needs that); every
        # operation afterwards goes through this store's own client, never through the contextvar.
        with context:
            await context.init(config=config)
            client = context.connections.get(CONNECTION)
        store = cls(context, client, dialect, connect_kwargs, timeout)
        try:
            async with asyncio.timeout(timeout):
                # Connect now, outside Tortoise's lazy path: a failed SQLite connect there would
                # leave the client's lock held.
                if dialect == "sqlite":
                    await _connect_sqlite(client)
                else:
                    await client.create_connection(with_db=True)
            async with asyncio.timeout(max(timeout, MIGRATE_TIMEOUT)):
                applied = await store._migrate()
        except BaseException:
            with contextlib.suppress(Exception):
                await store.close()
            raise
        if applied:
            log.info(
                "audit schema migrated to version %d",
                applied[-1],
                extra={"event": "audit_migrated", "versions": applied},
            )
        return store

    async def _migrate(self) -> list[int]:
        async with self._client.acquire_connection() as connection:
            if self._dialect == "sqlite":
                return await apply_sqlite(connection)
            return await apply_postgres(connection, MIGRATE_TIMEOUT)

    async def close(self, timeout: float | None = None) -> None:
        """Close the listeners and the connections, within `timeout` (default: the store's); past it the
        PostgreSQL pool is terminated and a stuck SQLite connection is left to close on its own. Safe
        to call twice."""
        if self._closed:
            return
        self._closed = True
        limit = self._timeout if timeout is None else timeout
        for listener in list(self._listeners):
            await listener.close()
        self._listeners.clear()
        # Not cancelled on timeout but left to finish: a driver waiting on a stuck database may not
        # even give up promptly when cancelled (aiosqlite waits for its thread).
        closing = asyncio.ensure_future(self._context.close_connections())
        done, _ = await asyncio.wait({closing}, timeout=limit)
        if closing in done and closing.exception() is None:
            return
        log.warning("audit store did not close cleanly within %.1f s", limit, extra={"event": "audit_close"})
        if closing not in done:
            closing.add_done_callback(_retrieve)
        pool = getattr(self._client, "_pool", None)  # the Tortoise client's asyncpg pool
        if pool is not None:
            pool.terminate()

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgres`."""
        return self._dialect

    async def ping(self) -> bool:
        """Whether the database answers within the timeout (never raises)."""
        try:
            await self._run(self._client.execute_query_dict("SELECT 1 AS one"))
        except Exception:
            return False
        return True

    # -- writing ---------------------------------------------------------------------------------

    async def insert(self, entries: Sequence[AuditEntry]) -> list[int]:
        """Insert in one transaction; entries whose uid is already stored are skipped. The new ids, sorted."""
        return sorted((await self.insert_returning(entries)).values())

    async def insert_returning(self, entries: Sequence[AuditEntry]) -> dict[str, int]:
        """As `insert`, returning uid → id for each row this call created (duplicates are absent)."""
        return await self.write([entry.to_row() for entry in entries], ids=True)

    async def write(self, rows: Sequence[AuditRow], *, ids: bool = False) -> dict[str, int]:
        """Insert these rows (`AuditRow`s) in one transaction, skipping uids already stored; with `ids`,
        return uid → id for each row this call created (else nothing: on SQLite that lets one prepared
        single-row INSERT run for the whole batch, `executemany`, instead of a statement with a
        RETURNING clause as long as the batch).

        On PostgreSQL the same transaction announces the new ids on channel `gateway_audit`
        (delivered when it commits), so listeners see exactly this batch's rows.
        """
        if self._closed:
            raise RuntimeError("the audit store is closed")
        if not rows:
            return {}
        if self._dialect == "sqlite":
            prepared = [_fit(row, _sqlite_ts(row[_TS])) for row in rows]
            async with asyncio.timeout(self._timeout):
                return await self._insert_sqlite(prepared, ids)
        prepared = [_fit(row, _utc(row[_TS])) for row in rows]
        async with asyncio.timeout(self._timeout):
            return await self._insert_postgres(prepared, ids)

    async def _insert_sqlite(self, rows: list[list[Any]], ids: bool) -> dict[str, int]:
        created: dict[str, int] = {}
        async with self._client.acquire_connection() as db:
            if db.in_transaction:  # left open by an operation cancelled mid-way
                await db.rollback()
            try:
                await db.execute("BEGIN IMMEDIATE")
                if ids:
                    for chunk in _chunks(rows, _ROWS_PER_STATEMENT):
                        params = [value for row in chunk for value in row]
                        async with db.execute(_sqlite_insert_returning(len(chunk)), params) as cursor:
                            created.update((str(r[1]), int(r[0])) for r in await cursor.fetchall())
                else:
                    await db.executemany(_SQLITE_INSERT, rows)
                await db.execute("COMMIT")
            except BaseException:
                # Queued behind whatever statement is still running; not waited for long (the next
                # operation rolls back a transaction it finds open anyway).
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(db.rollback(), 0.5)
                raise
        return created

    async def _insert_postgres(self, rows: list[list[Any]], ids: bool) -> dict[str, int]:
        batch = orjson.dumps(rows).decode()
        async with self._client.acquire_connection() as conn, conn.transaction():
            records = await conn.fetch(_POSTGRES_INSERT, batch)
            new_ids = sorted(record[0] for record in records)
            for payload in _notify_payloads(new_ids):
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
        return {str(record[1]): int(record[0]) for record in records} if ids else {}

    def _ts_param(self, ts: datetime) -> Any:
        return _sqlite_ts(ts) if self._dialect == "sqlite" else _utc(ts)

    def ts_param(self, ts: datetime) -> Any:
        """A time as this dialect's statements take it (sortable UTC text on SQLite)."""
        return self._ts_param(ts)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """One statement of a sibling module (`?` parameters on both dialects), under the store's
        timeout; its rows as dicts ([] for a statement that returns none)."""
        return await self._query(sql, list(params))

    # -- reading ---------------------------------------------------------------------------------

    async def page(
        self, filters: LogFilter, limit: int, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first, `limit` records after `cursor` (None: from the newest), and the next cursor
        (None when there is no more). Records that arrive meanwhile never shift later pages.

        Raises ValueError for a limit outside 1..MAX_PAGE_SIZE or a cursor this store did not make.
        """
        if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
            raise ValueError(f"limit must be from 1 to {MAX_PAGE_SIZE}")
        after = decode_cursor(cursor) if cursor else None
        entries = await self._select(filters, after, limit + 1)
        more = len(entries) > limit
        entries = entries[:limit]
        next_cursor = None
        if more:
            last = entries[-1]
            next_cursor = encode_cursor(last.ts, last.id or 0)
        return [entry.to_json() for entry in entries], next_cursor

    async def export(
        self, filters: LogFilter, *, chunk: int = MAX_PAGE_SIZE
    ) -> AsyncIterator[dict[str, Any]]:
        """Every matching record, newest first, read `chunk` rows at a time (memory stays bounded)."""
        after: tuple[datetime, int] | None = None
        while True:
            entries = await self._select(filters, after, chunk)
            for entry in entries:
                yield entry.to_json()
            if len(entries) < chunk:
                return
            after = (entries[-1].ts, entries[-1].id or 0)

    async def fetch_ids(self, ids: Iterable[int]) -> list[dict[str, Any]]:
        """The records with these ids (those that exist), in id order."""
        wanted = sorted({int(i) for i in ids})
        found: list[dict[str, Any]] = []
        for chunk in _chunks(wanted, _ROWS_PER_STATEMENT):
            marks = ", ".join("?" * len(chunk))
            rows = await self._query(f'{_SELECT} WHERE "id" IN ({marks}) ORDER BY "id"', chunk)
            found.extend(self._entry(row).to_json() for row in rows)
        return found

    async def after_id(self, last_id: int, limit: int = MAX_PAGE_SIZE) -> list[dict[str, Any]]:
        """Up to `limit` records with an id above `last_id`, in id order.

        A complete live tail on SQLite (ids are assigned in commit order there); on PostgreSQL ids
        from concurrent instances commit out of order, so use `listen` there.
        """
        rows = await self._query(
            f'{_SELECT} WHERE "id" > ? ORDER BY "id" LIMIT ?', [int(last_id), int(limit)]
        )
        return [self._entry(row).to_json() for row in rows]

    async def last_id(self) -> int:
        """The highest id stored (0 when empty): where a live tail starts."""
        rows = await self._query('SELECT COALESCE(MAX("id"), 0) AS "last" FROM "audit_records"', [])
        return int(rows[0]["last"])

    async def backend_outcomes(self, since: datetime) -> dict[str, dict[str, int]]:
        """How each backend's attempts ended in records from `since` on: `{backend: {outcome: n}}`.

        Counted over every step of each record's failover path, so a backend that failed and was
        failed over from counts too (outcomes: `ok`, a failure kind, or a skip: `disabled`,
        `circuit_open`, `quota`, `incapable`).
        """
        if self._dialect == "sqlite":
            steps = (
                "SELECT json_extract(step.value, '$.backend') AS backend, "
                "json_extract(step.value, '$.outcome') AS outcome, COUNT(*) AS n "
                'FROM "audit_records", json_each("audit_records"."failover_path") AS step '
            )
        else:
            steps = (
                "SELECT step->>'backend' AS backend, step->>'outcome' AS outcome, COUNT(*) AS n "
                'FROM "audit_records", jsonb_array_elements("failover_path") AS step '
            )
        rows = await self._query(steps + 'WHERE "ts" >= ? GROUP BY 1, 2', [self._ts_param(since)])
        counts: dict[str, dict[str, int]] = {}
        for row in rows:
            if row["backend"] is not None:
                counts.setdefault(str(row["backend"]), {})[str(row["outcome"])] = int(row["n"])
        return counts

    async def shadow_comparison(self, since: datetime) -> list[dict[str, Any]]:
        """Shadow copies from `since` on, each paired with the client request it copied (`shadow_of`
        = its `request_id`), summed per model and shadow target: the pairs, each side's failures,
        mean latency and time to first byte, tokens and cost, and how many copies were slower."""
        sql = (
            'SELECT s."model" AS model, s."backend" AS backend, s."upstream_model" AS upstream_model, '
            "COUNT(*) AS pairs, "
            "SUM(CASE WHEN p.\"status\" = 'success' THEN 0 ELSE 1 END) AS primary_errors, "
            "SUM(CASE WHEN s.\"status\" = 'success' THEN 0 ELSE 1 END) AS shadow_errors, "
            'AVG(p."latency_ms") AS primary_latency_ms, AVG(s."latency_ms") AS shadow_latency_ms, '
            'AVG(p."ttft_ms") AS primary_ttft_ms, AVG(s."ttft_ms") AS shadow_ttft_ms, '
            'SUM(CASE WHEN s."latency_ms" > p."latency_ms" THEN 1 ELSE 0 END) AS shadow_slower, '
            'SUM(p."prompt_tokens") AS primary_input_tokens, SUM(s."prompt_tokens") AS shadow_input_tokens, '
            'SUM(p."completion_tokens") AS primary_output_tokens, '
            'SUM(s."completion_tokens") AS shadow_output_tokens, '
            'SUM(p."cost_usd") AS primary_cost_usd, SUM(s."cost_usd") AS shadow_cost_usd '
            'FROM "audit_records" s JOIN "audit_records" p '
            'ON p."request_id" = s."shadow_of" AND p."shadow_of" IS NULL '
            'WHERE s."shadow_of" IS NOT NULL AND s."ts" >= ? '
            'GROUP BY s."model", s."backend", s."upstream_model" ORDER BY 1, 2, 3'
        )
        rows = await self._query(sql, [self._ts_param(since)])
        found = []
        for row in rows:
            pairs = int(row["pairs"])
            item: dict[str, Any] = {
                "model": row["model"],
                "target": {"backend": row["backend"], "model": row["upstream_model"]},
                "pairs": pairs,
                "shadow_slower": int(row["shadow_slower"] or 0),
            }
            for side in ("primary", "shadow"):
                errors = int(row[f"{side}_errors"] or 0)
                cost = row[f"{side}_cost_usd"]
                item[side] = {
                    "errors": errors,
                    "error_rate": round(errors / pairs, 4) if pairs else None,
                    "mean_latency_ms": _rounded(row[f"{side}_latency_ms"]),
                    "mean_ttft_ms": _rounded(row[f"{side}_ttft_ms"]),
                    "input_tokens": int(row[f"{side}_input_tokens"] or 0),
                    "output_tokens": int(row[f"{side}_output_tokens"] or 0),
                    "cost_usd": None if cost is None else round(float(cost), 9),
                }
            found.append(item)
        return found

    async def usage(self, query: UsageQuery, limit: int = MAX_GROUPS) -> tuple[list[dict[str, Any]], bool]:
        """The query's groups (at most `limit`), each with its counts, token sums and cost, and whether
        more groups were left out. Without `group_by`: one row, the totals. Summed by the database."""
        sql, params = query.statement(self._dialect, limit + 1)
        params[0], params[1] = self._ts_param(params[0]), self._ts_param(params[1])
        rows = await self._query(sql, params)
        return [query.row(row) for row in rows[:limit]], len(rows) > limit

    async def spend(
        self, now: datetime, clients: Sequence[str] | None = None
    ) -> dict[str | None, dict[str, Any]]:
        """Each key's spend in the UTC day and month of `now` (what budgets are counted against):
        `{client: {spent_day, unpriced_day, spent_month, unpriced_month}}`, keys without records
        absent; only `clients` when given."""
        wanted = tuple(clients) if clients is not None else None
        if wanted == ():
            return {}
        sql, params = SpendPeriods.at(now).statement(wanted)
        params[:6] = [self._ts_param(value) for value in params[:6]]
        rows = await self._query(sql, params)
        return {
            row["client"]: {
                "spent_day": round(float(row["spent_day"]), 9),
                "unpriced_day": int(row["unpriced_day"]),
                "spent_month": round(float(row["spent_month"]), 9),
                "unpriced_month": int(row["unpriced_month"]),
            }
            for row in rows
        }

    async def _select(
        self, filters: LogFilter, after: tuple[datetime, int] | None, limit: int
    ) -> list[AuditEntry]:
        conditions: list[str] = []
        params: list[Any] = []
        for name in ("model", "backend_type", "status", "request_id"):
            value = getattr(filters, name)
            if value is not None:
                conditions.append(f'"{name}" = ?')
                params.append(value)
        if filters.shadow is not None:
            conditions.append('"shadow_of" IS NOT NULL' if filters.shadow else '"shadow_of" IS NULL')
        if filters.since is not None:
            conditions.append('"ts" >= ?')
            params.append(self._ts_param(filters.since))
        if filters.until is not None:
            conditions.append('"ts" < ?')
            params.append(self._ts_param(filters.until))
        if after is not None:
            conditions.append('("ts", "id") < (?, ?)')
            params.extend([self._ts_param(after[0]), after[1]])
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        params.append(limit)
        rows = await self._query(f'{_SELECT}{where} ORDER BY "ts" DESC, "id" DESC LIMIT ?', params)
        return [self._entry(row) for row in rows]

    def _entry(self, row: Mapping[str, Any]) -> AuditEntry:
        values = {name: row[name] for name in _COLUMNS}
        ts = values["ts"]
        values["ts"] = parse_ts(ts) if isinstance(ts, str) else ts.astimezone(UTC)
        path = values["failover_path"]
        values["failover_path"] = orjson.loads(path) if isinstance(path, str | bytes) else path or []
        values["stream"] = bool(values["stream"])
        return AuditEntry(id=int(row["id"]), **values)

    # -- retention -------------------------------------------------------------------------------

    async def purge_older_than(
        self,
        cutoff: datetime,
        batch: int = 5000,
        *,
        pause: float = 0.05,
        progress: Callable[[int], Any] | None = None,
    ) -> int:
        """Delete records with ts before `cutoff`, `batch` rows per statement with a short pause
        between, so a large purge never holds the table for long. `progress(n)` is called after each
        statement with the rows it deleted. Returns the rows deleted."""
        if batch < 1:
            raise ValueError("batch must be at least 1")
        sql = self._sql(
            'DELETE FROM "audit_records" WHERE "id" IN '
            '(SELECT "id" FROM "audit_records" WHERE "ts" < ? ORDER BY "ts" LIMIT ?)'
        )
        cutoff_param = self._ts_param(cutoff)
        total = 0
        while True:
            deleted, _ = await self._run(self._client.execute_query(sql, [cutoff_param, batch]))
            total += deleted
            if progress is not None and deleted:
                progress(deleted)
            if deleted < batch:
                return total
            await asyncio.sleep(pause)

    # -- live tail (PostgreSQL) ------------------------------------------------------------------

    async def listen(
        self,
        callback: Callable[[list[int]], Any],
        *,
        on_reconnect: Callable[[], Any] | None = None,
        heartbeat: float = 10.0,
    ) -> Callable[[], Awaitable[None]]:
        """Call `callback(ids)` for each batch any instance commits (PostgreSQL only). Returns an async
        closer.

        A dedicated connection LISTENs on `gateway_audit`; it is checked every `heartbeat` seconds
        and re-established with backoff when lost, after which `on_reconnect()` is called: batches
        committed while it was down were not announced, so a tail should catch up then. Raises if
        the first connection fails.
        """
        if self._dialect != "postgres":
            raise RuntimeError("LISTEN/NOTIFY needs PostgreSQL; on SQLite poll after_id()")
        listener = _Listener(self._connect_kwargs, callback, on_reconnect, heartbeat, self._timeout)
        await listener.start()
        self._listeners.add(listener)

        async def close() -> None:
            self._listeners.discard(listener)
            await listener.close()

        return close

    # -- helpers ---------------------------------------------------------------------------------

    def _sql(self, sql: str) -> str:
        """Our statements are written with `?`; PostgreSQL numbers its parameters."""
        if self._dialect == "sqlite":
            return sql
        parts = sql.split("?")
        return "".join(part + (f"${i + 1}" if i < len(parts) - 1 else "") for i, part in enumerate(parts))

    async def _query(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        return await self._run(self._client.execute_query_dict(self._sql(sql), params))

    async def _run(self, operation: Awaitable[T]) -> T:
        if self._closed:
            raise RuntimeError("the audit store is closed")
        async with asyncio.timeout(self._timeout):
            return await operation


class _Listener:
    """One LISTEN connection, kept alive: heartbeat, reconnect with backoff (0.5 s doubling to 10 s)."""

    def __init__(
        self,
        connect_kwargs: dict[str, Any],
        callback: Callable[[list[int]], Any],
        on_reconnect: Callable[[], Any] | None,
        heartbeat: float,
        timeout: float,
    ) -> None:
        self._connect_kwargs = connect_kwargs
        self._callback = callback
        self._on_reconnect = on_reconnect
        self._heartbeat = heartbeat
        self._timeout = timeout
        self._connection: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._connect()
        self._task = asyncio.create_task(self._watch(), name="gateway-audit-listen")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        await self._drop()

    async def _connect(self) -> None:
        connection = await asyncpg.connect(**self._connect_kwargs, timeout=self._timeout)
        try:
            self._lost = asyncio.Event()
            lost = self._lost
            connection.add_termination_listener(lambda _conn: lost.set())
            async with asyncio.timeout(self._timeout):
                await connection.add_listener(CHANNEL, self._notified)
        except BaseException:
            connection.terminate()
            raise
        self._connection = connection

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            try:
                async with asyncio.timeout(self._timeout):
                    await connection.close()
            except Exception:
                connection.terminate()

    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._heartbeat):
                    await self._lost.wait()
            if not self._lost.is_set():
                try:
                    async with asyncio.timeout(self._timeout):
                        await self._connection.execute("SELECT 1")  # type: ignore[union-attr]
                    continue
                except Exception:
                    pass
            log.warning("audit LISTEN connection lost; reconnecting", extra={"event": "audit_listen_lost"})
            await self._drop()
            delay = 0.5
            while True:
                try:
                    await self._connect()
                    break
                except Exception as error:
                    log.debug("audit LISTEN reconnect failed: %s", type(error).__name__)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
            log.info("audit LISTEN connection re-established", extra={"event": "audit_listen_back"})
            if self._on_reconnect is not None:
                try:
                    self._on_reconnect()
                except Exception:
                    log.exception("audit on_reconnect callback failed")

    def _notified(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            ids = orjson.loads(payload)
            if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
                raise ValueError("not a list of ids")
        except ValueError:
            log.warning("audit notification ignored: unexpected payload", extra={"event": "audit_listen_bad"})
            return
        try:
            self._callback(ids)
        except Exception:
            log.exception("audit listen callback failed")


@functools.lru_cache(maxsize=64)
def _sqlite_insert_returning(count: int) -> str:
    """INSERT of `count` rows that skips uids already stored and returns (id, uid) of the new ones."""
    row = "(" + ", ".join("?" * len(_COLUMNS)) + ")"
    return (
        f'INSERT INTO "audit_records" ({_COLUMN_LIST}) VALUES {", ".join([row] * count)} '
        'ON CONFLICT ("uid") DO NOTHING RETURNING "id", "uid"'
    )


def _fit(row: AuditRow, ts: Any) -> list[Any]:
    """The row's values made safe to store, `ts` already in the dialect's form: a long or odd value is
    cut or clamped rather than failing the whole batch. Values that fit (nearly all) are only looked at."""
    values = list(row)
    values[_TS] = ts
    for i, limit in _TEXT_AT:
        value = values[i]
        if value is not None and (type(value) is not str or len(value) > limit or "\x00" in value):
            values[i] = str(value).replace("\x00", "")[:limit]
    for i, limit in _INT_AT:
        value = values[i]
        if value is not None and (type(value) is not int or not -limit <= value <= limit):
            values[i] = max(-limit, min(limit, int(value)))
    for i in _FLOAT_AT:
        value = values[i]
        if value is not None and type(value) is not float:
            values[i] = float(value)
    if type(values[_STREAM]) is not bool:
        values[_STREAM] = bool(values[_STREAM])
    if type(values[_PATH]) is not str:
        values[_PATH] = orjson.dumps(values[_PATH] or [], default=str).decode()
    return values


def _utc(ts: datetime) -> datetime:
    if ts.tzinfo is UTC:
        return ts
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _sqlite_ts(ts: datetime) -> str:
    """Sortable text, always UTC with microseconds: `2025-01-02 03:04:05.000006+00:00` (see migrations.py)."""
    return _utc(ts).isoformat(" ", "microseconds")


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Consume a task's outcome when nobody awaits it, so asyncio does not report it."""
    if not task.cancelled():
        task.exception()


def _notify_payloads(ids: list[int]) -> Iterable[str]:
    """JSON lists of ids, each under the NOTIFY payload limit."""
    chunk: list[str] = []
    size = 2
    for row_id in ids:
        text = str(row_id)
        if chunk and size + len(text) + 1 > _NOTIFY_BYTES:
            yield "[" + ",".join(chunk) + "]"
            chunk, size = [], 2
        chunk.append(text)
        size += len(text) + 1
    if chunk:
        yield "[" + ",".join(chunk) + "]"


def _rounded(value: Any) -> float | None:
    return None if value is None else round(float(value), 1)


def _chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def _connect_sqlite(client: Any) -> None:
    """Open the SQLite connection, trying again while the file is locked: two connections opening a
    new database at once (the writer's and a reader's) race to switch it to WAL, and SQLite answers
    the loser "database is locked" at once, without its busy handler. The caller bounds the wait."""
    delay = 0.01
    while True:
        try:
            await client.create_connection(with_db=True)
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error):
                raise
            await client.close()  # the half-made connection; the next try makes a new one
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)


def _parse_url(url: str, timeout: float) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(dialect, Tortoise credentials, asyncpg.connect kwargs) for a database URL."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("database URL must look like sqlite://PATH or postgres://user@host:port/db")
    if scheme == "sqlite":
        if not rest:
            raise ValueError("sqlite:// needs a path (sqlite:///abs/path.sqlite3)")
        credentials = {  # in the order applied: wait for a lock before anything that takes one
            "file_path": rest,
            "busy_timeout": _SQLITE_BUSY_MS,
            "journal_mode": "WAL",
            "synchronous": "NORMAL",
            "journal_size_limit": 16384,
        }
        return "sqlite", credentials, {}
    if scheme not in ("postgres", "postgresql", "asyncpg"):
        raise ValueError(f"unsupported database URL scheme {scheme!r}: use sqlite:// or postgres://")
    parts = urlsplit(f"postgres://{rest}")
    connect: dict[str, Any] = {
        "host": parts.hostname or "localhost",
        "port": parts.port or 5432,
        "user": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "database": unquote(parts.path.lstrip("/")) or None,
    }
    options: dict[str, Any] = dict(parse_qsl(parts.query))
    if "sslmode" in options:  # libpq's spelling; asyncpg takes the same values as `ssl`
        options["ssl"] = options.pop("sslmode")
    credentials = {
        **connect,
        "minsize": int(options.pop("minsize", 1)),
        "maxsize": int(options.pop("maxsize", 5)),
        "timeout": timeout,  # connect timeout
        "command_timeout": timeout,
        **options,
    }
    return "postgres", credentials, {**connect, **options}
