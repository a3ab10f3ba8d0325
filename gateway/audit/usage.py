"""Usage and spend from the audit log: what the admin API may ask (`UsageQuery`, checked once), and the
aggregate SQL per dialect that `AuditStore.usage` and `AuditStore.spend` run. The database does the
grouping and the sums; Python only renames the columns of the (bounded) result.

Time buckets are UTC: SQLite keeps `ts` as text starting `YYYY-MM-DD HH` (always UTC, see
migrations.py), so a day or an hour is a prefix of it; PostgreSQL formats the timestamptz at UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.audit.query import parse_instant
from gateway.audit.record import format_ts

__all__ = [
    "DEFAULT_DAYS",
    "DIMENSIONS",
    "GROUP_BY",
    "MAX_DAYS",
    "MAX_GROUPS",
    "MAX_HOUR_DAYS",
    "MEASURES",
    "SpendPeriods",
    "UsageQuery",
    "UsageQueryError",
    "day_start",
    "month_start",
]

#: What rows can be grouped by: the key, the public model name, the backend that answered, and a UTC
#: day or hour of `ts`.
DIMENSIONS = ("client", "model", "backend")
TIME_BUCKETS = ("day", "hour")
GROUP_BY = (*DIMENSIONS, *TIME_BUCKETS)
#: Range when neither `since` nor `until` is given: the last 30 UTC days, today included.
DEFAULT_DAYS = 30
#: The longest range one query may cover, and the longest in hours (31 days = 744 buckets).
MAX_DAYS = 366
MAX_HOUR_DAYS = 31
#: The most groups one answer holds; past it the answer says `truncated`.
MAX_GROUPS = 5000
_MAX_TEXT = 255

#: Each aggregate per group, in the order of the answer (and of the CSV's columns). A request's cost
#: is unknown (`unpriced_requests`) when the backend reported tokens but the record has no cost (no
#: price configured for that model); `cost_usd` sums the known costs, so it is a lower bound then.
_UNPRICED = '"cost_usd" IS NULL AND ("prompt_tokens" IS NOT NULL OR "completion_tokens" IS NOT NULL)'
_AGGREGATES: tuple[tuple[str, str], ...] = (
    ("requests", "COUNT(*)"),
    ("success", "SUM(CASE WHEN \"status\" = 'success' THEN 1 ELSE 0 END)"),
    ("error", "SUM(CASE WHEN \"status\" = 'error' THEN 1 ELSE 0 END)"),
    ("timeout", "SUM(CASE WHEN \"status\" = 'timeout' THEN 1 ELSE 0 END)"),
    ("rejected", "SUM(CASE WHEN \"status\" = 'rejected' THEN 1 ELSE 0 END)"),
    ("limited", 'SUM(CASE WHEN "limit_name" IS NOT NULL THEN 1 ELSE 0 END)'),
    ("prompt_tokens", 'SUM("prompt_tokens")'),
    ("completion_tokens", 'SUM("completion_tokens")'),
    ("cached_tokens", 'SUM("cached_tokens")'),
    ("cache_creation_tokens", 'SUM("cache_creation_tokens")'),
    ("cost_usd", 'SUM("cost_usd")'),
    ("unpriced_requests", f"SUM(CASE WHEN {_UNPRICED} THEN 1 ELSE 0 END)"),
)
MEASURES = tuple(name for name, _ in _AGGREGATES)
_SELECT_AGGREGATES = ", ".join(f'COALESCE({sql}, 0) AS "{name}"' for name, sql in _AGGREGATES)

_KEY_SQL = {"client": '"client_key"', "model": '"model"', "backend": '"backend"'}
_BUCKET_SQL = {
    "sqlite": {
        "day": 'substr("ts", 1, 10)',
        "hour": "substr(\"ts\", 1, 10) || 'T' || substr(\"ts\", 12, 2) || ':00:00Z'",
    },
    "postgres": {
        "day": "to_char(\"ts\" AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
        "hour": 'to_char("ts" AT TIME ZONE \'UTC\', \'YYYY-MM-DD"T"HH24":00:00Z"\')',
    },
}


class UsageQueryError(ValueError):
    """A parameter the usage query cannot take; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """Records with `since <= ts < until` (and the filters that are set), grouped by `group_by`
    (none: one row of totals). Build with `from_query` or directly (checked either way)."""

    since: datetime
    until: datetime
    group_by: tuple[str, ...] = ()
    client: str | None = None
    model: str | None = None
    backend: str | None = None

    def __post_init__(self) -> None:
        unknown = [name for name in self.group_by if name not in GROUP_BY]
        if unknown:
            raise UsageQueryError("group_by", f"{accepted()}; not {unknown[0]!r}")
        if len(set(self.group_by)) != len(self.group_by):
            raise UsageQueryError("group_by", "names a grouping twice")
        if "day" in self.group_by and "hour" in self.group_by:
            raise UsageQueryError("group_by", "takes day or hour, not both")
        if self.since.tzinfo is None or self.until.tzinfo is None:
            raise UsageQueryError("since", "must carry a time zone, as must until")
        if self.since >= self.until:
            raise UsageQueryError("since", "must be earlier than until")
        longest = MAX_HOUR_DAYS if "hour" in self.group_by else MAX_DAYS
        if self.until - self.since > timedelta(days=longest):
            per = " by hour" if "hour" in self.group_by else ""
            raise UsageQueryError("since", f"the range may cover at most {longest} days{per}")

    @classmethod
    def from_query(cls, query: Mapping[str, Any], now: datetime | None = None) -> UsageQuery:
        """From query-string parameters: `group_by` (comma-separated, may repeat), `since`, `until`
        (ISO-8601 or epoch seconds; default the last 30 UTC days, today included), `client`, `model`,
        `backend` (exact names). An empty value means unset. Raises UsageQueryError."""

        def text(name: str) -> str | None:
            value = query.get(name)
            if value is None or value == "":
                return None
            if not isinstance(value, str):
                raise UsageQueryError(name, "must be text")
            if len(value) > _MAX_TEXT:
                raise UsageQueryError(name, f"is longer than {_MAX_TEXT} characters")
            return value

        getlist = getattr(query, "getlist", None)
        raw = getlist("group_by") if getlist is not None else [query.get("group_by") or ""]
        group_by: list[str] = []
        for part in ",".join(raw).split(","):
            name = part.strip()
            if name:
                group_by.append(name)
        since, until = _instant("since", text("since")), _instant("until", text("until"))
        if until is None:
            until = since + timedelta(days=DEFAULT_DAYS) if since is not None else _next_day(now)
        if since is None:
            since = until - timedelta(days=DEFAULT_DAYS)
        return cls(
            since=since,
            until=until,
            group_by=tuple(group_by),
            client=text("client"),
            model=text("model"),
            backend=text("backend"),
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the grouping, the range (ISO-8601 with `Z`) and the filters."""
        return {
            "group_by": list(self.group_by),
            "since": format_ts(self.since),
            "until": format_ts(self.until),
            "filters": {"client": self.client, "model": self.model, "backend": self.backend},
        }

    def statement(self, dialect: str, limit: int) -> tuple[str, list[Any]]:
        """The aggregate SELECT (written with `?`) and its parameters; the first two are `since` and
        `until`, which the store turns into its dialect's form. Groups come time first, then in the
        order asked, a null group (no key, no model) after the named ones."""
        keys = [(name, _BUCKET_SQL[dialect].get(name) or _KEY_SQL[name]) for name in self.group_columns()]
        filters = [
            (_KEY_SQL[name], value)
            for name, value in (("client", self.client), ("model", self.model), ("backend", self.backend))
            if value is not None
        ]
        select = "".join(f'{expr} AS "g_{name}", ' for name, expr in keys)
        where = '"ts" >= ? AND "ts" < ?' + "".join(f" AND {column} = ?" for column, _ in filters)
        sql = f'SELECT {select}{_SELECT_AGGREGATES} FROM "audit_records" WHERE {where}'
        params: list[Any] = [self.since, self.until, *(value for _, value in filters)]
        if keys:
            sql += " GROUP BY " + ", ".join(str(i + 1) for i in range(len(keys)))
            sql += " ORDER BY " + ", ".join(f"({expr} IS NULL), {expr}" for _, expr in keys)
            sql += " LIMIT ?"
            params.append(limit)
        return sql, params

    def group_columns(self) -> list[str]:
        """The group's names as rows hold them: the time bucket first, then the others as asked."""
        return [name for name in self.group_by if name in TIME_BUCKETS] + [
            name for name in self.group_by if name not in TIME_BUCKETS
        ]

    def row(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """One result row as the API gives it: the group's values by name, then the measures."""
        row: dict[str, Any] = {name: raw[f"g_{name}"] for name in self.group_columns()}
        row.update(measures(raw))
        return row


def measures(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The aggregates of a result row as plain numbers (PostgreSQL sums integers as `numeric`)."""
    values: dict[str, Any] = {name: int(raw[name]) for name in MEASURES if name != "cost_usd"}
    values["cost_usd"] = round(float(raw["cost_usd"]), 9)
    return {name: values[name] for name in MEASURES}


def accepted() -> str:
    return f"accepts {', '.join(GROUP_BY)} (comma-separated; day or hour, not both)"


@dataclass(frozen=True, slots=True)
class SpendPeriods:
    """The UTC calendar day and month that budgets count, for the instant `now` (each from its start,
    inclusive, to the next one's, exclusive)."""

    day: datetime
    month: datetime

    @classmethod
    def at(cls, now: datetime) -> SpendPeriods:
        return cls(day=day_start(now), month=month_start(now))

    @property
    def day_end(self) -> datetime:
        return self.day + timedelta(days=1)

    @property
    def month_end(self) -> datetime:
        return (self.month + timedelta(days=32)).replace(day=1)

    def statement(self, clients: tuple[str, ...] | None) -> tuple[str, list[Any]]:
        """Spend and unpriced requests per key in the day and the month (`?`-style; the first six
        parameters are times): one pass over the month's rows, on the `ts` index."""
        today = '"ts" >= ? AND "ts" < ?'
        sql = (
            'SELECT "client_key" AS "client", '
            f'COALESCE(SUM(CASE WHEN {today} THEN "cost_usd" END), 0) AS "spent_day", '
            f'COALESCE(SUM(CASE WHEN {today} AND {_UNPRICED} THEN 1 ELSE 0 END), 0) AS "unpriced_day", '
            'COALESCE(SUM("cost_usd"), 0) AS "spent_month", '
            f'COALESCE(SUM(CASE WHEN {_UNPRICED} THEN 1 ELSE 0 END), 0) AS "unpriced_month" '
            'FROM "audit_records" WHERE "ts" >= ? AND "ts" < ?'
        )
        params: list[Any] = [self.day, self.day_end, self.day, self.day_end, self.month, self.month_end]
        if clients is not None:
            sql += ' AND "client_key" IN (' + ", ".join("?" * len(clients)) + ")"
            params.extend(clients)
        return sql + ' GROUP BY "client_key"', params


def day_start(now: datetime) -> datetime:
    now = now.astimezone(UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def month_start(now: datetime) -> datetime:
    return day_start(now).replace(day=1)


def _instant(name: str, value: str | None) -> datetime | None:
    try:
        return parse_instant(name, value)
    except ValueError as error:
        raise UsageQueryError(name, str(error).removeprefix(f"{name} ")) from None


def _next_day(now: datetime | None) -> datetime:
    return day_start(now or datetime.now(UTC)) + timedelta(days=1)
