"""What a limits store does: admit a request against every limit of its subject at once (check them
all, charge them all or none), and settle it afterwards. `MemoryStore` (one process) and `RedisStore`
(shared by workers and instances) behave the same; `tests/limits/` runs one suite over both.

Per-minute limits are sliding windows of 60 s counted in one-second buckets: a unit charged in second
s counts until second s + 60 starts, so "N per minute" means at most N in any 60 s, to the second.
Concurrency is a count of leases (in Redis, each with a safety expiry, so an instance that dies does
not hold its slots forever). Budgets are spend per UTC day and month, charged at settle time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from gateway.limits.periods import Periods
from gateway.limits.rules import Rules

__all__ = ["LimitStore", "StoreUnavailable", "Verdict"]


class StoreUnavailable(Exception):
    """The store did not answer (down, or slower than `limits.store_timeout_ms`)."""


@dataclass(slots=True)
class Verdict:
    """A store's answer to one admission."""

    #: The refusing limit's name (the one that frees up last, when several refuse); None: admitted.
    refused: str | None = None
    #: Seconds until the refusing limit would admit this request.
    retry_after: float = 0.0
    #: Units counted in the window, this request included when admitted.
    requests_used: int = 0
    tokens_used: int = 0
    #: The oldest second still counted in each window (None: empty): when it leaves, units free up.
    requests_oldest: int | None = None
    tokens_oldest: int | None = None
    in_flight: int = 0
    spent_day: float = 0.0
    spent_month: float = 0.0
    #: The second the admission was charged in, and the tokens charged then (the estimate).
    second: int = 0
    tokens: int = 0
    #: The concurrency lease taken (released at settle), or None.
    lease: str | None = None


class LimitStore(Protocol):
    #: "memory" or "redis".
    kind: str

    async def admit(
        self, rules: Rules, now: float, tokens: int, lease_seconds: float, periods: Periods
    ) -> Verdict:
        """Check every limit of `rules` and, if none refuses, charge one request, `tokens` tokens and a
        concurrency lease (held at most `lease_seconds`). Raises StoreUnavailable."""
        ...

    def settle(
        self,
        rules: Rules,
        verdict: Verdict,
        now: float,
        token_delta: int,
        cost: float | None,
        periods: Periods,
    ) -> None:
        """After the request: release its lease, add `token_delta` (usage minus estimate) to its token
        window, add `cost` to the spend of the current day and month. Never waits, never raises."""
        ...

    def status(self) -> dict[str, Any]:
        """For /ready and the metrics: `store`, `up`, `errors` (failed calls so far), `last_error`."""
        ...

    async def drain(self) -> None:
        """Return once the settles under way are done (Redis settles in tasks; memory at once)."""
        ...

    async def close(self) -> None: ...
