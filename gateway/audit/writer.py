"""The batched audit writer: the request path appends to memory, one background task writes.

The request path only appends (the finished trail and the time it ended; an `AuditEntry` from other
callers). The background task turns what arrived into rows in one pass per batch (uids, failover
path as JSON) and writes them; from then on the row is what is retried, spilled and replayed, so a
record keeps its uid however often it is tried.

A database outage never costs a request: records wait in memory (up to `buffer_records`), then the
oldest go to this process's spill file; once the database answers again the spill is replayed.
Every record ends up written, spilled or counted as lost (only when the spill file itself cannot
be written), and each loss is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from itertools import islice
from typing import Any

import asyncpg

from gateway.audit.record import ENTRY_FIELDS, AuditEntry, AuditRow, rows_from_trails
from gateway.audit.spill import SpillFiles, SpillReader
from gateway.audit.store import AuditStore
from gateway.config.model import AuditConfig
from gateway.routing.trail import RequestTrail
from gateway.tracing import span

__all__ = ["AuditWriter", "StoreFactory"]

log = logging.getLogger("gateway.audit")

StoreFactory = Callable[[], Awaitable[AuditStore]]

#: Backoff between attempts while the database is down: doubling from the first to the second.
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 10.0
#: Longest `stop()` spends writing to the database before it spills the rest.
STOP_TIMEOUT_S = 10.0
#: Longest `stop()` waits for the store's connections to close.
STORE_CLOSE_TIMEOUT_S = 1.0
#: Longest an open of the store may take (connect, then migrations that may wait for another instance).
OPEN_TIMEOUT_S = 90.0

#: Errors that mean the database refused these records (it is up), not that it is unreachable.
_REJECTED = (
    ValueError,
    TypeError,
    sqlite3.IntegrityError,
    sqlite3.InterfaceError,
    sqlite3.DataError,
    sqlite3.ProgrammingError,
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
)


class AuditWriter:
    """Writes what `record_trail()` and `record()` queue, in batches from a background task (`start()` …
    `stop()`).

    `store_factory` opens the store (None: `AuditStore.open(config.database_url)`); it is retried with
    backoff until it succeeds, so the writer may start while the database is down. The writer
    closes the store it opened at `stop()`.
    """

    def __init__(
        self,
        store_factory: StoreFactory | None,
        config: AuditConfig,
        *,
        on_written: Callable[[list[dict[str, Any]]], None] | None = None,
        retry_initial: float = RETRY_INITIAL_S,
        retry_max: float = RETRY_MAX_S,
        stop_timeout: float = STOP_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        #: Stamps the moment a trail is handed over (its request's end; `time.monotonic` unless a test
        #: passes its own, to tell that instant from the later one when the row is built).
        self._clock = clock
        self._factory: StoreFactory = store_factory or (lambda: AuditStore.open(config.database_url))
        #: Called with the records (dicts with ids) this process just inserted; the live tail's fast path.
        self.on_written = on_written
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._stop_timeout = stop_timeout
        self._batch_size = max(1, config.batch_size)
        self._limit = max(1, config.buffer_records)
        self._interval = config.flush_interval_ms / 1000
        #: What the request path handed over, not yet made into rows: (trail, ended) or an entry.
        self._arrived: deque[tuple[RequestTrail, float] | AuditEntry] = deque()
        #: Rows waiting to be written, oldest first.
        self._buffer: deque[AuditRow] = deque()
        self._wake = asyncio.Event()
        self._stop_event = asyncio.Event()
        self._spill = SpillFiles(config.spill_path, database=config.database_url)
        self._replay: SpillReader | None = None
        self._replay_chunk: list[AuditRow] | None = None
        self._replay_pending = False
        #: While set, spill files wait: another writer of this process may still be spilling to them.
        self._replay_held = False
        self._store: AuditStore | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._closed = False
        self._down_logged = False
        # Counters, plain ints (see `stats`).
        self.recorded = 0
        self.written = 0
        self.spilled = 0
        self.replayed = 0
        self.lost = 0
        self.failed_batches = 0
        self.db_up = False
        #: Why the database was last found unreachable (None: never), and when (epoch seconds).
        self.last_error: str | None = None
        self.last_error_at: float | None = None

    # -- the request path ------------------------------------------------------------------------

    def record_trail(self, trail: RequestTrail) -> None:
        """Queue the record of a request that has just ended (its trail is not changed afterwards).
        O(1), no I/O, never blocks, never raises: the row is built later, with its batch's."""
        self._arrive((trail, self._clock()))

    def record(self, entry: AuditEntry) -> None:
        """Queue one entry built elsewhere. Same guarantees as `record_trail`."""
        self._arrive(entry)

    def _arrive(self, item: tuple[RequestTrail, float] | AuditEntry) -> None:
        if self._closed:
            self.lost += 1
            if self.lost == 1 or self.lost % 1000 == 0:
                log.error(
                    "audit record after the writer stopped: not stored (%d so far)",
                    self.lost,
                    extra={"event": "audit_lost", "lost": self.lost},
                )
            return
        arrived = self._arrived
        arrived.append(item)
        self.recorded += 1
        size = len(arrived) + len(self._buffer)
        # Wake the writer only when it has something to decide: the first record (it starts the
        # flush timer), a full batch, or a full buffer; not once per record.
        if size == 1 or size == self._batch_size or size > self._limit:
            self._wake.set()

    def _rows(self) -> None:
        """Turn what arrived into rows at the end of the buffer, in one pass."""
        arrived = self._arrived
        if not arrived:
            return
        items = list(arrived)
        arrived.clear()
        with contextlib.suppress(Exception):  # a record that cannot be built is found below
            if all(type(item) is tuple for item in items):
                self._buffer.extend(rows_from_trails(items))  # type: ignore[arg-type]
                return
        for item in items:
            try:
                row = item.to_row() if isinstance(item, AuditEntry) else rows_from_trails([item])[0]
            except Exception:
                self.lost += 1
                log.exception("audit record could not be built: dropped", extra={"event": "audit_lost"})
                continue
            self._buffer.append(row)

    # -- state -----------------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        return len(self._arrived) + len(self._buffer)

    @property
    def stats(self) -> dict[str, Any]:
        """`recorded` = `written` + `spilled` + `buffered` + records lost from memory; `replayed`
        counts spill records (this process's or adopted orphans') stored since."""
        return {
            "buffered": self.buffered,
            "recorded": self.recorded,
            "written": self.written,
            "spilled": self.spilled,
            "replayed": self.replayed,
            "lost": self.lost,
            "failed_batches": self.failed_batches,
            "db_up": self.db_up,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
        }

    def spill_bytes(self) -> int:
        """Bytes waiting in this database's spill files (a directory scan: not for the request path)."""
        try:
            return self._spill.pending_bytes()
        except OSError:
            return 0

    @property
    def _replay_due(self) -> bool:
        return self._replay_pending and not self._replay_held

    def hold_replay(self) -> None:
        """Leave the spill files alone until `release_replay()` (the writer this one replaces may
        still spill to them, and a file must not be renamed away under an append)."""
        self._replay_held = True

    def release_replay(self) -> None:
        self._replay_held = False
        self._wake.set()

    @property
    def store(self) -> AuditStore | None:
        """The store this writer opened (None until the database has answered once)."""
        return self._store

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the background task; returns at once (the database is opened in the background)."""
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name="gateway-audit-writer")

    async def stop(self) -> None:
        """Write what is in memory (for up to `stop_timeout` s), spill what could not be written, close."""
        if self._closed:
            return
        self._stopping = True
        self._stop_event.set()
        self._wake.set()
        task = self._task
        if task is not None:
            # The task drains by itself within stop_timeout; the margin covers the spill write.
            done, _ = await asyncio.wait({task}, timeout=self._stop_timeout + 5)
            if not done:
                log.error("audit writer did not stop in time; cancelling it")
                task.cancel()
                await asyncio.wait({task}, timeout=1)
        await self._finish()

    # -- the background task ---------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        delay = 0.0
        retry_at = 0.0
        batch_since: float | None = None
        while not self._stopping:
            try:
                now = loop.time()
                if batch_since is None and self.buffered:
                    batch_since = now
                wait: float | None
                if now < retry_at:
                    wait = retry_at - now
                elif self._store is None or self._replay_due or self.buffered >= self._batch_size:
                    wait = 0.0
                elif batch_since is not None:
                    wait = batch_since + self._interval - now
                else:
                    wait = None
                if now < retry_at and self._outage and batch_since is not None:
                    wait = min(retry_at - now, max(0.0, batch_since + self._interval - now))
                if wait is None or wait > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await self._wake.wait()
                self._wake.clear()
                if self._outage and batch_since is not None and loop.time() >= batch_since + self._interval:
                    # The database is known to be down: what waited a flush interval goes to the
                    # (fsynced) spill file, so a killed process loses at most the last interval's
                    # records, as when the database answers, not a whole buffer.
                    await self._spill_buffered()
                    batch_since = None
                elif not self.db_up:
                    # While the database is down, memory is bounded first. While it is up, a burst
                    # is written batch by batch, and only what still exceeds the buffer spills.
                    await self._spill_overflow()
                if self._stopping:
                    break
                now = loop.time()
                if now < retry_at:
                    continue
                if batch_since is None and self.buffered:
                    batch_since = now
                due = (
                    self._store is None
                    or self._replay_due
                    or self.buffered >= self._batch_size
                    or (batch_since is not None and now >= batch_since + self._interval)
                )
                if not due:
                    continue
                ok = await self._work()
                batch_since = loop.time() if self.buffered else None
                if ok:
                    delay, retry_at = 0.0, 0.0
                else:
                    delay = min(self._retry_max, max(self._retry_initial, delay * 2))
                    retry_at = loop.time() + delay
            except Exception:  # a bug, not an outage: keep the task alive
                log.exception("audit writer loop failed")
                await asyncio.sleep(self._retry_initial)
        await self._drain()

    async def _work(self) -> bool:
        """Open the store if needed, write what is buffered, replay one chunk of spill. False: DB down."""
        store = self._store
        if store is None:
            store = await self._open()
            if store is None:
                return False
        self._rows()
        count = len(self._buffer)
        while count > 0 and self._buffer:
            batch = list(islice(self._buffer, 0, min(count, self._batch_size)))
            if not await self._write(store, batch):
                return False
            for _ in batch:
                self._buffer.popleft()
            count -= len(batch)
            await self._spill_overflow()
        if self._replay_due and not self._stopping:
            return await self._replay_step(store)
        return True

    async def _open(self) -> AuditStore | None:
        """Open the store, unless `stop()` comes first (a connect may take a while to fail)."""
        opening = asyncio.ensure_future(self._factory())
        stopped = asyncio.ensure_future(self._stop_event.wait())
        try:
            done, _ = await asyncio.wait(
                {opening, stopped}, timeout=OPEN_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopped.cancel()
        if opening not in done:
            opening.cancel()  # AuditStore.open closes what it had opened
            opening.add_done_callback(_retrieve)
            await asyncio.wait({opening}, timeout=1)
            if not self._stopping:
                self._went_down(f"cannot open the audit database: no answer in {OPEN_TIMEOUT_S:.0f} s")
            return None
        try:
            store = opening.result()
        except Exception as error:
            self._went_down(f"cannot open the audit database: {type(error).__name__}", str(error))
            return None
        self._store = store
        self._came_up()
        try:
            self._replay_pending = await asyncio.to_thread(self._spill.pending)
            others = await asyncio.to_thread(self._spill.other_databases)
        except OSError as error:
            log.error("audit spill directory unreadable: %s", error, extra={"event": "audit_spill_error"})
        else:
            if others:
                log.warning(
                    "%d audit spill file(s) wait for another audit database (%s): they are replayed "
                    "when the gateway writes to that database again",
                    len(others),
                    ", ".join(path.name for path in others[:5]),
                    extra={"event": "audit_spill_elsewhere", "files": [str(path) for path in others]},
                )
        return store

    async def _write(self, store: AuditStore, batch: list[AuditRow]) -> bool:
        try:
            created = await self._insert(store, batch)
        except Exception as error:
            self.failed_batches += 1
            self._went_down(f"audit insert failed: {type(error).__name__}")
            return False
        self.written += len(batch) - created.rejected
        self._came_up()
        self._notify(batch, created.ids)
        return True

    async def _insert(self, store: AuditStore, batch: Sequence[AuditRow]) -> _Inserted:
        """Insert; a batch refused for its content (the database is up) is retried one record at a time
        and the records still refused are dropped, counted as lost. Raises when the database is down.

        The new rows' ids are asked for only when someone listens (`on_written`): without them
        SQLite runs one prepared INSERT for the whole batch."""
        ids = self.on_written is not None
        try:
            with span("audit insert", records=len(batch), database=store.dialect):
                return _Inserted(await store.write(batch, ids=ids), 0)
        except _REJECTED as error:
            if len(batch) == 1:
                self._reject(batch[0], error)
                return _Inserted({}, 1)
            self.failed_batches += 1
        created: dict[str, int] = {}
        rejected = 0
        for row in batch:
            try:
                created.update(await store.write([row], ids=ids))
            except _REJECTED as error:
                self._reject(row, error)
                rejected += 1
        return _Inserted(created, rejected)

    def _reject(self, row: AuditRow, error: BaseException) -> None:
        self.lost += 1
        log.error(
            "audit record refused by the database (%s): dropped",
            type(error).__name__,
            extra={"event": "audit_lost", "uid": row[_UID], "request_id": row[_REQUEST_ID]},
        )

    def _notify(self, rows: Sequence[AuditRow], ids: dict[str, int]) -> None:
        callback = self.on_written
        if callback is None or not ids:
            return
        records = [
            {"id": ids[row[_UID]], **AuditEntry.from_row(row).to_json()} for row in rows if row[_UID] in ids
        ]
        records.sort(key=lambda record: record["id"])
        try:
            callback(records)
        except Exception:
            log.exception("audit on_written callback failed")

    def _went_down(self, message: str, detail: str = "") -> None:
        """`message` names the failure (it is shown by /ready, which needs no key); `detail` (the
        driver's text: hosts, paths) goes to the log only."""
        was_up = self.db_up
        self.db_up = False
        self.last_error, self.last_error_at = message, time.time()
        if detail:
            message = f"{message}: {detail}"
        if was_up or not self._down_logged:
            self._down_logged = True
            log.warning(
                "%s; records are buffered (then spilled to %s) and retried",
                message,
                self._spill.path,
                extra={"event": "audit_db_down"},
            )
        else:
            log.debug(message)

    def _came_up(self) -> None:
        if not self.db_up:
            if self._down_logged:
                log.info("audit database reachable again", extra={"event": "audit_db_up"})
            self.db_up = True

    # -- spill -----------------------------------------------------------------------------------

    @property
    def _outage(self) -> bool:
        """The database has been tried and found down (not merely not opened yet)."""
        return not self.db_up and self.last_error is not None

    async def _spill_buffered(self) -> None:
        self._rows()
        if self._buffer:
            rows = list(self._buffer)
            self._buffer.clear()
            await self._spill_rows(rows)

    async def _spill_overflow(self) -> None:
        excess = self.buffered - self._limit
        if excess > 0:
            self._rows()
            await self._spill_rows([self._buffer.popleft() for _ in range(excess)])

    async def _spill_rows(self, rows: list[AuditRow]) -> None:
        lines = [AuditEntry.from_row(row).to_line() for row in rows]
        try:
            await asyncio.to_thread(self._spill.append, lines)
        except Exception as error:
            self.lost += len(rows)
            log.error(
                "audit spill to %s failed (%s: %s): %d records lost",
                self._spill.path,
                type(error).__name__,
                error,
                len(rows),
                extra={"event": "audit_lost", "lost": len(rows)},
            )
            return
        if self.spilled == 0 or not self.db_up:
            log.warning(
                "audit database down: %d records spilled to %s",
                len(rows),
                self._spill.path,
                extra={"event": "audit_spilled", "count": len(rows)},
            )
        self.spilled += len(rows)
        self._replay_pending = True

    async def _replay_step(self, store: AuditStore) -> bool:
        """Store one chunk of a spill file. False: the database failed (the chunk is kept for later)."""
        if self._replay_chunk is None:
            try:
                self._replay_chunk = await self._next_replay_chunk()
            except OSError as error:
                # Left for the next start (or the next spill) rather than retried in a tight loop.
                log.error("audit spill replay failed: %s", error, extra={"event": "audit_spill_error"})
                self._replay_pending = False
                if self._replay is not None:
                    self._replay.close()
                    self._replay = None
                return True
            if self._replay_chunk is None:
                return True
        chunk = self._replay_chunk
        try:
            created = await self._insert(store, chunk)
        except Exception as error:
            self.failed_batches += 1
            self._went_down(f"audit replay insert failed: {type(error).__name__}")
            return False
        self._replay_chunk = None
        self.replayed += len(chunk) - created.rejected
        self._came_up()
        self._notify(chunk, created.ids)
        return True

    async def _next_replay_chunk(self) -> list[AuditRow] | None:
        """The next entries to replay, claiming the next file when one is done; None when all are done."""
        while True:
            if self._replay is None:
                path = await asyncio.to_thread(self._spill.claim_next)
                if path is None:
                    self._replay_pending = False
                    return None
                log.info("audit replaying spill file %s", path, extra={"event": "audit_replay"})
                self._replay = await asyncio.to_thread(SpillReader, path)
            reader = self._replay
            entries, bad = await asyncio.to_thread(reader.read, self._batch_size)
            if bad:
                self.lost += bad
                log.error(
                    "audit spill file %s: %d unreadable lines skipped",
                    reader.path,
                    bad,
                    extra={"event": "audit_lost", "lost": bad},
                )
            if entries:
                return [entry.to_row() for entry in entries]
            await asyncio.to_thread(reader.finish)
            self._replay = None
            log.info("audit spill file %s replayed", reader.path, extra={"event": "audit_replayed"})

    # -- shutdown --------------------------------------------------------------------------------

    async def _drain(self) -> None:
        """Write the buffer while the database answers (within stop_timeout), then `_finish`.

        The writes run in a task of their own that is abandoned, not awaited, when time is up: a
        stuck driver may take a while even to give up. What it had not confirmed is spilled; if it
        commits a batch after all, the replay of the same records is ignored (uids are unique).
        """
        self._rows()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._stop_timeout
        if self._store is None and self._buffer and self.last_error is None:
            # Stopped before the database was first open (a reload soon after the one that started
            # this writer, SIGTERM just after start): open it now rather than spill what it can take.
            await self._open_at_stop(self._stop_timeout)
        store = self._store
        if store is not None and self.db_up and self._buffer:
            pending = list(self._buffer)
            self._buffer.clear()
            confirmed = 0
            abandoned = False

            async def flush() -> None:
                nonlocal confirmed
                while confirmed < len(pending):
                    batch = pending[confirmed : confirmed + self._batch_size]
                    created = await self._insert(store, batch)
                    if abandoned:
                        return
                    confirmed += len(batch)
                    self.written += len(batch) - created.rejected
                    self._notify(batch, created.ids)

            task = asyncio.ensure_future(flush())
            done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline - loop.time()))
            if not done:
                abandoned = True
                task.cancel()
                task.add_done_callback(_retrieve)
                self.failed_batches += 1
                log.warning("audit flush at shutdown timed out; spilling the rest")
            elif task.exception() is not None:
                self.failed_batches += 1
                log.warning(
                    "audit flush at shutdown failed (%s); spilling the rest", type(task.exception()).__name__
                )
            self._buffer.extendleft(reversed(pending[confirmed:]))
        await self._finish()

    async def _open_at_stop(self, timeout: float) -> None:
        """Open the store for the final flush, within `timeout`; on failure the buffer is spilled."""
        opening = asyncio.ensure_future(self._factory())
        done, _ = await asyncio.wait({opening}, timeout=timeout)
        if not done:
            opening.cancel()  # AuditStore.open closes what it had opened
            opening.add_done_callback(_retrieve)
            self._went_down(f"cannot open the audit database: no answer in {timeout:.0f} s")
            return
        error = opening.exception()
        if error is not None:
            self._went_down(f"cannot open the audit database: {type(error).__name__}", str(error))
            return
        self._store = opening.result()
        self._came_up()

    async def _finish(self) -> None:
        """Spill whatever is still in memory and close. Idempotent."""
        self._closed = True  # from here on `record()` counts entries as lost
        self._rows()
        while self._buffer:
            left = list(self._buffer)
            self._buffer.clear()
            await self._spill_rows(left)
        if self._replay is not None:
            self._replay.close()  # the claimed file stays; the next start resumes it
            self._replay = None
        self._replay_chunk = None
        store, self._store = self._store, None
        self.db_up = False
        if store is not None:
            await store.close(timeout=STORE_CLOSE_TIMEOUT_S)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Consume an abandoned task's outcome, so asyncio does not report it as never retrieved."""
    if not task.cancelled():
        task.exception()


_UID = ENTRY_FIELDS.index("uid")
_REQUEST_ID = ENTRY_FIELDS.index("request_id")


class _Inserted:
    __slots__ = ("ids", "rejected")

    def __init__(self, ids: dict[str, int], rejected: int) -> None:
        self.ids = ids
        self.rejected = rejected
