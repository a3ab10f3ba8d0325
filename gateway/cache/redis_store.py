"""The cache store shared by workers and instances (`cache.store: redis://...`).

Keys: `<cache.key_prefix><model>:<sha256>` (default prefix `gateway:cache:`, apart from the limits'
keys), each a string holding one entry, set with its lifetime (`SET ... PX`), so Redis expires it.
A lookup is one GET under `cache.store_timeout_ms`; a store is one SET in a task after the answer. A
Redis that fails or is slow never fails or delays a request beyond that bound: the lookup is a miss,
the error is counted, a warning is logged at most every 30 s, and for a second after a failure the
cache is not tried at all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

__all__ = ["RedisCache"]

log = logging.getLogger("gateway.cache")

#: After a failed call, the cache is skipped for this long (then the next call tries Redis again).
DOWN_BACKOFF_S = 1.0
#: A warning about the store being down is logged at most this often.
WARN_EVERY_S = 30.0
_GLOB_SPECIAL = str.maketrans({c: "\\" + c for c in "*?[]\\"})


class RedisCache:
    kind = "redis"

    def __init__(self, url: str, *, timeout_ms: int, prefix: str) -> None:
        self.timeout_s = timeout_ms / 1000
        self.prefix = prefix
        self._client = Redis.from_url(
            url,
            socket_timeout=self.timeout_s,
            socket_connect_timeout=self.timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._pending: set[asyncio.Task[None]] = set()
        self.up = True
        self.errors = 0
        self.last_error: str | None = None
        self._down_until = 0.0
        self._warned_at = -WARN_EVERY_S

    def _key(self, model: str, key: str) -> str:
        return f"{self.prefix}{model}:{key}"

    async def get(self, model: str, key: str) -> bytes | None:
        if time.monotonic() < self._down_until:
            return None
        try:
            async with asyncio.timeout(self.timeout_s):
                value = await self._client.get(self._key(model, key))
        except Exception as error:
            self._failed(error)
            return None
        self._answered()
        return value

    def put(self, model: str, key: str, value: bytes, ttl_seconds: int) -> None:
        if time.monotonic() < self._down_until:
            return
        task = asyncio.ensure_future(self._set(self._key(model, key), value, ttl_seconds))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _set(self, name: str, value: bytes, ttl_seconds: int) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._client.set(name, value, px=ttl_seconds * 1000)
        except Exception as error:
            self._failed(error)
        else:
            self._answered()

    async def clear(self, model: str | None) -> int:
        # Not on the request path (an admin action): no store timeout, errors reach the caller.
        pattern = self.prefix.translate(_GLOB_SPECIAL)
        # One model's keys end in ":" and exactly a SHA-256 in hex, so "llama3" leaves "llama3:8b" alone.
        pattern += "*" if model is None else model.translate(_GLOB_SPECIAL) + ":" + "[0-9a-f]" * 64
        dropped = 0
        batch: list[bytes] = []
        async for name in self._client.scan_iter(match=pattern, count=500):
            batch.append(name)
            if len(batch) >= 500:
                dropped += await self._client.unlink(*batch)
                batch = []
        if batch:
            dropped += await self._client.unlink(*batch)
        return dropped

    def _failed(self, error: BaseException) -> None:
        self.errors += 1
        self.last_error = type(error).__name__
        self._down_until = time.monotonic() + DOWN_BACKOFF_S
        if self.up or time.monotonic() - self._warned_at >= WARN_EVERY_S:
            self._warned_at = time.monotonic()
            log.warning(
                "the response cache (Redis) failed: %s; requests go upstream meanwhile",
                type(error).__name__,
                extra={"event": "cache_store_down", "error": type(error).__name__},
            )
        self.up = False

    def _answered(self) -> None:
        if not self.up:
            self.up = True
            log.info("the response cache (Redis) answers again", extra={"event": "cache_store_up"})

    def status(self) -> dict[str, Any]:
        return {"store": "redis", "up": self.up, "errors": self.errors, "last_error": self.last_error}

    def values(self) -> list[bytes]:
        return []

    async def drain(self) -> None:
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=self.timeout_s + 1)

    async def close(self) -> None:
        await self.drain()
        try:
            await self._client.aclose()
        except Exception:
            log.debug("closing the cache store failed", exc_info=True)
