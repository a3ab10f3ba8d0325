"""Audit log cost (`gateway bench audit`): the CPU one request's audit record costs the worker's process,
without the network: realistic trails through a real `AuditService` and `AuditWriter` into a real
SQLite file (and a throwaway PostgreSQL database at 127.0.0.1:5432 when one answers).

The trails are fed at a steady rate (`--rate`, 2,000 requests/s: about what one worker serves on one
core), so batches are as large as they are in service (rate × `flush_interval_ms`). What is measured
is process CPU time (`time.process_time()`: every thread, so SQLite's aiosqlite thread counts too;
on one core it competes with the event loop), minus the same paced loop with the audit log off,
divided by the records written. Split into `record()` on the request path (the event loop thread's
CPU inside the calls) and the rest (building rows, the inserts, the writer task's wake-ups). Each
repeat uses a fresh database; the median of the repeats is reported. PostgreSQL's own CPU (the server
process) is not in the figure: it is what the worker's process spends.

    gateway bench audit [--records 20000] [--repeats 3] [--rate 2000] [--prefill 200000]
                        [--client-request-ids] [--dialects sqlite,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gateway.bench.harness.progress import Progress, say
from gateway.bench.harness.results import markdown_table

DIALECTS = ("sqlite", "postgres")
PG_HOST, PG_PORT = "127.0.0.1", 5432
#: Trails recorded (and waited for) before the measurement: the connection and statements are warm.
WARMUP = 300
#: One paced tick: this many records per `rate / TICK` seconds.
TICK = 10


@dataclass(frozen=True)
class Plan:
    """What one dialect's child process measures."""

    records: int
    repeats: int
    rate: float
    prefill: int
    #: Request ids the clients chose (random, as UUIDs are) instead of the ones the gateway makes up.
    client_ids: bool = False


def _trails(count: int, client_ids: bool) -> list[Any]:
    """Finished trails as `ModelAPI` leaves them: a request id the gateway made up (or a random one a
    client sent), one attempt, usage with cache counts; one in ten failed over from a first backend."""
    from gateway.protocol.canonical import Usage
    from gateway.request_ids import new_request_id
    from gateway.routing.failover import Attempt
    from gateway.routing.trail import RequestTrail

    def request_id() -> str:
        return str(uuid.uuid4()) if client_ids else new_request_id()

    trails = []
    for index in range(count):
        trail = RequestTrail("openai", "chat", request_id())
        trail.config_version, trail.client_key, trail.model, trail.stream = (
            "0123456789abcdef",
            "team",
            "chat",
            False,
        )
        if index % 10 == 9:
            trail.attempts.append(Attempt("primary", "gpt-4o", "upstream-error", 502, 3.2))
        trail.attempts.append(Attempt("oa", "gpt-4o-mini", "ok", 200, 41.7 + index % 7))
        trail.backend, trail.backend_type, trail.upstream_model = "oa", "openai", "gpt-4o-mini"
        trail.http_status = 200
        trail.usage = Usage(1200 + index % 300, 80 + index % 50, 1024 if index % 2 else 0, 0)
        trails.append(trail)
    return trails


async def _paced(record: Any, trails: list[Any], rate: float) -> float:
    """Feed `trails` to `record` at `rate` per second, TICK at a time; the loop thread's CPU inside
    the calls."""
    loop = asyncio.get_running_loop()
    period = TICK / rate
    inside = 0.0
    start = loop.time()
    for tick, first in enumerate(range(0, len(trails), TICK)):
        began = time.thread_time()
        for trail in trails[first : first + TICK]:
            record(trail)
        inside += time.thread_time() - began
        delay = start + (tick + 1) * period - loop.time()
        await asyncio.sleep(max(0.0, delay))
    return inside


async def _written(writer: Any, count: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while writer.written < count:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the audit writer wrote {writer.written} of {count} records in {timeout:.0f} s"
            )
        await asyncio.sleep(0.005)


#: Rows of history each repeat's database starts with (by default): the random-key indexes (a
#: request id a client chose, say) cost more per insert once they are much larger than one batch.
PREFILL = 200_000

_PREFILL_COLUMNS = """INSERT INTO "audit_records" ("uid", "ts", "request_id", "instance", "client_key",
    "surface", "endpoint", "model", "backend", "backend_type", "upstream_model", "stream", "status",
    "http_status", "attempts", "failover_path", "latency_ms", "prompt_tokens", "completion_tokens",
    "config_version")
"""

