"""Canaries: the config as loaded and checked, the share drawn, the windows and rules judged on a
manual clock, the hook called once, and reloads keeping (or not) a canary's state and rollback."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from gateway.config.issues import ConfigError
from gateway.config.load import parse_config
from gateway.config.model import CanaryConfig, CanaryRollback, Target
from gateway.routing.canary import MAX_SAMPLES, P95_EVERY_S, Rollback, RollbackBook, RouteCanary
from gateway.routing.table import Runtime
from gateway.runtime.compile import compile_runtime

PATH = Path("/srv/gw/gateway.yaml")
TEXT = """
backends:
  a: {type: openai_compatible, base_url: "http://127.0.0.1:1/v1"}
  b: {type: openai_compatible, base_url: "http://127.0.0.1:2/v1"}
models:
  chat:
    chain: [{backend: a}]
    canary: CANARY
"""
CANARY = "{target: {backend: b, model: chat-2}, weight: 5, rollback: {error_rate: 0.05, window: 2m}}"


def load(canary: str = CANARY) -> Runtime:
    config = parse_config(TEXT.replace("CANARY", canary).encode(), PATH)
    built, _ = compile_runtime(config, None, "test")
    return built


def errors_of(canary: str) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse_config(TEXT.replace("CANARY", canary).encode(), PATH)
    return [str(issue) for issue in raised.value.issues]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def canary(
    weight: float = 50,
    error_rate: float | None = 0.05,
    p95_latency_ms: float | None = None,
    min_requests: int = 10,
    window: float = 60,
) -> tuple[RouteCanary, Clock, list[Rollback]]:
    clock = Clock()
    rules = CanaryRollback(error_rate, p95_latency_ms, min_requests, window)
    made = RouteCanary("chat", CanaryConfig(Target("b", "chat-2"), weight, rules), target=None, clock=clock)
    calls: list[Rollback] = []
    made.on_rollback = lambda _canary, rollback: calls.append(rollback)
    return made, clock, calls


def test_a_canary_loads_with_its_rules_and_window() -> None:
    route = load().routes["chat"]
    assert route.canary is not None
    assert route.canary.config == CanaryConfig(
        Target("b", "chat-2"), 5.0, CanaryRollback(error_rate=0.05, min_requests=20, window=120.0)
    )
    assert route.canary.target.backend.name == "b" and route.canary.target.target.model == "chat-2"
    bare = load("{target: {backend: b}, weight: 1}").routes["chat"].canary
    assert bare is not None and bare.config.rollback is None and bare.config.target.model == "chat"
    assert load("{target: {backend: b}, weight: 1, rollback: {p95_latency_ms: 50, window: 90}}").routes[
        "chat"
    ].canary.config.rollback == CanaryRollback(p95_latency_ms=50, window=90.0)  # type: ignore[union-attr]


B = "{target: {backend: b}, weight: 5"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{target: {backend: nope}, weight: 5}", "canary.target.backend: no backend named 'nope'"),
        ("{target: {backend: a}, weight: 5}", "canary.target: the canary's target (a, model chat) is"),
        ("{target: {backend: b}, weight: 500}", "canary.weight: must be at most 100, got 500"),
        ("{target: {backend: b}, weight: -1}", "canary.weight: must be at least 0"),
        (B + ", rollback: {window: 5m}}", "canary.rollback: a rollback needs a rule"),
        (B + ", rollback: {error_rate: 0, window: 5m}}", "canary.rollback.error_rate"),
        (B + ", rollback: {error_rate: 0.1, window: 5d}}", "canary.rollback.window"),
        (B + ", rollback: {error_rate: 0.1, min_requests: 0}}", "canary.rollback.min_requests"),
        ("{target: {backend: b}}", "canary: missing required key 'weight'"),
    ],
)
def test_gateway_check_locates_a_bad_canary(bad: str, message: str) -> None:
    errors = errors_of(bad)
    assert any(f"models.chat.{message}" in error and "gateway.yaml:8:" in error for error in errors), errors


def test_the_same_backend_with_another_model_is_a_canary_of_its_own() -> None:
    route = load("{target: {backend: a, model: chat-2}, weight: 5}").routes["chat"]
    assert route.canary is not None and route.canary.target.target.model == "chat-2"


@pytest.mark.parametrize(("weight", "every"), [(5, 20), (25, 4), (50, 2), (100, 1)])
def test_the_share_is_exact_and_interleaved(weight: float, every: int) -> None:
    made, _, _ = canary(weight=weight)
    taken = [made.take() for _ in range(200)]
    assert sum(taken) == 200 // every
    assert [i for i, t in enumerate(taken) if t] == list(range(every - 1, 200, every))


def test_weight_zero_never_takes_and_a_fractional_weight_adds_up() -> None:
    assert not any(canary(weight=0)[0].take() for _ in range(1000))
    made, _, _ = canary(weight=0.5)
    assert sum(made.take() for _ in range(1000)) == 5


def test_a_canary_failing_one_in_five_is_rolled_back_once_it_has_min_requests() -> None:
    made, _, calls = canary(min_requests=10)
    for _ in range(30):
        made.observe(False, True, 100)  # stable: all well
    for i in range(9):
        made.observe(True, i % 5 != 4, 100)
        assert not calls  # fewer than min_requests: not judged
    made.observe(True, False, 100)
    assert len(calls) == 1
    rollback = calls[0]
    assert rollback.rule == "error_rate" and rollback.weight == 50
    assert (rollback.canary.requests, rollback.canary.errors) == (10, 2)
    assert (rollback.stable.requests, rollback.stable.errors) == (30, 0)
    assert "error rate 20.0% over 10 requests against the stable targets' 0.0% over 30" in rollback.reason
    assert made.rolled_back is rollback and made.weight == 0
    assert not any(made.take() for _ in range(100))
    made.observe(True, False, 100)  # judged no more: the hook is called once
    assert len(calls) == 1


def test_the_error_rule_compares_with_the_stable_side() -> None:
    made, _, calls = canary(min_requests=50, error_rate=0.05)
    for i in range(100):
        made.observe(False, i % 5 != 0, 100)  # the stable targets fail 20 % too
    for i in range(50):
        made.observe(True, i % 5 != 0, 100)
    assert not calls  # no worse than stable
    for _ in range(10):
        made.observe(True, False, 100)
    assert calls and calls[0].stable.errors == 20


def test_failures_older_than_the_window_no_longer_count() -> None:
    made, clock, calls = canary(min_requests=10, window=60)
    for _ in range(5):
        made.observe(True, False, 100)
    clock.now += 61
    for _ in range(20):
        made.observe(True, True, 100)
    assert not calls
    assert made.windows()[0].requests == 20


def test_the_p95_rule_rolls_back_a_slow_canary() -> None:
    made, clock, calls = canary(error_rate=None, p95_latency_ms=200, min_requests=10)
    for _ in range(50):
        made.observe(False, True, 100)
    for _ in range(20):
        made.observe(True, True, 250)  # 150 ms slower: allowed
        clock.now += P95_EVERY_S
    assert not calls
    for _ in range(20):
        made.observe(True, True, 900)
        clock.now += P95_EVERY_S
    assert len(calls) == 1 and calls[0].rule == "p95_latency_ms"
    assert calls[0].canary.p95_ms == 900 and calls[0].stable.p95_ms == 100
    assert "p95 latency 900 ms over" in calls[0].reason and "stable targets' 100 ms" in calls[0].reason


def test_a_canary_without_rules_is_never_judged() -> None:
    made = RouteCanary("chat", CanaryConfig(Target("b", "x"), 50), target=None)
    for _ in range(100):
        made.observe(True, False, 100)
    assert made.rolled_back is None and made.windows()[0].requests == 0


def test_a_window_keeps_at_most_max_samples() -> None:
    made, _, calls = canary(min_requests=MAX_SAMPLES * 2, error_rate=0.5)
    for _ in range(MAX_SAMPLES + 10):
        made.observe(True, True, 1)
    assert made.windows()[0].requests == MAX_SAMPLES and not calls


def test_a_reload_keeps_an_unchanged_canary_and_its_rollback() -> None:
    first = load()
    old = first.routes["chat"].canary
    assert old is not None
    old.rolled_back = Rollback("chat", None, "error_rate", "x", None, None, 5)  # type: ignore[arg-type]
    same, _ = compile_runtime(first.config, first, "reload")
    assert same.routes["chat"].canary.rolled_back is old.rolled_back  # type: ignore[union-attr]
    changed = parse_config(TEXT.replace("CANARY", CANARY.replace("weight: 5", "weight: 6")).encode(), PATH)
    fresh, _ = compile_runtime(changed, first, "reload")
    assert fresh.routes["chat"].canary.rolled_back is None  # type: ignore[union-attr]


def test_the_book_applies_a_rollback_to_the_same_canary_compiled_again() -> None:
    """With the file not written (`admin.write_back: false`), a reload compiles the canary anew: the
    book keeps it rolled back; a changed canary is a new one."""
    book = RollbackBook()
    config = parse_config(TEXT.replace("CANARY", CANARY).encode(), PATH)
    first, _ = compile_runtime(config, None, "startup", rollbacks=book)
    made = first.routes["chat"].canary
    assert made is not None and made.on_rollback == book.decided
    heard = []
    book.listener = lambda c, r: heard.append((c, r))
    rollback = Rollback("chat", None, "error_rate", "x", None, None, 5)  # type: ignore[arg-type]
    book.decided(made, rollback)
    assert heard == [(made, rollback)]
    again, _ = compile_runtime(config, None, "reload", rollbacks=book)  # nothing carried over
    assert again.routes["chat"].canary.rolled_back is rollback  # type: ignore[union-attr]
    other = parse_config(TEXT.replace("CANARY", CANARY.replace("0.05", "0.1")).encode(), PATH)
    new, _ = compile_runtime(other, None, "reload", rollbacks=book)
    assert new.routes["chat"].canary.rolled_back is None  # type: ignore[union-attr]


def test_a_peer_rollback_is_taken_once() -> None:
    book = RollbackBook()
    made, _, calls = canary()
    rollback = Rollback("chat", None, "error_rate", "x", None, None, 50)  # type: ignore[arg-type]
    assert book.told(made, rollback) is True
    assert book.told(made, rollback) is False
    assert made.weight == 0 and not calls  # told, not decided: the hook is not called
    assert book.entries[("chat", replace(made.config))] is rollback


@pytest.mark.parametrize(
    ("window", "seconds"), [("90s", 90.0), ("1.5m", 90.0), ("1h", 3600.0), ("45", 45.0), ("2.5", 2.5)]
)
def test_a_window_in_seconds_minutes_or_hours(window: str, seconds: float) -> None:
    canary = load(B + f", rollback: {{error_rate: 0.1, window: {window}}}}}").routes["chat"].canary
    assert canary is not None and canary.config.rollback is not None
    assert canary.config.rollback.window == seconds


def test_an_unknown_canary_backend_lists_the_known_ones() -> None:
    assert any("(backends: a, b)" in error for error in errors_of("{target: {backend: nope}, weight: 5}"))
