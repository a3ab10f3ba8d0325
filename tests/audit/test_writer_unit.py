"""AuditWriter against an in-memory store, on an event loop with virtual time: batching and the
flush interval, backoff, outages (spill, replay in order, nothing twice), stop and its bounds, the
open failures, the live tail's order and the logs' rate. Fast; `test_writer.py` covers the real
databases.

Virtual time: the loop's clock moves only when nothing is ready to run and no thread (the spill
file's I/O) is at work, and then jumps to the next timer. So a test reads the exact moment the
writer tried something (`FakeStore.times`, `Opener.times`) and never waits for real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import selectors
import warnings
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.record import ENTRY_FIELDS, AuditEntry, AuditRow
from gateway.audit.spill import SpillFiles, SpillReader
from gateway.audit.writer import AuditWriter
from gateway.config.model import AuditConfig

from .conftest import make_entry, make_trail

_UID = ENTRY_FIELDS.index("uid")
DB_URL = "sqlite:///nowhere/audit.sqlite3"  # only names the spill files: the store is fake


class _VirtualSelector(selectors.DefaultSelector):  # type: ignore[misc, valid-type]
    loop: VirtualTimeLoop

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if self.loop.threads:
            return super().select(timeout)  # a thread's result wakes the loop through its self-pipe
        if timeout is None:  # nothing scheduled and no thread at work: nothing can ever wake it
            raise Deadlock("the event loop waits with no timer, no ready callback and no thread at work")
        self.loop.now += timeout
        return []


class Deadlock(RuntimeError):
    """The test's event loop can never wake again: fail at once rather than hang until a timeout."""


class Livelock(BaseException):
    """Code spins at one virtual instant (asks the clock again and again, and it never moves): a loop
    that should have waited. A `BaseException`, so the writer's `except Exception` cannot absorb it;
    once raised, the loop's own next read of the clock raises it too, so the test fails even when
    the spinning task was one the test does not await."""


