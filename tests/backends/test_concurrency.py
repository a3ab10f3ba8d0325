"""The per-backend concurrency limit: N in flight, a bounded FIFO queue, a bounded wait, a stream
holding its slot until closed, and no slot lost to an error or a cancelled wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from gateway.backends.concurrency import ConcurrencyLimit, ConcurrencyLimitReached
from gateway.backends.upstream import (
    AttemptLimits,
    PassThroughReply,
    PassThroughStream,
    Reply,
    Stream,
    UpstreamCall,
    UpstreamFailure,
)
from gateway.config.backends import BackendLimits, OpenAICompatibleSettings
from gateway.config.secret import Secret
from gateway.protocol.canonical import ChatRequest

CALL = UpstreamCall(
    endpoint="chat",
    protocol="openai",
    body={},
    request=ChatRequest(model="m", messages=()),  # type: ignore[call-arg]
    stream=False,
    request_id="r",
    public_model="m",
)


def limits() -> AttemptLimits:
    return AttemptLimits(connect=1, first_byte=5, deadline=time.monotonic() + 30)


class GatedBackend:
    """Answers each request when the test opens its gate; records the order requests arrived in."""

    def __init__(self, *, stream: bool = False, fail: bool = False) -> None:
        self.stream = stream
        self.fail = fail
        self.gates: list[asyncio.Event] = []
        self.started: list[str] = []
        self.closed = 0

    async def send(self, call: UpstreamCall, model: str, limits: AttemptLimits) -> Reply | Stream:
        gate = asyncio.Event()
        self.gates.append(gate)
        self.started.append(model)
        await gate.wait()
        if self.fail:
            raise UpstreamFailure("http_5xx", "broken")
        if not self.stream:
            return PassThroughReply(b"{}", None)

        async def rest() -> AsyncIterator[bytes]:
            yield b"data: [DONE]\n\n"

        async def close() -> None:
            self.closed += 1

        return PassThroughStream(first=b"data: {}\n\n", rest=rest(), close=close)


async def settle() -> None:
    """Let every ready task run until each waits on something the test controls."""
    for _ in range(10):
        await asyncio.sleep(0)


def test_no_limit_is_no_object() -> None:
    def settings(max_concurrency: int) -> OpenAICompatibleSettings:
        return OpenAICompatibleSettings(
            name="b",
            enabled=True,
            disabled_reason="",
            max_concurrency=max_concurrency,
            max_queue=4,
            queue_timeout_seconds=0,
            prices={},
            limits=BackendLimits(),
            capabilities=frozenset(),
            capability_overrides={},
            base_url="http://127.0.0.1:1",
            api_key=Secret(""),
            headers=(),
            max_connections=10,
        )

    assert ConcurrencyLimit.for_settings(settings(0)) is None
    limit = ConcurrencyLimit.for_settings(settings(3))
    assert limit is not None
    assert (limit.limit, limit.max_queue, limit.queue_timeout) == (3, 4, None)  # 0 s: until the deadline


async def test_the_request_past_the_limit_waits_for_a_slot_then_runs() -> None:
    backend = GatedBackend()
    limit = ConcurrencyLimit(2, max_queue=4, queue_timeout=None)
    tasks = [asyncio.create_task(limit.send(backend, CALL, f"m{i}", limits())) for i in range(3)]
    await settle()
    assert backend.started == ["m0", "m1"]
    assert (limit.in_flight, limit.queued) == (2, 1)
    backend.gates[0].set()
    await settle()
    assert isinstance(tasks[0].result(), Reply)
    assert backend.started == ["m0", "m1", "m2"]
    assert (limit.in_flight, limit.queued) == (2, 0)
    for gate in backend.gates:
        gate.set()
    await asyncio.gather(*tasks)
    assert (limit.in_flight, limit.queued) == (0, 0)


async def test_waiters_are_served_in_arrival_order_and_nobody_overtakes() -> None:
    backend = GatedBackend()
    limit = ConcurrencyLimit(1, max_queue=4, queue_timeout=None)
    first = asyncio.create_task(limit.send(backend, CALL, "first", limits()))
    await settle()
    waiting = [asyncio.create_task(limit.send(backend, CALL, f"w{i}", limits())) for i in range(2)]
    await settle()
    backend.gates[0].set()
    # A newcomer arriving as the slot frees must queue behind the waiters, not take the slot.
    late = asyncio.create_task(limit.send(backend, CALL, "late", limits()))
    await settle()
    assert backend.started == ["first", "w0"]
    for _ in range(3):
        backend.gates[-1].set()
        await settle()
    await asyncio.gather(first, *waiting, late)
    assert backend.started == ["first", "w0", "w1", "late"]


async def test_a_full_queue_fails_as_overloaded_without_contacting_the_backend() -> None:
    backend = GatedBackend()
    limit = ConcurrencyLimit(1, max_queue=1, queue_timeout=None)
    running = asyncio.create_task(limit.send(backend, CALL, "a", limits()))
    queued = asyncio.create_task(limit.send(backend, CALL, "b", limits()))
    await settle()
    with pytest.raises(ConcurrencyLimitReached) as refused:
        await limit.send(backend, CALL, "c", limits())
    assert refused.value.kind == "overloaded"
    assert refused.value.retry_after == "1"
    assert "max_concurrency 1" in refused.value.detail and "max_queue 1" in refused.value.detail
    assert backend.started == ["a"]
    for _ in range(2):
        backend.gates[-1].set()
        await settle()
    await asyncio.gather(running, queued)
    assert limit.in_flight == 0


async def test_no_queue_refuses_at_once_past_the_limit() -> None:
    backend = GatedBackend()
    limit = ConcurrencyLimit(1, max_queue=0, queue_timeout=None)
    running = asyncio.create_task(limit.send(backend, CALL, "a", limits()))
    await settle()
    with pytest.raises(ConcurrencyLimitReached):
        await limit.send(backend, CALL, "b", limits())
    backend.gates[0].set()
    await running


async def test_a_wait_past_queue_timeout_fails_as_overloaded_and_leaves_the_queue() -> None:
    backend = GatedBackend()
    limit = ConcurrencyLimit(1, max_queue=4, queue_timeout=0.01)
    running = asyncio.create_task(limit.send(backend, CALL, "a", limits()))
    await settle()
    with pytest.raises(ConcurrencyLimitReached) as refused:
        await limit.send(backend, CALL, "b", limits())
    assert "queue_timeout_seconds" in refused.value.detail
    assert limit.queued == 0
    backend.gates[0].set()
    await running
    assert (limit.in_flight, limit.queued) == (0, 0)


async def test_a_stream_holds_its_slot_until_closed_and_closing_twice_frees_one() -> None:
    backend = GatedBackend(stream=True)
    limit = ConcurrencyLimit(1, max_queue=4, queue_timeout=None)
    first = asyncio.create_task(limit.send(backend, CALL, "s", limits()))
    await settle()
    backend.gates[0].set()
    stream = await first
    assert isinstance(stream, Stream)
    assert [chunk async for chunk in stream.rest] == [b"data: [DONE]\n\n"]
    assert limit.in_flight == 1  # read to the end, not yet closed: still held
    nxt = asyncio.create_task(limit.send(backend, CALL, "next", limits()))
    await settle()
    assert backend.started == ["s"]
    await stream.aclose()
    await stream.aclose()
    await settle()
    assert backend.closed == 2  # the backend's own close still runs
    assert backend.started == ["s", "next"] and limit.in_flight == 1
    backend.gates[1].set()
    await (await nxt).aclose()
    assert limit.in_flight == 0


async def test_a_failed_attempt_frees_its_slot() -> None:
    backend = GatedBackend(fail=True)
    limit = ConcurrencyLimit(1, max_queue=0, queue_timeout=None)
    attempt = asyncio.create_task(limit.send(backend, CALL, "a", limits()))
    await settle()
    backend.gates[0].set()
    with pytest.raises(UpstreamFailure):
        await attempt
    assert limit.in_flight == 0


async def test_a_cancelled_wait_leaves_the_queue_and_a_cancelled_attempt_frees_its_slot() -> None:
    backend = GatedBackend()
    limit = ConcurrencyLimit(1, max_queue=4, queue_timeout=None)
    running = asyncio.create_task(limit.send(backend, CALL, "a", limits()))
    waiting = asyncio.create_task(limit.send(backend, CALL, "b", limits()))
    await settle()
    waiting.cancel()
    await settle()
    assert limit.queued == 0
    running.cancel()
    await settle()
    assert (limit.in_flight, limit.queued) == (0, 0)


async def test_a_slot_handed_over_as_the_waiter_gives_up_is_passed_on() -> None:
    """The slot reaches a waiter whose request is cancelled before it resumes (deadline, client
    gone): it goes to the next waiter instead of being lost."""
    backend = GatedBackend()
    limit = ConcurrencyLimit(1, max_queue=4, queue_timeout=None)
    running = asyncio.create_task(limit.send(backend, CALL, "a", limits()))
    await settle()
    unlucky = asyncio.create_task(limit.send(backend, CALL, "b", limits()))
    patient = asyncio.create_task(limit.send(backend, CALL, "c", limits()))
    await settle()
    backend.gates[0].set()
    await asyncio.sleep(0)  # `running` returns and releases: the slot is handed to `unlucky`...
    unlucky.cancel()  # ...which is cancelled before it runs again
    await settle()
    assert unlucky.cancelled()
    assert backend.started == ["a", "c"]
    backend.gates[1].set()
    await asyncio.gather(running, patient)
    assert (limit.in_flight, limit.queued) == (0, 0)
