"""Canary releases: `weight` percent of a model's requests try a new target first, and the canary is
judged against the model's stable targets over a sliding window.

`RouteCanary.take` draws the share by credit, not by chance (every request adds `weight` to a credit;
at 100 the request goes to the canary and the credit drops by 100), so 5 % is exactly one request in
twenty, interleaved. A canary request that fails over to the chain counts as a canary failure; the
stable side is every attempt on the chain's own targets.

With `rollback` rules, each attempt's outcome and latency (first byte of a stream, the whole reply
otherwise) go into a window per side. Once the canary's side holds `min_requests`, a rule that holds
(its error rate above the stable one's by more than `error_rate`, or its p95 above the stable one's
by more than `p95_latency_ms`) rolls it back: `rolled_back` is set, `take` says no from then on, and
the hook the runtime gave (`on_rollback`) is called once, to tell the other workers and write the
change into the config file. The state lives in the compiled routing table, per worker; a reload
that leaves the model's canary as it was keeps it (`carry_over`).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.config.model import CanaryConfig
from gateway.routing.groups import GroupPick

__all__ = ["CANARY_PICK", "MAX_SAMPLES", "Rollback", "RollbackBook", "RouteCanary", "WindowStats"]

#: The most samples a window keeps per side (the oldest go first): bounds memory and the p95's sort.
MAX_SAMPLES = 4096
#: A canary attempt in the audit record's failover path and the attempt's span (no group).
CANARY_PICK = GroupPick(None, "canary", "canary")
#: How often, at most, the p95 rule sorts the windows (it is judged on every canary attempt otherwise).
P95_EVERY_S = 0.25


@dataclass(frozen=True, slots=True)
class WindowStats:
    """One side's attempts in the window."""

    requests: int
    errors: int
    p95_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 4),
            "p95_ms": None if self.p95_ms is None else round(self.p95_ms, 1),
        }


@dataclass(frozen=True, slots=True)
class Rollback:
    """A canary rolled back: when, by which rule, and both sides' numbers at that moment."""

    model: str
    at: datetime
    #: `error_rate` or `p95_latency_ms` (the rule that held), or `peer` (another worker's rollback).
    rule: str
    reason: str
    canary: WindowStats
    stable: WindowStats
    #: The weight the canary had.
    weight: float

    def as_dict(self) -> dict[str, object]:
        return {
            "model": self.model,
            "at": self.at.isoformat(timespec="seconds"),
            "rule": self.rule,
            "reason": self.reason,
            "canary": self.canary.as_dict(),
            "stable": self.stable.as_dict(),
            "weight": self.weight,
        }


