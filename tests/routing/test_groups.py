"""Balanced groups: the config as loaded, each strategy's picks, sticky hashing, and a reload keeping a
group's state."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.backends.upstream import PassThroughReply, PassThroughStream
from gateway.config.issues import ConfigError
from gateway.config.load import parse_config
from gateway.config.model import CircuitBreakerPolicy, Sticky, Target, TargetGroup
from gateway.routing.groups import PROBE_EVERY, LeastBusy, RouteGroup, Weighted
from gateway.routing.table import Runtime
from gateway.runtime.compile import compile_runtime

POLICY = CircuitBreakerPolicy(enabled=True, failure_threshold=1, cooldown_seconds=60)
TEXT = """
backends:
  a: {type: openai_compatible, base_url: "http://127.0.0.1:1/v1"}
  b: {type: openai_compatible, base_url: "http://127.0.0.1:2/v1"}
  c: {type: openai_compatible, base_url: "http://127.0.0.1:3/v1"}
models:
  chat:
    chain:
      - group:
          strategy: STRATEGY
          targets:
            - {backend: a, model: m1, weight: 3}
            - {backend: b, model: m2, weight: 1}
          sticky: {by: header, header: X-Session}
      - {backend: c}
"""


def runtime(strategy: str = "weighted", text: str = TEXT, previous: Runtime | None = None) -> Runtime:
    config = parse_config(text.replace("STRATEGY", strategy).encode(), Path("/srv/gw/gateway.yaml"))
    built, _ = compile_runtime(config, previous, "test")
    return built


def group_of(rt: Runtime) -> RouteGroup:
    step = rt.routes["chat"].steps[0]
    assert isinstance(step, RouteGroup)
    return step


def test_a_group_loads_as_a_step_and_its_members_join_the_chain() -> None:
    rt = runtime()
    model = rt.config.models[0]
    group, last = model.steps
    assert group == TargetGroup(
        strategy="weighted",
        targets=(Target("a", "m1", weight=3.0), Target("b", "m2", weight=1.0)),
        sticky=Sticky(by="header", header="x-session"),
    )
    assert last == Target("c", "chat")
    assert [t.backend for t in model.chain] == ["a", "b", "c"]
    route = rt.routes["chat"]
    assert route.sticky
    assert [m.backend.name for m in group_of(rt).members] == ["a", "b"]


def test_the_default_strategy_is_weighted_and_the_default_weight_one() -> None:
    text = (
        TEXT.replace("          strategy: STRATEGY\n", "")
        .replace(", weight: 3", "")
        .replace(", weight: 1", "")
    )
    group = group_of(runtime(text=text))
    assert group.config.strategy == "weighted"
    assert [t.weight for t in group.config.targets] == [1.0, 1.0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("weight: 3", "chain[0].group.targets[0].weight: must be greater than 0"),
        ("backend: b", "chain[0].group.targets[1].backend: no backend named 'nowhere'"),
        ("header: X-Session", "chain[0].group.sticky: missing required key 'header'"),
        ("strategy: STRATEGY", 'chain[0].group.strategy: the string "fastest" is not allowed'),
    ],
)
def test_gateway_check_locates_the_mistakes_of_a_group(change: str, message: str) -> None:
    wrong = {
        "weight: 3": "weight: 0",
        "backend: b": "backend: nowhere",
        "header: X-Session": "",
        "strategy: STRATEGY": "strategy: fastest",
    }[change]
    text = TEXT.replace(change, wrong).replace("{by: header, }", "{by: header}")
    with pytest.raises(ConfigError) as raised:
        parse_config(text.replace("STRATEGY", "weighted").encode(), Path("/srv/gw/gateway.yaml"))
    assert any(message in str(issue) and "gateway.yaml:" in str(issue) for issue in raised.value.issues)


def test_a_group_needs_a_target() -> None:
    text = TEXT.split("          targets:")[0] + "          targets: []\n      - {backend: c}\n"
    with pytest.raises(ConfigError) as raised:
        parse_config(text.replace("STRATEGY", "weighted").encode(), Path("/srv/gw/gateway.yaml"))
    assert "chain[0].group.targets: must have at least 1 item" in str(raised.value.issues[0])


def test_weighted_splits_ten_thousand_picks_three_to_one_within_one_percent() -> None:
    picker = Weighted((3.0, 1.0))
    firsts = Counter(picker.order()[0] for _ in range(10_000))
    assert abs(firsts[0] / 10_000 - 0.75) < 0.01
    assert abs(firsts[1] / 10_000 - 0.25) < 0.01


def test_weighted_interleaves_and_lists_the_others_for_failover() -> None:
    picker = Weighted((5.0, 1.0, 1.0))
    orders = [picker.order() for _ in range(7)]
    # nginx's smooth sequence for 5:1:1: a a b a c a a (never five a's in a row)
    assert [o[0] for o in orders] == [0, 0, 1, 0, 2, 0, 0]
    assert all(sorted(o) == [0, 1, 2] for o in orders)


def test_least_busy_keeps_in_flight_counts_within_one_under_uneven_latencies() -> None:
    """Requests arrive one per tick; member 0 takes 1 tick, member 1 takes 4, member 2 takes 9. At
    every pick the chosen member has the fewest in flight, so the counts never spread by more than one
    beyond what finishing requests free."""
    picker = LeastBusy(3)
    durations = (1, 4, 9)
    running: list[tuple[int, int]] = []  # (ends at tick, member)
    served = Counter()
    for tick in range(2_000):
        for end, member in [r for r in running if r[0] <= tick]:
            picker.released(member)
            running.remove((end, member))
        before = list(picker.in_flight)
        chosen = picker.order()[0]
        assert picker.in_flight[chosen] == min(before)
        picker.started(chosen)
        served[chosen] += 1
        running.append((tick + durations[chosen], chosen))
        assert max(picker.in_flight) - min(picker.in_flight) <= 1
    # The fast member serves the most, the slow one the least.
    assert served[0] > served[1] > served[2]


def test_latency_moves_to_the_faster_member_and_back_when_the_other_recovers() -> None:
    group = group_of(runtime("latency"))
    picker = group.picker
    speed = {0: 0.050, 1: 0.010}  # member 1 is 5x faster

    def serve(n: int) -> Counter:
        firsts: Counter = Counter()
        for _ in range(n):
            first = picker.order()[0]
            firsts[first] += 1
            picker.started(first)
            picker.finished(first, speed[first], True)
        return firsts

    firsts = serve(200)
    assert firsts[1] >= 0.9 * 200
    speed = {0: 0.005, 1: 0.010}  # member 0 recovered: now twice as fast
    serve(100)  # its probes measure it again
    later = serve(100)
    assert later[0] >= 0.9 * 100


def test_latency_explores_one_request_in_probe_every() -> None:
    group = group_of(runtime("latency"))
    for _ in range(4 * PROBE_EVERY):
        first = group.picker.order()[0]
        group.picker.finished(first, 0.01 if first == 0 else 1.0, True)
    reasons = Counter(group.order(None, POLICY)[0][1].reason for _ in range(4 * PROBE_EVERY))
    assert reasons == {"picked": 4 * PROBE_EVERY - 4, "probe": 4}


def test_sticky_keeps_a_key_on_one_member_and_moves_it_when_its_circuit_opens() -> None:
    group = group_of(runtime())

    def first(key: str) -> tuple[int, str]:
        member, pick = group.order(lambda sticky: key, POLICY)[0]
        return member, pick.reason

    homes = {key: first(key)[0] for key in (f"session-{i}" for i in range(64))}
    assert set(homes.values()) == {0, 1}  # keys spread over both members
    assert all(first(key) == (home, "sticky") for key, home in homes.items())
    # Member 0's circuit opens: its keys move to member 1, member 1's keys stay.
    group.members[0].backend.breaker.record_failure(POLICY)
    assert all(first(key) == (1, "sticky") for key in homes)
    group.members[0].backend.breaker.record_success()
    assert all(first(key)[0] == home for key, home in homes.items())


def test_a_request_without_the_sticky_key_is_routed_by_the_strategy() -> None:
    group = group_of(runtime())
    order = group.order(lambda sticky: None, POLICY)
    assert [pick.reason for _, pick in order] == ["picked", "failover"]
    assert {pick.group for _, pick in order} == {0}
    assert {pick.strategy for _, pick in order} == {"weighted"}


def test_a_reload_keeps_an_unchanged_group_s_state_and_resets_a_changed_one() -> None:
    first = runtime()
    group = group_of(first)
    group.picker.order()
    same = runtime(previous=first)
    assert group_of(same).picker is group.picker
    changed = runtime(text=TEXT.replace("weight: 3", "weight: 2"), previous=same)
    assert group_of(changed).picker is not group.picker
    assert group_of(changed).picker.current == [0.0, 0.0]  # type: ignore[attr-defined]


def test_least_busy_counts_a_stream_in_flight_until_it_closes() -> None:
    group = group_of(runtime("least_busy"))
    picker = group.picker
    assert isinstance(picker, LeastBusy)
    closed: list[bool] = []

    async def close() -> None:
        closed.append(True)

    async def nothing() -> AsyncIterator[bytes]:
        return
        yield b""

    stream = PassThroughStream(close=close, first=b"data: {}\n\n", rest=nothing())
    picker.started(1)
    group.serving(1, stream)
    assert picker.in_flight == [0, 1]
    asyncio.run(stream.aclose())
    asyncio.run(stream.aclose())  # closing twice releases once
    assert picker.in_flight == [0, 0] and closed == [True, True]
    picker.started(0)
    group.serving(0, PassThroughReply(b"{}", None))  # a whole reply: over at once
    assert picker.in_flight == [0, 0]


def test_latency_puts_a_failing_member_behind_the_others_even_before_it_answered_once() -> None:
    group = group_of(runtime("latency"))
    picker = group.picker
    assert picker.order()[0] == 0  # nothing measured: in order
    picker.finished(0, 0.001, False)  # a fast failure
    picker.finished(1, 0.200, True)
    assert picker.order()[0] == 1
    picker.finished(0, 0.010, True)  # it answers again, fast: it catches up
    picker.finished(0, 0.010, True)
    picker.finished(0, 0.010, True)
    assert picker.order()[0] == 0
