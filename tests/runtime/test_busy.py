"""least_busy across workers and instances: two gateways' routing tables on one private Redis (a
shared `limits.store`) see each other's requests in flight, ignore a worker that stopped answering,
keep groups of other configs apart, and fall back to their own counts while Redis is down."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest

from gateway.config.load import parse_config
from gateway.routing.groups import LeastBusy, RouteGroup
from gateway.routing.table import Runtime
from gateway.runtime.busy import STALE_S, BusyExchange
from gateway.runtime.compile import compile_runtime
from gateway.testing.redis_server import RedisServer

TEXT = """
backends:
  a: {type: openai_compatible, base_url: "http://127.0.0.1:1/v1"}
  b: {type: openai_compatible, base_url: "http://127.0.0.1:2/v1"}
models:
  chat:
    chain:
      - group: {strategy: least_busy, targets: [{backend: a}, {backend: b}]}
limits: {store: "STORE", key_prefix: "busy-test:"}
"""


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as running:
        yield running


class Gateway:
    """One worker's side: its compiled routing table and its exchange."""

    def __init__(self, store: str, name: str, text: str = TEXT) -> None:
        config = parse_config(text.replace("STORE", store).encode(), Path("/srv/gateway.yaml"))
        self.runtime: Runtime
        self.runtime, _ = compile_runtime(config, None, "test")
        self.exchange = BusyExchange(SimpleNamespace(current=self.runtime), identity=name)  # type: ignore[arg-type]

    @property
    def group(self) -> RouteGroup:
        step = self.runtime.routes["chat"].steps[0]
        assert isinstance(step, RouteGroup)
        return step

    @property
    def picker(self) -> LeastBusy:
        assert isinstance(self.group.picker, LeastBusy)
        return self.group.picker

    def firsts(self, n: int = 10) -> set[int]:
        return {self.group.order(None, None)[0][0] for _ in range(n)}  # type: ignore[arg-type]

    async def close(self) -> None:
        await self.runtime.limits.store.close()


@pytest.fixture
async def pair(server: RedisServer) -> AsyncIterator[tuple[Gateway, Gateway]]:
    one, two = Gateway(server.url(), "one"), Gateway(server.url(), "two")
    yield one, two
    await one.close()
    await two.close()


async def test_each_sees_the_others_requests_in_flight(pair: tuple[Gateway, Gateway]) -> None:
    one, two = pair
    one.picker.in_flight[0] = 3  # worker one has three requests on member a
    assert two.firsts() == {0, 1}  # on its own counts, two takes turns
    await one.exchange.exchange()
    await two.exchange.exchange()
    assert two.picker.others == [3, 0] and one.picker.others == [0, 0]
    assert two.firsts() == {1}  # member b is the least busy across both
    two.picker.in_flight[1] = 4
    await two.exchange.exchange()
    await one.exchange.exchange()
    assert one.picker.others == [0, 4]
    assert one.firsts() == {0}  # a: 3 (its own) < b: 4 (two's)
    one.picker.in_flight[0] = 0
    await one.exchange.exchange()
    await two.exchange.exchange()
    assert two.picker.others == [0, 0]


async def test_a_worker_that_stopped_answering_is_ignored_and_removed(pair: tuple[Gateway, Gateway]) -> None:
    _, two = pair
    await two.exchange.exchange()
    link = two.runtime.limits.store.link  # type: ignore[attr-defined]
    [key] = [k async for k in link.client.scan_iter("busy-test:busy:*")]
    dead = orjson.dumps({"t": time.time() - STALE_S - 1, "n": [7, 7]})
    await link.client.hset(key, "dead-worker", dead)
    await two.exchange.exchange()
    assert two.picker.others == [0, 0]
    await link.drain()  # the removal runs off the exchange's path
    assert b"dead-worker" not in await link.client.hkeys(key)


async def test_a_clean_stop_removes_the_workers_counts(pair: tuple[Gateway, Gateway]) -> None:
    one, two = pair
    one.picker.in_flight[1] = 2
    await one.exchange.exchange()
    await two.exchange.exchange()
    assert two.picker.others == [0, 2]
    await one.exchange.leave()
    await two.exchange.exchange()
    assert two.picker.others == [0, 0]


async def test_groups_of_other_members_do_not_mix(server: RedisServer) -> None:
    other = TEXT.replace("targets: [{backend: a}, {backend: b}]", "targets: [{backend: b}, {backend: a}]")
    one, two = Gateway(server.url(), "one"), Gateway(server.url(), "two", other)
    try:
        one.picker.in_flight[0] = 5
        await one.exchange.exchange()
        await two.exchange.exchange()
        assert two.picker.others == [0, 0]
    finally:
        await one.close()
        await two.close()


async def test_redis_down_falls_back_to_the_workers_own_counts(
    pair: tuple[Gateway, Gateway], server: RedisServer
) -> None:
    one, two = pair
    one.picker.in_flight[0] = 3
    await one.exchange.exchange()
    await two.exchange.exchange()
    assert two.picker.others == [3, 0]
    server.stop()
    await two.exchange.exchange()  # fails: counted on the link, never raised
    assert two.picker.others == [0, 0]
    assert not two.runtime.limits.store.link.available()  # type: ignore[attr-defined]


async def test_the_memory_store_exchanges_nothing() -> None:
    alone = Gateway("memory", "one")
    alone.picker.in_flight[0] = 2
    await alone.exchange.exchange()
    assert alone.picker.others == [0, 0] and alone.firsts() == {1}
