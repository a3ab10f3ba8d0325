"""The limits' behaviour, the same on both stores (memory, and a private Redis through the Lua
scripts), under a manual clock: windows slide, estimates are corrected, leases are released, budgets
roll over at UTC midnight and at the start of a month, and a refusal charges nothing."""

from __future__ import annotations

import pytest

from gateway.config.model import Budget
from gateway.errors import LimitExceeded
from gateway.limits import Admission, ManualClock
from tests.limits.conftest import MONTH_END_MINUS_60, rules_for

HOLD = 30.0  # seconds a request may run (its timeout tier's total)


async def refused(limiter, rules, tokens: int = 0) -> LimitExceeded:
    with pytest.raises(LimitExceeded) as caught:
        await limiter.admit(rules, tokens, HOLD)
    return caught.value


async def admitted(limiter, rules, tokens: int = 0) -> Admission:
    admission = await limiter.admit(rules, tokens, HOLD)
    assert admission is not None
    return admission


async def test_the_fourth_request_in_a_minute_is_refused_and_admitted_after_the_window(
    make_limiter, clock: ManualClock
) -> None:
    rules = rules_for(requests_per_minute=3)
    limiter = make_limiter(rules)
    for _ in range(3):
        await admitted(limiter, rules)
        clock.advance(1)
    error = await refused(limiter, rules)
    assert error.limit == "requests_per_minute" and error.extensions["key"] == "team-a"
    assert error.status == 429
    # The first request was in second 0 (at 0.5): it leaves the window when second 60 starts, 56.5 s
    # from now (3.5).
    assert error.headers["retry-after"] == "57"
    assert "API key 'team-a' is over its requests_per_minute limit (3 per minute); retry in 57 s" in (
        error.detail
    )
    assert error.headers["ratelimit-policy"] == '"requests_per_minute";q=3;w=60'
    assert error.headers["ratelimit"] == '"requests_per_minute";r=0;t=57'
    clock.advance(56)
    await refused(limiter, rules)  # 59.5: not yet
    clock.advance(1)
    await admitted(limiter, rules)  # 60.5: the first has left the window, so one more fits
    await refused(limiter, rules)
    clock.advance(60)
    for _ in range(3):
        await admitted(limiter, rules)


async def test_the_window_slides_rather_than_resetting_on_the_minute(make_limiter, clock) -> None:
    rules = rules_for(requests_per_minute=2)
    limiter = make_limiter(rules)
    clock.advance(50)  # second 50
    await admitted(limiter, rules)
    clock.advance(20)  # second 70: a new calendar minute, but the first request is 20 s old
    await admitted(limiter, rules)
    error = await refused(limiter, rules)
    assert error.headers["retry-after"] == "40"  # second 50 leaves at 110; now 70.5 → 39.5
    clock.advance(40)
    await admitted(limiter, rules)


async def test_tokens_are_estimated_then_corrected_to_the_usage(make_limiter, clock) -> None:
    rules = rules_for(tokens_per_minute=1000)
    limiter = make_limiter(rules)
    first = await admitted(limiter, rules, tokens=600)
    await refused(limiter, rules, tokens=500)  # 600 + 500 > 1000
    error = await refused(limiter, rules, tokens=500)
    assert error.limit == "tokens_per_minute"
    # The backend reported 150 tokens (prompt + completion): 450 of the estimate come back.
    limiter.settle(first, 150, None)
    await limiter.store.drain()
    second = await admitted(limiter, rules, tokens=500)
    assert b'"tokens_per_minute";r=350' in limiter.headers(second)[1][1]
    # More used than estimated (a long answer): the difference counts now.
    limiter.settle(second, 800, None)
    await limiter.store.drain()
    error = await refused(limiter, rules, tokens=100)  # 150 + 800 + 100 > 1000
    clock.advance(61)
    await admitted(limiter, rules, tokens=100)


async def test_an_estimate_above_the_limit_is_admitted_only_into_an_empty_window(make_limiter, clock) -> None:
    rules = rules_for(tokens_per_minute=100)
    limiter = make_limiter(rules)
    big = await admitted(limiter, rules, tokens=5000)  # never refused outright: it could never pass
    limiter.settle(big, 4000, None)
    await limiter.store.drain()
    await refused(limiter, rules, tokens=1)
    clock.advance(60)
    await admitted(limiter, rules, tokens=5000)