_PREFILL_SQLITE = (
    _PREFILL_COLUMNS
    + """WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
SELECT lower(hex(randomblob(16))),
    strftime('%Y-%m-%d %H:%M:%S', 'now', '-' || ((? - i) * 86400 / ?) || ' seconds')
        || '.' || printf('%06d', i % 1000000) || '+00:00',
    CASE WHEN ? THEN lower(hex(randomblob(16))) ELSE 'req_' || lower(hex(randomblob(12))) END,
    'bench:1', 'team', 'openai', 'chat', 'chat', 'oa', 'openai', 'gpt-4o-mini', 0, 'success', 200, 1,
    '[{"backend":"oa","model":"gpt-4o-mini","outcome":"ok","status":200,"duration_ms":41.7}]',
    45.2, 1200, 80, '0123456789abcdef'
FROM n"""
)

_PREFILL_POSTGRES = (
    _PREFILL_COLUMNS
    + """SELECT md5(random()::text), now() - make_interval(secs => ($1 - i) * 86400.0 / $1),
    CASE WHEN $2 THEN md5(random()::text) ELSE 'req_' || substr(md5(random()::text), 1, 24) END,
    'bench:1', 'team', 'openai', 'chat', 'chat', 'oa', 'openai', 'gpt-4o-mini', false, 'success', 200, 1,
    '[{"backend":"oa","model":"gpt-4o-mini","outcome":"ok","status":200,"duration_ms":41.7}]'::jsonb,
    45.2, 1200, 80, '0123456789abcdef'
FROM generate_series(1, $1) AS i"""
)


async def _prefill(url: str, rows: int, client_ids: bool) -> None:
    """`rows` records of the last day in a fresh database (its schema made by `AuditStore.open`), written
    by the database itself: random uids and request ids, as a log of earlier requests has them (the
    gateway's `req_…`, or with `client_ids` 32 hex digits, so that the run's UUIDs land all over them)."""
    from gateway.audit.store import AuditStore

    store = await AuditStore.open(url)
    await store.close()
    if rows <= 0:
        return
    if url.startswith("sqlite://"):
        import sqlite3

        def fill() -> None:
            connection = sqlite3.connect(url.removeprefix("sqlite://"))
            try:
                connection.execute(_PREFILL_SQLITE, (rows, rows, rows, client_ids))
                connection.commit()
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                connection.close()

        await asyncio.to_thread(fill)
        return
    import asyncpg

    connection = await asyncpg.connect(url.replace("postgres://", "postgresql://", 1))
    try:
        await connection.execute(_PREFILL_POSTGRES, rows, client_ids)
        await connection.execute('ANALYZE "audit_records"')
    finally:
        await connection.close()


async def _measure(url: str, spill: Path, plan: Plan) -> dict[str, float]:
    """One repeat on a fresh database: (CPU with the audit log − CPU of the same loop without) / records."""
    from gateway.audit.service import AuditService
    from gateway.config.model import AuditConfig

    config = AuditConfig(
        enabled=True,
        database_url=url,
        retention_days=30,
        buffer_records=10_000,
        batch_size=500,
        flush_interval_ms=200,
        spill_path=spill,
    )
    await _prefill(url, plan.prefill, plan.client_ids)
    off = AuditService()  # never applied: record() is the audit-off request path
    service = AuditService()
    await service.apply(config)
    writer = service.writer
    assert writer is not None
    try:
        await _paced(service.record, _trails(WARMUP, plan.client_ids), plan.rate)
        await _written(writer, WARMUP)
        trails = _trails(plan.records, plan.client_ids)
        gc.collect()

        began = time.process_time()
        await _paced(off.record, trails, plan.rate)
        baseline = time.process_time() - began

        gc.collect()
        began = time.process_time()
        inside = await _paced(service.record, trails, plan.rate)
        await _written(writer, WARMUP + plan.records)
        total = time.process_time() - began - baseline
        if writer.lost or writer.spilled:
            raise RuntimeError(f"records not written: {writer.stats}")
    finally:
        await service.close()
    return {
        "record": inside / plan.records * 1e6,
        "flush": (total - inside) / plan.records * 1e6,
        "total": total / plan.records * 1e6,
    }


