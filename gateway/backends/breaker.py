"""A circuit breaker per backend: after N consecutive failures the backend is skipped for a
cooldown, then a single probe request is let through; its outcome closes or re-opens the circuit."""

from __future__ import annotations

import time
from typing import Literal

from gateway.config.model import CircuitBreakerPolicy

__all__ = ["CircuitBreaker"]

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    __slots__ = ("consecutive_failures", "opened_at", "probing", "state")

    def __init__(self) -> None:
        self.state: State = "closed"
        self.consecutive_failures = 0
        self.opened_at = 0.0
        self.probing = False

    def allow(self, policy: CircuitBreakerPolicy, now: float | None = None) -> bool:
        """May a request go to this backend now? In half-open state only the one probe may."""
        if not policy.enabled or self.state == "closed":
            return True
        now = time.monotonic() if now is None else now
        if self.state == "open" and now - self.opened_at >= policy.cooldown_seconds:
            self.state = "half_open"
            self.probing = False
        if self.state == "half_open" and not self.probing:
            self.probing = True
            return True
        return False

    def retry_in(self, policy: CircuitBreakerPolicy, now: float | None = None) -> float:
        """Seconds until an open circuit lets a probe through (0 when not open)."""
        if self.state != "open":
            return 0.0
        now = time.monotonic() if now is None else now
        return max(0.0, policy.cooldown_seconds - (now - self.opened_at))

    def current_state(self, policy: CircuitBreakerPolicy, now: float | None = None) -> State:
        """The state as a reader should see it (metrics, readiness): an open circuit whose cooldown is
        over counts as half-open, since the next request will probe; a disabled breaker is closed."""
        if not policy.enabled or self.state == "closed":
            return "closed"
        if self.state == "open" and self.retry_in(policy, now) == 0:
            return "half_open"
        return self.state

    def record_success(self) -> None:
        self.state = "closed"
        self.consecutive_failures = 0
        self.probing = False

    def record_failure(self, policy: CircuitBreakerPolicy, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.consecutive_failures += 1
        if self.state == "half_open" or self.consecutive_failures >= policy.failure_threshold:
            self.state = "open"
            self.opened_at = now
        self.probing = False

    def release_probe(self) -> None:
        """The probe ended with no verdict (the client went away): let the next request probe."""
        self.probing = False
