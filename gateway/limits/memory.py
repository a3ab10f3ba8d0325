"""The limits store of one process (`limits.store: memory`): plain Python counters, no I/O.

With `gateway serve --workers N` each worker has its own, so a limit admits up to N times its value
in all (the start log and `gateway check` say so); use a Redis store to share counters.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from gateway.limits.periods import Periods
from gateway.limits.rules import (
    CONCURRENT,
    PER_DAY,
    PER_MONTH,
    REQUESTS,
    TOKENS,
    WINDOW_SECONDS,
    Rules,
)
from gateway.limits.store import Verdict

__all__ = ["MemoryStore"]


class _Window:
    """A sliding 60-s window in one-second buckets, oldest first, with their running total."""

    __slots__ = ("buckets", "total")

    def __init__(self) -> None:
        self.buckets: deque[list[int]] = deque()
        self.total = 0

    def expire(self, second: int) -> None:
        buckets = self.buckets
        floor = second - WINDOW_SECONDS
        while buckets and buckets[0][0] <= floor:
            self.total -= buckets.popleft()[1]

    def oldest(self) -> int | None:
        return self.buckets[0][0] if self.buckets else None

    def add(self, second: int, units: int) -> None:
        buckets = self.buckets
        if buckets and buckets[-1][0] >= second:  # (a clock that stepped back counts in the newest)
            buckets[-1][1] += units
        else:
            buckets.append([second, units])
        self.total += units

    def take_back(self, second: int, units: int) -> None:
        """Remove up to `units` from the bucket of `second`, if it is still in the window."""
        for bucket in reversed(self.buckets):
            if bucket[0] == second:
                taken = min(units, bucket[1])
                bucket[1] -= taken
                self.total -= taken
                return
            if bucket[0] < second:
                return

    def wait(self, now: float, cost: int, limit: int) -> float:
        """Seconds until enough units leave the window for `cost` more to fit under `limit`."""
        excess = self.total + cost - limit
        freed = 0
        for second, units in self.buckets:
            freed += units
            if freed >= excess:
                return second + WINDOW_SECONDS - now
        return float(WINDOW_SECONDS)


class _Subject:
    __slots__ = ("day", "day_spent", "in_flight", "month", "month_spent", "requests", "tokens")

    def __init__(self) -> None:
        self.requests = _Window()
        self.tokens = _Window()
        self.in_flight = 0
        self.day = self.month = ""
        self.day_spent = self.month_spent = 0.0

    def roll(self, periods: Periods) -> None:
        if self.day != periods.day:
            self.day, self.day_spent = periods.day, 0.0
        if self.month != periods.month:
            self.month, self.month_spent = periods.month, 0.0


class MemoryStore:
    kind = "memory"

    def __init__(self) -> None:
        self._subjects: dict[str, _Subject] = {}

    async def admit(
        self, rules: Rules, now: float, tokens: int, lease_seconds: float, periods: Periods
    ) -> Verdict:
        return self.admit_now(rules, now, tokens, periods)

    def admit_now(self, rules: Rules, now: float, tokens: int, periods: Periods) -> Verdict:
        subject = self._subjects.get(rules.subject)
        if subject is None:
            subject = self._subjects[rules.subject] = _Subject()
        second = int(now // 1)
        verdict = Verdict(second=second)
        rpm = rules.requests_per_minute
        if rpm is not None:
            window = subject.requests
            window.expire(second)
            if window.total + 1 > rpm:
                _refuse(verdict, REQUESTS, window.wait(now, 1, rpm))
        tpm = rules.tokens_per_minute
        if tpm is not None:
            window = subject.tokens
            window.expire(second)
            cost = min(tokens, tpm)
            if window.total + cost > tpm:
                _refuse(verdict, TOKENS, window.wait(now, cost, tpm))
        slots = rules.concurrent_requests
        if slots is not None and subject.in_flight >= slots:
            _refuse(verdict, CONCURRENT, 1.0)
        if rules.budgets:
            subject.roll(periods)
            if rules.per_day is not None and subject.day_spent >= rules.per_day:
                _refuse(verdict, PER_DAY, periods.day_end - now)
            if rules.per_month is not None and subject.month_spent >= rules.per_month:
                _refuse(verdict, PER_MONTH, periods.month_end - now)
            verdict.spent_day, verdict.spent_month = subject.day_spent, subject.month_spent
        if verdict.refused is None:
            if rpm is not None:
                subject.requests.add(second, 1)
            if tpm is not None and tokens > 0:
                subject.tokens.add(second, tokens)
                verdict.tokens = tokens
            if slots is not None:
                subject.in_flight += 1
                verdict.lease = "1"
        verdict.requests_used, verdict.requests_oldest = subject.requests.total, subject.requests.oldest()
        verdict.tokens_used, verdict.tokens_oldest = subject.tokens.total, subject.tokens.oldest()
        verdict.in_flight = subject.in_flight
        return verdict

    def settle(
        self,
        rules: Rules,
        verdict: Verdict,
        now: float,
        token_delta: int,
        cost: float | None,
        periods: Periods,
    ) -> None:
        subject = self._subjects.get(rules.subject)
        if subject is None:
            return
        if verdict.lease is not None:
            subject.in_flight = max(0, subject.in_flight - 1)
        if token_delta > 0:
            subject.tokens.expire(int(now // 1))
            subject.tokens.add(int(now // 1), token_delta)
        elif token_delta < 0:
            subject.tokens.take_back(verdict.second, -token_delta)
        if cost:
            subject.roll(periods)
            subject.day_spent += cost
            subject.month_spent += cost

    def status(self) -> dict[str, Any]:
        return {"store": "memory", "up": True, "errors": 0, "last_error": None}

    async def drain(self) -> None:
        return None

    async def close(self) -> None:
        self._subjects.clear()


def _refuse(verdict: Verdict, limit: str, wait: float) -> None:
    if verdict.refused is None or wait > verdict.retry_after:
        verdict.refused, verdict.retry_after = limit, wait
