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
from typing import Any

from gateway.redis_link import RedisLink

__all__ = ["RedisCache"]

log = logging.getLogger("gateway.cache")

_GLOB_SPECIAL = str.maketrans({c: "\\" + c for c in "*?[]\\"})


class RedisCache:
    kind = "redis"

    def __init__(self, url: str, *, timeout_ms: int, prefix: str) -> None:
        self.link = RedisLink(
            url,
            timeout_ms=timeout_ms,
            log=log,
            what="the response cache (Redis)",
            event="cache_store",
        )
        self.timeout_s = self.link.timeout_s
        self.prefix = prefix
        self._client = self.link.client

    def _key(self, model: str, key: str) -> str:
        return f"{self.prefix}{model}:{key}"

    async def get(self, model: str, key: str) -> bytes | None:
        if not self.link.available():
            return None
        try:
            async with asyncio.timeout(self.timeout_s):
                value = await self._client.get(self._key(model, key))
        except Exception as error:
            self.link.failed(error)
            return None
        self.link.answered()
        return value

    def put(self, model: str, key: str, value: bytes, ttl_seconds: int) -> None:
        if not self.link.available():
            return
        self.link.spawn(self._set(self._key(model, key), value, ttl_seconds))

    async def _set(self, name: str, value: bytes, ttl_seconds: int) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._client.set(name, value, px=ttl_seconds * 1000)
        except Exception as error:
            self.link.failed(error)
        else:
            self.link.answered()

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

    def status(self) -> dict[str, Any]:
        return self.link.status()

    def values(self) -> list[bytes]:
        return []

    async def drain(self) -> None:
        await self.link.drain()

    async def close(self) -> None:
        await self.link.close()