#: Reads of the clock at one virtual instant before it counts as a busy loop. The unit tests read it
#: at most 57 times at one instant; a spinning loop passes 100,000 in about a tenth of a second.
SPIN_LIMIT = 100_000


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        selector = _VirtualSelector()
        selector.loop = self
        self.now = 0.0
        self.threads = 0
        self._read_at = -1.0
        self._reads = 0
        super().__init__(selector)

    def time(self) -> float:
        if self.now != self._read_at:
            self._read_at, self._reads = self.now, 0
        self._reads += 1
        if self._reads > SPIN_LIMIT:
            raise Livelock(f"the clock was read {self._reads:,} times at virtual {self.now} s: a busy loop")
        return self.now

    def run_in_executor(self, executor: Any, func: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        future = super().run_in_executor(executor, func, *args)
        self.threads += 1
        future.add_done_callback(self._thread_done)
        return future

    def _thread_done(self, _future: asyncio.Future[Any]) -> None:
        self.threads -= 1

    async def shutdown_default_executor(self, *args: Any) -> None:
        # Its own thread, outside run_in_executor: the wait for it is real, not a deadlock.
        self.threads += 1
        try:
            await super().shutdown_default_executor(*args)
        finally:
            self.threads -= 1


def virtual_time(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a `VirtualTimeLoop` of its own."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
            runner.run(test(*args, **kwargs))

    return run


def now() -> float:
    return asyncio.get_running_loop().time()


async def until(predicate: Callable[[], bool], within: float = 200.0) -> None:
    """Await until `predicate()` holds, at most `within` virtual seconds."""
    deadline = now() + within
    while not predicate():
        if now() > deadline:
            pytest.fail(f"condition not met within {within} virtual s")
        await asyncio.sleep(0.01)


async def let_pass(seconds: float) -> None:
    """Let `seconds` of virtual time pass (time is the subject: what the writer did not do by then)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.Event().wait(), seconds)


class StoreDown(ConnectionError):
    pass


class FakeStore:
    """The part of `AuditStore` the writer uses. Skips uids it holds, as the real one does; `down`
    raises as an unreachable database; `refuse` rejects a batch holding one of those uids (as a
    constraint would); `stall` never answers; ids are given in reverse order within a batch (a
    database does not promise row order), so the listener's order is the writer's doing."""

    dialect = "sqlite"

    def __init__(self) -> None:
        self.rows: list[AuditRow] = []
        self.ids: dict[str, int] = {}
        self.batches: list[list[str]] = []
        self.times: list[float] = []
        self.down = False
        #: Goes down after this many more writes (None: stays as it is).
        self.down_after: int | None = None
        self.stall = False
        self.commit_when_cancelled = False
        #: While set and not yet open, writes wait for it (a write in flight).
        self.gate: asyncio.Event | None = None
        self.refuse: set[str] = set()
        self.closed_with: list[float | None] = []
        self.hang_close = False
        self._next_id = 1

    @property
    def uids(self) -> list[str]:
        return [row[_UID] for row in self.rows]

    async def write(self, rows: list[AuditRow], *, ids: bool = False) -> dict[str, int]:
        self.batches.append([row[_UID] for row in rows])
        self.times.append(now())
        if self.gate is not None:
            await self.gate.wait()
        if self.down_after is not None:
            self.down, self.down_after = self.down_after == 0, self.down_after - 1
        if self.down:
            raise StoreDown("connection refused")
        if self.stall:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                if not self.commit_when_cancelled:
                    raise
                self.commit_when_cancelled = False  # a stuck driver that commits as it gives up
        if any(row[_UID] in self.refuse for row in rows):
            raise ValueError("refused")
        created: dict[str, int] = {}
        for row in reversed(rows):
            if row[_UID] not in self.ids:
                self.ids[row[_UID]] = created[row[_UID]] = self._next_id
                self._next_id += 1
        self.rows.extend(row for row in rows if row[_UID] in created)
        return created if ids else {}

    async def close(self, timeout: float | None = None) -> None:
        self.closed_with.append(timeout)
        if self.hang_close:
            await asyncio.Event().wait()


class Opener:
    """A store factory: each open takes the next outcome (a store, an exception to raise, or
    "hang"); the last one repeats."""

    def __init__(self, *outcomes: FakeStore | BaseException | str | tuple[float, FakeStore]) -> None:
        self.outcomes = list(outcomes)
        self.times: list[float] = []
        self.cancelled = 0
        #: While set, every open fails as an unreachable database would.
        self.down = False

    async def __call__(self) -> Any:
        self.times.append(now())
        if self.down:
            raise StoreDown("connection refused")
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        if isinstance(outcome, tuple):  # (seconds, store): an open that takes that long
            await let_pass(outcome[0])
            return outcome[1]
        if outcome in ("hang", "hang, then fail when cancelled"):
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                if outcome == "hang":
                    raise
                raise OSError("connection reset while giving up") from None
        return outcome


def config(tmp_path: Path, **overrides: Any) -> AuditConfig:
    values: dict[str, Any] = {
        "enabled": True,
        "database_url": DB_URL,
        "retention_days": 30,
        "buffer_records": 1000,
        "batch_size": 100,
        "flush_interval_ms": 50,
        "spill_path": tmp_path / "spill" / "audit.spill.jsonl",
    }
    values.update(overrides)
    return AuditConfig(**values)


def spilled_uids(tmp_path: Path) -> list[str]:
    """The uids in this process's spill files for DB_URL, file by file, line by line."""
    base = SpillFiles(tmp_path / "spill" / "audit.spill.jsonl", database=DB_URL).base
    uids = []
    for path in sorted(base.parent.glob(base.name + ".*")):
        uids += [AuditEntry.from_line(line).uid for line in path.read_bytes().splitlines()]
    return uids


def entries(count: int, start: int = 0) -> list[AuditEntry]:
    return [make_entry(start + i) for i in range(count)]


def record_all(writer: AuditWriter, items: list[AuditEntry]) -> list[str]:
    for entry in items:
        writer.record(entry)
    return [entry.uid for entry in items]


async def started(writer: AuditWriter) -> AuditWriter:
    await writer.start()
    return writer


def messages(caplog: pytest.LogCaptureFixture, level: int = logging.DEBUG) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "gateway.audit" and r.levelno >= level]


# -- batching and the flush interval ---------------------------------------------------------------


@virtual_time
async def test_what_arrived_together_is_written_in_batches_in_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FakeStore()
    writer = await started(AuditWriter(Opener(store), config(tmp_path, batch_size=3)))
    uids = record_all(writer, entries(7))
    await until(lambda: writer.written == 7)
    assert store.batches == [uids[0:3], uids[3:6], uids[6:7]]
    assert store.uids == uids
    assert writer.stats["buffered"] == 0 and writer.db_up
    assert messages(caplog, logging.INFO) == []  # nothing to report
    await writer.stop()
    assert writer.stats == {
        "buffered": 0,
        "recorded": 7,
        "written": 7,
        "spilled": 0,
        "replayed": 0,
        "lost": 0,
        "failed_batches": 0,
        "db_up": False,
        "last_error": None,
        "last_error_at": None,
    }


@virtual_time
async def test_a_lone_record_waits_one_flush_interval_and_a_full_batch_none(tmp_path: Path) -> None:
    store = FakeStore()
    writer = await started(AuditWriter(Opener(store), config(tmp_path, batch_size=3, flush_interval_ms=400)))
    await until(lambda: writer.store is not None)
    items = entries(4)
    at = now()
    writer.record(items[0])
    await until(lambda: writer.written == 1)
    assert store.times == [pytest.approx(at + 0.4)]
    # Two more, each in a turn of its own, make a full batch with the one before: written as the
    # batch fills, not an interval later.
    writer.record(items[1])
    await let_pass(0.1)
    writer.record(items[2])
    await let_pass(0.1)
    assert writer.written == 1
    at = now()
    writer.record(items[3])
    await until(lambda: writer.written == 4)
    assert store.times[1] == pytest.approx(at)
    assert store.batches[1] == [entry.uid for entry in items[1:]]
    await writer.stop()


@virtual_time
async def test_a_batch_size_below_one_counts_as_one(tmp_path: Path) -> None:
    store = FakeStore()
    writer = await started(AuditWriter(Opener(store), config(tmp_path, batch_size=0)))
    uids = record_all(writer, entries(3))
    await until(lambda: writer.written == 3)
    assert store.batches == [[uid] for uid in uids]
    await writer.stop()
    assert writer.spilled == 0


@virtual_time
async def test_before_the_first_open_memory_is_bounded_too(tmp_path: Path) -> None:
    store = FakeStore()
    writer = AuditWriter(Opener(store), config(tmp_path, buffer_records=0))
    uids = record_all(writer, entries(3))
    await writer.start()
    await until(lambda: writer.written + writer.replayed == 3)
    assert writer.spilled == 2 and writer.written == 1
    assert store.uids == [uids[2], uids[0], uids[1]]
    await writer.stop()


@virtual_time
async def test_trails_are_stamped_when_handed_over(tmp_path: Path) -> None:
    store = FakeStore()
    written: list[list[dict[str, Any]]] = []
    writer = await started(
        AuditWriter(Opener(store), config(tmp_path), on_written=written.append, clock=lambda: 1000.0)
    )
    writer.record_trail(make_trail(1))
    writer.record(make_entry(2))
    await until(lambda: writer.written == 2)
    records = [record for batch in written for record in batch]
    assert {record["request_id"] for record in records} == {"req-trail-1", "req-2"}
    await writer.stop()
    assert writer.recorded == 2 and writer.lost == 0


# -- the live tail ---------------------------------------------------------------------------------


@virtual_time
async def test_listener_gets_each_batch_sorted_by_id_with_ids(tmp_path: Path) -> None:
    store = FakeStore()
    written: list[list[dict[str, Any]]] = []
    writer = await started(
        AuditWriter(Opener(store), config(tmp_path, batch_size=3), on_written=written.append)
    )
    items = entries(4)
    uids = record_all(writer, items)
    await until(lambda: writer.written == 4)
    await writer.stop()
    assert [[record["id"] for record in batch] for batch in written] == [[1, 2, 3], [4]]
    # The store numbered each batch backwards: sorted by id, the batch reads in reverse.
    assert [record["uid"] for record in written[0]] == uids[2::-1]
    assert written[0][0] == {"id": 1, **items[2].to_json()}


@virtual_time
async def test_without_a_listener_ids_are_not_asked_for(tmp_path: Path) -> None:
    store = FakeStore()
    asked: list[bool] = []
    original = store.write

    async def write(rows: list[AuditRow], *, ids: bool = False) -> dict[str, int]:
        asked.append(ids)
        return await original(rows, ids=ids)

    store.write = write  # type: ignore[method-assign]
    writer = await started(AuditWriter(Opener(store), config(tmp_path)))
    record_all(writer, entries(2))
    await until(lambda: writer.written == 2)
    await writer.stop()
    assert asked == [False]


@virtual_time
async def test_a_failing_listener_is_logged_and_writing_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FakeStore()

    def listener(records: list[dict[str, Any]]) -> None:
        raise RuntimeError("listener bug")

    writer = await started(AuditWriter(Opener(store), config(tmp_path, batch_size=1), on_written=listener))
    record_all(writer, entries(2))
    await until(lambda: writer.written == 2)
    await writer.stop()
    assert messages(caplog).count("audit on_written callback failed") == 2


# -- refused records -------------------------------------------------------------------------------


@virtual_time
async def test_a_refused_record_is_dropped_alone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = FakeStore()
    written: list[list[dict[str, Any]]] = []
    writer = await started(
        AuditWriter(Opener(store), config(tmp_path, batch_size=3), on_written=written.append)
    )
    items = entries(4)
    store.refuse = {items[1].uid, items[3].uid}
    uids = record_all(writer, items)
    await until(lambda: writer.written == 2)
    await until(lambda: writer.lost == 2)
    # The batch of three, refused, then one by one; the last record is a batch of one, refused alone.
    assert store.batches == [uids[0:3], [uids[0]], [uids[1]], [uids[2]], [uids[3]]]
    assert store.uids == [uids[0], uids[2]]
    assert writer.failed_batches == 1  # only the batch of several counts as failed
    assert writer.db_up and writer.last_error is None
    assert [r["uid"] for batch in written for r in batch] == [uids[0], uids[2]]
    refused = [
        r
        for r in caplog.records
        if r.getMessage() == "audit record refused by the database (ValueError): dropped"
    ]
    assert [r.uid for r in refused] == [uids[1], uids[3]]  # type: ignore[attr-defined]
    assert [r.request_id for r in refused] == ["req-1", "req-3"]  # type: ignore[attr-defined]
    await writer.stop()
    assert writer.stats["written"] == 2 and writer.stats["lost"] == 2 and writer.spilled == 0


@virtual_time
async def test_a_record_that_cannot_be_built_is_lost_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FakeStore()
    writer = await started(AuditWriter(Opener(store), config(tmp_path)))
    writer.record_trail(make_trail(1))
    writer.record_trail(object())  # type: ignore[arg-type]
    writer.record_trail(make_trail(2))
    await until(lambda: writer.written == 2)
    await writer.stop()
    assert writer.lost == 1 and writer.recorded == 3
    assert messages(caplog).count("audit record could not be built: dropped") == 1


# -- backoff and opening ---------------------------------------------------------------------------


@virtual_time
async def test_opening_is_retried_with_doubling_backoff_up_to_the_cap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.audit")
    opener = Opener(StoreDown("refused"))
    writer = await started(AuditWriter(opener, config(tmp_path)))
    await until(lambda: len(opener.times) == 8)
    gaps = [round(b - a, 6) for a, b in zip(opener.times, opener.times[1:], strict=False)]
    assert gaps == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert writer.last_error == "cannot open the audit database: StoreDown"
    assert writer.last_error_at is not None and not writer.db_up
    # The first failure is a warning with the driver's detail; the ones after, debug lines only.
    warnings = messages(caplog, logging.WARNING)
    assert len(warnings) == 1
    assert warnings[0].startswith("cannot open the audit database: StoreDown: refused; records are buffered")
    assert str(SpillFiles(config(tmp_path).spill_path, database=DB_URL).path) in warnings[0]
    assert messages(caplog).count("cannot open the audit database: StoreDown: refused") == 7
    await writer.stop()


@virtual_time
async def test_backoff_follows_the_given_bounds_and_resets_once_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.audit")
    store = FakeStore()
    opener = Opener(StoreDown("1"), StoreDown("2"), StoreDown("3"), store)
    writer = await started(
        AuditWriter(
            opener,
            config(tmp_path, batch_size=1, flush_interval_ms=60_000),
            retry_initial=0.25,
            retry_max=0.75,
        )
    )
    await until(lambda: writer.db_up)
    gaps = [round(b - a, 6) for a, b in zip(opener.times, opener.times[1:], strict=False)]
    assert gaps == [0.25, 0.5, 0.75]
    assert "audit database reachable again" in messages(caplog)
    # Down again while writing: the backoff starts over from retry_initial.
    store.down = True
    entry = make_entry(0)
    writer.record(entry)
    await until(lambda: len(store.times) == 3)
    gaps = [round(b - a, 6) for a, b in zip(store.times, store.times[1:], strict=False)]
    assert gaps == [0.25, 0.5]
    assert writer.failed_batches == 3 and writer.last_error == "audit insert failed: StoreDown"
    store.down = False
    await until(lambda: writer.written == 1)
    assert store.uids == [entry.uid]
    await writer.stop()


@virtual_time
async def test_an_open_that_never_answers_is_given_up_after_90_s(tmp_path: Path) -> None:
    store = FakeStore()
    opener = Opener("hang", store)
    writer = await started(AuditWriter(opener, config(tmp_path)))
    await until(lambda: writer.last_error is not None)
    assert now() == pytest.approx(90.0, abs=0.02)
    assert writer.last_error == "cannot open the audit database: no answer in 90 s"
    await until(lambda: writer.db_up)
    assert opener.times == [0.0, pytest.approx(90.5, abs=0.02)]
    await writer.stop()


@virtual_time
async def test_stop_during_a_hanging_open_is_prompt_and_no_outage(tmp_path: Path) -> None:
    opener = Opener("hang")
    writer = await started(AuditWriter(opener, config(tmp_path)))
    await until(lambda: len(opener.times) == 1)
    await writer.stop()
    assert now() == pytest.approx(0.0, abs=0.01)
    assert writer.last_error is None


# -- outages: spill and replay ---------------------------------------------------------------------


@virtual_time
async def test_during_an_outage_what_waited_a_flush_interval_is_spilled_then_replayed_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.audit")
    store = FakeStore()
    opener = Opener(store)
    opener.down = True
    written: list[list[dict[str, Any]]] = []
    writer = await started(
        AuditWriter(opener, config(tmp_path, batch_size=2, flush_interval_ms=200), on_written=written.append)
    )
    await until(lambda: writer.last_error is not None)
    uids = record_all(writer, entries(5))
    at = now()
    await until(lambda: writer.spilled == 5)
    assert now() == pytest.approx(at + 0.2, abs=0.025)
    assert spilled_uids(tmp_path) == uids
    assert writer.buffered == 0 and writer.written == 0
    assert writer.spill_bytes() > 0
    more = record_all(writer, entries(2, start=5))
    await until(lambda: writer.spilled == 7)
    uids += more
    assert spilled_uids(tmp_path) == uids
    # Each spill while the database is down is logged (and no empty one).
    path = writer._spill.path
    assert [m for m in messages(caplog) if m.startswith("audit database down")] == [
        f"audit database down: 5 records spilled to {path}",
        f"audit database down: 2 records spilled to {path}",
    ]
    opener.down = False
    await until(lambda: writer.replayed == 7)
    assert store.uids == uids
    replay = [batch for batch in store.batches if batch[0] in store.ids]
    assert replay == [uids[0:2], uids[2:4], uids[4:6], uids[6:7]]
    # The chunks go one after the other, with no wait between them.
    assert len({at for at, batch in zip(store.times, store.batches, strict=True) if batch in replay}) == 1
    assert [r["uid"] for batch in written for r in batch] == [
        uids[1],
        uids[0],
        uids[3],
        uids[2],
        uids[5],
        uids[4],
        uids[6],
    ]
    assert spilled_uids(tmp_path) == [] and writer.spill_bytes() == 0
    assert writer.written == 0 and writer.lost == 0
    assert any(m.startswith("audit replaying spill file ") for m in messages(caplog))
    assert any(m.endswith(" replayed") for m in messages(caplog))
    assert "audit database reachable again" in messages(caplog)
    await writer.stop()


@virtual_time
async def test_a_replay_interrupted_by_an_outage_resumes_without_duplicates(tmp_path: Path) -> None:
    store = FakeStore()
    opener = Opener(store)
    opener.down = True
    writer = await started(AuditWriter(opener, config(tmp_path, batch_size=2, flush_interval_ms=10)))
    await until(lambda: writer.last_error is not None)
    uids = record_all(writer, entries(6))
    await until(lambda: writer.spilled == 6)
    store.down_after = 1  # the first chunk is stored, then the database goes away
    failed = writer.failed_batches
    opener.down = False
    await until(lambda: writer.failed_batches == failed + 1)
    assert writer.last_error == "audit replay insert failed: StoreDown"
    assert writer.replayed == 2 and store.uids == uids[:2]
    store.down_after, store.down = None, False
    await until(lambda: writer.replayed == 6)
    assert store.uids == uids
    await writer.stop()
    assert writer.replayed == 6


@virtual_time
async def test_while_down_the_oldest_beyond_the_buffer_spill_at_once(tmp_path: Path) -> None:
    store = FakeStore()
    opener = Opener(store)
    opener.down = True
    writer = await started(AuditWriter(opener, config(tmp_path, buffer_records=3, flush_interval_ms=10_000)))
    await until(lambda: writer.last_error is not None)
    at = now()
    uids = record_all(writer, entries(5))
    await until(lambda: writer.spilled == 2)
    assert now() == pytest.approx(at, abs=0.01)
    assert spilled_uids(tmp_path) == uids[:2]
    assert writer.buffered == 3
    opener.down = False
    await until(lambda: writer.written == 3 and writer.replayed == 2)
    assert sorted(store.uids) == sorted(uids) and len(store.uids) == 5
    await writer.stop()


@virtual_time
async def test_while_up_a_burst_is_written_and_only_the_excess_spills(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FakeStore()
    writer = await started(AuditWriter(Opener(store), config(tmp_path, batch_size=2, buffer_records=4)))
    await until(lambda: writer.db_up)
    uids = record_all(writer, entries(10))
    await until(lambda: writer.written + writer.replayed == 10)
    assert writer.spilled == 4 and writer.written == 6 and writer.replayed == 4
    assert spilled_uids(tmp_path) == []
    assert sorted(store.uids) == sorted(uids) and len(store.uids) == 10
    # Spilling while the database is up is worth one warning, not one per spill.
    assert len([m for m in messages(caplog) if m.startswith("audit database down:")]) == 1
    await writer.stop()


@virtual_time
async def test_before_the_first_open_records_wait_in_memory(tmp_path: Path) -> None:
    opener = Opener(StoreDown("refused"))
    writer = AuditWriter(opener, config(tmp_path, flush_interval_ms=10))
    uids = record_all(writer, entries(3))
    await writer.start()
    await until(lambda: writer.spilled == 3)
    assert spilled_uids(tmp_path) == uids
    await writer.stop()


@virtual_time
async def test_a_spill_that_cannot_be_written_is_counted_lost_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "spill").write_text("a file where the directory should be")
    opener = Opener(FakeStore())
    opener.down = True
    writer = await started(AuditWriter(opener, config(tmp_path, flush_interval_ms=10)))
    await until(lambda: writer.last_error is not None)
    record_all(writer, entries(3))
    await until(lambda: writer.lost == 3)
    assert writer.spilled == 0 and writer.buffered == 0
    assert any(m.startswith("audit spill to ") and m.endswith(": 3 records lost") for m in messages(caplog))
    assert writer.spill_bytes() == 0
    await writer.stop()


@virtual_time
async def test_unreadable_spill_lines_are_skipped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    items = entries(3)
    spill = SpillFiles(config(tmp_path).spill_path, database=DB_URL)
    spill.append([items[0].to_line(), b'{"cut short\n', items[1].to_line(), items[2].to_line()])
    store = FakeStore()
    writer = await started(AuditWriter(Opener(store), config(tmp_path, batch_size=2)))
    await until(lambda: writer.replayed == 3)
    assert store.uids == [entry.uid for entry in items]
    assert writer.lost == 1
    assert any(m.endswith(": 1 unreadable lines skipped") for m in messages(caplog))
    await writer.stop()


@virtual_time
async def test_a_held_replay_waits_for_release(tmp_path: Path) -> None:
    items = entries(2)
    SpillFiles(config(tmp_path).spill_path, database=DB_URL).append([entry.to_line() for entry in items])
    store = FakeStore()
    writer = AuditWriter(Opener(store), config(tmp_path))
    writer.hold_replay()
    await writer.start()
    await until(lambda: writer.db_up)
    await let_pass(5.0)
    assert store.rows == [] and writer.replayed == 0
    writer.release_replay()
    await until(lambda: writer.replayed == 2)
    assert store.uids == [entry.uid for entry in items]
    await writer.stop()


@virtual_time
async def test_spill_files_of_another_database_are_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    SpillFiles(config(tmp_path).spill_path, database="sqlite:///elsewhere.sqlite3").append(
        [make_entry(0).to_line()]
    )
    writer = await started(AuditWriter(Opener(FakeStore()), config(tmp_path)))
    await until(lambda: writer.db_up)
    await writer.stop()
    assert any(
        m.startswith("1 audit spill file(s) wait for another audit database") for m in messages(caplog)
    )


@virtual_time
async def test_an_unreadable_spill_directory_is_logged_and_writing_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "spill").write_text("a file where the directory should be")
    store = FakeStore()
    writer = await started(AuditWriter(Opener(store), config(tmp_path)))
    uids = record_all(writer, entries(2))
    await until(lambda: writer.written == 2)
    await writer.stop()
    assert store.uids == uids
    assert any(m.startswith("audit spill directory unreadable: ") for m in messages(caplog))
    assert not any(m.startswith("audit spill replay") for m in messages(caplog))  # none known: none tried


