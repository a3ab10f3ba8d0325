"""AuditWriter on SQLite and PostgreSQL: batches, the non-blocking record path, outages (buffer, spill,
replay), shutdown, orphaned spill files, and retention."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.query import LogFilter
from gateway.audit.retention import run_retention
from gateway.audit.spill import SpillFiles
from gateway.audit.store import AuditStore
from gateway.audit.writer import AuditWriter
from gateway.protocol.canonical import Usage
from gateway.routing.failover import Attempt

from .conftest import Outage, audit_config, make_entries, make_entry, make_trail, uid_counts, wait_for

FAST_RETRY = {"retry_initial": 0.05, "retry_max": 0.2}
Writers = Callable[..., AuditWriter]


def _spill_files(spill_path: Path) -> list[Path]:
    return sorted(spill_path.parent.glob(spill_path.name + ".*")) if spill_path.parent.exists() else []


def _spill_lines(spill_path: Path) -> int:
    return sum(len(path.read_bytes().splitlines()) for path in _spill_files(spill_path))


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


async def test_writes_in_batches_and_reports_what_it_wrote(
    database_url: str, tmp_path: Path, writers: Writers
) -> None:
    config = audit_config(tmp_path, database_url, batch_size=50, flush_interval_ms=20)
    written: list[list[dict[str, Any]]] = []
    writer = writers(None, config, on_written=written.append)
    await writer.start()
    entries = make_entries(230)
    for entry in entries:
        writer.record(entry)
    await wait_for(lambda: writer.written == 230)
    assert writer.db_up and writer.store is not None
    assert all(len(batch) <= 50 for batch in written) and len(written) >= 5
    records = [record for batch in written for record in batch]
    assert sorted(r["uid"] for r in records) == sorted(e.uid for e in entries)
    assert all(isinstance(r["id"], int) for r in records)
    assert await writer.store.fetch_ids([records[0]["id"]]) == [records[0]]
    # A lone record is written after the flush interval, not held until a batch fills (it never
    # would: nothing else is recorded).
    writer.record(make_entry(999))
    await wait_for(lambda: writer.written == 231)
    await writer.stop()
    counts = await uid_counts(database_url)
    assert len(counts) == 231 and set(counts.values()) == {1}
    assert writer.stats == {
        "buffered": 0,
        "recorded": 231,
        "written": 231,
        "spilled": 0,
        "replayed": 0,
        "lost": 0,
        "failed_batches": 0,
        "db_up": False,  # closed
        "last_error": None,  # the database never failed
        "last_error_at": None,
    }


async def test_trails_become_records_when_the_batch_is_written(
    database_url: str, tmp_path: Path, writers: Writers
) -> None:
    """The request path hands over the trail; the writer builds the rows later, but what they say
    (the latency above all) is what was true when the request ended."""
    config = audit_config(tmp_path, database_url, batch_size=100, flush_interval_ms=50)
    # The writer's clock says when each request ended: 12.34 ms after it started, an hour ago. Rows
    # built from the real clock (now) would say an hour.
    started = time.monotonic() - 3600
    writer = writers(None, config, clock=lambda: started + 0.01234)
    await writer.start()
    trails = [make_trail(i) for i in range(40)]
    failed = make_trail(99, usage=Usage(), attempts=[Attempt("local", "tiny", "http_5xx", 503, 2.0)])
    failed.http_status, failed.error_type = 503, "upstream-error"
    for trail in [*trails, failed]:
        trail.started = started
        writer.record_trail(trail)
    await wait_for(lambda: writer.written == 41)
    assert writer.stats["recorded"] == 41 and writer.buffered == 0 and writer.lost == 0
    records, _ = await writer.store.page(LogFilter(), 100)  # type: ignore[union-attr]
    by_request = {record["request_id"]: record for record in records}
    assert set(by_request) == {t.request_id for t in [*trails, failed]}
    assert len({record["uid"] for record in records}) == 41
    first = by_request["req-trail-0"]
    assert first["latency_ms"] == 12.34  # measured when the request ended, not when the row was built
    assert (first["prompt_tokens"], first["completion_tokens"]) == (100, 20)
    assert (first["cached_tokens"], first["cache_creation_tokens"]) == (64, 8)
    assert first["status"] == "success" and first["attempts"] == 1 and first["backend_type"] == "mlx"
    assert first["failover_path"] == [
        {"backend": "local", "model": "tiny", "outcome": "ok", "status": 200, "duration_ms": 12.35}
    ]
    bad = by_request["req-trail-99"]
    assert bad["status"] == "error" and bad["http_status"] == 503 and bad["error_type"] == "upstream-error"
    assert (bad["prompt_tokens"], bad["cached_tokens"]) == (0, 0)
    await writer.stop()


async def test_a_record_that_cannot_be_built_is_counted_lost_and_the_rest_written(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, writers: Writers
) -> None:
    config = audit_config(tmp_path, database_url)
    writer = writers(None, config)
    await writer.start()
    broken = make_trail(2)
    broken.attempts = [object()]  # type: ignore[list-item]  # not an Attempt: its row cannot be built
    with caplog.at_level(logging.ERROR, logger="gateway.audit"):
        for trail in (make_trail(1), broken, make_trail(3)):
            writer.record_trail(trail)
        writer.record(make_entry(4))
        await wait_for(lambda: writer.written == 3)
    assert writer.lost == 1 and writer.recorded == 4
    assert "audit record could not be built" in caplog.text
    records, _ = await writer.store.page(LogFilter(), 10)  # type: ignore[union-attr]
    assert sorted(r["request_id"] for r in records) == ["req-4", "req-trail-1", "req-trail-3"]
    await writer.stop()


async def test_trails_recorded_during_an_outage_are_spilled_then_written_once(
    outage: Outage, tmp_path: Path, writers: Writers
) -> None:
    """A record's uid is given once, when its row is built: the spill and the replay keep it."""
    config = audit_config(tmp_path, outage.url, buffer_records=100, batch_size=50, flush_interval_ms=10)
    writer = writers(None, config, **FAST_RETRY)
    await writer.start()
    trails = [make_trail(i) for i in range(400)]
    for start in range(0, 400, 50):
        for trail in trails[start : start + 50]:
            writer.record_trail(trail)
        await asyncio.sleep(0)  # requests keep coming while the writer runs
    # The database is known to be down: records reach the spill file after one flush interval.
    await wait_for(lambda: writer.spilled == 400)
    assert writer.buffered == 0 and writer.written == 0
    await outage.bring_up()
    await wait_for(lambda: writer.written + writer.replayed == 400)
    counts = await uid_counts(outage.url)
    assert len(counts) == 400 and set(counts.values()) == {1}
    records, _ = await writer.store.page(LogFilter(), 1000)  # type: ignore[union-attr]
    assert sorted(r["request_id"] for r in records) == sorted(t.request_id for t in trails)
    assert {r["cached_tokens"] for r in records} == {64}  # the spill file keeps the new fields too
    await writer.stop()
    assert writer.lost == 0


