"""AuditEntry's JSON form, LogFilter parsing and matching, and the page cursor (no database)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

import gateway.audit
from gateway.audit.query import LogFilter, decode_cursor, encode_cursor
from gateway.audit.record import ENTRY_FIELDS, AuditEntry, default_instance, new_uids, rows_from_trails
from gateway.protocol.canonical import Usage
from gateway.request_ids import new_request_id
from gateway.routing.failover import Attempt
from tests.conftest import wait_until

from .conftest import make_entry, make_trail


def test_entry_json_round_trip() -> None:
    entry = make_entry(3, ts=datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=UTC))
    data = entry.to_json()
    assert data["ts"] == "2025-01-02T03:04:05.000006Z"
    assert "id" not in data
    assert list(data)[:3] == ["uid", "ts", "request_id"]
    assert AuditEntry.from_json(data) == entry
    assert AuditEntry.from_line(entry.to_line()) == entry
    assert entry.to_line().endswith(b"\n") and entry.to_line().count(b"\n") == 1


def test_entry_row_round_trip() -> None:
    entry = make_entry(3)
    row = entry.to_row()
    assert len(row) == len(ENTRY_FIELDS) and row[0] == entry.uid
    assert isinstance(row[ENTRY_FIELDS.index("failover_path")], str)  # JSON text, as stored
    assert AuditEntry.from_row(row) == entry


def test_a_spill_line_from_before_the_cache_counts_reads_them_as_null() -> None:
    data = make_entry().to_json()
    del data["cached_tokens"], data["cache_creation_tokens"]
    entry = AuditEntry.from_json(data)
    assert entry.cached_tokens is None and entry.cache_creation_tokens is None
    assert entry.prompt_tokens == 10


def test_an_incapable_skip_keeps_its_reason_in_the_failover_path() -> None:
    trail = make_trail(
        1,
        attempts=[
            Attempt("claude", "sonnet", "incapable", detail="lacks capability 'n'"),
            Attempt("local", "tiny", "ok", 200, 9.5),
        ],
    )
    (row,) = rows_from_trails([(trail, trail.started + 0.1)])
    entry = AuditEntry.from_row(row)
    assert entry.failover_path == [
        {
            "backend": "claude",
            "model": "sonnet",
            "outcome": "incapable",
            "status": None,
            "duration_ms": 0.0,
            "detail": "lacks capability 'n'",
        },
        {"backend": "local", "model": "tiny", "outcome": "ok", "status": 200, "duration_ms": 9.5},
    ]
    assert entry.attempts == 1  # a skip is no attempt


def test_rows_from_trails_hold_what_each_request_did() -> None:
    failed_over = make_trail(
        1,
        usage=Usage(prompt_tokens=1500, completion_tokens=30, cached_tokens=1024, cache_creation_tokens=200),
        attempts=[
            Attempt("primary", "big", "http_5xx", 502, 3.14159),
            Attempt("local", "tiny", "ok", 200, 9.5),
        ],
    )
    refused = make_trail(2, attempts=[])
    refused.usage, refused.http_status, refused.error_type = None, 403, "forbidden"
    streamed = make_trail(3)
    streamed.stream, streamed.first_byte_at = True, streamed.started + 0.0123
    ended = failed_over.started + 0.25
    rows = rows_from_trails([(failed_over, ended), (refused, refused.started + 0.001), (streamed, ended)])
    first, second, third = (AuditEntry.from_row(row) for row in rows)

    assert first.request_id == "req-trail-1" and first.ts == failed_over.ts
    assert first.instance == default_instance()
    assert (first.model, first.backend, first.backend_type, first.upstream_model) == (
        "small",
        "local",
        "mlx",
        "tiny",
    )
    assert first.status == "success" and first.attempts == 2 and first.http_status == 200
    assert first.failover_path == [
        {"backend": "primary", "model": "big", "outcome": "http_5xx", "status": 502, "duration_ms": 3.14},
        {"backend": "local", "model": "tiny", "outcome": "ok", "status": 200, "duration_ms": 9.5},
    ]
    assert first.latency_ms == 250.0 and first.ttft_ms is None  # the end the caller measured
    assert (first.prompt_tokens, first.completion_tokens) == (1500, 30)
    assert (first.cached_tokens, first.cache_creation_tokens) == (1024, 200)
    assert first.config_version == "abc123" and first.client_key == "team-a"

    assert second.status == "rejected" and second.attempts == 0 and second.failover_path == []
    assert second.error_type == "forbidden" and second.http_status == 403
    assert (second.prompt_tokens, second.cached_tokens, second.cache_creation_tokens) == (None, None, None)

    assert third.stream is True and third.ttft_ms == 12.3
    assert len({first.uid, second.uid, third.uid}) == 3


def test_uids_and_request_ids_are_unique_and_sort_by_time() -> None:
    earlier = new_uids(500)
    earlier_ids = [new_request_id() for _ in range(500)]
    # Both read the epoch clock (uids to the µs, request ids to the ms): wait until it is past the
    # millisecond the earlier ones were made in.
    made = time.time_ns() // 1_000_000
    wait_until(lambda: time.time_ns() // 1_000_000 > made, interval=0.0005)
    later = new_uids(500)
    later_ids = [new_request_id() for _ in range(500)]
    assert len(set(earlier + later)) == 1000 and len(set(earlier_ids + later_ids)) == 1000
    assert all(len(uid) == 32 and int(uid, 16) >= 0 for uid in earlier + later)
    assert max(earlier) < min(later)  # each insert lands at the end of the uid index
    assert all(re.fullmatch(r"req_[0-9a-f]{24}", rid) for rid in earlier_ids + later_ids)
    assert max(earlier_ids) < min(later_ids)


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
        ({"shadow": "yes"}, "shadow must be true or false"),
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


def test_filter_tells_shadow_copies_from_client_requests() -> None:
    client = make_entry(model="m").to_json()
    copy = make_entry(model="m", shadow_of="req-1").to_json()
    only_copies, only_clients = (
        LogFilter.from_query({"shadow": "true"}),
        LogFilter.from_query({"shadow": "false"}),
    )
    assert (only_copies.shadow, only_clients.shadow, LogFilter.from_query({}).shadow) == (True, False, None)
    assert only_copies.matches(copy) and not only_copies.matches(client)
    assert only_clients.matches(client) and not only_clients.matches(copy)
    assert LogFilter().matches(copy) and LogFilter().matches(client)


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