# -- stop ------------------------------------------------------------------------------------------


@virtual_time
async def test_stop_writes_what_is_buffered_and_closes_the_store(tmp_path: Path) -> None:
    store = FakeStore()
    written: list[list[dict[str, Any]]] = []
    writer = await started(
        AuditWriter(
            Opener(store), config(tmp_path, batch_size=2, flush_interval_ms=60_000), on_written=written.append
        )
    )
    await until(lambda: writer.db_up)
    uids = record_all(writer, entries(5))
    await writer.stop()
    assert store.batches == [uids[0:2], uids[2:4], uids[4:5]]
    assert [[r["id"] for r in batch] for batch in written] == [[1, 2], [3, 4], [5]]
    assert writer.written == 5 and writer.spilled == 0 and writer.buffered == 0
    assert writer.failed_batches == 0 and store.closed_with == [1.0]
    assert not writer.db_up and writer.store is None
    await writer.stop()  # idempotent
    assert store.closed_with == [1.0]


@virtual_time
async def test_stop_drain_writes_in_batches_and_tells_the_listener(tmp_path: Path) -> None:
    store = FakeStore()
    written: list[list[dict[str, Any]]] = []
    opener = Opener("hang", store)
    writer = await started(AuditWriter(opener, config(tmp_path, batch_size=2), on_written=written.append))
    uids = record_all(writer, entries(5))
    await until(lambda: len(opener.times) == 1)
    await writer.stop()  # the first open is given up; stop opens the store again to write them
    assert store.batches == [uids[0:2], uids[2:4], uids[4:5]]
    assert [[r["id"] for r in batch] for batch in written] == [[1, 2], [3, 4], [5]]
    assert writer.written == 5 and writer.spilled == 0 and store.closed_with == [1.0]