async def test_during_an_outage_records_are_spilled_after_one_flush_interval(
    outage: Outage, tmp_path: Path, writers: Writers
) -> None:
    """Not only once the buffer is full: a killed process then loses at most the records of the last
    flush interval, with the database down as with it up."""
    config = audit_config(tmp_path, outage.url, buffer_records=10_000, flush_interval_ms=20)
    writer = writers(None, config, retry_initial=30, retry_max=30)  # no retry during the test
    await writer.start()
    await wait_for(lambda: writer.last_error is not None)  # the database was tried and is down
    entries = make_entries(10)
    for entry in entries:
        writer.record(entry)
    await wait_for(lambda: writer.spilled == 10)
    assert writer.buffered == 0 and _spill_lines(config.spill_path) == 10
    await writer.stop()
    assert writer.lost == 0


async def test_record_never_blocks_nor_does_io(outage: Outage, tmp_path: Path, writers: Writers) -> None:
    config = audit_config(tmp_path, outage.url, buffer_records=100, batch_size=10)
    writer = writers(None, config, **FAST_RETRY)
    await writer.start()
    await wait_for(lambda: writer.last_error is not None)  # the writer has tried the database: down
    assert not writer.db_up
    entries = make_entries(20_000)
    for entry in entries:
        writer.record(entry)
    # Synchronous and I/O-free: nothing reached the disk before the loop got control back. (How fast
    # record() is: `gateway bench audit`, not a pass/fail here.)
    assert writer.buffered == 20_000 and _spill_files(config.spill_path) == []
    await wait_for(lambda: writer.spilled == 20_000)  # then the writer task spills them
    assert writer.buffered == 0 and _spill_lines(config.spill_path) == 20_000
    await writer.stop()
    assert writer.spilled == 20_000 and writer.lost == 0


