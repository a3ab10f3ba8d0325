"""Retention: delete audit records (and the panel's benchmark runs) older than `retention_days`, at
start and then daily."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from gateway.audit.bench_store import purge_bench_runs_before
from gateway.audit.store import AuditStore

__all__ = ["RETENTION_INTERVAL_S", "run_retention"]

log = logging.getLogger("gateway.audit")

RETENTION_INTERVAL_S = 24 * 3600.0
#: After a failed purge (database down), try again this soon rather than a day later.
RETRY_AFTER_S = 300.0


async def run_retention(
    store: AuditStore | Callable[[], AuditStore | None],
    days: int,
    *,
    stop_event: asyncio.Event,
    interval: float = RETENTION_INTERVAL_S,
    retry_after: float = RETRY_AFTER_S,
    batch: int = 5000,
    purged: Callable[[datetime, int], None] | None = None,
) -> None:
    """Purge records older than `days` now and every `interval` seconds until `stop_event` is set.

    `store` may be a store or a callable returning the current one (None while unavailable, e.g.
    `lambda: writer.store`). A failed purge is logged and retried after `retry_after` seconds.
    `purged(when, deleted)` hears each purge that ran.
    """
    if days < 1:
        raise ValueError("retention days must be at least 1")
    while not stop_event.is_set():
        wait = interval
        current = store() if callable(store) else store
        if current is None:
            wait = min(interval, retry_after)
        else:
            cutoff = datetime.now(UTC) - timedelta(days=days)
            try:
                deleted = await current.purge_older_than(cutoff, batch)
                bench_runs = await purge_bench_runs_before(current, cutoff)
            except Exception as error:
                log.warning(
                    "audit retention purge failed (%s); retrying in %.0f s",
                    type(error).__name__,
                    min(interval, retry_after),
                    extra={"event": "audit_retention_failed"},
                )
                wait = min(interval, retry_after)
            else:
                if purged is not None:
                    purged(datetime.now(UTC), deleted)
                log.info(
                    "audit retention: deleted %d records (and %d benchmark runs) older than %d days",
                    deleted,
                    bench_runs,
                    days,
                    extra={
                        "event": "audit_retention",
                        "deleted": deleted,
                        "bench_runs_deleted": bench_runs,
                        "days": days,
                    },
                )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await stop_event.wait()