class _Window:
    """(time, ok, milliseconds) of one side's attempts within the last `seconds`."""

    __slots__ = ("errors", "samples", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.samples: deque[tuple[float, bool, float]] = deque()
        self.errors = 0

    def add(self, now: float, ok: bool, ms: float) -> None:
        samples = self.samples
        if len(samples) >= MAX_SAMPLES:
            self._drop()
        samples.append((now, ok, ms))
        if not ok:
            self.errors += 1

    def prune(self, now: float) -> None:
        horizon = now - self.seconds
        samples = self.samples
        while samples and samples[0][0] < horizon:
            self._drop()

    def _drop(self) -> None:
        _, ok, _ = self.samples.popleft()
        if not ok:
            self.errors -= 1

    def stats(self, with_p95: bool = True) -> WindowStats:
        count = len(self.samples)
        p95 = None
        if with_p95 and count:
            ordered = sorted(ms for _, _, ms in self.samples)
            p95 = ordered[min(count - 1, math.ceil(0.95 * count) - 1)]
        return WindowStats(count, self.errors, p95)


class RouteCanary:
    """A model's canary in the compiled routing table: its target, the share drawn, the two windows."""

    __slots__ = (
        "_credit",
        "_p95_at",
        "canary",
        "clock",
        "config",
        "model",
        "on_rollback",
        "rolled_back",
        "stable",
        "target",
    )

    def __init__(
        self,
        model: str,
        config: CanaryConfig,
        target: object,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model = model
        self.config = config
        #: The canary's RouteTarget (typed loosely: the routing table imports this module).
        self.target = target
        self.clock = clock
        window = config.rollback.window if config.rollback is not None else 300.0
        self.canary = _Window(window)
        self.stable = _Window(window)
        self._credit = 0.0
        self._p95_at = 0.0
        self.rolled_back: Rollback | None = None
        #: Called once when this canary is rolled back here (not when told by another worker).
        self.on_rollback: Callable[[RouteCanary, Rollback], None] | None = None

    @property
    def weight(self) -> float:
        """The share in force: the configured weight, 0 once rolled back."""
        return 0.0 if self.rolled_back is not None else self.config.weight

    def take(self) -> bool:
        """Whether this request tries the canary first."""
        weight = self.config.weight
        if weight <= 0 or self.rolled_back is not None:
            return False
        self._credit += weight
        if self._credit >= 100.0:
            self._credit -= 100.0
            return True
        return False

    def observe(self, canary: bool, ok: bool, ms: float) -> None:
        """An attempt on the canary (`canary`) or a stable target ended; judge the rules after a
        canary's."""
        if self.config.rollback is None or self.rolled_back is not None:
            return
        now = self.clock()
        (self.canary if canary else self.stable).add(now, ok, ms)
        if canary:
            self._judge(now)

    def carry_over(self, previous: RouteCanary) -> None:
        """Keep `previous`'s windows, share and rollback (a reload that left this canary as it was)."""
        self.canary, self.stable = previous.canary, previous.stable
        self._credit = previous._credit
        self.rolled_back = previous.rolled_back

    def roll_back(self, rollback: Rollback) -> None:
        """Set the weight to 0 here as `rollback` says (another worker's decision)."""
        if self.rolled_back is None:
            self.rolled_back = rollback

    def windows(self) -> tuple[WindowStats, WindowStats]:
        """The canary's and the stable side's numbers now."""
        now = self.clock()
        self.canary.prune(now)
        self.stable.prune(now)
        return self.canary.stats(), self.stable.stats()

    def _judge(self, now: float) -> None:
        rules = self.config.rollback
        assert rules is not None
        self.canary.prune(now)
        if len(self.canary.samples) < rules.min_requests:
            return
        self.stable.prune(now)
        rule = reason = None
        canary, stable = self.canary.stats(False), self.stable.stats(False)
        if rules.error_rate is not None and canary.error_rate - stable.error_rate > rules.error_rate:
            rule = "error_rate"
            reason = (
                f"error rate {canary.error_rate:.1%} over {canary.requests} requests against the stable "
                f"targets' {stable.error_rate:.1%} over {stable.requests} "
                f"(allowed: {rules.error_rate:.1%} more)"
            )
        elif rules.p95_latency_ms is not None and now - self._p95_at >= P95_EVERY_S:
            self._p95_at = now
            canary, stable = self.canary.stats(), self.stable.stats()
            slower = (canary.p95_ms or 0.0) - (stable.p95_ms or 0.0)
            if slower > rules.p95_latency_ms:
                rule = "p95_latency_ms"
                known = "none measured" if stable.p95_ms is None else f"{stable.p95_ms:.0f} ms"
                reason = (
                    f"p95 latency {canary.p95_ms:.0f} ms over {canary.requests} requests against the "
                    f"stable targets' {known} (allowed: {rules.p95_latency_ms:g} ms more)"
                )
        if rule is None:
            return
        if canary.p95_ms is None:
            canary, stable = self.canary.stats(), self.stable.stats()
        self.rolled_back = Rollback(
            self.model, datetime.now(UTC), rule, str(reason), canary, stable, self.config.weight
        )
        hook = self.on_rollback
        if hook is not None:
            hook(self, self.rolled_back)


class RollbackBook:
    """This process's canary rollbacks, by model and canary settings: decided here (`decided`, the
    hook every compiled canary calls) or told by another worker (`told`). `attach` applies them to
    each canary a reload compiles, so a reload that leaves a rolled-back canary as it was (the file
    not written: `admin.write_back: false`) keeps it at weight 0."""

    __slots__ = ("entries", "listener")

    def __init__(self) -> None:
        self.entries: dict[tuple[str, CanaryConfig], Rollback] = {}
        #: Told of each rollback decided here (the runtime writes it back and tells the other workers).
        self.listener: Callable[[RouteCanary, Rollback], None] | None = None

    def attach(self, canary: RouteCanary) -> None:
        canary.on_rollback = self.decided
        known = self.entries.get((canary.model, canary.config))
        if known is not None:
            canary.roll_back(known)

    def decided(self, canary: RouteCanary, rollback: Rollback) -> None:
        self.entries[(canary.model, canary.config)] = rollback
        if self.listener is not None:
            self.listener(canary, rollback)

    def told(self, canary: RouteCanary, rollback: Rollback) -> bool:
        """Another worker rolled `canary` back; False when it already was here."""
        self.entries.setdefault((canary.model, canary.config), rollback)
        if canary.rolled_back is not None:
            return False
        canary.roll_back(rollback)
        return True
