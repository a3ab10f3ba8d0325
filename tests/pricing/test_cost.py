"""The cost of a usage at a price: each token kind at its own rate, exact to the picodollar (compared
with `==` against the same sum done in decimal), and a request's cost with the failed attempts the
upstream billed."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gateway.config.backends import Price
from gateway.pricing import TokenPrice, format_usd
from gateway.protocol.canonical import Usage
from gateway.routing.failover import Attempt
from gateway.routing.trail import RequestTrail

#: Prices that binary floats cannot hold exactly (0.3, 0.075, 3.75 ...).
SONNET = Price(input=3.0, output=15.0, cached_input=0.3, cache_write=3.75)
MINI = Price(input=0.15, output=0.6, cached_input=0.075, cache_write=0.15)


def decimal_cost(price: Price, usage: Usage) -> Decimal:
    """The same arithmetic, in decimal: USD per million tokens of each kind."""
    d = lambda value: Decimal(str(value))  # noqa: E731
    plain = usage.prompt_tokens - usage.cached_tokens - usage.cache_creation_tokens
    return (
        plain * d(price.input)
        + usage.cached_tokens * d(price.cached_input)
        + usage.cache_creation_tokens * d(price.cache_write)
        + usage.completion_tokens * d(price.output)
    ) / Decimal(10**6)


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        # Plain input only: the prompt less what was read from or written to the cache.
        (Usage(prompt_tokens=1000), Decimal("0.003")),
        # Cache reads only (they are part of the prompt).
        (Usage(prompt_tokens=1000, cached_tokens=1000), Decimal("0.0003")),
        # Cache writes only.
        (Usage(prompt_tokens=1000, cache_creation_tokens=1000), Decimal("0.00375")),
        # Output only.
        (Usage(completion_tokens=1000), Decimal("0.015")),
        # All four: 7 plain, 5 read, 3 written, 16 out.
        (
            Usage(prompt_tokens=15, completion_tokens=16, cached_tokens=5, cache_creation_tokens=3),
            Decimal("0.000021") + Decimal("0.0000015") + Decimal("0.00001125") + Decimal("0.00024"),
        ),
    ],
    ids=["plain-input", "cache-read", "cache-write", "output", "all-four"],
)
def test_each_token_kind_at_its_own_price(usage: Usage, expected: Decimal) -> None:
    price = TokenPrice.of(SONNET)
    assert price.picodollars(usage) == expected * 10**12
    assert price.cost_usd(usage) == float(expected)
    assert Decimal(format_usd(price.cost_usd(usage))) == expected


@pytest.mark.parametrize("price", [SONNET, MINI, Price(1.1, 4.4, 0.275, 1.1), Price(0.05, 0.4, 0.005, 0.05)])
@pytest.mark.parametrize(
    "usage",
    [
        Usage(12, 16, 5, 0),
        Usage(123_457, 9_876, 100_000, 20_000),
        Usage(1, 1, 0, 1),
        Usage(2_000_000, 64_000, 1_000_000, 999_999),
    ],
)
def test_the_cost_is_the_decimal_sum_rounded_once(price: Price, usage: Usage) -> None:
    assert TokenPrice.of(price).cost_usd(usage) == float(decimal_cost(price, usage))


def test_cache_prices_default_to_the_input_price() -> None:
    price = Price.from_raw({"input": 2.5, "output": 10})
    usage = Usage(prompt_tokens=100, completion_tokens=10, cached_tokens=40, cache_creation_tokens=20)
    assert TokenPrice.of(price).cost_usd(usage) == float(Decimal("0.00025") + Decimal("0.0001"))


def test_prices_resolve_to_a_picodollar_per_token() -> None:
    assert TokenPrice.of(Price(0.000001, 0.0000014, 0, 0)) == TokenPrice(1, 1, 0, 0)


def test_a_usage_that_overstates_its_cache_charges_no_negative_plain_input() -> None:
    usage = Usage(prompt_tokens=5, completion_tokens=0, cached_tokens=4, cache_creation_tokens=4)
    assert TokenPrice.of(SONNET).picodollars(usage) == 4 * 300_000 + 4 * 3_750_000


@pytest.mark.parametrize(
    ("usd", "text"),
    [(0.0, "0"), (0.000287, "0.000287"), (1.5, "1.5"), (2e-12, "0.000000000002"), (12.0, "12")],
)
def test_format_usd_is_plain_decimal_text(usd: float, text: str) -> None:
    assert format_usd(usd) == text


def _trail(*attempts: Attempt) -> RequestTrail:
    trail = RequestTrail("openai", "chat", "req_1")
    trail.attempts.extend(attempts)
    return trail


USAGE = Usage(prompt_tokens=15, completion_tokens=16, cached_tokens=5, cache_creation_tokens=3)
SERVED = Usage(prompt_tokens=12, completion_tokens=16, cached_tokens=5)


def test_a_served_request_costs_its_usage_at_its_price() -> None:
    trail = _trail(Attempt("oa", "gpt-4o-mini", "ok", 200))
    trail.settle(SERVED, TokenPrice.of(MINI))
    assert trail.usage == SERVED
    assert trail.cost_usd == float(decimal_cost(MINI, SERVED))


def test_unknown_price_or_usage_is_no_cost() -> None:
    trail = _trail(Attempt("oa", "mystery", "ok", 200))
    trail.settle(SERVED, None)
    assert trail.cost_usd is None and trail.usage == SERVED
    trail.settle(None, TokenPrice.of(MINI))
    assert trail.cost_usd is None


def test_failed_attempts_the_upstream_billed_are_added() -> None:
    billed = Attempt("an", "claude", "http_5xx", 200, usage=USAGE, price=TokenPrice.of(SONNET))
    unbilled = Attempt("oa2", "gpt", "http_5xx", 500)  # no usage reported: not billed
    trail = _trail(billed, unbilled, Attempt("oa", "gpt-4o-mini", "ok", 200))
    trail.settle(SERVED, TokenPrice.of(MINI))
    assert billed.billed and not unbilled.billed
    assert billed.cost_usd == float(decimal_cost(SONNET, USAGE))
    assert trail.cost_usd == float(decimal_cost(SONNET, USAGE) + decimal_cost(MINI, SERVED))


def test_a_billed_attempt_at_an_unknown_price_makes_the_cost_unknown() -> None:
    trail = _trail(Attempt("an", "mystery", "http_5xx", 200, usage=USAGE), Attempt("oa", "m", "ok", 200))
    trail.settle(SERVED, TokenPrice.of(MINI))
    assert trail.cost_usd is None


def test_a_failed_request_costs_what_was_billed() -> None:
    billed = Attempt("an", "claude", "http_5xx", 200, usage=USAGE, price=TokenPrice.of(SONNET))
    trail = _trail(billed, Attempt("oa", "gpt", "timeout"))
    trail.settle_failed()
    assert trail.cost_usd == float(decimal_cost(SONNET, USAGE))
    nothing = _trail(Attempt("oa", "gpt", "http_5xx", 500))
    nothing.settle_failed()
    assert nothing.cost_usd is None
    unknown = _trail(Attempt("an", "mystery", "http_5xx", 200, usage=USAGE))
    unknown.settle_failed()
    assert unknown.cost_usd is None