async def test_concurrent_requests_are_leases_released_when_the_request_ends(make_limiter, clock) -> None:
    rules = rules_for(concurrent_requests=2)
    limiter = make_limiter(rules)
    first = await admitted(limiter, rules)
    await admitted(limiter, rules)
    error = await refused(limiter, rules)
    assert error.limit == "concurrent_requests" and error.headers["retry-after"] == "1"
    assert error.headers["ratelimit"] == '"concurrent_requests";r=0'
    limiter.settle(first, None, None)
    await limiter.store.drain()
    admission = await admitted(limiter, rules)
    assert limiter.headers(admission)[1][1] == b'"concurrent_requests";r=0'


async def test_a_daily_budget_refuses_until_utc_midnight(make_limiter, clock) -> None:
    rules = rules_for(budget_usd=Budget(per_day=1.0))
    limiter = make_limiter(rules)
    clock.set(MONTH_END_MINUS_60 - 86400 * 2)  # 2026-03-29T23:59:00Z
    limiter.settle(await admitted(limiter, rules), 10, 0.6)
    await limiter.store.drain()
    limiter.settle(await admitted(limiter, rules), 10, None)  # an unknown cost is not charged
    await limiter.store.drain()
    admission = await admitted(limiter, rules)  # 0.6 spent: under the cap, so admitted
    assert b'"budget_usd.per_day";r=40;t=60' in limiter.headers(admission)[1][1]
    limiter.settle(admission, 10, 0.5)  # the request that crosses the cap is not cut short
    await limiter.store.drain()
    error = await refused(limiter, rules)
    assert error.limit == "budget_usd.per_day"
    assert error.headers["retry-after"] == "60"
    assert "resets at 00:00 UTC" in error.detail and "$1 per UTC day" in error.detail
    clock.advance(59)
    await refused(limiter, rules)
    clock.advance(1)  # 2026-03-30T00:00:00Z
    await admitted(limiter, rules)


async def test_a_monthly_budget_refuses_until_the_month_starts_over(make_limiter, clock) -> None:
    rules = rules_for(budget_usd=Budget(per_day=5.0, per_month=2.0))
    limiter = make_limiter(rules)
    clock.set(MONTH_END_MINUS_60 - 86400)  # 2026-03-30T23:59:00Z
    limiter.settle(await admitted(limiter, rules), 10, 1.5)
    await limiter.store.drain()
    clock.advance(86400)  # 2026-03-31T23:59:00Z: a new day, the same month
    limiter.settle(await admitted(limiter, rules), 10, 0.5)
    await limiter.store.drain()
    error = await refused(limiter, rules)
    assert error.limit == "budget_usd.per_month" and error.headers["retry-after"] == "60"
    clock.advance(60)  # 2026-04-01T00:00:00Z
    await admitted(limiter, rules)


async def test_a_refusal_charges_nothing_and_names_the_limit_that_frees_last(make_limiter, clock) -> None:
    rules = rules_for(requests_per_minute=5, tokens_per_minute=100, concurrent_requests=1)
    limiter = make_limiter(rules)
    held = await admitted(limiter, rules, tokens=100)
    # Over tokens (frees in ~60 s) and concurrency (retry in 1 s) at once: tokens name the refusal.
    error = await refused(limiter, rules, tokens=50)
    assert error.limit == "tokens_per_minute" and error.headers["retry-after"] == "60"
    for _ in range(3):
        await refused(limiter, rules, tokens=50)
    limiter.settle(held, 0, None)  # nothing was used after all: the lease and the tokens come back
    await limiter.store.drain()
    admission = await admitted(limiter, rules, tokens=50)
    # Refused requests were not counted: two requests in the window, not six.
    assert b'"requests_per_minute";r=3;t=60' in limiter.headers(admission)[1][1]


async def test_limits_changed_by_a_reload_apply_to_the_counts_so_far(make_limiter, clock) -> None:
    limiter = make_limiter()
    before = rules_for(requests_per_minute=10)
    for _ in range(4):
        await admitted(limiter, before)
    after = rules_for(requests_per_minute=3)  # the same key, recompiled with a lower limit
    error = await refused(limiter, after)
    assert error.limit == "requests_per_minute"
