"""Failover over a backend at its `max_concurrency`: the turned-away attempt moves on as "overloaded"
(when `failover.retry_on` lists it), and does not count for the backend's circuit breaker."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest

from gateway.backends.breaker import CircuitBreaker
from gateway.backends.concurrency import ConcurrencyLimit
from gateway.backends.upstream import (
    AttemptLimits,
    PassThroughReply,
    Reply,
    Stream,
    UpstreamCall,
)
from gateway.config.backends import BackendSettings
from gateway.config.load import parse_config
from gateway.config.model import Config
from gateway.errors import RateLimited
from gateway.protocol.canonical import ChatRequest
from gateway.routing.failover import execute
from gateway.routing.table import ModelRoute, RouteTarget

CONFIG = b"""
backends:
  busy: {type: openai_compatible, base_url: "http://127.0.0.1:1", max_concurrency: 1, max_queue: 0}
  spare: {type: openai_compatible, base_url: "http://127.0.0.1:2"}
models:
  chat:
    chain: [{backend: busy}, {backend: spare}]
failover:
  circuit_breaker: {failure_threshold: 2}
"""
CALL = UpstreamCall(
    endpoint="chat",
    protocol="openai",
    body={},
    request=ChatRequest(model="chat", messages=()),  # type: ignore[call-arg]
    stream=False,
    request_id="r",
    public_model="chat",
)


class HeldBackend:
    """Answers once `release` is set; the Backend protocol, without a network."""

    def __init__(self, config: BackendSettings) -> None:
        self.config = config
        self.breaker = CircuitBreaker()
        self.concurrency = ConcurrencyLimit.for_settings(config)
        self.release = asyncio.Event()
        self.calls = 0

    @property
    def name(self) -> str:
        return self.config.name

    async def send(self, call: UpstreamCall, model: str, limits: AttemptLimits) -> Reply | Stream:
        self.calls += 1
        await self.release.wait()
        return PassThroughReply(b"{}", None)


def route(config: Config) -> tuple[ModelRoute, dict[str, HeldBackend]]:
    backends = {b.name: HeldBackend(b) for b in config.backends}
    model = config.models[0]
    chain = tuple(
        RouteTarget(
            t,
            backends[t.backend],  # type: ignore[arg-type]
            backends[t.backend].config,
            capabilities=backends[t.backend].config.capabilities_for(t.model),
        )
        for t in model.chain
    )
    return ModelRoute(model.name, model, chain), backends


@pytest.fixture
def config() -> Config:
    return parse_config(CONFIG, Path("/tmp/gateway.yaml"))


async def test_turned_away_by_the_limit_moves_on_without_opening_the_circuit(config: Config) -> None:
    chat, backends = route(config)
    tier = config.timeouts.chat
    deadline = time.monotonic() + 30
    backends["spare"].release.set()
    holder = asyncio.create_task(execute(chat, CALL, tier, config.failover, deadline))
    await asyncio.sleep(0)
    assert backends["busy"].concurrency.in_flight == 1  # type: ignore[union-attr]
    for _ in range(3):  # past failure_threshold
        served = await execute(chat, CALL, tier, config.failover, deadline)
        assert served.target.backend is backends["spare"]
        assert [(a.backend, a.outcome) for a in served.attempts] == [("busy", "overloaded"), ("spare", "ok")]
        assert served.attempts[0].tried
    assert backends["busy"].breaker.state == "closed"
    assert backends["busy"].breaker.consecutive_failures == 0
    assert backends["busy"].calls == 1
    backends["busy"].release.set()
    assert (await holder).target.backend is backends["busy"]


async def test_without_overloaded_in_retry_on_the_client_gets_429(config: Config) -> None:
    chat, backends = route(config)
    policy = dataclasses.replace(config.failover, retry_on=frozenset({"connect_error", "timeout"}))
    deadline = time.monotonic() + 30
    holder = asyncio.create_task(execute(chat, CALL, config.timeouts.chat, policy, deadline))
    await asyncio.sleep(0)
    with pytest.raises(RateLimited) as refused:
        await execute(chat, CALL, config.timeouts.chat, policy, deadline)
    assert refused.value.headers["retry-after"] == "1"
    assert backends["spare"].calls == 0
    backends["busy"].release.set()
    await holder
