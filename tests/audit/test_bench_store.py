"""Benchmark runs in the audit database (`bench_runs`, migration 6), on SQLite and PostgreSQL: a run
is stored once with its parameters and per-level figures, read back newest first per backend, and
the table comes with the migrations of an existing database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from gateway.audit.bench_store import (
    MAX_HISTORY,
    BenchRecord,
    list_bench_runs,
    purge_bench_runs_before,
    save_bench_run,
)
from gateway.audit.retention import run_retention
from gateway.audit.store import AuditStore
from tests.audit.conftest import query, wait_for

LEVELS = [
    {
        "concurrency": 1,
        "requests": 12,
        "errors": 0,
        "requests_per_s": 2.4,
        "latency_ms": {"p50": 410.5, "p95": 420.0},
    },
    {
        "concurrency": 4,
        "requests": 30,
        "errors": 1,
        "requests_per_s": 5.8,
        "latency_ms": {"p50": 650.0, "p95": None},
    },
]


def run(uid: str, backend: str, ts: datetime, **overrides: object) -> BenchRecord:
    values: dict = {
        "uid": uid,
        "ts": ts,
        "finished_at": ts + timedelta(seconds=10),
        "instance": "host:1",
        "admin": "ops",
        "backend": backend,
        "backend_type": "openai_compatible",
        "model": "gpt-4o",
        "config_version": "abc123",
        "status": "done",
        "parameters": {"concurrency": [1, 4], "seconds_per_level": 5, "stream": True},
        "levels": LEVELS,
    }
    return BenchRecord(**{**values, **overrides})  # type: ignore[arg-type]


async def test_runs_are_stored_once_and_read_newest_first_per_backend(database_url: str) -> None:
    now = datetime.now(UTC).replace(microsecond=123456)
    store = await AuditStore.open(database_url)
    try:
        await save_bench_run(store, run("r1", "up", now - timedelta(minutes=2)))
        await save_bench_run(store, run("r2", "up", now, status="cancelled", error=None))
        await save_bench_run(store, run("r3", "other", now - timedelta(minutes=1), model=None, admin=None))
        await save_bench_run(store, run("r1", "up", now - timedelta(minutes=2), status="failed"))  # again

        runs = await list_bench_runs(store, "up")
        assert [r.uid for r in runs] == ["r2", "r1"]
        assert runs[1].status == "done"  # the second save of r1 changed nothing
        first = runs[1].to_json()
        assert first["levels"] == LEVELS and first["parameters"]["concurrency"] == [1, 4]
        assert first["config_version"] == "abc123" and first["backend_type"] == "openai_compatible"
        assert runs[0].ts == now and runs[0].finished_at == now + timedelta(seconds=10)
        assert [r.uid for r in await list_bench_runs(store, "up", limit=1)] == ["r2"]
        other = await list_bench_runs(store, "other")
        assert other[0].model is None and other[0].admin is None
        assert await list_bench_runs(store, "nowhere") == []
        with pytest.raises(ValueError):
            await list_bench_runs(store, "up", limit=MAX_HISTORY + 1)
    finally:
        await store.close()
    rows = await query(database_url, 'SELECT COUNT(*) AS n FROM "bench_runs"')
    assert int(rows[0]["n"]) == 3


async def test_retention_purges_runs_older_than_the_audit_log_keeps(database_url: str) -> None:
    """The audit log's retention applies to the benchmark runs too: the purge that deletes old
    records deletes the runs started before the same cutoff, and keeps the newer ones."""
    now = datetime.now(UTC)
    store = await AuditStore.open(database_url)
    stop = asyncio.Event()
    try:
        await save_bench_run(store, run("old-1", "up", now - timedelta(days=40)))
        await save_bench_run(store, run("old-2", "other", now - timedelta(days=31)))
        await save_bench_run(store, run("new", "up", now - timedelta(days=29)))
        assert await purge_bench_runs_before(store, now - timedelta(days=30)) == 2
        assert [r.uid for r in await list_bench_runs(store, "up")] == ["new"]
        assert await list_bench_runs(store, "other") == []

        await save_bench_run(store, run("fresh", "up", now - timedelta(days=1)))
        task = asyncio.create_task(run_retention(store, 7, stop_event=stop, interval=3600))

        async def only_fresh_left() -> bool:
            return [r.uid for r in await list_bench_runs(store, "up")] == ["fresh"]

        await wait_for(only_fresh_left, timeout=5)  # the purge at start: "new" is 29 days old
        stop.set()
        await asyncio.wait_for(task, 5)
        assert task.exception() is None
    finally:
        stop.set()
        await store.close()
