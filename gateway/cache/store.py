"""Where cache entries live: `MemoryCache` (one process, least recently used first out past
`max_entries` or `max_bytes`) and `RedisCache` (`gateway.cache.redis_store`, shared by workers and
instances). Both keep each entry with its own lifetime and answer the same calls."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["CacheStore", "MemoryCache"]


class CacheStore(Protocol):
    #: "memory" or "redis".
    kind: str

    async def get(self, model: str, key: str) -> bytes | None:
        """The entry, or None (absent, expired, or the store failed: never raises)."""
        ...

    def put(self, model: str, key: str, value: bytes, ttl_seconds: int) -> None:
        """Store an entry for `ttl_seconds` (Redis: in a task, off the request path). Never raises."""
        ...

    async def clear(self, model: str | None) -> int:
        """Drop every entry (of `model`'s, when given); the number dropped."""
        ...

    def status(self) -> dict[str, Any]:
        """`store`, `up`, `errors`, and for memory `entries` and `bytes`."""
        ...

    def values(self) -> list[bytes]:
        """Every stored entry (memory only, for tests; Redis answers [])."""
        ...

    async def close(self) -> None: ...


class MemoryCache:
    kind = "memory"

    def __init__(self, max_entries: int, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.clock = clock
        #: (model, key) → (expires at, value); the most recently used last.
        self._entries: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()
        self.bytes = 0

    async def get(self, model: str, key: str) -> bytes | None:
        name = (model, key)
        entry = self._entries.get(name)
        if entry is None:
            return None
        if entry[0] <= self.clock():
            self._drop(name)
            return None
        self._entries.move_to_end(name)
        return entry[1]

    def put(self, model: str, key: str, value: bytes, ttl_seconds: int) -> None:
        if len(value) > self.max_bytes:
            return
        name = (model, key)
        if name in self._entries:
            self._drop(name)
        self._entries[name] = (self.clock() + ttl_seconds, value)
        self.bytes += len(value)
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)

    def _drop(self, name: tuple[str, str]) -> None:
        _, value = self._entries.pop(name)
        self.bytes -= len(value)

    async def clear(self, model: str | None) -> int:
        names = [n for n in self._entries if model is None or n[0] == model]
        for name in names:
            self._drop(name)
        return len(names)

    def status(self) -> dict[str, Any]:
        return {
            "store": "memory",
            "up": True,
            "errors": 0,
            "entries": len(self._entries),
            "bytes": self.bytes,
        }

    def values(self) -> list[bytes]:
        return [value for _, value in self._entries.values()]

    async def close(self) -> None:
        self._entries.clear()
        self.bytes = 0
