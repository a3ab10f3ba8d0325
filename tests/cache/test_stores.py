"""The cache stores: least recently used out past the entry and byte bounds, lifetimes, clearing one
model or all, Redis keys under their own prefix with their own expiry, and a Redis that is down."""

from __future__ import annotations

import asyncio
import time

import redis

from gateway.cache.redis_store import RedisCache
from gateway.cache.store import MemoryCache
from gateway.testing.redis_server import RedisServer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_memory_drops_the_least_recently_used_past_its_bounds() -> None:
    store = MemoryCache(max_entries=2, max_bytes=10_000)
    store.put("m", "a", b"1", 60)
    store.put("m", "b", b"2", 60)
    assert await store.get("m", "a") == b"1"  # a is now the most recently used
    store.put("m", "c", b"3", 60)
    assert await store.get("m", "b") is None
    assert await store.get("m", "a") == b"1" and await store.get("m", "c") == b"3"
    by_bytes = MemoryCache(max_entries=100, max_bytes=1024)
    for name in "abc":
        by_bytes.put("m", name, b"x" * 400, 60)
    assert by_bytes.status()["entries"] == 2 and by_bytes.bytes == 800
    assert await by_bytes.get("m", "a") is None
    by_bytes.put("m", "huge", b"x" * 2000, 60)  # larger than the whole store: not kept
    assert await by_bytes.get("m", "huge") is None


async def test_memory_entries_expire_and_clear_by_model() -> None:
    clock = Clock()
    store = MemoryCache(10, 10_000, clock=clock)
    store.put("gpt", "a", b"1", 5)
    store.put("claude", "b", b"2", 60)
    clock.now += 4.9
    assert await store.get("gpt", "a") == b"1"
    clock.now += 0.2
    assert await store.get("gpt", "a") is None
    store.put("gpt", "c", b"3", 60)
    assert await store.clear("gpt") == 1
    assert await store.get("claude", "b") == b"2"
    assert await store.clear(None) == 1 and store.status()["bytes"] == 0


async def test_redis_keys_have_their_prefix_and_lifetime_and_clear_by_model(
    redis_server: RedisServer,
) -> None:
    store = RedisCache(redis_server.url(), timeout_ms=500, prefix="t:cache:")
    try:
        k1, k2 = "1" * 64, "2" * 64  # keys are SHA-256s in hex
        store.put("gpt", k1, b"one", 30)
        store.put("gpt", k2, b"two", 30)
        store.put("gpt:mini", k1, b"three", 30)  # a model whose name starts like another's
        store.put("claude", k1, b"four", 30)
        await store.drain()
        assert await store.get("gpt", k1) == b"one"
        raw = redis.Redis.from_url(redis_server.url())
        assert len(raw.keys("t:cache:*")) == 4
        assert 0 < raw.pttl(f"t:cache:gpt:{k1}") <= 30_000
        raw.set("other:gpt:x", b"not ours")
        assert await store.clear("gpt") == 2
        assert await store.get("gpt:mini", k1) == b"three"
        assert await store.clear(None) == 2
        assert raw.keys("*") == [b"other:gpt:x"]
        raw.close()
    finally:
        await store.close()


async def test_a_redis_that_is_down_is_a_miss_at_once() -> None:
    server = RedisServer()
    server.start()
    url = server.url()
    server.stop()
    store = RedisCache(url, timeout_ms=200, prefix="t:")
    try:
        started = time.monotonic()
        assert await store.get("gpt", "k") is None
        assert await store.get("gpt", "k") is None  # within the back-off: not even tried
        assert time.monotonic() - started < 5
        store.put("gpt", "k", b"v", 10)  # skipped while down; never raises
        await store.drain()
        status = store.status()
        assert status["up"] is False and status["errors"] == 1
    finally:
        await store.close()


async def test_a_redis_that_does_not_answer_is_a_miss_within_the_timeout() -> None:
    """A server that accepts connections and never answers (a hung Redis): the lookup gives up at
    `store_timeout_ms` and counts the failure; the request is not held longer."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # read nothing, answer nothing

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = RedisCache(f"redis://127.0.0.1:{port}/0", timeout_ms=150, prefix="t:")
    try:
        async with asyncio.timeout(5):  # far above 150 ms: only a hang would reach it
            assert await store.get("gpt", "k") is None
        assert store.status()["errors"] == 1 and store.status()["last_error"] == "TimeoutError"
    finally:
        await store.close()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
