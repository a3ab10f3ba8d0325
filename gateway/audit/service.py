"""The audit log of one gateway process: the batched writer the request path feeds, the store the
admin API reads, retention, and the live tail's fan-out.

The request path calls `record(trail)` and nothing else: it appends the finished trail and the time
it ended to the writer's buffer (no I/O; the writer builds the rows a batch at a time). A reload
that changes `audit.*` starts a new writer for the new settings, switches to it, and only then stops
the old one, which writes (or spills, for its own database) what it was handed.

Live tail: one feed per process, shared by every WebSocket subscriber. On PostgreSQL it LISTENs for
the ids each instance inserts (so the tail shows every instance's records); on SQLite it polls for
rows past the last id seen (SQLite assigns ids in commit order, so this also shows the other worker
processes' records).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from gateway.audit.query import LogFilter
from gateway.audit.retention import run_retention
from gateway.audit.store import AuditStore
from gateway.audit.writer import AuditWriter
from gateway.config.model import AuditConfig
from gateway.errors import ServiceUnavailable
from gateway.routing.trail import RequestTrail

__all__ = ["AuditService", "LiveSubscription"]

log = logging.getLogger("gateway.audit")

#: How often the SQLite live tail looks for new rows.
POLL_INTERVAL_S = 0.5
#: How long a failed open of the reading store is remembered before trying again.
REOPEN_AFTER_S = 2.0
#: The writer counters `stats` adds up across writers.
_COUNTS = ("recorded", "written", "spilled", "replayed", "lost", "failed_batches")
#: Records a live subscriber may fall behind before it is told it lagged and loses the oldest.
SUBSCRIBER_QUEUE = 1000


class LiveSubscription:
    """One live-tail client: the records matching its filter, in the order written."""

    def __init__(self, filters: LogFilter, on_close: Callable[[LiveSubscription], None]) -> None:
        self.filters = filters
        #: Records for this subscriber; None when the gateway is stopping.
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self.dropped = 0
        self._on_close = on_close

    def end(self) -> None:
        """The gateway is stopping: the subscriber's next read returns None."""
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(None)

    def offer(self, record: dict[str, Any]) -> None:
        if not self.filters.matches(record):
            return
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(record)

    def close(self) -> None:
        self._on_close(self)


