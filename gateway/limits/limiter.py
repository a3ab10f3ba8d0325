"""Admission and settling for one Runtime: the compiled rules of every limited caller and backend,
over a store that outlives reloads (the Runtimes of equal `limits` settings share it, so counters
survive a reload, and a key whose limits a reload changed is held to the new ones at once).

A request is admitted once (one store call) after it is authenticated, parsed and routed, and settled
once when its answer is written: its concurrency lease released, its token estimate corrected to the
reported usage, its cost added to the budgets. When the store fails, `limits.on_store_down` decides:
`allow` serves the request unlimited, `deny` refuses it with 503.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.config.model import LimitsConfig
from gateway.errors import LimitExceeded, LimitsUnavailable
from gateway.limits.clock import Clock, system_clock
from gateway.limits.memory import MemoryStore
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
from gateway.limits.store import LimitStore, StoreUnavailable, Verdict

__all__ = ["Admission", "BackendQuota", "Limiter", "build_store"]

#: A lease outlives the request's own deadline by this much before Redis drops it by itself.
LEASE_MARGIN_S = 60.0


def build_store(config: LimitsConfig) -> LimitStore:
    """The store `limits.store` names."""
    if config.store == "memory":
        return MemoryStore()
    from gateway.limits.redis_store import RedisStore  # (redis is imported only by those who use it)

    return RedisStore(config.store, timeout_ms=config.store_timeout_ms, prefix=config.key_prefix)


@dataclass(slots=True)
class Admission:
    """A request let through by one subject's limits, to be settled when it ends."""

    rules: Rules
    verdict: Verdict
    store: LimitStore
    now: float


class Limiter:
    """See the module's docstring."""

    def __init__(
        self,
        store: LimitStore,
        config: LimitsConfig,
        keys: Mapping[str, Rules],
        clock: Clock = system_clock,
    ) -> None:
        self.store = store
        self.config = config
        #: Principal name → its rules (only callers with a limit are in it).
        self.keys = keys
        self.clock = clock
        self.periods = Periods()

    async def admit(self, rules: Rules, tokens: int, hold_seconds: float) -> Admission | None:
        """Admit a client's request (`tokens`: the estimate of its input; `hold_seconds`: how long it
        may run). Raises LimitExceeded past a limit, LimitsUnavailable when the store is down and
        `on_store_down` is deny. None: the store is down and the request goes unlimited."""
        now = self.clock()
        periods = self.periods.at(now)
        try:
            verdict = await self.store.admit(rules, now, tokens, hold_seconds + LEASE_MARGIN_S, periods)
        except StoreUnavailable as down:
            if self.config.on_store_down == "deny":
                raise LimitsUnavailable(
                    f"the limits store is unreachable ({down}) and limits.on_store_down is deny; "
                    "retry shortly",
                    headers={"retry-after": "1"},
                ) from None
            return None
        if verdict.refused is not None:
            raise self._exceeded(rules, verdict, now, periods)
        return Admission(rules, verdict, self.store, now)

    async def take_quota(self, rules: Rules, tokens: int) -> Admission | Verdict | None:
        """Charge one call to a backend's quota: the Admission, else the refusing Verdict. None: the
        store is down (a backend quota never blocks a call then: the provider enforces its own)."""
        now = self.clock()
        try:
            verdict = await self.store.admit(rules, now, tokens, 0.0, self.periods.at(now))
        except StoreUnavailable:
            return None
        if verdict.refused is not None:
            return verdict
        return Admission(rules, verdict, self.store, now)

    def settle(self, admission: Admission, tokens_used: int | None, cost: float | None) -> None:
        """The request ended: `tokens_used` (input + output, None when unknown: the estimate stands)
        and `cost` in USD (None when unknown: not charged)."""
        rules, verdict = admission.rules, admission.verdict
        delta = 0
        if tokens_used is not None and rules.tokens_per_minute is not None:
            delta = tokens_used - verdict.tokens
        spend = cost if cost and rules.spends else None
        if verdict.lease is None and not delta and spend is None:
            return
        now = self.clock()
        admission.store.settle(rules, verdict, now, delta, spend, self.periods.at(now))

    # -- what the client is told ------------------------------------------------------------------

    def _exceeded(self, rules: Rules, verdict: Verdict, now: float, periods: Periods) -> LimitExceeded:
        limit = verdict.refused
        assert limit is not None
        wait = max(1, math.ceil(verdict.retry_after))
        if limit == REQUESTS:
            what = f"its {limit} limit ({rules.requests_per_minute} per minute); retry in {wait} s"
        elif limit == TOKENS:
            what = (
                f"its {limit} limit ({rules.tokens_per_minute} input + output tokens per minute); "
                f"retry in {wait} s"
            )
        elif limit == CONCURRENT:
            what = (
                f"its {limit} limit ({rules.concurrent_requests} in flight at once); retry when one "
                "of its requests has finished"
            )
        elif limit == PER_DAY:
            what = f"its {limit} budget (${rules.per_day:g} per UTC day); it resets at 00:00 UTC, in {wait} s"
        else:
            what = (
                f"its {limit} budget (${rules.per_month:g} per UTC calendar month); it resets at the "
                f"start of next month, in {wait} s"
            )
        are = "are" if rules.who == "anonymous callers" else "is"
        return LimitExceeded(
            f"{rules.who} {are} over {what}",
            limit=limit,
            key=rules.name,
            headers={
                "retry-after": str(wait),
                "ratelimit-policy": rules.policy.decode(),
                "ratelimit": rate_limit(rules, verdict, now, periods, refused=wait).decode(),
            },
        )

    def headers(self, admission: Admission) -> list[tuple[bytes, bytes]]:
        """`RateLimit-Policy` and `RateLimit` for an admitted request's response."""
        rules = admission.rules
        now = admission.now
        return [
            (b"ratelimit-policy", rules.policy),
            (b"ratelimit", rate_limit(rules, admission.verdict, now, self.periods.at(now))),
        ]

    def status(self) -> dict[str, Any]:
        """For /ready: the store's state, and whether anything is limited at all."""
        status = self.store.status()
        status["on_store_down"] = self.config.on_store_down
        status["limited_keys"] = len(self.keys)
        return status


