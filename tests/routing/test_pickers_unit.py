"""The balanced groups' strategies one by one (`gateway.routing.groups`), with no network: the orders
each gives, how each counts what failover reports, and the sticky member a key maps to."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from gateway.backends.breaker import CircuitBreaker
from gateway.config.model import CircuitBreakerPolicy, Sticky, Target, TargetGroup
from gateway.routing.groups import EWMA_ALPHA, PROBE_EVERY, Latency, LeastBusy, RouteGroup, Weighted

POLICY = CircuitBreakerPolicy(enabled=True, failure_threshold=2, cooldown_seconds=30)
#: The members (of b/m0 … b/m3) that keys session-0 … session-7 map to.
STICKY = [0, 0, 3, 0, 1, 2, 3, 2]


def firsts(picker: Weighted | LeastBusy | Latency, n: int) -> list[int]:
    return [picker.order()[0] for _ in range(n)]


# -- weighted: smooth weighted round robin ---------------------------------------------------------


def test_weighted_spreads_by_weight_in_a_fixed_cycle() -> None:
    picker = Weighted((3.0, 1.0))
    assert [picker.order() for _ in range(4)] == [[0, 1], [0, 1], [1, 0], [0, 1]]
    assert firsts(picker, 400).count(0) == 300


def test_weighted_ties_go_to_the_first_member() -> None:
    assert Weighted((1.0, 1.0)).order() == [0, 1]


def test_weighted_orders_the_rest_by_their_current_credit() -> None:
    picker = Weighted((1.0, 2.0, 3.0))
    assert picker.order() == [2, 1, 0]
    assert picker.order() == [1, 0, 2]  # credits now 2, 4, 0: the pick, then the most owed


def test_a_single_member_is_always_first() -> None:
    picker = Weighted((5.0,))
    assert [picker.order() for _ in range(3)] == [[0], [0], [0]]


# -- least busy ------------------------------------------------------------------------------------


def test_least_busy_takes_turns_when_all_are_idle() -> None:
    picker = LeastBusy(3)
    assert [picker.order() for _ in range(4)] == [[1, 2, 0], [2, 0, 1], [0, 1, 2], [1, 2, 0]]


def test_least_busy_counts_requests_in_flight() -> None:
    picker = LeastBusy(2)
    picker.started(0)
    assert picker.in_flight == [1, 0]
    assert picker.order()[0] == 1 and picker.order()[0] == 1
    picker.finished(0, 0.1, False)  # failed: over at once
    assert picker.in_flight == [0, 0]
    picker.started(1)
    picker.finished(1, 0.1, True)  # answered: in flight until released
    assert picker.in_flight == [0, 1]
    picker.released(1)
    assert picker.in_flight == [0, 0]


# -- latency ---------------------------------------------------------------------------------------


def test_latency_tries_unknown_members_first_then_the_fastest() -> None:
    picker = Latency(2)
    assert picker.average == [None, None] and picker.picks == 0
    picker.finished(0, 0.5, True)
    assert picker.order() == [1, 0]  # member 1 has no average yet
    picker.finished(1, 0.2, True)
    assert picker.order() == [1, 0]
    picker.finished(0, 0.1, True)  # 0.5 + 0.5 × (0.1 − 0.5) = 0.3
    assert picker.average[0] == pytest.approx(0.5 + EWMA_ALPHA * (0.1 - 0.5))
    assert picker.order() == [1, 0]


def test_latency_probes_every_nth_request_in_turn() -> None:
    picker = Latency(3)
    for member, seconds in enumerate((0.1, 0.2, 0.3)):
        picker.finished(member, seconds, True)
    orders = [picker.order() for _ in range(3 * PROBE_EVERY)]
    probes = [i for i, o in enumerate(orders, 1) if o[0] != 0]
    assert probes == [PROBE_EVERY, 2 * PROBE_EVERY, 3 * PROBE_EVERY]
    assert [orders[p - 1] for p in probes] == [[1, 0, 2], [2, 0, 1], [1, 0, 2]]
    assert PROBE_EVERY == 16


def test_is_probe_says_when_the_pick_was_exploration() -> None:
    picker = Latency(2)
    seen = []
    for _ in range(PROBE_EVERY):
        picker.order()
        seen.append(picker.is_probe())
    assert seen == [False] * (PROBE_EVERY - 1) + [True]


def test_a_single_member_is_never_probed() -> None:
    picker = Latency(1)
    orders = [picker.order() for _ in range(PROBE_EVERY)]
    assert orders == [[0]] * PROBE_EVERY
    assert not picker.is_probe()


@pytest.mark.parametrize(
    ("known", "seconds", "average"),
    [
        ((None, None), 0.2, 1.0),  # nothing known: at least 1 s
        ((None, None), 3.0, 6.0),  # or twice what it took
        ((None, 0.4), 0.1, 0.8),  # twice the slowest known
        ((None, 0.4), 0.5, 1.0),  # or twice what it took, when longer
        ((None, 0.1, 0.4), 0.05, 0.8),  # the slowest, not the fastest
    ],
)
def test_a_failure_ranks_a_member_behind_the_others(
    known: tuple[float | None, ...], seconds: float, average: float
) -> None:
    picker = Latency(len(known))
    picker.average = list(known)
    picker.finished(0, seconds, False)
    assert picker.average[0] == pytest.approx(average)


# -- sticky members ----------------------------------------------------------------------------------


@dataclass
class Backend:
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)


@dataclass
class Member:
    target: Target
    backend: Backend = field(default_factory=Backend)


def group(*models: str, strategy: str = "weighted") -> RouteGroup:
    members = tuple(Member(Target("b", m)) for m in models)
    config = TargetGroup(strategy, tuple(m.target for m in members), Sticky("header", "x-session"))  # type: ignore[arg-type]
    return RouteGroup(config, 0, members)  # type: ignore[arg-type]


def test_a_key_always_maps_to_the_same_member() -> None:
    # Rendezvous hashing: every instance and version must agree, so the mapping is pinned here.
    chosen = group("m0", "m1", "m2", "m3")
    assert [chosen.sticky_member(f"session-{i}", POLICY) for i in range(8)] == STICKY


def test_a_sticky_order_lists_each_member_once() -> None:
    chosen = group("m0", "m1", "m2")
    for i in range(6):
        order = chosen.order(lambda _: f"session-{i}", POLICY)  # noqa: B023
        assert sorted(index for index, _ in order) == [0, 1, 2]
        assert order[0][1].reason == "sticky"
        assert {pick.reason for _, pick in order[1:]} == {"failover"}


def test_a_key_skips_members_whose_circuit_is_open() -> None:
    chosen = group("m0", "m1")
    first = chosen.sticky_member("session-1", POLICY)
    assert first is not None
    breaker = chosen.members[first].backend.breaker
    breaker.state, breaker.opened_at = "open", 1e18
    assert chosen.sticky_member("session-1", POLICY) == 1 - first
    other = chosen.members[1 - first].backend.breaker
    other.state, other.opened_at = "open", 1e18
    assert chosen.sticky_member("session-1", POLICY) is None


def test_long_member_names_are_keyed_by_their_first_64_bytes() -> None:
    chosen = group("m" * 100, "n" * 100)
    assert chosen.sticky_member("session-1", POLICY) in (0, 1)
    twin = group("m" * 64 + "x" * 36, "n" * 100)
    assert twin.sticky_member("session-1", POLICY) == chosen.sticky_member("session-1", POLICY)


def test_no_key_keeps_the_strategys_order() -> None:
    chosen = group("m0", "m1")
    order = chosen.order(lambda _: None, POLICY)
    assert [(i, p.reason) for i, p in order] == [(0, "picked"), (1, "failover")]


def test_least_busy_adds_the_other_workers_counts() -> None:
    picker = LeastBusy(2)
    picker.started(1)
    picker.others = [3, 1]  # member 0: 0 + 3 here and elsewhere, member 1: 1 + 1
    assert [picker.order() for _ in range(2)] == [[1, 0], [1, 0]]
    picker.others = [0, 0]
    assert picker.order() == [0, 1]
