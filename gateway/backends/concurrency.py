"""A backend's concurrency limit (`max_concurrency`): at most N requests in flight, the rest wait in a
bounded FIFO queue (`max_queue`, `queue_timeout_seconds`); a request that finds the queue full, or
waits too long, fails as "overloaded", so failover moves on to the chain's next target.

The limit lives with the backend object, like its circuit breaker, so its count survives a reload
that keeps the backend. `ConcurrencyLimit.send` is the one place a slot is taken and given back: a
whole reply frees it when it has arrived, a stream when it is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING

from gateway.backends.upstream import AttemptLimits, Reply, Stream, UpstreamCall, UpstreamFailure
from gateway.config.backends import BackendSettings

if TYPE_CHECKING:
    from gateway.backends.base import Backend

__all__ = ["ConcurrencyLimit", "ConcurrencyLimitReached"]


class ConcurrencyLimitReached(UpstreamFailure):
    """The gateway's own limit turned the request away before the backend was contacted. It fails
    over like any overload, but says nothing about the backend's health (no circuit-breaker count)."""

    def __init__(self, detail: str) -> None:
        super().__init__("overloaded", detail, retry_after="1")


class ConcurrencyLimit:
    """At most `limit` requests in flight; up to `max_queue` more wait, first come first served."""

    __slots__ = ("_waiters", "in_flight", "limit", "max_queue", "queue_timeout")

    def __init__(self, limit: int, max_queue: int, queue_timeout: float | None) -> None:
        if limit < 1:
            raise ValueError(f"a concurrency limit must be at least 1, got {limit}")
        self.limit = limit
        self.max_queue = max_queue
        #: Seconds a request may wait for a slot; None: until its deadline cancels it.
        self.queue_timeout = queue_timeout
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @classmethod
    def for_settings(cls, settings: BackendSettings) -> ConcurrencyLimit | None:
        """The limit a backend's settings ask for; None when `max_concurrency` is 0 (no limit), so an
        unlimited backend's requests pay nothing for it."""
        if not settings.max_concurrency:
            return None
        return cls(settings.max_concurrency, settings.max_queue, settings.queue_timeout_seconds or None)

    @property
    def queued(self) -> int:
        """Requests waiting for a slot now."""
        return len(self._waiters)

    async def send(
        self, backend: Backend, call: UpstreamCall, model: str, limits: AttemptLimits
    ) -> Reply | Stream:
        """`backend.send` within the limit: wait for a slot (or fail as overloaded), hold it while the
        attempt runs, and for a stream until the stream is closed."""
        await self.acquire()
        try:
            result = await backend.send(call, model, limits)
        except BaseException:
            self.release()
            raise
        if isinstance(result, Stream):
            self._hold_until_closed(result)
        else:
            self.release()
        return result

    async def acquire(self) -> None:
        """Take a slot, waiting in the queue for one. Raises ConcurrencyLimitReached when the queue is
        full or the wait exceeds `queue_timeout`."""
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return
        if len(self._waiters) >= self.max_queue:
            raise ConcurrencyLimitReached(
                f"{self.in_flight} requests in flight (max_concurrency {self.limit}) and "
                f"{len(self._waiters)} waiting (max_queue {self.max_queue})"
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.queue_timeout):
                await waiter
        except BaseException as error:
            if waiter.done() and not waiter.cancelled():
                # The slot was handed over just as the wait ended (timeout, deadline, client gone):
                # pass it on rather than lose it.
                self.release()
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):  # a release may have dropped it already
                    self._waiters.remove(waiter)
            if isinstance(error, TimeoutError):
                raise ConcurrencyLimitReached(
                    f"no free slot within {self.queue_timeout:g} s (max_concurrency {self.limit}, "
                    "queue_timeout_seconds)"
                ) from None
            raise

    def release(self) -> None:
        """Give a slot back: straight to the longest waiter if there is one (no overtaking)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.in_flight -= 1

    def _hold_until_closed(self, stream: Stream) -> None:
        close = stream.close
        released = False

        async def close_and_release() -> None:
            nonlocal released
            try:
                await close()
            finally:
                if not released:
                    released = True
                    self.release()

        stream.close = close_and_release

    def __repr__(self) -> str:
        return f"<ConcurrencyLimit {self.in_flight}/{self.limit} in flight, {self.queued} queued>"