def rate_limit(
    rules: Rules, verdict: Verdict, now: float, periods: Periods, refused: int | None = None
) -> bytes:
    """`RateLimit` (draft-ietf-httpapi-ratelimit-headers): per limit, `r` what is left and `t` the
    seconds until more frees up (for the refusing limit: its Retry-After)."""
    items = []
    if rules.requests_per_minute is not None:
        left = max(0, rules.requests_per_minute - verdict.requests_used)
        t = _reset(verdict.requests_oldest, now)
        if verdict.refused == REQUESTS and refused is not None:
            t = refused
        items.append(f'"{REQUESTS}";r={left};t={t}')
    if rules.tokens_per_minute is not None:
        left = max(0, rules.tokens_per_minute - verdict.tokens_used)
        t = _reset(verdict.tokens_oldest, now)
        if verdict.refused == TOKENS and refused is not None:
            t = refused
        items.append(f'"{TOKENS}";r={left};t={t}')
    if rules.concurrent_requests is not None:
        items.append(f'"{CONCURRENT}";r={max(0, rules.concurrent_requests - verdict.in_flight)}')
    if rules.per_day is not None:
        left = max(0, int((rules.per_day - verdict.spent_day) * 100 + 1e-9))
        items.append(f'"{PER_DAY}";r={left};t={max(1, math.ceil(periods.day_end - now))}')
    if rules.per_month is not None:
        left = max(0, int((rules.per_month - verdict.spent_month) * 100 + 1e-9))
        items.append(f'"{PER_MONTH}";r={left};t={max(1, math.ceil(periods.month_end - now))}')
    return ", ".join(items).encode()


def _reset(oldest: int | None, now: float) -> int:
    if oldest is None:
        return WINDOW_SECONDS
    return max(1, math.ceil(oldest + WINDOW_SECONDS - now))


@dataclass(frozen=True, slots=True)
class BackendQuota:
    """A backend's quota (`backends.<name>.limits`) as a chain step checks it."""

    limiter: Limiter
    rules: Rules

    async def take(self, tokens: int) -> Admission | Verdict | None:
        """See `Limiter.take_quota`."""
        return await self.limiter.take_quota(self.rules, tokens)
