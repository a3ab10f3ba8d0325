"""Circuit breaker state machine: opens after N consecutive failures, one probe after the cooldown."""

from __future__ import annotations

from gateway.backends.breaker import CircuitBreaker
from gateway.config.model import CircuitBreakerPolicy

POLICY = CircuitBreakerPolicy(enabled=True, failure_threshold=3, cooldown_seconds=10)


def test_opens_after_threshold_consecutive_failures() -> None:
    breaker = CircuitBreaker()
    for _ in range(2):
        breaker.record_failure(POLICY, now=0)
        assert breaker.allow(POLICY, now=0)
    breaker.record_failure(POLICY, now=0)
    assert breaker.state == "open"
    assert not breaker.allow(POLICY, now=5)
    assert breaker.retry_in(POLICY, now=5) == 5


def test_success_resets_the_count() -> None:
    breaker = CircuitBreaker()
    breaker.record_failure(POLICY, now=0)
    breaker.record_failure(POLICY, now=0)
    breaker.record_success()
    breaker.record_failure(POLICY, now=0)
    assert breaker.state == "closed"


def test_one_probe_after_cooldown_then_close_on_success() -> None:
    breaker = CircuitBreaker()
    for _ in range(3):
        breaker.record_failure(POLICY, now=0)
    assert breaker.allow(POLICY, now=10)  # the probe
    assert breaker.state == "half_open"
    assert not breaker.allow(POLICY, now=10)  # only one probe at a time
    breaker.record_success()
    assert breaker.state == "closed" and breaker.allow(POLICY, now=10)


def test_failed_probe_reopens_for_a_new_cooldown() -> None:
    breaker = CircuitBreaker()
    for _ in range(3):
        breaker.record_failure(POLICY, now=0)
    assert breaker.allow(POLICY, now=12)
    breaker.record_failure(POLICY, now=12)
    assert breaker.state == "open"
    assert not breaker.allow(POLICY, now=21)
    assert breaker.allow(POLICY, now=22)


def test_released_probe_lets_the_next_request_probe() -> None:
    breaker = CircuitBreaker()
    for _ in range(3):
        breaker.record_failure(POLICY, now=0)
    assert breaker.allow(POLICY, now=10)
    breaker.release_probe()
    assert breaker.allow(POLICY, now=10)


def test_disabled_policy_always_allows() -> None:
    off = CircuitBreakerPolicy(enabled=False, failure_threshold=1, cooldown_seconds=10)
    breaker = CircuitBreaker()
    breaker.record_failure(off, now=0)
    assert breaker.allow(off, now=0)
