"""UTC calendar periods for budgets: the day and the month a moment falls in, with when each ends.

Computed once per day (the values are reused until the clock leaves the day), so a request pays a
comparison, not a calendar computation.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["Periods"]


class Periods:
    """The UTC day and month of the last moment asked about (`at`)."""

    __slots__ = ("_start", "day", "day_end", "month", "month_end", "month_seconds")

    def __init__(self) -> None:
        self._start = 0.0
        self.day_end = 0.0  # forces the first computation
        self.day = self.month = ""
        self.month_end = 0.0
        self.month_seconds = 0

    def at(self, now: float) -> Periods:
        if not (self._start <= now < self.day_end):
            moment = datetime.fromtimestamp(now, UTC)
            day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
            month = day.replace(day=1)
            next_month = (month + timedelta(days=32)).replace(day=1)
            self._start = day.timestamp()
            self.day_end = (day + timedelta(days=1)).timestamp()
            self.day = day.strftime("%Y%m%d")
            self.month = month.strftime("%Y%m")
            self.month_end = next_month.timestamp()
            self.month_seconds = int(self.month_end - month.timestamp())
        return self