@virtual_time
async def test_records_after_stop_are_lost_and_logged_at_a_rate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = await started(AuditWriter(Opener(FakeStore()), config(tmp_path)))
    await writer.stop()
    for entry in entries(2000):
        writer.record(entry)
    assert writer.lost == 2000 and writer.recorded == 0
    lost = [r for r in caplog.records if r.getMessage().startswith("audit record after the writer stopped")]
    assert [r.lost for r in lost] == [1, 1000, 2000]  # type: ignore[attr-defined]
    never_started = AuditWriter(Opener(FakeStore()), config(tmp_path))
    await never_started.stop()
    await never_started.start()
    never_started.record(make_entry(0))
    assert never_started.lost == 1 and never_started.store is None


@virtual_time
async def test_stop_while_the_database_hangs_spills_the_rest_after_stop_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FakeStore()
    writer = await started(
        AuditWriter(Opener(store), config(tmp_path, batch_size=2, flush_interval_ms=60_000), stop_timeout=3.0)
    )
    await until(lambda: writer.db_up)
    uids = record_all(writer, entries(5))
    original = store.write
    calls = 0

    async def write(rows: list[AuditRow], *, ids: bool = False) -> dict[str, int]:
        nonlocal calls
        calls += 1
        if calls > 1:
            store.stall = True
        return await original(rows, ids=ids)

    store.write = write  # type: ignore[method-assign]
    store.commit_when_cancelled = True
    at = now()
    await writer.stop()
    assert now() - at == pytest.approx(3.0, abs=0.01)
    assert spilled_uids(tmp_path) == uids[2:]
    assert writer.written == 2 and writer.spilled == 3 and writer.failed_batches == 1
    assert "audit flush at shutdown timed out; spilling the rest" in messages(caplog)
    # The abandoned batch committed as it gave up: not counted as written (its spilled copy is
    # skipped by uid when replayed), and nothing after it was tried.
    await let_pass(1.0)
    assert store.uids == uids[:4]
    assert writer.written == 2 and writer.spilled == 3