async def test_outage_buffers_spills_then_replays_everything_once(
    outage: Outage, tmp_path: Path, writers: Writers
) -> None:
    config = audit_config(tmp_path, outage.url, buffer_records=100, batch_size=50, flush_interval_ms=10)
    writer = writers(None, config, **FAST_RETRY)
    await writer.start()
    entries = make_entries(500)
    for start in range(0, 500, 50):  # requests keep coming during the outage
        for entry in entries[start : start + 50]:
            writer.record(entry)
        await asyncio.sleep(0)
    await wait_for(lambda: writer.spilled == 500)
    assert writer.buffered == 0 and not writer.db_up and writer.written == 0
    assert _spill_lines(config.spill_path) == 500
    await outage.bring_up()
    await wait_for(lambda: writer.written + writer.replayed == 500)
    await wait_for(lambda: _spill_files(config.spill_path) == [])
    counts = await uid_counts(outage.url)
    assert counts == {e.uid: 1 for e in entries}
    assert writer.db_up
    assert writer.spilled == writer.replayed == 500
    assert writer.written == 0 and writer.lost == 0 and writer.recorded == 500
    await writer.stop()


# Taking a SQLite file away mid-run is not a realistic outage: PostgreSQL only.
@pytest.mark.parametrize("outage", ["postgres"], indirect=True)
async def test_database_lost_mid_run_loses_nothing(outage: Outage, tmp_path: Path, writers: Writers) -> None:
    await outage.bring_up()
    config = audit_config(tmp_path, outage.url, buffer_records=50, batch_size=20, flush_interval_ms=10)
    writer = writers(None, config, **FAST_RETRY)
    await writer.start()
    entries = make_entries(300)
    for entry in entries[:100]:
        writer.record(entry)
    await wait_for(lambda: writer.written + writer.replayed == 100)
    await outage.take_down()
    for entry in entries[100:]:
        writer.record(entry)
        await asyncio.sleep(0)
    await wait_for(lambda: not writer.db_up and writer.spilled > 0)
    await outage.bring_up()
    await wait_for(lambda: writer.written + writer.replayed == 300, timeout=15)
    assert await uid_counts(outage.url) == {e.uid: 1 for e in entries}
    assert writer.failed_batches >= 1 and writer.lost == 0
    await writer.stop()


async def test_stop_flushes_the_buffer(database_url: str, tmp_path: Path, writers: Writers) -> None:
    # A long flush interval and large batches: without stop() these would sit in memory.
    config = audit_config(tmp_path, database_url, batch_size=10_000, flush_interval_ms=60_000)
    writer = writers(None, config)
    await writer.start()
    writer.record(make_entry(0))
    await wait_for(lambda: writer.written == 1)  # the first record wakes the writer; wait for it
    entries = make_entries(345)
    for entry in entries:
        writer.record(entry)
    assert writer.buffered == 345  # no batch is due for a minute: only stop() writes them now
    await writer.stop()
    assert writer.written == 346 and writer.spilled == 0 and writer.buffered == 0
    assert len(await uid_counts(database_url)) == 346
    writer.record(make_entry(1))  # after stop: counted, not silently dropped
    assert writer.lost == 1


