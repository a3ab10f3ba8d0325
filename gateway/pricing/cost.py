"""A request's cost from the usage its backend reported, exact to the picodollar.

Prices are written in USD per million tokens; `TokenPrice` holds them as whole picodollars
(1e-12 USD) per token, so a cost is a sum of integer products, divided once into USD at the end:
the same usage at the same price gives the same float on every path, and a test can compare it
with `==`. (Prices are resolved to 1e-6 USD per million tokens; finer digits are rounded.)
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config.backends import Price
from gateway.protocol.canonical import Usage

__all__ = ["PICODOLLARS_PER_USD", "TokenPrice", "format_usd"]

PICODOLLARS_PER_USD = 10**12
#: USD per million tokens -> picodollars per token.
_PER_MILLION = 10**6


def _picodollars(usd_per_million: float) -> int:
    return round(usd_per_million * _PER_MILLION)


@dataclass(frozen=True, slots=True)
class TokenPrice:
    """One upstream model's price, in picodollars per token of each kind."""

    input: int
    output: int
    #: Input tokens read from the prompt cache.
    cached_input: int
    #: Input tokens written to the prompt cache.
    cache_write: int

    @classmethod
    def of(cls, price: Price) -> TokenPrice:
        return cls(
            input=_picodollars(price.input),
            output=_picodollars(price.output),
            cached_input=_picodollars(price.cached_input),
            cache_write=_picodollars(price.cache_write),
        )

    def picodollars(self, usage: Usage) -> int:
        """What `usage` costs: the plain input tokens (the prompt less what was read from or written
        to the cache), the cache reads, the cache writes and the output, each at its own price."""
        cached = usage.cached_tokens
        written = usage.cache_creation_tokens
        plain = max(usage.prompt_tokens - cached - written, 0)
        return (
            plain * self.input
            + cached * self.cached_input
            + written * self.cache_write
            + usage.completion_tokens * self.output
        )

    def cost_usd(self, usage: Usage) -> float:
        return self.picodollars(usage) / PICODOLLARS_PER_USD


def format_usd(cost: float) -> str:
    """A cost as plain decimal text, to the picodollar, without trailing zeros: `0.000123`, `0`."""
    return f"{cost:.12f}".rstrip("0").rstrip(".")
