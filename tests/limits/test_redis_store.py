"""What only the Redis store has: counters shared by several gateways, leases that expire when an
instance dies holding them, and a store that goes away (down, or hanging) and comes back."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from gateway.errors import LimitExceeded, LimitsUnavailable
from gateway.limits import Limiter, ManualClock, build_store
from gateway.limits.limiter import LEASE_MARGIN_S
from gateway.testing.redis_server import RedisServer
from tests.limits.conftest import limits_config, rules_for

HOLD = 30.0


def redis_limiter(url: str, rules, clock: ManualClock, **options: object) -> Limiter:
    config = limits_config(url, **options)  # type: ignore[arg-type]
    return Limiter(build_store(config), config, {"team-a": rules}, clock)


async def until_admitted(limiter: Limiter, rules, timeout: float = 10.0):
    """Admit once the store answers again (after an outage, calls fail at once for a second)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            admission = await limiter.admit(rules, 0, HOLD)
        except LimitsUnavailable:  # (on_store_down: deny)
            admission = None
        if admission is not None:
            return admission
        if time.monotonic() > deadline:
            pytest.fail(f"the store did not answer again within {timeout} s")
        await asyncio.sleep(0.05)


async def test_two_gateways_on_one_redis_share_the_count(redis_server: RedisServer) -> None:
    rules = rules_for(requests_per_minute=10)
    clock = ManualClock()
    first = redis_limiter(redis_server.url(), rules, clock)
    second = redis_limiter(redis_server.url(), rules, clock)
    outcomes = []
    for i in range(20):
        try:
            await (first if i % 2 else second).admit(rules, 0, HOLD)
            outcomes.append("ok")
        except LimitExceeded:
            outcomes.append("refused")
    assert outcomes.count("ok") == 10
    for limiter in (first, second):
        await limiter.store.close()


async def test_a_lease_never_released_expires_after_the_requests_time(redis_server: RedisServer) -> None:
    """An instance that dies mid-request never settles: its slot comes back when the lease expires."""
    rules = rules_for(concurrent_requests=1)
    clock = ManualClock()
    limiter = redis_limiter(redis_server.url(), rules, clock)
    await limiter.admit(rules, 0, HOLD)  # never settled
    with pytest.raises(LimitExceeded):
        await limiter.admit(rules, 0, HOLD)
    clock.advance(HOLD + LEASE_MARGIN_S - 1)
    with pytest.raises(LimitExceeded):
        await limiter.admit(rules, 0, HOLD)
    clock.advance(2)
    assert await limiter.admit(rules, 0, HOLD) is not None
    await limiter.store.close()


@pytest.mark.parametrize("on_store_down", ["allow", "deny"])
async def test_redis_stopped_follows_on_store_down_and_limits_return_with_it(
    redis_server: RedisServer, on_store_down: str
) -> None:
    rules = rules_for(requests_per_minute=1)
    clock = ManualClock()
    limiter = redis_limiter(redis_server.url(), rules, clock, on_store_down=on_store_down)
    await limiter.admit(rules, 0, HOLD)
    with pytest.raises(LimitExceeded):
        await limiter.admit(rules, 0, HOLD)
    redis_server.stop()
    for _ in range(3):  # the first call fails on the connection; the next ones at once
        if on_store_down == "allow":
            assert await asyncio.wait_for(limiter.admit(rules, 0, HOLD), 5) is None
        else:
            with pytest.raises(LimitsUnavailable) as caught:
                await asyncio.wait_for(limiter.admit(rules, 0, HOLD), 5)
            assert caught.value.status == 503 and caught.value.headers["retry-after"] == "1"
    status = limiter.status()
    assert status["up"] is False and status["errors"] >= 1 and status["last_error"]
    redis_server.start()  # an empty Redis (no persistence): counts and the script cache are gone
    await until_admitted(limiter, rules)
    assert limiter.status()["up"] is True
    with pytest.raises(LimitExceeded):  # limits apply again
        await limiter.admit(rules, 0, HOLD)
    await limiter.store.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung Redis)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    for connection in held:
        connection.close()
    listener.close()


async def test_a_hung_redis_costs_at_most_the_store_timeout(silent_port: int) -> None:
    rules = rules_for(requests_per_minute=1)
    limiter = redis_limiter(f"redis://127.0.0.1:{silent_port}/0", rules, ManualClock(), timeout_ms=100)
    # (A bound against hanging, not a speed measurement: the store gives up after 100 ms.)
    assert await asyncio.wait_for(limiter.admit(rules, 0, HOLD), 5) is None
    assert limiter.status()["last_error"] == "TimeoutError"
    # While it counts as down, calls fail at once instead of each waiting out the timeout again.
    assert await asyncio.wait_for(limiter.admit(rules, 0, HOLD), 5) is None
    assert limiter.status()["errors"] == 1
    await limiter.store.close()