@virtual_time
async def test_stop_when_the_database_fails_mid_drain_spills_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FakeStore()
    writer = await started(
        AuditWriter(Opener(store), config(tmp_path, batch_size=2, flush_interval_ms=60_000))
    )
    await until(lambda: writer.db_up)
    uids = record_all(writer, entries(5))
    original = store.write

    async def write(rows: list[AuditRow], *, ids: bool = False) -> dict[str, int]:
        store.down = len(store.batches) >= 1
        return await original(rows, ids=ids)

    store.write = write  # type: ignore[method-assign]
    await writer.stop()
    assert store.uids == uids[:2]
    assert spilled_uids(tmp_path) == uids[2:]
    assert writer.written == 2 and writer.spilled == 3 and writer.failed_batches == 1
    assert "audit flush at shutdown failed (StoreDown); spilling the rest" in messages(caplog)


@virtual_time
async def test_stop_while_down_spills_everything_without_writing(tmp_path: Path) -> None:
    store = FakeStore()
    writer = await started(
        AuditWriter(Opener(store), config(tmp_path, batch_size=1, flush_interval_ms=60_000))
    )
    await until(lambda: writer.db_up)
    store.down = True
    uids = record_all(writer, entries(3))
    await until(lambda: writer.last_error is not None)
    tried = len(store.batches)
    await writer.stop()
    assert len(store.batches) == tried  # known down: not tried again at stop
    assert spilled_uids(tmp_path) == uids and writer.spilled == 3


@virtual_time
async def test_stop_before_the_first_open_that_fails_spills(tmp_path: Path) -> None:
    opener = Opener("hang", StoreDown("refused"))
    writer = await started(AuditWriter(opener, config(tmp_path)))
    uids = record_all(writer, entries(2))
    await until(lambda: len(opener.times) == 1)
    await writer.stop()
    assert writer.last_error == "cannot open the audit database: StoreDown"
    assert spilled_uids(tmp_path) == uids and writer.spilled == 2


@virtual_time
async def test_stop_before_the_first_open_that_hangs_gives_up_after_stop_timeout(tmp_path: Path) -> None:
    opener = Opener("hang")
    writer = await started(AuditWriter(opener, config(tmp_path), stop_timeout=4.0))
    uids = record_all(writer, entries(2))
    await until(lambda: len(opener.times) == 1)
    await writer.stop()
    assert now() == pytest.approx(4.0, abs=0.01)
    assert writer.last_error == "cannot open the audit database: no answer in 4 s"
    assert spilled_uids(tmp_path) == uids


@virtual_time
async def test_stop_is_bounded_when_the_store_never_closes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FakeStore()
    store.hang_close = True
    writer = await started(AuditWriter(Opener(store), config(tmp_path), stop_timeout=2.0))
    await until(lambda: writer.db_up)
    await writer.stop()
    # stop_timeout plus the 5 s margin for the task, which is then cancelled.
    assert now() == pytest.approx(2.0 + 5.0, abs=0.02)
    assert "audit writer did not stop in time; cancelling it" in messages(caplog, logging.ERROR)
    assert store.closed_with == [1.0]


