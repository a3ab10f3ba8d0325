"""The audit schema's numbered migrations, per dialect, applied in order at start.

A deployed step is never edited: a schema change is a new step at the end of both lists (and the
matching change to `gateway/audit/models.py`). Every step is also safe to run twice (`IF NOT EXISTS`;
a column is added only when missing), and `apply_*` holds a lock for the whole transaction, so
workers and instances starting together apply each step once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiosqlite
    import asyncpg

__all__ = ["MIGRATIONS", "Migration", "apply_postgres", "apply_sqlite"]

#: `pg_advisory_xact_lock` key of the audit schema (any constant; "gwaudit1" as a number).
ADVISORY_LOCK_KEY = 0x6777_6175_6469_7431


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...] = ()
    #: Columns added to `audit_records`, (name, type) each, after the statements; one that is there
    #: already is left alone (SQLite has no `ADD COLUMN IF NOT EXISTS`).
    add_columns: tuple[tuple[str, str], ...] = ()


#: Version 2: the prompt-cache token counts (older rows read as null).
_CACHE_TOKENS = (("cached_tokens", "BIGINT"), ("cache_creation_tokens", "BIGINT"))
#: Version 3: the client's address (older rows read as null).
_CLIENT_ADDRESS = (("client_address", "VARCHAR(64)"),)
#: Version 4: spend control, the request's cost in USD (null: unknown price) and the limit that refused
#: it (older rows read as null).
_SPEND = (("cost_usd", "DOUBLE PRECISION"), ("limit_name", "VARCHAR(64)"))
#: Version 5: the response cache, what it did (hit / miss / bypass / off) and what a hit saved (older
#: rows read as null).
_RESPONSE_CACHE = (("cache", "VARCHAR(8)"), ("saved_tokens", "BIGINT"), ("saved_usd", "DOUBLE PRECISION"))

#: Version 7: shadow traffic, the request id a shadow copy's record copied (null: a client request).
_SHADOW = (("shadow_of", "VARCHAR(200)"),)


#: Version 6: the admin panel's backend benchmark runs (`gateway/audit/bench_store.py`).
def _bench_runs(id_column: str, ts: str, json: str) -> tuple[str, ...]:
    return (
        f"""CREATE TABLE IF NOT EXISTS "bench_runs" (
    "id" {id_column},
    "uid" VARCHAR(64) NOT NULL UNIQUE,
    "ts" {ts} NOT NULL,
    "finished_at" {ts},
    "instance" VARCHAR(255) NOT NULL,
    "admin" VARCHAR(255),
    "backend" VARCHAR(255) NOT NULL,
    "backend_type" VARCHAR(32) NOT NULL,
    "model" VARCHAR(255),
    "config_version" VARCHAR(64),
    "status" VARCHAR(16) NOT NULL,
    "parameters" {json} NOT NULL,
    "levels" {json} NOT NULL,
    "error" TEXT
)""",
        'CREATE INDEX IF NOT EXISTS "bench_runs_backend_ts" ON "bench_runs" ("backend", "ts", "id")',
    )


def _indexes() -> tuple[str, ...]:
    return (
        'CREATE INDEX IF NOT EXISTS "audit_records_ts_id" ON "audit_records" ("ts", "id")',
        'CREATE INDEX IF NOT EXISTS "audit_records_model_ts" ON "audit_records" ("model", "ts", "id")',
        'CREATE INDEX IF NOT EXISTS "audit_records_status_ts" ON "audit_records" ("status", "ts", "id")',
        'CREATE INDEX IF NOT EXISTS "audit_records_backend_type_ts" '
        'ON "audit_records" ("backend_type", "ts", "id")',
        'CREATE INDEX IF NOT EXISTS "audit_records_request_id" ON "audit_records" ("request_id")',
    )


def _records_table(id_column: str, ts: str, boolean: str, json: str, double: str) -> str:
    return f"""CREATE TABLE IF NOT EXISTS "audit_records" (
    "id" {id_column},
    "uid" VARCHAR(64) NOT NULL UNIQUE,
    "ts" {ts} NOT NULL,
    "request_id" VARCHAR(200) NOT NULL,
    "trace_id" VARCHAR(64),
    "instance" VARCHAR(255) NOT NULL,
    "client_key" VARCHAR(255),
    "surface" VARCHAR(32) NOT NULL,
    "endpoint" VARCHAR(32) NOT NULL,
    "model" VARCHAR(255),
    "backend" VARCHAR(255),
    "backend_type" VARCHAR(32),
    "upstream_model" VARCHAR(255),
    "stream" {boolean} NOT NULL,
    "status" VARCHAR(16) NOT NULL,
    "http_status" INT NOT NULL,
    "error_type" VARCHAR(64),
    "attempts" INT NOT NULL,
    "failover_path" {json} NOT NULL,
    "latency_ms" {double} NOT NULL,
    "ttft_ms" {double},
    "prompt_tokens" BIGINT,
    "completion_tokens" BIGINT,
    "config_version" VARCHAR(64)
)"""


MIGRATIONS: dict[str, tuple[Migration, ...]] = {
    # SQLite keeps `ts` as text, 'YYYY-MM-DD HH:MM:SS.ffffff+00:00' (always UTC, always microseconds),
    # which sorts as time does. AUTOINCREMENT: ids are never reused, even after a purge emptied the
    # table, so a tail that remembers the last id never misses a row.
    "sqlite": (
        Migration(
            1,
            "audit_records",
            (
                _records_table(
                    "INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL", "TIMESTAMP", "INT", "JSON", "REAL"
                ),
                *_indexes(),
            ),
        ),
        Migration(2, "cache_tokens", add_columns=_CACHE_TOKENS),
        Migration(3, "client_address", add_columns=_CLIENT_ADDRESS),
        Migration(4, "spend", add_columns=_SPEND),
        Migration(5, "response_cache", add_columns=_RESPONSE_CACHE),
        Migration(
            6, "bench_runs", _bench_runs("INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL", "TIMESTAMP", "JSON")
        ),
        Migration(7, "shadow", add_columns=_SHADOW),
    ),
    "postgres": (
        Migration(
            1,
            "audit_records",
            (
                _records_table(
                    "BIGSERIAL NOT NULL PRIMARY KEY", "TIMESTAMPTZ", "BOOL", "JSONB", "DOUBLE PRECISION"
                ),
                *_indexes(),
            ),
        ),
        Migration(2, "cache_tokens", add_columns=_CACHE_TOKENS),
        Migration(3, "client_address", add_columns=_CLIENT_ADDRESS),
        Migration(4, "spend", add_columns=_SPEND),
        Migration(5, "response_cache", add_columns=_RESPONSE_CACHE),
        Migration(6, "bench_runs", _bench_runs("BIGSERIAL NOT NULL PRIMARY KEY", "TIMESTAMPTZ", "JSONB")),
        Migration(7, "shadow", add_columns=_SHADOW),
    ),
}

_VERSION_TABLE = {
    "sqlite": 'CREATE TABLE IF NOT EXISTS "audit_schema_version" ('
    '"version" INT NOT NULL PRIMARY KEY, "name" VARCHAR(200) NOT NULL, "applied_at" TIMESTAMP NOT NULL)',
    "postgres": 'CREATE TABLE IF NOT EXISTS "audit_schema_version" ('
    '"version" INT NOT NULL PRIMARY KEY, "name" VARCHAR(200) NOT NULL, "applied_at" TIMESTAMPTZ NOT NULL)',
}


async def apply_sqlite(db: aiosqlite.Connection) -> list[int]:
    """Apply the missing steps in one write transaction; return the versions applied (often none).

    `BEGIN IMMEDIATE` takes the database's write lock before reading the version, so a second
    process waits (busy_timeout) and then finds the steps done; a deferred transaction would fail
    with SQLITE_BUSY when it tried to upgrade its read lock instead.
    """
    if db.in_transaction:
        await db.rollback()
    await db.execute("BEGIN IMMEDIATE")
    try:
        await db.execute(_VERSION_TABLE["sqlite"])
        async with db.execute('SELECT COALESCE(MAX("version"), 0) FROM "audit_schema_version"') as cursor:
            row = await cursor.fetchone()
        current = int(row[0]) if row else 0
        applied = []
        for step in MIGRATIONS["sqlite"]:
            if step.version <= current:
                continue
            for statement in step.statements:
                await db.execute(statement)
            if step.add_columns:
                async with db.execute('PRAGMA table_info("audit_records")') as cursor:
                    present = {row[1] for row in await cursor.fetchall()}
                for column, kind in step.add_columns:
                    if column not in present:
                        await db.execute(f'ALTER TABLE "audit_records" ADD COLUMN "{column}" {kind}')
            now = datetime.now(UTC).replace(tzinfo=None).isoformat(" ", "microseconds") + "+00:00"
            await db.execute(
                'INSERT INTO "audit_schema_version" ("version", "name", "applied_at") VALUES (?, ?, ?)',
                (step.version, step.name, now),
            )
            applied.append(step.version)
        await db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            await db.rollback()
        raise
    return applied


async def apply_postgres(conn: asyncpg.Connection, timeout: float = 60.0) -> list[int]:
    """Apply the missing steps in one transaction under an advisory lock; return the versions applied.

    The lock is taken first, before even the version table is created: concurrent
    `CREATE TABLE IF NOT EXISTS` of the same table can fail on PostgreSQL without it.
    """
    applied = []
    async with conn.transaction():
        # Each statement may take longer than the pool's command timeout (another instance may hold
        # the lock while it migrates; a future step may build an index).
        await conn.execute("SELECT pg_advisory_xact_lock($1)", ADVISORY_LOCK_KEY, timeout=timeout)
        await conn.execute(_VERSION_TABLE["postgres"], timeout=timeout)
        current = await conn.fetchval('SELECT COALESCE(MAX("version"), 0) FROM "audit_schema_version"')
        for step in MIGRATIONS["postgres"]:
            if step.version <= current:
                continue
            for statement in step.statements:
                await conn.execute(statement, timeout=timeout)
            for column, kind in step.add_columns:
                await conn.execute(
                    f'ALTER TABLE "audit_records" ADD COLUMN IF NOT EXISTS "{column}" {kind}', timeout=timeout
                )
            await conn.execute(
                'INSERT INTO "audit_schema_version" ("version", "name", "applied_at") VALUES ($1, $2, $3)',
                step.version,
                step.name,
                datetime.now(UTC),
            )
            applied.append(step.version)
    return applied
