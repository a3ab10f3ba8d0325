"""AuditStore.usage and AuditStore.spend (the admin usage API and the panel's Usage page) on SQLite and
PostgreSQL: groups and sums exactly, UTC day and hour boundaries, unknown costs, filters, the bound
on groups; and UsageQuery's checks of what it is asked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from gateway.audit.store import AuditStore
from gateway.audit.usage import DEFAULT_DAYS, MEASURES, UsageQuery, UsageQueryError

from .conftest import make_entry

DAY = datetime(2025, 3, 1, tzinfo=UTC)
TICK = timedelta(microseconds=1)
#: Two days and a bit of seeded traffic: (offset from DAY, overrides).
SEED: list[tuple[timedelta, dict]] = [
    # 2025-03-01, the first instant of the day
    (timedelta(0), {"client_key": "app", "model": "gpt", "backend": "oa", "cost_usd": 0.25}),
    (timedelta(hours=9), {"client_key": "app", "model": "gpt", "backend": "oa", "cost_usd": 0.5}),
    (
        timedelta(hours=9, minutes=30),
        {"client_key": "app", "model": "claude", "backend": "an", "cost_usd": 1.5},
    ),
    # the last instant of 2025-03-01
    (
        timedelta(days=1) - TICK,
        {"client_key": "research", "model": "claude", "backend": "an", "cost_usd": 0.125, "status": "error"},
    ),
    # 2025-03-02: an unpriced request (tokens, no cost), a rejected one (no tokens, no cost), a timeout
    (timedelta(days=1), {"client_key": "research", "model": "llama", "backend": "local", "cost_usd": None}),
    (
        timedelta(days=1, hours=1),
        {
            "client_key": "app",
            "model": "gpt",
            "backend": None,
            "status": "rejected",
            "http_status": 429,
            "limit_name": "budget_usd.per_day",
            "prompt_tokens": None,
            "completion_tokens": None,
            "cached_tokens": None,
            "cache_creation_tokens": None,
            "cost_usd": None,
        },
    ),
    (
        timedelta(days=1, hours=1, minutes=5),
        {"client_key": None, "model": "gpt", "backend": "oa", "cost_usd": 0.0625, "status": "timeout"},
    ),
    # outside every range below
    (timedelta(days=-1), {"client_key": "app", "model": "gpt", "backend": "oa", "cost_usd": 100.0}),
    (timedelta(days=31), {"client_key": "app", "model": "gpt", "backend": "oa", "cost_usd": 100.0}),
]
TWO_DAYS = UsageQuery(since=DAY, until=DAY + timedelta(days=2))


def measures(**values: float) -> dict:
    """Every measure, zero unless given (the entries' tokens are 10 in, 20 out, 4 cached, 2 written)."""
    row = dict.fromkeys(MEASURES, 0)
    row["cost_usd"] = 0.0
    row.update(values)
    return row


def priced(requests: int, cost: float, **values: float) -> dict:
    """`requests` answered requests with the seed's token counts."""
    tokens = {
        "prompt_tokens": 10 * requests,
        "completion_tokens": 20 * requests,
        "cached_tokens": 4 * requests,
        "cache_creation_tokens": 2 * requests,
    }
    return measures(requests=requests, cost_usd=cost, **{**tokens, **values})


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[AuditStore]:
    opened = await AuditStore.open(database_url)
    await opened.insert([make_entry(i, ts=DAY + offset, **values) for i, (offset, values) in enumerate(SEED)])
    yield opened
    await opened.close()


def grouped(query: UsageQuery, *group_by: str, **filters: str) -> UsageQuery:
    return UsageQuery(since=query.since, until=query.until, group_by=group_by, **filters)


async def test_totals_sum_every_measure_in_the_range(store: AuditStore) -> None:
    rows, truncated = await store.usage(TWO_DAYS)
    assert not truncated
    assert rows == [
        measures(
            requests=7,
            success=4,
            error=1,
            timeout=1,
            rejected=1,
            limited=1,
            prompt_tokens=60,
            completion_tokens=120,
            cached_tokens=24,
            cache_creation_tokens=12,
            cost_usd=2.4375,
            unpriced_requests=1,
        )
    ]


async def test_groups_by_utc_day_at_the_boundaries(store: AuditStore) -> None:
    rows, _ = await store.usage(grouped(TWO_DAYS, "day"))
    assert rows == [
        {"day": "2025-03-01", **priced(4, 2.375, success=3, error=1)},
        {
            "day": "2025-03-02",
            **measures(
                requests=3,
                success=1,
                timeout=1,
                rejected=1,
                limited=1,
                prompt_tokens=20,
                completion_tokens=40,
                cached_tokens=8,
                cache_creation_tokens=4,
                cost_usd=0.0625,
                unpriced_requests=1,
            ),
        },
    ]
    # A range that starts at the last instant of a day holds only that instant's record.
    last = UsageQuery(since=DAY + timedelta(days=1) - TICK, until=DAY + timedelta(days=1), group_by=("day",))
    assert [(r["day"], r["requests"]) for r in (await store.usage(last))[0]] == [("2025-03-01", 1)]


async def test_a_range_in_another_time_zone_still_buckets_by_utc_day(store: AuditStore) -> None:
    paris = timezone(timedelta(hours=1))
    query = UsageQuery(
        since=datetime(2025, 3, 1, 1, tzinfo=paris),
        until=datetime(2025, 3, 3, 1, tzinfo=paris),
        group_by=("day",),
    )
    rows, _ = await store.usage(query)
    assert [(r["day"], r["requests"]) for r in rows] == [("2025-03-01", 4), ("2025-03-02", 3)]


async def test_groups_by_client_and_model_with_nulls_last(store: AuditStore) -> None:
    rows, _ = await store.usage(grouped(TWO_DAYS, "client", "model"))
    assert [
        (r["client"], r["model"], r["requests"], r["cost_usd"], r["unpriced_requests"]) for r in rows
    ] == [
        ("app", "claude", 1, 1.5, 0),
        ("app", "gpt", 3, 0.75, 0),
        ("research", "claude", 1, 0.125, 0),
        ("research", "llama", 1, 0.0, 1),
        (None, "gpt", 1, 0.0625, 0),
    ]
    app_gpt = rows[1]
    assert app_gpt == {
        "client": "app",
        "model": "gpt",
        **measures(
            requests=3,
            success=2,
            rejected=1,
            limited=1,
            prompt_tokens=20,
            completion_tokens=40,
            cached_tokens=8,
            cache_creation_tokens=4,
            cost_usd=0.75,
        ),
    }


async def test_groups_by_hour_and_backend(store: AuditStore) -> None:
    rows, _ = await store.usage(grouped(TWO_DAYS, "backend", "hour"))
    assert [(r["hour"], r["backend"], r["requests"]) for r in rows] == [
        ("2025-03-01T00:00:00Z", "oa", 1),
        ("2025-03-01T09:00:00Z", "an", 1),
        ("2025-03-01T09:00:00Z", "oa", 1),
        ("2025-03-01T23:00:00Z", "an", 1),
        ("2025-03-02T00:00:00Z", "local", 1),
        ("2025-03-02T01:00:00Z", "oa", 1),
        ("2025-03-02T01:00:00Z", None, 1),
    ]
    assert list(rows[0]) == ["hour", "backend", *MEASURES]  # the time bucket first, whatever the order asked


async def test_filters_narrow_the_records(store: AuditStore) -> None:
    rows, _ = await store.usage(grouped(TWO_DAYS, "day", client="app", model="gpt"))
    assert [(r["day"], r["requests"], r["cost_usd"]) for r in rows] == [
        ("2025-03-01", 2, 0.75),
        ("2025-03-02", 1, 0.0),
    ]
    rows, _ = await store.usage(grouped(TWO_DAYS, backend="an"))
    assert rows == [priced(2, 1.625, success=1, error=1)]
    rows, _ = await store.usage(grouped(TWO_DAYS, "model", client="nobody"))
    assert rows == []
    totals, _ = await store.usage(grouped(TWO_DAYS, client="nobody"))
    assert totals == [measures()]  # totals of nothing are zeros, not nulls


async def test_since_is_inclusive_and_until_exclusive(store: AuditStore) -> None:
    first = UsageQuery(since=DAY, until=DAY + timedelta(hours=9))
    assert (await store.usage(first))[0][0]["requests"] == 1
    assert (await store.usage(UsageQuery(since=DAY + TICK, until=DAY + timedelta(hours=9))))[0][0][
        "requests"
    ] == 0


async def test_too_many_groups_are_cut_and_said(store: AuditStore) -> None:
    rows, truncated = await store.usage(grouped(TWO_DAYS, "hour", "backend"), limit=3)
    assert truncated and len(rows) == 3
    assert rows[0]["hour"] == "2025-03-01T00:00:00Z"
    rows, truncated = await store.usage(grouped(TWO_DAYS, "day"), limit=2)
    assert not truncated and len(rows) == 2


async def test_spend_per_key_in_the_current_utc_day_and_month(store: AuditStore) -> None:
    now = DAY + timedelta(days=1, hours=12)  # 2025-03-02 noon: the day is the 2nd, the month March
    spend = await store.spend(now)
    assert spend == {
        "app": {"spent_day": 0.0, "unpriced_day": 0, "spent_month": 2.25, "unpriced_month": 0},
        "research": {"spent_day": 0.0, "unpriced_day": 1, "spent_month": 0.125, "unpriced_month": 1},
        None: {"spent_day": 0.0625, "unpriced_day": 0, "spent_month": 0.0625, "unpriced_month": 0},
    }
    # On March 1st: February's record and April's are in neither period.
    on_the_first = await store.spend(DAY + timedelta(hours=12), ["app", "absent"])
    assert on_the_first == {
        "app": {"spent_day": 2.25, "unpriced_day": 0, "spent_month": 2.25, "unpriced_month": 0}
    }
    assert await store.spend(now, []) == {}


async def test_an_empty_log_has_zero_totals_and_no_groups(database_url: str) -> None:
    store = await AuditStore.open(database_url)
    try:
        assert await store.usage(TWO_DAYS) == ([measures()], False)
        assert await store.usage(grouped(TWO_DAYS, "day", "client")) == ([], False)
        assert await store.spend(DAY) == {}
    finally:
        await store.close()


# -- UsageQuery --------------------------------------------------------------------------------------


class Args(dict):
    """Query-string parameters that may repeat, as Quart's MultiDict gives them."""

    def getlist(self, name: str) -> list[str]:
        value = self.get(name)
        return [] if value is None else value if isinstance(value, list) else [value]


def test_query_defaults_to_the_last_30_utc_days_today_included() -> None:
    now = datetime(2025, 3, 10, 15, 30, tzinfo=UTC)
    query = UsageQuery.from_query(Args(), now)
    assert query.until == datetime(2025, 3, 11, tzinfo=UTC)
    assert query.since == query.until - timedelta(days=DEFAULT_DAYS)
    assert query.group_by == ()
    since_only = UsageQuery.from_query(Args(since="2025-01-01"), now)
    assert (since_only.since, since_only.until) == (
        datetime(2025, 1, 1, tzinfo=UTC),
        datetime(2025, 1, 31, tzinfo=UTC),
    )


def test_query_reads_group_by_comma_separated_or_repeated() -> None:
    assert UsageQuery.from_query(Args(group_by="day, client")).group_by == ("day", "client")
    assert UsageQuery.from_query(Args(group_by=["model", "hour"])).group_by == ("model", "hour")
    assert UsageQuery.from_query({"group_by": "backend"}).group_by == ("backend",)


@pytest.mark.parametrize(
    ("args", "field", "message"),
    [
        ({"group_by": "day,team"}, "group_by", "accepts client, model, backend, day, hour"),
        ({"group_by": "day,hour"}, "group_by", "day or hour, not both"),
        ({"group_by": "model,model"}, "group_by", "twice"),
        ({"since": "yesterday"}, "since", "must be ISO-8601"),
        ({"since": "2025-03-02", "until": "2025-03-01"}, "since", "earlier than until"),
        ({"since": "2024-01-01", "until": "2025-03-01"}, "since", "at most 366 days"),
        (
            {"since": "2025-01-01", "until": "2025-03-01", "group_by": "hour"},
            "since",
            "at most 31 days by hour",
        ),
        ({"model": "m" * 300}, "model", "longer than 255"),
    ],
)
def test_query_refuses_what_it_cannot_answer(args: dict, field: str, message: str) -> None:
    with pytest.raises(UsageQueryError) as raised:
        UsageQuery.from_query(Args(args), datetime(2025, 3, 10, tzinfo=UTC))
    assert raised.value.field == field
    assert message in str(raised.value)
