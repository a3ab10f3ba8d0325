"""Balanced groups: one step of a model's chain whose members share its traffic by a strategy.

`RouteGroup.order` gives, per request, the members in the order failover tries them: the picked
member first (`picked`, or `sticky` when the request's key hashes to it, or `probe` when the latency
strategy explores), then the others in the strategy's order (`failover`).

Strategies, each with its state in the group object of the compiled routing table (per worker):

- `weighted`: smooth weighted round robin (nginx's): every pick adds each member's weight to its
  current value, takes the largest, and subtracts the total from it. Over any run of picks the split
  follows the weights, interleaved (3:1 gives a a b a, a a b a, ...). The rest follow by current value.
- `least_busy`: the fewest requests in flight (from the attempt's start until its answer or stream
  ends); ties go round robin. With a shared `limits.store` the other workers' and instances' counts
  are added (`others`, exchanged through Redis by `gateway.runtime.busy`).
- `latency`: the lowest moving average (EWMA) of the time an attempt took to answer: the first byte
  of a stream, the whole reply otherwise. A failed attempt puts its member behind the others (twice
the slowest average, 1 s when none is known). Members not
  yet measured come first; every `PROBE_EVERY`-th request tries another member first (in turn), so a
  recovered member is measured again and wins back its traffic.

Sticky routing (`sticky.by`) hashes the request's key with each member whose circuit is not open
(rendezvous hashing) and puts the highest first: one key stays on one member while that member is
healthy, and only the keys of a member that goes down move.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from hashlib import blake2b
from typing import TYPE_CHECKING

from gateway.backends.upstream import Stream
from gateway.config.model import CircuitBreakerPolicy, Sticky, TargetGroup

if TYPE_CHECKING:
    from gateway.routing.table import RouteTarget

__all__ = ["PROBE_EVERY", "GroupPick", "Picker", "RouteGroup", "new_picker"]

#: The latency strategy's exploration: one request in this many tries a member other than the fastest.
PROBE_EVERY = 16
#: The weight of the newest sample in the latency strategy's moving average.
EWMA_ALPHA = 0.5

#: Finds a request's sticky key (None: it has none) for a group's `sticky` setting.
Affinity = Callable[[Sticky], "str | None"]


@dataclass(frozen=True, slots=True)
class GroupPick:
    """Why a member of a group was tried: for the audit record's failover path and the attempt's span."""

    #: The group's index in the chain (None: the model's canary, `gateway.routing.canary`).
    group: int | None
    strategy: str
    #: `picked` (the strategy's choice), `sticky` (the request's key), `probe` (latency exploration),
    #: `failover` (an earlier member failed or was skipped), or `canary` (the canary's share).
    reason: str


class Picker(ABC):
    """A strategy's state over a group's members (by index)."""

    __slots__ = ()

    @abstractmethod
    def order(self) -> list[int]:
        """The members' indices for one request, the strategy's pick first."""

    def started(self, member: int) -> None:  # noqa: B027 (a hook; by default nothing to track)
        """An attempt on `member` begins."""

    def finished(self, member: int, seconds: float, ok: bool) -> None:  # noqa: B027 (a hook; by default nothing to track)
        """An attempt on `member` ended (for a stream: its first byte came, or it failed)."""

    def released(self, member: int) -> None:  # noqa: B027 (a hook; by default nothing to track)
        """The request `member` served is over (a stream closed, or the reply returned)."""


class Weighted(Picker):
    __slots__ = ("current", "total", "weights")

    def __init__(self, weights: tuple[float, ...]) -> None:
        self.weights = weights
        self.total = sum(weights)
        self.current = [0.0] * len(weights)

    def order(self) -> list[int]:
        current = self.current
        best = 0
        for i, weight in enumerate(self.weights):
            current[i] += weight
            if current[i] > current[best]:
                best = i
        current[best] -= self.total
        if len(current) == 1:
            return [0]
        rest = sorted((i for i in range(len(current)) if i != best), key=current.__getitem__, reverse=True)
        return [best, *rest]


class LeastBusy(Picker):
    __slots__ = ("in_flight", "others", "turn")

    def __init__(self, size: int) -> None:
        #: This worker's requests in flight per member.
        self.in_flight = [0] * size
        #: The other workers' and instances' (sharing `limits.store`), as last exchanged; else zeros.
        self.others = [0] * size
        self.turn = 0

    def _busy(self, member: int) -> int:
        return self.in_flight[member] + self.others[member]

    def order(self) -> list[int]:
        size = len(self.in_flight)
        turn = self.turn = (self.turn + 1) % size
        rotated = [*range(turn, size), *range(turn)]
        return sorted(rotated, key=self._busy)  # stable: ties stay in turn

    def started(self, member: int) -> None:
        self.in_flight[member] += 1

    def finished(self, member: int, seconds: float, ok: bool) -> None:
        if not ok:
            self.in_flight[member] -= 1

    def released(self, member: int) -> None:
        self.in_flight[member] -= 1


class Latency(Picker):
    __slots__ = ("average", "picks", "probe_turn")

    def __init__(self, size: int) -> None:
        #: Seconds; None until the member's first answer.
        self.average: list[float | None] = [None] * size
        self.picks = 0
        self.probe_turn = 0

    def _key(self, member: int) -> float:
        average = self.average[member]
        return -1.0 if average is None else average

    def order(self) -> list[int]:
        ranked = sorted(range(len(self.average)), key=self._key)
        self.picks += 1
        if len(ranked) > 1 and self.picks % PROBE_EVERY == 0:
            self.probe_turn = self.probe_turn % (len(ranked) - 1) + 1
            ranked.insert(0, ranked.pop(self.probe_turn))
        return ranked

    def is_probe(self) -> bool:
        return len(self.average) > 1 and self.picks % PROBE_EVERY == 0

    def finished(self, member: int, seconds: float, ok: bool) -> None:
        average = self.average[member]
        if not ok:  # behind every other member: twice the slowest average known (1 s when none is)
            slowest = max((a for a in self.average if a is not None), default=0.0)
            self.average[member] = 2 * max(slowest, seconds) if slowest else max(1.0, 2 * seconds)
        elif average is None:
            self.average[member] = seconds
        else:
            self.average[member] = average + EWMA_ALPHA * (seconds - average)


def new_picker(config: TargetGroup) -> Picker:
    if config.strategy == "least_busy":
        return LeastBusy(len(config.targets))
    if config.strategy == "latency":
        return Latency(len(config.targets))
    return Weighted(tuple(t.weight for t in config.targets))


class RouteGroup:
    """A group step of a compiled chain: its members (`RouteTarget`s) and the strategy's state."""

    __slots__ = (
        "_failover",
        "_ids",
        "_picked",
        "_probe",
        "_sticky",
        "config",
        "index",
        "members",
        "picker",
        "served",
    )

    def __init__(
        self, config: TargetGroup, index: int, members: tuple[RouteTarget, ...], picker: Picker | None = None
    ) -> None:
        self.config = config
        self.index = index
        self.members = members
        self.picker = picker if picker is not None else new_picker(config)
        #: Requests each member answered since this group was compiled (in this worker).
        self.served = [0] * len(members)
        strategy = config.strategy
        self._picked = GroupPick(index, strategy, "picked")
        self._probe = GroupPick(index, strategy, "probe")
        self._sticky = GroupPick(index, strategy, "sticky")
        self._failover = GroupPick(index, strategy, "failover")
        # Rendezvous hashing keys each member by its backend and upstream model (at most 64 bytes).
        self._ids = tuple(f"{m.target.backend}/{m.target.model}".encode()[:64] for m in members)

    def order(self, affinity: Affinity | None, policy: CircuitBreakerPolicy) -> list[tuple[int, GroupPick]]:
        """The members to try for one request, in order, each with why it is tried."""
        indices = self.picker.order()
        first = self._probe if type(self.picker) is Latency and self.picker.is_probe() else self._picked
        sticky = self.config.sticky
        if sticky is not None and affinity is not None:
            key = affinity(sticky)
            if key:
                chosen = self.sticky_member(key, policy)
                if chosen is not None:
                    indices.remove(chosen)
                    indices.insert(0, chosen)
                    first = self._sticky
        failover = self._failover
        return [(i, first if n == 0 else failover) for n, i in enumerate(indices)]

    def serving(self, member: int, result: object) -> None:
        """`member` answered: its request is over now for a reply, when the stream closes for a stream."""
        self.served[member] += 1
        picker = self.picker
        if type(picker) is not LeastBusy:
            return  # the other strategies do not count requests in flight
        if not isinstance(result, Stream):
            picker.released(member)
            return
        close = result.close
        released = False

        async def close_and_release() -> None:
            nonlocal released
            try:
                await close()
            finally:
                if not released:
                    released = True
                    picker.released(member)

        result.close = close_and_release  # type: ignore[method-assign]

    def sticky_member(self, key: str, policy: CircuitBreakerPolicy) -> int | None:
        """The member `key` hashes to among those whose circuit is not open (None: all are open)."""
        data = key.encode()
        best, best_score = None, -1
        for i, member in enumerate(self.members):
            if member.backend.breaker.current_state(policy) == "open":
                continue
            score = int.from_bytes(blake2b(data, digest_size=8, key=self._ids[i]).digest(), "big")
            if score > best_score:
                best, best_score = i, score
        return best