async def _pg(sql: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user="postgres", database="postgres")
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def _repeat(dialect: str, plan: Plan) -> list[dict[str, float]]:
    runs = []
    for _ in range(plan.repeats):
        with tempfile.TemporaryDirectory(prefix="bench-audit-") as directory:
            spill = Path(directory) / "audit.spill.jsonl"
            if dialect == "sqlite":
                sqlite = f"sqlite://{directory}/audit.sqlite3"
                runs.append(await _measure(sqlite, spill, plan))
                continue
            name = f"gateway_bench_{secrets.token_hex(5)}"
            await _pg(f'CREATE DATABASE "{name}"')
            try:
                url = f"postgres://postgres@{PG_HOST}:{PG_PORT}/{name}"
                runs.append(await _measure(url, spill, plan))
            finally:
                await _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return runs


def child(dialect: str, plan: Plan) -> None:
    """In a process of its own (the scenario starts one per dialect): the server's GC thresholds, the
    runs as JSON on stdout."""
    gc.set_threshold(20_000, 50, 100)  # as gateway/server.py sets them for a worker
    print(json.dumps(asyncio.run(_repeat(dialect, plan))))


def _postgres_available() -> bool:
    import socket

    with contextlib.suppress(OSError), socket.create_connection((PG_HOST, PG_PORT), timeout=1):
        return True
    return False


def _run_dialect(dialect: str, plan: Plan) -> list[dict[str, float]]:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.bench.audit_cost", dialect, json.dumps(asdict(plan))],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench.audit_cost failed ({dialect}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _median(runs: list[dict[str, float]]) -> dict[str, Any]:
    values = {
        key: round(statistics.median(run[key] for run in runs), 2) for key in ("record", "flush", "total")
    }
    return {**values, "runs": [{key: round(value, 2) for key, value in run.items()} for run in runs]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--records", type=int, default=20_000, help="records measured per repeat (20000)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per database; the median is reported")
    parser.add_argument(
        "--rate", type=float, default=2000.0, help="records per second fed to the writer (2000)"
    )
    parser.add_argument(
        "--prefill",
        type=int,
        default=PREFILL,
        help=f"rows already in each repeat's database ({PREFILL}; 0: an empty one)",
    )
    parser.add_argument(
        "--client-request-ids",
        action="store_true",
        help="random request ids, as clients that send their own x-request-id (UUIDs) have them",
    )
    parser.add_argument(
        "--dialects", default=",".join(DIALECTS), help="comma-separated: sqlite,postgres (both by default)"
    )


def run_scenario(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    if args.quick:
        plan = Plan(500, 1, args.rate, 1000, args.client_request_ids)
    else:
        plan = Plan(args.records, args.repeats, args.rate, args.prefill, args.client_request_ids)
    dialects = [d for d in args.dialects.split(",") if d]
    unknown = set(dialects) - set(DIALECTS)
    if unknown:
        raise SystemExit(f"gateway bench audit: unknown dialect(s) {', '.join(sorted(unknown))}")
    progress.add(len(dialects) - 1)
    found: dict[str, Any] = {}
    for dialect in dialects:
        with progress.step(dialect):
            if dialect == "postgres" and not _postgres_available():
                say(f"  postgres: nothing answers at {PG_HOST}:{PG_PORT}; skipped")
                found[dialect] = None
                continue
            found[dialect] = _median(_run_dialect(dialect, plan))
    return {
        **asdict(plan),
        "batch_size": 500,
        "flush_interval_ms": 200,
        "method": "process CPU time (all threads) with the audit log minus the same paced loop without it, "
        "per record written; record() = the event loop thread's CPU inside the calls; median of repeats",
        "us_per_record": found,
        "failed_requests": 0,
    }


def table(result: dict[str, Any]) -> str:
    rows = []
    for dialect, values in result["us_per_record"].items():
        if values is None:
            rows.append([dialect, "–", "–", "– (not reachable)"])
            continue
        rows.append(
            [dialect, f"{values['record']:.1f}", f"{values['flush']:.1f}", f"**{values['total']:.1f}**"]
        )
    headers = ["database", "record() on the request path (µs)", "writer: rows + inserts (µs)", "total (µs)"]
    intro = (
        f"{result['records']:,} records per repeat at {result['rate']:,.0f}/s into a database holding "
        f"{result['prefill']:,} rows, median of {result['repeats']}; process CPU per record"
        f"{'; request ids chosen by clients (random)' if result.get('client_ids') else ''}\n\n"
    )
    return intro + markdown_table(headers, rows)


if __name__ == "__main__":
    child(sys.argv[1], Plan(**json.loads(sys.argv[2])))
