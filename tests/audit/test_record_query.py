"""AuditEntry's JSON form, LogFilter parsing and matching, and the page cursor (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

import gateway.audit
from gateway.audit.query import LogFilter, decode_cursor, encode_cursor
from gateway.audit.record import AuditEntry

from .conftest import make_entry


def test_entry_json_round_trip() -> None:
    entry = make_entry(3, ts=datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=UTC))
    data = entry.to_json()
    assert data["ts"] == "2025-01-02T03:04:05.000006Z"
    assert "id" not in data
    assert list(data)[:3] == ["uid", "ts", "request_id"]
    assert AuditEntry.from_json(data) == entry
    assert AuditEntry.from_line(entry.to_line()) == entry
    assert entry.to_line().endswith(b"\n") and entry.to_line().count(b"\n") == 1


def test_entry_defaults_and_id() -> None:
    a = AuditEntry(
        request_id="r", instance="h:1", surface="openai", endpoint="chat", stream=False,
        status="success", http_status=200, attempts=1, latency_ms=1.0,
    )  # fmt: skip
    b = AuditEntry(
        request_id="r", instance="h:1", surface="openai", endpoint="chat", stream=False,
        status="success", http_status=200, attempts=1, latency_ms=1.0,
    )  # fmt: skip
    assert a.uid != b.uid and len(a.uid) == 32
    assert a.ts.tzinfo is not None and a.failover_path == [] and a.id is None
    a.id = 42
    data = a.to_json()
    assert next(iter(data)) == "id" and data["id"] == 42
    assert AuditEntry.from_json(data).id == 42


def test_entry_naive_and_offset_ts_become_utc() -> None:
    offset = make_entry(ts=datetime(2025, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))))
    assert offset.to_json()["ts"] == "2025-01-01T10:00:00.000000Z"
    naive = make_entry(ts=datetime(2025, 1, 1, 12))
    assert naive.to_json()["ts"] == "2025-01-01T12:00:00.000000Z"


@pytest.mark.parametrize(
    "data",
    [
        {},
        [1, 2],
        {"request_id": "r"},
        {**make_entry().to_json(), "ts": None},
        {**make_entry().to_json(), "ts": "yesterday"},
    ],
)
def test_entry_from_json_rejects_malformed(data: object) -> None:
    with pytest.raises(ValueError):
        AuditEntry.from_json(data)  # type: ignore[arg-type]


def test_entry_from_line_rejects_truncated() -> None:
    line = make_entry().to_line()
    with pytest.raises(ValueError):
        AuditEntry.from_line(line[: len(line) // 2])


def test_filter_from_query() -> None:
    f = LogFilter.from_query(
        {
            "model": "small",
            "backend_type": "openai_compatible",
            "status": "error",
            "since": "2025-01-01T00:00:00Z",
            "until": "1735732800",  # 2025-01-01T12:00:00Z
            "request_id": "abc",
            "limit": "10",  # not a filter: ignored
            "cursor": "xyz",
        }
    )
    assert f == LogFilter(
        model="small",
        backend_type="openai_compatible",
        status="error",
        since=datetime(2025, 1, 1, tzinfo=UTC),
        until=datetime(2025, 1, 1, 12, tzinfo=UTC),
        request_id="abc",
    )
    assert f.as_dict()["since"] == "2025-01-01T00:00:00.000000Z"
    assert LogFilter.from_query({"model": "", "status": ""}) == LogFilter()
    assert LogFilter.from_query({"since": "2025-01-01T02:00:00+02:00"}).since == datetime(
        2025, 1, 1, tzinfo=UTC
    )
    assert LogFilter.from_query({"since": "1735689600.5"}).since == datetime(
        2025, 1, 1, 0, 0, 0, 500000, tzinfo=UTC
    )
    assert LogFilter.from_query({"until": "2025-01-01T00:00:00"}).until == datetime(2025, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"status": "ok"}, "status must be one of"),
        ({"backend_type": "llama"}, "backend_type must be one of"),
        ({"since": "last tuesday"}, "since must be ISO-8601"),
        ({"until": "2025-13-01"}, "until must be ISO-8601"),
        ({"since": "1e400"}, "since must be ISO-8601"),
        ({"since": "99999999999999999999"}, "since is out of range"),
        ({"since": "2025-01-02", "until": "2025-01-01"}, "since must be earlier than until"),
        ({"model": "x" * 300}, "model is longer than"),
        ({"request_id": 5}, "request_id must be text"),
    ],
)
def test_filter_rejects_bad_values(query: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LogFilter.from_query(query)


def test_filter_matches() -> None:
    record = make_entry(ts=datetime(2025, 1, 1, 12, tzinfo=UTC), model="m", status="error").to_json()
    assert LogFilter().matches(record)
    assert LogFilter(model="m", status="error").matches(record)
    assert not LogFilter(model="other").matches(record)
    assert not LogFilter(backend_type="openai").matches(record)
    assert LogFilter(since=datetime(2025, 1, 1, 12, tzinfo=UTC)).matches(record)  # inclusive
    assert not LogFilter(until=datetime(2025, 1, 1, 12, tzinfo=UTC)).matches(record)  # exclusive
    assert not LogFilter(since=datetime(2025, 1, 1, 12, 0, 1, tzinfo=UTC)).matches(record)


def test_cursor_round_trip_and_rejects_garbage() -> None:
    ts = datetime(2025, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    cursor = encode_cursor(ts, 987654321)
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor
    assert decode_cursor(cursor) == (ts, 987654321)
    for bad in ["", "!!!", "bm90IGEgY3Vyc29y", encode_cursor(ts, 1)[:-3], "MTIzLjQ1Ng" * 10]:
        with pytest.raises(ValueError, match="invalid cursor"):
            decode_cursor(bad)


def test_public_names() -> None:
    for name in gateway.audit.__all__:
        assert hasattr(gateway.audit, name), name
    assert {"AuditEntry", "AuditStore", "AuditWriter", "LogFilter", "run_retention"} <= set(
        gateway.audit.__all__
    )