def test_a_writer_that_never_started_stops_cleanly(tmp_path: Path) -> None:
    async def scenario() -> None:
        writer = AuditWriter(Opener(FakeStore()), config(tmp_path))
        await writer.stop()
        assert writer.stats["recorded"] == 0 and writer.store is None

    asyncio.run(scenario())


# -- added for the mutants the first sample left ---------------------------------------------------


@virtual_time
async def test_a_waiting_record_does_not_slow_the_retries(tmp_path: Path) -> None:
    opener = Opener(StoreDown("refused"))
    writer = await started(AuditWriter(opener, config(tmp_path, flush_interval_ms=60_000)))
    await until(lambda: len(opener.times) == 2)
    writer.record(make_entry(0))
    await until(lambda: len(opener.times) == 5)
    gaps = [round(b - a, 6) for a, b in zip(opener.times, opener.times[1:], strict=False)]
    assert gaps == [0.5, 1.0, 2.0, 4.0]
    # Each open that failed was awaited alone: no task is left behind (the test's and the writer's).
    assert len(asyncio.all_tasks()) == 2
    await writer.stop()


@virtual_time
async def test_a_bug_in_the_loop_is_logged_and_retried_after_retry_initial(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FakeStore()
    calls: list[float] = []

    def factory() -> Any:  # not a coroutine function: raises at the call, outside the open's guard
        calls.append(now())
        if len(calls) < 3:
            raise RuntimeError("factory bug")
        return Opener(store)()

    writer = await started(AuditWriter(factory, config(tmp_path), retry_initial=0.3))
    await until(lambda: writer.db_up)
    assert calls == [0.0, pytest.approx(0.3), pytest.approx(0.6)]
    assert messages(caplog).count("audit writer loop failed") == 2
    await writer.stop()


@virtual_time
async def test_a_spill_file_that_cannot_be_read_is_left_and_writing_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    SpillFiles(config(tmp_path).spill_path, database=DB_URL).path.mkdir(parents=True)  # not a file
    store = FakeStore()
    writer = await started(AuditWriter(Opener(store), config(tmp_path, batch_size=1)))
    await until(lambda: any(m.startswith("audit spill replay failed: ") for m in messages(caplog)))
    at = now()
    items = entries(1)
    record_all(writer, items)
    await until(lambda: writer.written == 1)
    assert store.times == [pytest.approx(at)]  # no backoff: the database is fine
    assert "audit writer loop failed" not in messages(caplog)
    await writer.stop()


@virtual_time
async def test_after_a_replay_new_records_are_written_without_delay(tmp_path: Path) -> None:
    items = entries(3)
    SpillFiles(config(tmp_path).spill_path, database=DB_URL).append([entry.to_line() for entry in items])
    store = FakeStore()
    writer = await started(AuditWriter(Opener(store), config(tmp_path, batch_size=2)))
    await until(lambda: writer.replayed == 3)
    await until(lambda: spilled_uids(tmp_path) == [])
    at = now()
    more = record_all(writer, entries(2, start=3))
    await until(lambda: writer.written == 2)
    assert store.times[-1] == pytest.approx(at)
    assert store.uids == [entry.uid for entry in items] + more
    await writer.stop()


@virtual_time
async def test_an_open_at_stop_uses_what_is_left_of_stop_timeout(tmp_path: Path) -> None:
    store = FakeStore()
    store.stall = True
    opener = Opener("hang", (3.5, store))
    writer = await started(AuditWriter(opener, config(tmp_path), stop_timeout=4.0))
    uids = record_all(writer, entries(2))
    await until(lambda: len(opener.times) == 1)
    await writer.stop()
    assert now() == pytest.approx(4.0, abs=0.02)
    assert spilled_uids(tmp_path) == uids
    assert opener.cancelled == 1


@virtual_time
async def test_an_open_at_stop_that_hangs_is_cancelled(tmp_path: Path) -> None:
    opener = Opener("hang")
    writer = await started(AuditWriter(opener, config(tmp_path), stop_timeout=2.0))
    record_all(writer, entries(1))
    await until(lambda: len(opener.times) == 1)
    await writer.stop()
    await let_pass(0.1)
    assert len(opener.times) == 2 and opener.cancelled == 2


@virtual_time
async def test_stop_of_a_writer_never_started_spills_what_was_recorded(tmp_path: Path) -> None:
    opener = Opener(FakeStore())
    writer = AuditWriter(opener, config(tmp_path))
    uids = record_all(writer, entries(2))
    await writer.stop()
    assert spilled_uids(tmp_path) == uids and writer.spilled == 2
    assert opener.times == []


@virtual_time
async def test_a_full_buffer_while_down_spills_nothing_until_it_overflows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    opener = Opener(StoreDown("refused"))
    writer = await started(AuditWriter(opener, config(tmp_path, buffer_records=3, flush_interval_ms=60_000)))
    await until(lambda: writer.last_error is not None)
    record_all(writer, entries(3))
    await let_pass(1.0)
    assert writer.spilled == 0 and writer.buffered == 3
    assert not SpillFiles(config(tmp_path).spill_path, database=DB_URL).path.exists()
    assert [m for m in messages(caplog) if m.startswith("audit database down")] == []
    await writer.stop()


@virtual_time
async def test_after_a_failed_write_the_batch_waits_its_interval_then_spills(tmp_path: Path) -> None:
    store = FakeStore()
    writer = await started(AuditWriter(Opener(store), config(tmp_path, batch_size=2, flush_interval_ms=1000)))
    await until(lambda: writer.db_up)
    store.down = True
    uids = record_all(writer, entries(1))
    await until(lambda: writer.failed_batches == 1)
    failed_at = store.times[0]
    # The retry (0.5 s) comes before the interval is up (1 s): nothing is due then; at the interval
    # the record, still unwritten, is spilled.
    await until(lambda: writer.spilled == 1)
    assert now() == pytest.approx(failed_at + 1.0, abs=0.02)
    assert spilled_uids(tmp_path) == uids
    await writer.stop()


@virtual_time
async def test_rows_that_arrive_during_a_pass_wait_for_the_next(tmp_path: Path) -> None:
    store = FakeStore()
    store.gate = asyncio.Event()
    writer = AuditWriter(
        Opener(store), config(tmp_path, batch_size=3, buffer_records=2, flush_interval_ms=60_000)
    )
    writer.hold_replay()  # a spill's replay would start the next pass at once
    await writer.start()
    await until(lambda: writer.db_up)
    uids = record_all(writer, entries(3))
    await until(lambda: len(store.batches) == 1)
    uids += record_all(writer, entries(3, start=3))  # while the first batch is being written
    store.gate.set()
    await until(lambda: writer.written == 3)
    await let_pass(1.0)
    # Past the buffer: the oldest newcomer spilled; the two left (less than a batch) wait for the
    # flush interval rather than being written in the same pass.
    assert writer.spilled == 1 and writer.written == 3 and writer.buffered == 2
    assert store.batches == [uids[0:3]] and spilled_uids(tmp_path) == uids[3:4]
    await writer.stop()
    assert store.batches == [uids[0:3], uids[4:6]]


@virtual_time
async def test_an_open_given_up_is_not_reported_as_a_lost_exception(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    opener = Opener("hang, then fail when cancelled")
    writer = await started(AuditWriter(opener, config(tmp_path), stop_timeout=2.0))
    await until(lambda: writer.last_error is not None)  # the open given up after 90 s
    await writer.stop()
    assert opener.cancelled == 1
    fresh = AuditWriter(opener, config(tmp_path), stop_timeout=2.0)
    await fresh.start()
    fresh.record(make_entry(0))
    await until(lambda: len(opener.times) == 2)
    await fresh.stop()  # the open in the loop, then the one at stop, both given up
    assert opener.cancelled == 3
    gc.collect()
    await let_pass(0.1)
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


@virtual_time
async def test_a_replayed_record_the_database_refuses_is_lost_not_replayed(tmp_path: Path) -> None:
    items = entries(3)
    SpillFiles(config(tmp_path).spill_path, database=DB_URL).append([entry.to_line() for entry in items])
    store = FakeStore()
    store.refuse = {items[1].uid}
    writer = await started(AuditWriter(Opener(store), config(tmp_path)))
    await until(lambda: writer.lost == 1)
    await until(lambda: spilled_uids(tmp_path) == [])
    assert writer.replayed == 2 and store.uids == [items[0].uid, items[2].uid]
    await writer.stop()


@virtual_time
async def test_a_full_batch_that_arrived_during_a_write_is_written_straight_after(tmp_path: Path) -> None:
    store = FakeStore()
    store.gate = asyncio.Event()
    writer = await started(
        AuditWriter(Opener(store), config(tmp_path, batch_size=2, flush_interval_ms=60_000))
    )
    await until(lambda: writer.db_up)
    uids = record_all(writer, entries(2))
    await until(lambda: len(store.batches) == 1)
    uids += record_all(writer, entries(2, start=2))  # no wake: the count passes 3 and 4, not 1 or 2
    at = now()
    store.gate.set()
    await until(lambda: writer.written == 4)
    assert store.batches == [uids[0:2], uids[2:4]]
    assert store.times[1] == pytest.approx(at)
    await writer.stop()


# -- found by the full mutation run (each test names what a planted bug changed) ---------------------


@contextlib.contextmanager
def no_file_left_open(directory: Path) -> Any:
    """Fails when the block leaves a file under `directory` open, or drops a file object without
    closing it (CPython then closes it as it frees it, with a ResourceWarning): a reader the writer
    forgot to close. Whether the forgotten reader is freed (a warning) or still referenced (an open
    descriptor: a log record may hold the traceback that holds it), one of the two shows."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
    fds = Path("/proc/self/fd")
    targets = [str(link.readlink()) for link in fds.iterdir() if link.is_symlink()]
    assert [t for t in targets if t.startswith(str(directory))] == []


@virtual_time
async def test_stop_gives_the_database_10_s_by_default(tmp_path: Path) -> None:
    store = FakeStore()
    writer = await started(AuditWriter(Opener(store), config(tmp_path, flush_interval_ms=60_000)))
    await until(lambda: writer.db_up)
    uids = record_all(writer, entries(2))
    store.stall = True
    at = now()
    await writer.stop()
    assert now() - at == pytest.approx(10.0, abs=0.01)
    assert spilled_uids(tmp_path) == uids


@virtual_time
async def test_while_down_a_record_past_the_buffer_spills_at_once_when_rows_wait(tmp_path: Path) -> None:
    # Rows already built (a failed batch) and new arrivals count together against the buffer.
    store = FakeStore()
    cfg = config(tmp_path, buffer_records=5, flush_interval_ms=60_000)
    writer = await started(AuditWriter(Opener(store), cfg, retry_initial=30.0, retry_max=30.0))
    await until(lambda: writer.db_up)
    store.down = True
    uids = record_all(writer, entries(3))
    await until(lambda: writer.failed_batches == 1)  # at 60 s: the 3 rows stay in the buffer
    await let_pass(5.0)
    at = now()
    record_all(writer, entries(3, start=3))
    await until(lambda: writer.spilled == 1)
    assert now() == pytest.approx(at, abs=0.02)  # not at the retry, 25 s later
    assert spilled_uids(tmp_path) == uids[:1]
    await writer.stop()


@virtual_time
async def test_starting_twice_runs_one_loop(tmp_path: Path) -> None:
    store = FakeStore()
    store.gate = asyncio.Event()
    opener = Opener(store)
    writer = AuditWriter(opener, config(tmp_path, batch_size=2))
    await writer.start()
    await writer.start()
    await until(lambda: writer.db_up)
    uids = record_all(writer, entries(2))
    await until(lambda: len(store.batches) == 1)
    await let_pass(1.0)
    store.gate.set()
    await until(lambda: writer.written == 2)
    await writer.stop()
    assert opener.times == [0.0] and store.batches == [uids]


@virtual_time
async def test_stop_when_the_loops_write_is_slow_to_give_up_is_bounded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The loop is stuck in a write that ignores stop: stop waits stop_timeout + 5 s, cancels, and
    # gives the cancelled write 1 s more (a driver slow to give up), then spills.
    store = FakeStore()
    writer = await started(AuditWriter(Opener(store), config(tmp_path, batch_size=1), stop_timeout=2.0))
    await until(lambda: writer.db_up)
    in_flight = asyncio.Event()
    release = asyncio.Event()

    async def write(rows: list[AuditRow], *, ids: bool = False) -> dict[str, int]:
        in_flight.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()
            raise
        return {}

    store.write = write  # type: ignore[method-assign]
    uids = record_all(writer, entries(1))
    await in_flight.wait()
    at = now()
    await writer.stop()
    assert now() - at == pytest.approx(2.0 + 5.0 + 1.0, abs=0.01)
    assert spilled_uids(tmp_path) == uids
    assert "audit writer did not stop in time; cancelling it" in messages(caplog)
    release.set()
    await let_pass(0.1)


@virtual_time
async def test_an_open_slow_to_give_up_gets_1_s_before_the_next_try(tmp_path: Path) -> None:
    store = FakeStore()
    calls: list[float] = []

    async def factory() -> FakeStore:
        calls.append(now())
        if len(calls) == 1:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await let_pass(3.0)  # closing what it had opened takes a while
                raise
        return store

    writer = await started(AuditWriter(factory, config(tmp_path), retry_initial=0.5))
    await until(lambda: writer.db_up)
    assert calls == [0.0, pytest.approx(90.0 + 1.0 + 0.5)]
    await writer.stop()


@virtual_time
async def test_the_warning_names_at_most_5_spill_files_of_other_databases(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(7):
        SpillFiles(config(tmp_path).spill_path, database=f"sqlite:///elsewhere{i}.sqlite3").append(
            [make_entry(i).to_line()]
        )
    writer = await started(AuditWriter(Opener(FakeStore()), config(tmp_path)))
    await until(lambda: writer.db_up)
    await writer.stop()
    (record,) = [r for r in caplog.records if "wait for another audit database" in r.getMessage()]
    named = record.getMessage().split("(", 2)[2].rsplit(")", 1)[0].split(", ")
    assert record.getMessage().startswith("7 audit spill file(s)")
    assert len(named) == 5 and len(record.files) == 7  # type: ignore[attr-defined]


@virtual_time
async def test_the_listener_is_not_called_for_a_batch_the_database_refused_whole(tmp_path: Path) -> None:
    calls: list[list[dict[str, Any]]] = []
    store = FakeStore()
    items = entries(2)
    store.refuse = {items[0].uid}
    writer = await started(
        AuditWriter(Opener(store), config(tmp_path, batch_size=1), on_written=calls.append)
    )
    record_all(writer, items)
    await until(lambda: writer.written == 1 and writer.lost == 1)
    await writer.stop()
    assert [[r["uid"] for r in call] for call in calls] == [[items[1].uid]]


@virtual_time
async def test_a_write_that_succeeds_after_a_failed_one_brings_the_database_back_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.audit")
    store = FakeStore()
    cfg = config(tmp_path, batch_size=1, flush_interval_ms=60_000)
    writer = await started(AuditWriter(Opener(store), cfg, retry_initial=1.0))
    await until(lambda: writer.db_up)
    store.down_after = 0  # the next write fails, the one after succeeds
    record_all(writer, entries(1))
    await until(lambda: writer.failed_batches == 1)
    assert not writer.db_up
    await until(lambda: writer.written == 1)
    assert writer.db_up and writer.spilled == 0
    assert "audit database reachable again" in messages(caplog)
    await writer.stop()


@virtual_time
async def test_a_replay_after_an_outage_brings_the_database_back_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.audit")
    store = FakeStore()
    cfg = config(tmp_path, flush_interval_ms=1000)
    writer = await started(AuditWriter(Opener(store), cfg, retry_initial=1.0, retry_max=1.0))
    await until(lambda: writer.db_up)
    store.down = True
    uids = record_all(writer, entries(2))
    await until(lambda: writer.spilled == 2)
    assert not writer.db_up
    store.down = False
    await until(lambda: writer.replayed == 2)
    assert writer.db_up and store.uids == uids  # up through the replay alone: no new record came
    assert "audit database reachable again" in messages(caplog)
    # Up again, a lone record waits its flush interval and is written, not spilled.
    record_all(writer, entries(1, start=2))
    await until(lambda: writer.written == 1)
    assert writer.spilled == 2
    await writer.stop()


@virtual_time
async def test_records_refused_at_stop_are_not_counted_written(tmp_path: Path) -> None:
    store = FakeStore()
    items = entries(3)
    store.refuse = {items[1].uid}
    writer = await started(AuditWriter(Opener(store), config(tmp_path, flush_interval_ms=60_000)))
    await until(lambda: writer.db_up)
    record_all(writer, items)
    await writer.stop()
    assert writer.written == 2 and writer.lost == 1
    assert store.uids == [items[0].uid, items[2].uid]


@virtual_time
async def test_a_spill_file_that_fails_mid_read_is_closed_and_left(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    SpillFiles(config(tmp_path).spill_path, database=DB_URL).append([e.to_line() for e in entries(2)])

    def read(self: SpillReader, count: int) -> tuple[list[AuditEntry], int]:
        raise OSError(5, "Input/output error")  # a disk error after the file opened

    monkeypatch.setattr(SpillReader, "read", read)
    with no_file_left_open(tmp_path):
        writer = await started(AuditWriter(Opener(FakeStore()), config(tmp_path)))
        await until(lambda: any(m.startswith("audit spill replay failed: ") for m in messages(caplog)))
        await writer.stop()


@virtual_time
async def test_stop_in_the_middle_of_a_replay_closes_the_file(tmp_path: Path) -> None:
    items = entries(3)
    SpillFiles(config(tmp_path).spill_path, database=DB_URL).append([e.to_line() for e in items])
    store = FakeStore()
    store.down_after = 1  # the first chunk is stored, then the database goes down
    with no_file_left_open(tmp_path):
        writer = await started(AuditWriter(Opener(store), config(tmp_path, batch_size=1)))
        await until(lambda: writer.replayed == 1 and writer.failed_batches == 1)
        await writer.stop()
    assert store.uids == [items[0].uid]
    assert sorted(spilled_uids(tmp_path)) == sorted(e.uid for e in items)  # the file stays, whole


@virtual_time
async def test_a_flush_at_stop_that_fails_as_it_is_abandoned_is_not_reported_as_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FakeStore()
    writer = await started(
        AuditWriter(Opener(store), config(tmp_path, flush_interval_ms=60_000), stop_timeout=1.0)
    )
    await until(lambda: writer.db_up)
    uids = record_all(writer, entries(2))

    async def write(rows: list[AuditRow], *, ids: bool = False) -> dict[str, int]:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise StoreDown("connection closed while cancelling") from None  # as some drivers do
        return {}

    store.write = write  # type: ignore[method-assign]
    await writer.stop()
    assert spilled_uids(tmp_path) == uids
    await let_pass(0.1)
    gc.collect()
    await let_pass(0.1)
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


# The virtual clock itself: a loop that can never wake, and one that never waits, fail the test at
# once (a mutant of the writer that spins would otherwise hold the test until a real-time timeout).


def test_a_wait_that_nothing_can_end_fails_at_once() -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    with pytest.raises(Deadlock), asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        runner.run(forever())


def test_a_busy_loop_at_one_instant_fails_at_once_even_in_a_task_nobody_awaits() -> None:
    spins = 0

    async def spin() -> None:
        nonlocal spins
        loop = asyncio.get_running_loop()
        while True:  # waits for time that only a wait could make pass
            try:
                if loop.time() >= 1.0:
                    return
            except Exception:  # as the writer's loop does: a Livelock is not one
                pass
            spins += 1

    async def scenario() -> None:
        asyncio.get_running_loop().create_task(spin())
        await let_pass(5.0)

    with pytest.raises(Livelock), asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        runner.run(scenario())
    assert SPIN_LIMIT - 10 < spins < SPIN_LIMIT  # the loop's own reads count too
