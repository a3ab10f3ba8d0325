"""A connection to a Redis that the request path may use but must never wait on for long: the one both
the limits store and the response cache hold (`limits.store`, `cache.store: redis://...`).

Every call is bounded by the store's timeout and made without hidden retries; a failed call is
counted, logged as a warning at most every 30 s (and its recovery once), and for a second afterwards
`available()` says no, so callers fail at once instead of each waiting out the timeout again. Work
sent off the request path (`spawn`) is awaited, up to a bound, when the link closes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

__all__ = ["DOWN_BACKOFF_S", "WARN_EVERY_S", "RedisLink"]

#: After a failed call, the store counts as down for this long (then the next call tries Redis again).
DOWN_BACKOFF_S = 1.0
#: A warning about the store being down is logged at most this often.
WARN_EVERY_S = 30.0


class RedisLink:
    """`client` to talk to Redis; `available`, `failed` and `answered` around each call; `status()`."""

    def __init__(self, url: str, *, timeout_ms: int, log: logging.Logger, what: str, event: str) -> None:
        self.timeout_s = timeout_ms / 1000
        self.client = Redis.from_url(
            url,
            socket_timeout=self.timeout_s,
            socket_connect_timeout=self.timeout_s,
            retry=Retry(NoBackoff(), 0),  # the caller decides what a failure means; no hidden retries
        )
        self._log = log
        #: How the warnings name the store ("the limits store (Redis)") and their `event` prefix.
        self._what, self._event = what, event
        self._pending: set[asyncio.Task[None]] = set()
        self.up = True
        self.errors = 0
        self.last_error: str | None = None
        self._down_until = 0.0
        self._warned_at = -WARN_EVERY_S

    def available(self) -> bool:
        """False for `DOWN_BACKOFF_S` after a failed call."""
        return time.monotonic() >= self._down_until

    def failed(self, error: BaseException) -> None:
        self.errors += 1
        self.last_error = type(error).__name__
        now = time.monotonic()
        self._down_until = now + DOWN_BACKOFF_S
        if self.up or now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            self._log.warning(
                "%s failed: %s: %s",
                self._what,
                type(error).__name__,
                error,
                extra={"event": f"{self._event}_down", "error": type(error).__name__},
            )
        self.up = False

    def answered(self) -> None:
        if not self.up:
            self.up = True
            self._log.info("%s answers again", self._what, extra={"event": f"{self._event}_up"})

    def status(self) -> dict[str, Any]:
        return {"store": "redis", "up": self.up, "errors": self.errors, "last_error": self.last_error}

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` off the request path; `close` waits for it (up to the timeout and a second)."""
        task = asyncio.ensure_future(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=self.timeout_s + 1)

    async def close(self) -> None:
        await self.drain()
        try:
            await self.client.aclose()
        except Exception:  # closing a pool to a Redis that went away
            self._log.debug("closing %s failed", self._what, exc_info=True)
