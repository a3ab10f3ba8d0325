"""The wall clock the limits read (UTC calendar budgets and windows shared by instances need wall time,
not a monotonic clock), and a manual one for tests."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Clock", "ManualClock", "system_clock"]

#: Seconds since the epoch, as `time.time()`.
Clock = Callable[[], float]

system_clock: Clock = time.time


class ManualClock:
    """A clock that moves only when told to: `advance(seconds)` or `set(epoch)`. Call it for the time."""

    __slots__ = ("now",)

    def __init__(self, now: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def set(self, now: float) -> None:
        self.now = now