class AuditService:
    def __init__(self) -> None:
        self.config: AuditConfig | None = None
        self.writer: AuditWriter | None = None
        self._reader: AuditStore | None = None
        self._reader_failed_at = 0.0
        self._reader_lock = asyncio.Lock()
        self._retention_stop = asyncio.Event()
        self._retention: asyncio.Task[None] | None = None
        self._subscribers: set[LiveSubscription] = set()
        self._feed: asyncio.Task[None] | None = None
        #: Set while the live feed follows the database (its LISTEN, or its polling position, is in
        #: place): a record written from then on reaches the subscribers.
        self._following = asyncio.Event()
        self._apply_lock = asyncio.Lock()
        self._ending = False
        #: Writers replaced by a reload and still writing what they were handed.
        self._stopping: list[AuditWriter] = []
        #: The counters of the writers that have stopped.
        self._retired_counts = dict.fromkeys(_COUNTS, 0)
        #: The last retention purge this process ran: when (ISO 8601) and how many records it deleted.
        self.last_purge: dict[str, Any] | None = None

    # -- the request path ----------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self.writer is not None

    def record(self, trail: RequestTrail) -> None:
        """The request of this trail has ended: queue its record (the trail must not change after)."""
        writer = self.writer
        if writer is not None:
            writer.record_trail(trail)

    # -- lifecycle -------------------------------------------------------------------------------

    async def apply(self, config: AuditConfig) -> None:
        """Start, restart or stop the audit log for these settings (at start and after a reload).

        The new writer takes over before the old one stops: `record()` reads `self.writer` once and
        hands the trail over without awaiting, so every record goes to exactly one writer, the old
        (which writes or spills everything it was handed before it closes) or the new one. Stopping
        first would leave a moment with no writer, and the records of that moment nowhere."""
        async with self._apply_lock:
            if config == self.config:
                return
            await self._stop_readers()
            old = self.writer
            if self.config is None or self.config.database_url != config.database_url:
                self.last_purge = None  # (another database's)
            self.config = config
            if config.enabled:
                writer = AuditWriter(lambda: AuditStore.open(config.database_url), config)
                if old is not None:
                    writer.hold_replay()
                await writer.start()
                self.writer = writer  # the switch: from here on records go to the new writer
            else:
                self.writer = None
            if old is not None:
                await self._retire(old)
                if self.writer is not None:
                    self.writer.release_replay()
            if not config.enabled:
                log.info("audit log off (audit.enabled is false)", extra={"event": "audit_off"})
                return
            self._retention_stop = asyncio.Event()
            self._retention = asyncio.create_task(self._run_retention(config))
            if self._subscribers:
                self._start_feed()
            log.info(
                "audit log to %s",
                _redacted(config.database_url),
                extra={"event": "audit_on", "database": _redacted(config.database_url)},
            )

    async def close(self) -> None:
        async with self._apply_lock:
            await self._stop_readers()
            if self.writer is not None:
                writer, self.writer = self.writer, None
                await self._retire(writer)
            self.config = None

    async def _retire(self, writer: AuditWriter) -> None:
        """Stop a writer that no longer receives records; its counters stay in `stats`."""
        self._stopping.append(writer)
        try:
            await writer.stop()
        finally:
            self._stopping.remove(writer)
            for key in _COUNTS:
                self._retired_counts[key] += writer.stats[key]

    async def _stop_readers(self) -> None:
        """Stop what reads the database of the current settings: retention, the live feed, the reader."""
        self._retention_stop.set()
        for task in (self._retention, self._feed):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._retention = self._feed = None
        self._following.clear()
        if self._reader is not None:
            reader, self._reader = self._reader, None
            with contextlib.suppress(Exception):
                await reader.close()
        self._reader_failed_at = 0.0

    async def _run_retention(self, config: AuditConfig) -> None:
        """Retention needs the database; wait for it (it may be down at start) without failing."""
        while not self._retention_stop.is_set():
            try:
                store = await self.store()
            except ServiceUnavailable:
                await asyncio.sleep(10)
                continue
            await run_retention(
                store, config.retention_days, stop_event=self._retention_stop, purged=self._purged
            )
            return

    def _purged(self, when: datetime, deleted: int) -> None:
        self.last_purge = {"at": when.isoformat(timespec="seconds"), "deleted": deleted}

    # -- the admin side --------------------------------------------------------------------------

    async def store(self) -> AuditStore:
        """The store for reading (admin API); 503 problem while the database cannot be reached."""
        if self.config is None or not self.config.enabled:
            raise ServiceUnavailable("the audit log is off (audit.enabled is false in gateway.yaml)")
        if self._reader is not None:
            return self._reader
        writer_store = self.writer.store if self.writer is not None else None
        if writer_store is not None:  # the writer's connection is open: read through it
            return writer_store
        async with self._reader_lock:
            if self._reader is not None:
                return self._reader
            if time.monotonic() - self._reader_failed_at < REOPEN_AFTER_S:
                raise ServiceUnavailable("the audit database is not reachable; try again shortly")
            try:
                self._reader = await AuditStore.open(self.config.database_url)
            except Exception as error:
                self._reader_failed_at = time.monotonic()
                log.warning(
                    "audit database not reachable: %s",
                    type(error).__name__,
                    extra={"event": "audit_db_unreachable"},
                )
                raise ServiceUnavailable(
                    "the audit database is not reachable; records are buffered and will be written "
                    "when it is back"
                ) from None
            return self._reader

    def stats(self) -> dict[str, Any]:
        """The writer's state and counters. The counters add up every writer this process has run,
        so a reload that restarts the writer does not set them back (nor lose what the old writer
        did while it stopped). `spill_bytes`: what waits in the spill files of the current database."""
        writer = self.writer
        if writer is None:
            return {"enabled": False}
        stats = writer.stats
        for key, value in self._retired_counts.items():
            stats[key] += value
        for stopping in self._stopping:
            for key, value in stopping.stats.items():
                if key in _COUNTS or key == "buffered":
                    stats[key] += value
        return {
            "enabled": True,
            **stats,
            "spill_bytes": writer.spill_bytes(),
            "retention_days": self.config.retention_days if self.config is not None else None,
            "last_purge": self.last_purge,
        }

    def end_live(self) -> None:
        """Shutdown has begun: end every live tail now, so open WebSockets do not hold the worker for
        the whole graceful-shutdown period (the admin panel reconnects to the next process)."""
        self._ending = True
        for subscription in list(self._subscribers):
            subscription.end()

    def subscribe(self, filters: LogFilter) -> LiveSubscription:
        subscription = LiveSubscription(filters, self._subscribers.discard)
        if self._ending:
            subscription.end()
            return subscription
        self._subscribers.add(subscription)
        if self._feed is None and self.writer is not None:
            self._start_feed()
        return subscription

    def _start_feed(self) -> None:
        self._feed = asyncio.create_task(self._run_feed())

    async def following(self, timeout: float) -> bool:
        """Wait up to `timeout` s for the live feed to follow the database; whether it does. A
        subscriber that saw True gets every record written after."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._following.wait()
        return self._following.is_set()

    def _publish(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            for subscriber in list(self._subscribers):
                subscriber.offer(record)

    async def _run_feed(self) -> None:
        """Fetch newly written records and hand them to the subscribers, until cancelled."""
        while True:
            try:
                store = await self.store()
            except ServiceUnavailable:
                await asyncio.sleep(REOPEN_AFTER_S)
                continue
            try:
                if store.dialect == "postgres":
                    await self._follow_notifications(store)
                else:
                    await self._follow_by_polling(store)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database went away: wait, then pick up again
                self._following.clear()
                log.warning(
                    "audit live tail interrupted: %s", type(error).__name__, extra={"event": "audit_tail"}
                )
                await asyncio.sleep(REOPEN_AFTER_S)

    async def _follow_by_polling(self, store: AuditStore) -> None:
        last = await store.last_id()
        self._following.set()
        while True:
            await asyncio.sleep(POLL_INTERVAL_S)
            if not self._subscribers:
                continue
            rows = await store.after_id(last, 500)
            if rows:
                last = rows[-1]["id"]
                self._publish(rows)

    async def _follow_notifications(self, store: AuditStore) -> None:
        arrived: asyncio.Queue[list[int]] = asyncio.Queue()
        closer = await store.listen(arrived.put_nowait)
        self._following.set()
        try:
            while True:
                ids = await arrived.get()
                while not arrived.empty():
                    ids += arrived.get_nowait()
                if self._subscribers:
                    self._publish(await store.fetch_ids(sorted(ids)))
        finally:
            await closer()


def _redacted(url: str) -> str:
    """The database URL without its password."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}" if ":" in credentials else f"{scheme}{sep}{user}@{host}"
