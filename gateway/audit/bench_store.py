"""Backend benchmark runs (the admin panel's "Test performance") in the audit database: one row per
run in `bench_runs` (migration 6), written when the run ends, read newest first per backend.

A run is stored as the admin API reports it (`BenchRecord`): who ran it against which backend under
which config version, its parameters and the figures of each concurrency level. SQLite and PostgreSQL
take the same statements (`?` parameters; the store numbers them for PostgreSQL).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.audit.record import format_ts, parse_ts
from gateway.audit.store import AuditStore

__all__ = ["MAX_HISTORY", "BenchRecord", "list_bench_runs", "purge_bench_runs_before", "save_bench_run"]

#: Most runs one history read returns.
MAX_HISTORY = 100

_COLUMNS = (
    "uid",
    "ts",
    "finished_at",
    "instance",
    "admin",
    "backend",
    "backend_type",
    "model",
    "config_version",
    "status",
    "parameters",
    "levels",
    "error",
)
_COLUMN_LIST = ", ".join(f'"{name}"' for name in _COLUMNS)


@dataclass(slots=True)
class BenchRecord:
    """One benchmark run, as stored and as the admin API shows it."""

    uid: str
    ts: datetime
    instance: str
    admin: str | None
    backend: str
    backend_type: str
    model: str | None
    config_version: str | None
    #: `running`, `done`, `cancelled` or `failed`.
    status: str
    parameters: dict[str, Any]
    levels: list[dict[str, Any]] = field(default_factory=list)
    finished_at: datetime | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.uid,
            "started_at": format_ts(self.ts),
            "finished_at": format_ts(self.finished_at) if self.finished_at else None,
            "instance": self.instance,
            "admin": self.admin,
            "backend": self.backend,
            "backend_type": self.backend_type,
            "model": self.model,
            "config_version": self.config_version,
            "status": self.status,
            "parameters": self.parameters,
            "levels": self.levels,
            "error": self.error,
        }


async def save_bench_run(store: AuditStore, run: BenchRecord) -> None:
    """Insert the finished run (a uid already stored is left as it is)."""
    params = [
        run.uid[:64],
        store.ts_param(run.ts),
        store.ts_param(run.finished_at) if run.finished_at else None,
        run.instance[:255],
        run.admin[:255] if run.admin else None,
        run.backend[:255],
        run.backend_type[:32],
        run.model[:255] if run.model else None,
        run.config_version[:64] if run.config_version else None,
        run.status[:16],
        orjson.dumps(run.parameters).decode(),
        orjson.dumps(run.levels).decode(),
        run.error,
    ]
    if store.dialect == "postgres":
        values = ", ".join("?::jsonb" if name in ("parameters", "levels") else "?" for name in _COLUMNS)
    else:
        values = ", ".join("?" * len(_COLUMNS))
    await store.execute(
        f'INSERT INTO "bench_runs" ({_COLUMN_LIST}) VALUES ({values}) ON CONFLICT ("uid") DO NOTHING',
        params,
    )


async def list_bench_runs(store: AuditStore, backend: str, limit: int = 20) -> list[BenchRecord]:
    """The backend's runs, newest first, at most `limit` (1..MAX_HISTORY)."""
    if not 1 <= limit <= MAX_HISTORY:
        raise ValueError(f"limit must be from 1 to {MAX_HISTORY}")
    rows = await store.execute(
        f'SELECT {_COLUMN_LIST} FROM "bench_runs" WHERE "backend" = ? ORDER BY "ts" DESC, "id" DESC LIMIT ?',
        [backend, limit],
    )
    return [_record(row) for row in rows]


async def purge_bench_runs_before(store: AuditStore, cutoff: datetime) -> int:
    """Delete the runs started before `cutoff` (the audit log's retention applies to them too);
    returns how many. The table holds a few rows per backend, so one statement does."""
    rows = await store.execute(
        'DELETE FROM "bench_runs" WHERE "ts" < ? RETURNING "id"', [store.ts_param(cutoff)]
    )
    return len(rows)


def _record(row: dict[str, Any]) -> BenchRecord:
    return BenchRecord(
        uid=row["uid"],
        ts=_time(row["ts"]),
        finished_at=_time(row["finished_at"]) if row["finished_at"] is not None else None,
        instance=row["instance"],
        admin=row["admin"],
        backend=row["backend"],
        backend_type=row["backend_type"],
        model=row["model"],
        config_version=row["config_version"],
        status=row["status"],
        parameters=_json(row["parameters"]),
        levels=_json(row["levels"]),
        error=row["error"],
    )


def _time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return parse_ts(str(value))


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value