async def test_stop_with_database_down_spills_and_next_writer_replays(
    outage: Outage, tmp_path: Path, writers: Writers
) -> None:
    config = audit_config(tmp_path, outage.url, buffer_records=1000, batch_size=100)
    writer = writers(None, config, **FAST_RETRY, stop_timeout=1)
    await writer.start()
    entries = make_entries(250)
    for entry in entries:
        writer.record(entry)
    await wait_for(lambda: writer.last_error is not None)  # the writer has tried the database: down
    started = time.monotonic()
    await writer.stop()
    assert time.monotonic() - started < 3.5  # the deadline under test: stop_timeout (1 s), 3.5x margin
    assert writer.spilled == 250 and writer.written == 0 and writer.lost == 0
    assert _spill_lines(config.spill_path) == 250
    await outage.bring_up()
    replayed: list[dict[str, Any]] = []
    successor = writers(None, config, on_written=replayed.extend)
    await successor.start()
    await wait_for(lambda: successor.replayed == 250)
    await wait_for(lambda: _spill_files(config.spill_path) == [])
    assert await uid_counts(outage.url) == {e.uid: 1 for e in entries}
    assert len(replayed) == 250
    await successor.stop()


async def test_stop_is_bounded_when_the_database_stops_answering(
    outage: Outage, tmp_path: Path, writers: Writers
) -> None:
    await outage.bring_up()
    config = audit_config(tmp_path, outage.url, batch_size=10_000, flush_interval_ms=60_000)
    writer = writers(None, config, stop_timeout=1)
    await writer.start()
    writer.record(make_entry(0))
    await wait_for(lambda: writer.written == 1)
    entries = make_entries(120)
    for entry in entries:
        writer.record(entry)
    if outage.dialect == "sqlite":  # another process holds the write lock
        locker = sqlite3.connect(outage.url.removeprefix("sqlite://"), isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")
    else:
        assert outage.proxy is not None
        outage.proxy.freeze()
    started = time.monotonic()
    await writer.stop()  # the store's own timeout is 5 s; stop gives the database 1 s
    assert time.monotonic() - started < 3.5
    assert writer.spilled == 120 and writer.lost == 0 and writer.written == 1
    if outage.dialect == "sqlite":
        locker.execute("ROLLBACK")
        locker.close()
    else:
        outage.proxy.thaw()  # type: ignore[union-attr]
    successor = writers(None, config)
    await successor.start()
    await wait_for(lambda: successor.replayed == 120, timeout=15)
    await successor.stop()
    assert len(await uid_counts(outage.url)) == 121


async def test_orphaned_spill_files_of_dead_processes_are_adopted(
    database_url: str, tmp_path: Path, writers: Writers
) -> None:
    config = audit_config(tmp_path, database_url, batch_size=40)
    spill = config.spill_path
    spill.parent.mkdir(parents=True)
    dead, other_dead = _dead_pid(), _dead_pid()
    orphan = make_entries(90)
    half_replayed = make_entries(30)
    Path(f"{spill}.{dead}").write_bytes(b"".join(e.to_line() for e in orphan) + b'{"truncated": ')
    Path(f"{spill}.{other_dead}.replaying").write_bytes(b"".join(e.to_line() for e in half_replayed))
    # A live process's spill file is its own business.
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        live_file = Path(f"{spill}.{alive.pid}")
        live_file.write_bytes(make_entry(7).to_line())
        store = await AuditStore.open(database_url)
        await store.insert(half_replayed[:10])  # that replay had got this far before its process died
        await store.close()
        writer = writers(None, config)
        await writer.start()
        await wait_for(lambda: writer.replayed == 120)
        await wait_for(lambda: _spill_files(spill) == [live_file])
        await writer.stop()
    finally:
        alive.kill()
        alive.wait()
    assert await uid_counts(database_url) == {e.uid: 1 for e in orphan + half_replayed}
    assert writer.lost == 1  # the line cut short by the crash, counted


async def test_spill_failure_is_counted_as_lost_and_logged(
    outage: Outage, tmp_path: Path, caplog: pytest.LogCaptureFixture, writers: Writers
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    config = audit_config(tmp_path, outage.url, buffer_records=10, spill_path=blocker / "spill.jsonl")
    writer = writers(None, config, **FAST_RETRY)
    with caplog.at_level(logging.ERROR, logger="gateway.audit"):
        await writer.start()
        for entry in make_entries(25):
            writer.record(entry)
        await wait_for(lambda: writer.lost == 15)
        await writer.stop()
    assert writer.lost == 25 and writer.spilled == 0
    assert any("records lost" in r.getMessage() for r in caplog.records)
    assert not any("req-" in r.getMessage() for r in caplog.records)  # counts, never record content


async def test_a_record_the_database_refuses_is_dropped_alone(
    database_url: str, tmp_path: Path, writers: Writers
) -> None:
    config = audit_config(tmp_path, database_url, batch_size=50)
    writer = writers(None, config)
    await writer.start()
    good = make_entries(20)
    bad = make_entry(99, http_status="not a number")
    for entry in [*good[:10], bad, *good[10:]]:
        writer.record(entry)
    await wait_for(lambda: writer.written == 20)
    assert writer.lost == 1 and writer.db_up
    await writer.stop()
    assert await uid_counts(database_url) == {e.uid: 1 for e in good}


async def test_writer_keeps_opening_until_the_database_appears(
    outage: Outage, tmp_path: Path, writers: Writers
) -> None:
    config = audit_config(tmp_path, outage.url)
    writer = writers(None, config, **FAST_RETRY)
    await writer.start()
    writer.record(make_entry(1))
    await wait_for(lambda: writer.last_error is not None)  # it tried to open the database: down
    assert writer.store is None and not writer.db_up and writer.buffered + writer.spilled == 1
    await outage.bring_up()
    await wait_for(lambda: writer.written + writer.replayed == 1)
    assert writer.db_up and writer.store is not None
    await writer.stop()


async def test_retention_purges_at_start_and_then_periodically(database_url: str) -> None:
    store = await AuditStore.open(database_url)
    now = datetime.now(UTC)
    recent = make_entries(5, start=now - timedelta(minutes=5))
    await store.insert(make_entries(30, start=now - timedelta(days=10)) + recent)
    expected = {e.uid for e in recent}

    async def stored() -> set[str]:
        return {record["uid"] async for record in store.export(LogFilter())}

    stop = asyncio.Event()
    task = asyncio.create_task(run_retention(store, 7, stop_event=stop, interval=0.1))
    try:
        await wait_for(lambda: _equals(stored(), expected), timeout=5)  # purged at start
        await store.insert(make_entries(7, start=now - timedelta(days=8)))
        assert len(await stored()) == 12
        await wait_for(lambda: _equals(stored(), expected), timeout=5)  # and again at the next interval
    finally:
        stop.set()
        await asyncio.wait_for(task, 2)  # returns promptly once told to stop
        await store.close()
    assert task.exception() is None


async def _equals(value: Any, expected: Any) -> bool:
    return await value == expected


def test_spill_claims_are_atomic_between_processes(tmp_path: Path) -> None:
    """Two live processes see the same orphan: exactly one of them adopts it."""
    base = tmp_path / "audit.spill.jsonl"
    dead = _dead_pid()
    Path(f"{base}.{dead}").write_bytes(make_entry().to_line())
    me, sibling = SpillFiles(base, os.getpid()), SpillFiles(base, os.getpid() + 1_000_000)
    first, second = me.claim_next(), sibling.claim_next()
    assert first is not None and second is None
    assert first.name.startswith(f"{base.name}.{os.getpid()}.adopted.")


async def test_stop_before_the_database_was_first_open_writes_rather_than_spills(
    database_url: str, tmp_path: Path, writers: Writers
) -> None:
    """A reload may retire a writer that is still connecting: it connects to write what it holds."""
    config = audit_config(tmp_path, database_url)
    opening = asyncio.Event()

    async def slow_open() -> AuditStore:
        opening.set()
        await asyncio.sleep(0.3)  # a slow connect (simulated latency): stop() is called during it
        return await AuditStore.open(database_url)

    writer = writers(slow_open, config)
    await writer.start()
    entries = make_entries(40)
    for entry in entries:
        writer.record(entry)
    await opening.wait()
    await writer.stop()
    assert (writer.written, writer.spilled, writer.lost) == (40, 0, 0)
    assert await uid_counts(database_url) == {entry.uid: 1 for entry in entries}
    assert _spill_files(config.spill_path) == []
