"""AuditStore on SQLite and PostgreSQL: schema and migrations, insert and dedup, keyset pages,
filters, export, purge, and LISTEN/NOTIFY between two instances."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from gateway.audit.migrations import _VERSION_TABLE, MIGRATIONS
from gateway.audit.models import AuditRecord
from gateway.audit.query import LogFilter, encode_cursor
from gateway.audit.store import AuditStore

from .conftest import PG_HOST, PG_PORT, Outage, make_entries, make_entry, query, uid_counts, wait_for


@pytest.fixture
async def store(database_url: str):
    opened = await AuditStore.open(database_url)
    yield opened
    await opened.close()


async def _versions(url: str) -> list[int]:
    rows = await query(url, 'SELECT "version" FROM "audit_schema_version" ORDER BY "version"')
    return [int(row["version"]) for row in rows]


async def test_schema_created_and_migrations_idempotent(database_url: str, dialect: str) -> None:
    latest = [step.version for step in MIGRATIONS[dialect]]
    first = await AuditStore.open(database_url)
    assert first.dialect == dialect
    await first.insert([make_entry(1)])
    await first.close()
    second = await AuditStore.open(database_url)  # opening again changes nothing
    await second.close()
    # Several workers starting at once: each step still applied exactly once, no error.
    stores = await asyncio.gather(*(AuditStore.open(database_url) for _ in range(4)))
    for opened in stores:
        assert await opened.ping()
    await asyncio.gather(*(opened.close() for opened in stores))
    assert await _versions(database_url) == latest
    assert len(await uid_counts(database_url)) == 1


async def _create_version_1(url: str, dialect: str) -> None:
    """The schema as the first release left it, with one record in it (written then, so without the
    columns later steps add)."""
    v1 = MIGRATIONS[dialect][0]
    assert v1.version == 1
    columns = '"uid", "ts", "request_id", "instance", "surface", "endpoint", "stream", "status", '
    columns += '"http_status", "attempts", "failover_path", "latency_ms", "prompt_tokens"'
    if dialect == "sqlite":
        connection = sqlite3.connect(url.removeprefix("sqlite://"))
        try:
            for statement in (_VERSION_TABLE["sqlite"], *v1.statements):
                connection.execute(statement)
            connection.execute(
                'INSERT INTO "audit_schema_version" VALUES (1, ?, ?)', (v1.name, "2025-01-01 00:00:00+00:00")
            )
            connection.execute(
                f'INSERT INTO "audit_records" ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                ("old-uid", "2025-01-01 00:00:00.000000+00:00", "req-old", "h:1", "openai", "chat", 0,
                 "success", 200, 1, "[]", 5.0, 11),
            )  # fmt: skip
            connection.commit()
        finally:
            connection.close()
        return
    connection = await asyncpg.connect(
        host=PG_HOST, port=PG_PORT, user="postgres", database=url.rsplit("/", 1)[1]
    )
    try:
        for statement in (_VERSION_TABLE["postgres"], *v1.statements):
            await connection.execute(statement)
        await connection.execute(
            'INSERT INTO "audit_schema_version" VALUES (1, $1, $2)', v1.name, datetime(2025, 1, 1, tzinfo=UTC)
        )
        await connection.execute(
            f'INSERT INTO "audit_records" ({columns}) VALUES ({", ".join(f"${i}" for i in range(1, 14))})',
            "old-uid", datetime(2025, 1, 1, tzinfo=UTC), "req-old", "h:1", "openai", "chat", False,
            "success", 200, 1, "[]", 5.0, 11,
        )  # fmt: skip
    finally:
        await connection.close()


async def test_upgrade_from_version_1_adds_the_cache_counts_in_place(database_url: str, dialect: str) -> None:
    await _create_version_1(database_url, dialect)
    store = await AuditStore.open(database_url)
    try:
        assert await _versions(database_url) == [step.version for step in MIGRATIONS[dialect]]
        [old] = (await store.page(LogFilter(request_id="req-old"), 10))[0]
        assert old["uid"] == "old-uid" and old["prompt_tokens"] == 11  # kept, readable
        assert old["cached_tokens"] is None and old["cache_creation_tokens"] is None
        assert old["client_address"] is None  # migration 3
        new = make_entry(1, cached_tokens=900, cache_creation_tokens=100)
        [row_id] = await store.insert([new])
        assert await store.fetch_ids([row_id]) == [{"id": row_id, **new.to_json()}]
    finally:
        await store.close()
    # A step recorded as missing (say, its version row was lost) runs again without harm.
    last = MIGRATIONS[dialect][-1].version
    if dialect == "sqlite":
        connection = sqlite3.connect(database_url.removeprefix("sqlite://"))
        connection.execute(f'DELETE FROM "audit_schema_version" WHERE "version" = {last}')
        connection.commit()
        connection.close()
    else:
        connection = await asyncpg.connect(
            host=PG_HOST, port=PG_PORT, user="postgres", database=database_url.rsplit("/", 1)[1]
        )
        await connection.execute(f'DELETE FROM "audit_schema_version" WHERE "version" = {last}')
        await connection.close()
    again = await AuditStore.open(database_url)
    await again.close()
    assert await _versions(database_url) == [step.version for step in MIGRATIONS[dialect]]
    assert len(await uid_counts(database_url)) == 2


async def test_written_rows_read_back_exactly(store: AuditStore) -> None:
    """What `write` stores (the writer's path: no ids asked for) is what a page reads back, for every
    kind of value: unicode, quotes and newlines in text, nulls, both booleans, floats, big counts."""
    entries = [
        make_entry(1, model='qwen "3" \\ 7b\nq4 — 日本語 🚀', client_key=None, trace_id="ab" * 16),
        make_entry(2, stream=True, ttft_ms=None, prompt_tokens=None, cached_tokens=None, error_type="x"),
        make_entry(
            3, latency_ms=0.1 + 0.2, prompt_tokens=2**40, cached_tokens=0, cache_creation_tokens=2**33
        ),
        make_entry(4, failover_path=[], attempts=0, status="rejected", http_status=403, backend=None),
        make_entry(5, ts=datetime(2025, 6, 1, 12, 0, 0, 0, tzinfo=UTC)),  # no microseconds
    ]
    assert await store.write([entry.to_row() for entry in entries]) == {}
    assert await store.write([entries[0].to_row()]) == {}  # a duplicate uid: skipped, no error
    records, _ = await store.page(LogFilter(), 100)
    assert all(isinstance(record.pop("id"), int) for record in records)
    assert sorted(records, key=lambda r: r["uid"]) == sorted(
        (e.to_json() for e in entries), key=lambda r: r["uid"]
    )


async def test_table_matches_model(store: AuditStore, database_url: str, dialect: str) -> None:
    if dialect == "sqlite":
        rows = await query(database_url, 'PRAGMA table_info("audit_records")')
        columns = {row["name"] for row in rows}
        indexes = {row["name"] for row in await query(database_url, 'PRAGMA index_list("audit_records")')}
    else:
        rows = await query(
            database_url,
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'audit_records'",
        )
        columns = {row["column_name"] for row in rows}
        indexes = {
            row["indexname"]
            for row in await query(
                database_url, "SELECT indexname FROM pg_indexes WHERE tablename = 'audit_records'"
            )
        }
    assert columns == set(AuditRecord._meta.fields_db_projection.values())
    assert {
        "audit_records_ts_id",
        "audit_records_model_ts",
        "audit_records_status_ts",
        "audit_records_backend_type_ts",
        "audit_records_request_id",
    } <= indexes


async def test_insert_returns_new_ids_and_ignores_duplicate_uids(
    store: AuditStore, database_url: str
) -> None:
    entries = make_entries(3)
    ids = await store.insert(entries)
    assert len(ids) == 3 and ids == sorted(ids)
    assert await store.insert(entries) == []  # a replayed batch adds nothing
    newcomer = make_entry(9)
    again = await store.insert([entries[0], newcomer, newcomer])  # duplicate inside one batch too
    assert len(again) == 1 and again[0] > ids[-1]
    assert await uid_counts(database_url) == {e.uid: 1 for e in [*entries, newcomer]}
    assert await store.insert([]) == []
    [stored] = await store.fetch_ids([again[0]])
    assert stored == {"id": again[0], **newcomer.to_json()}
    assert await store.last_id() == again[0]
    assert [r["id"] for r in await store.after_id(ids[0], 10)] == [ids[1], ids[2], again[0]]


async def test_values_cut_to_fit_never_fail_the_batch(store: AuditStore) -> None:
    odd = make_entry(1, request_id="r" * 5000, model="m\x00odel", prompt_tokens=10**30, http_status=200)
    [row_id] = await store.insert([odd])
    [stored] = await store.fetch_ids([row_id])
    assert stored["request_id"] == "r" * 200
    assert stored["model"] == "model"
    assert stored["prompt_tokens"] == 2**63 - 1


async def test_keyset_pages_stable_while_newer_records_arrive(store: AuditStore, database_url: str) -> None:
    base = datetime.now(UTC) - timedelta(days=1)
    old = [make_entry(i, ts=base + timedelta(seconds=i // 3)) for i in range(10_000)]  # ts ties: id decides
    random.Random(7).shuffle(old)  # ids not in ts order
    for start in range(0, len(old), 2000):
        await store.insert(old[start : start + 2000])
    expected = {e.uid for e in old}
    # The writer of newer records uses another store (another connection/instance).
    other = await AuditStore.open(database_url)
    inserted_meanwhile = 0
    try:
        seen: list[dict] = []
        cursor = None
        pages = 0
        while True:
            records, cursor = await store.page(LogFilter(), 250, cursor)
            seen.extend(records)
            pages += 1
            if cursor is None:
                break
            # The other instance inserts between every two pages.
            inserted_meanwhile += len(await other.insert([make_entry(-1), make_entry(-2)]))
    finally:
        await other.close()
    assert pages >= 40 and inserted_meanwhile == 2 * (pages - 1)
    old_seen = [r["uid"] for r in seen if r["uid"] in expected]
    assert len(old_seen) == len(expected) == len(set(old_seen))  # every old record exactly once
    keys = [(r["ts"], r["id"]) for r in seen]
    assert keys == sorted(keys, reverse=True) and len(set(keys)) == len(keys)  # strictly newest first


async def test_filters_and_combinations(store: AuditStore) -> None:
    base = datetime(2025, 3, 1, tzinfo=UTC)
    entries = []
    for i in range(120):
        entries.append(
            make_entry(
                i,
                ts=base + timedelta(minutes=i),
                model=["small", "large", None][i % 3],
                status=["success", "error", "timeout", "rejected"][i % 4],
                backend_type=["mlx", "openai", "anthropic", "openai_compatible", None][i % 5],
            )
        )
    await store.insert(entries)
    cases = [
        LogFilter(),
        LogFilter(model="small"),
        LogFilter(status="error"),
        LogFilter(backend_type="openai_compatible"),
        LogFilter(request_id="req-7"),
        LogFilter(since=base + timedelta(minutes=30)),
        LogFilter(until=base + timedelta(minutes=30)),
        LogFilter(since=base + timedelta(minutes=10), until=base + timedelta(minutes=50)),
        LogFilter(model="large", status="timeout"),
        LogFilter(model="small", backend_type="mlx", since=base + timedelta(minutes=5)),
        LogFilter(status="rejected", backend_type="anthropic", until=base + timedelta(minutes=100)),
        LogFilter(model="nothing-like-this"),
        LogFilter.from_query(
            {"status": "success", "since": str(int((base + timedelta(minutes=60)).timestamp()))}
        ),
    ]
    for filters in cases:
        expected = [
            e.uid for e in sorted(entries, key=lambda e: e.ts, reverse=True) if filters.matches(e.to_json())
        ]
        records, cursor = await store.page(filters, 1000)
        assert [r["uid"] for r in records] == expected, filters
        assert cursor is None
        assert all(filters.matches(r) for r in records)
    # Boundaries: since inclusive, until exclusive.
    at = base + timedelta(minutes=30)
    assert [
        r["request_id"]
        for r in (await store.page(LogFilter(since=at, until=at + timedelta(minutes=1)), 10))[0]
    ] == ["req-30"]


async def test_page_cursor_and_limit_errors(store: AuditStore) -> None:
    await store.insert(make_entries(5))
    records, cursor = await store.page(LogFilter(), 2)
    assert len(records) == 2 and cursor is not None
    rest, end = await store.page(LogFilter(), 10, cursor)
    assert len(rest) == 3 and end is None
    for bad in ["garbage", "AAAA", encode_cursor(datetime.now(UTC), 1) + "%%"]:
        with pytest.raises(ValueError, match="invalid cursor"):
            await store.page(LogFilter(), 2, bad)
    for limit in (0, -1, 1001):
        with pytest.raises(ValueError, match="limit"):
            await store.page(LogFilter(), limit)


async def test_export_yields_exactly_the_filtered_rows(store: AuditStore) -> None:
    entries = make_entries(230)
    for i, entry in enumerate(entries):
        entry.status = "error" if i % 3 == 0 else "success"
    await store.insert(entries)
    exported = [r async for r in store.export(LogFilter(status="error"), chunk=7)]
    expected = [e.uid for e in reversed(entries) if e.status == "error"]
    assert [r["uid"] for r in exported] == expected
    assert all(isinstance(r["id"], int) for r in exported)
    assert len([r async for r in store.export(LogFilter(), chunk=50)]) == 230


async def test_purge_deletes_only_old_rows_in_batches(store: AuditStore, database_url: str) -> None:
    now = datetime.now(UTC)
    old = make_entries(1234, start=now - timedelta(days=40), step=timedelta(seconds=1))
    recent = make_entries(100, start=now - timedelta(days=1), step=timedelta(seconds=1))
    await store.insert(old + recent)
    batches: list[int] = []
    deleted = await store.purge_older_than(now - timedelta(days=30), batch=500, progress=batches.append)
    assert deleted == 1234
    assert batches == [500, 500, 234]
    assert set(await uid_counts(database_url)) == {e.uid for e in recent}
    assert await store.purge_older_than(now - timedelta(days=30)) == 0


async def test_open_fails_fast_when_unreachable(outage: Outage) -> None:
    started = time.monotonic()
    with pytest.raises(Exception):  # noqa: B017 (the driver's own connection error)
        await AuditStore.open(outage.url, timeout=2)
    assert time.monotonic() - started < 6  # the deadline under test: timeout (2 s), 3x margin


async def test_stuck_database_raises_instead_of_hanging(outage: Outage) -> None:
    """A database that stops answering fails each operation within the store's timeout; once it
    answers again the same store works."""
    await outage.bring_up()
    store = await AuditStore.open(outage.url, timeout=1)
    try:
        await store.insert([make_entry(1)])
        if outage.dialect == "sqlite":  # another process holds the write lock
            locker = sqlite3.connect(outage.url.removeprefix("sqlite://"), isolation_level=None)
            locker.execute("BEGIN IMMEDIATE")
        else:  # the network path stops passing data
            assert outage.proxy is not None
            outage.proxy.freeze()
        started = time.monotonic()
        with pytest.raises(Exception):  # noqa: B017 (TimeoutError, or SQLite's "database is locked")
            await store.insert([make_entry(2)])
        assert time.monotonic() - started < 4  # the deadline under test: timeout (1 s), 4x margin
        assert not await store.ping() or outage.dialect == "sqlite"  # SQLite still reads during a write lock
        if outage.dialect == "sqlite":
            locker.execute("ROLLBACK")
            locker.close()
        else:
            outage.proxy.thaw()  # type: ignore[union-attr]
        await wait_for(store.ping, timeout=10)
        second = make_entry(3)
        assert len(await store.insert([second])) == 1
        assert second.uid in await uid_counts(outage.url)
    finally:
        await store.close()


async def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'audit.sqlite3'}"
    store = await AuditStore.open(url)
    await store.close()
    assert (await query(url, "PRAGMA journal_mode"))[0]["journal_mode"] == "wal"


async def test_stores_opening_a_new_sqlite_file_at_once_all_open(tmp_path: Path) -> None:
    """Two connections switching a new file to WAL at once: SQLite answers the loser "database is
    locked" without waiting. Each open must get through (once made this lost a gateway's audit)."""
    for attempt in range(8):
        url = f"sqlite://{tmp_path / f'audit-{attempt}.sqlite3'}"
        stores = await asyncio.gather(*(AuditStore.open(url) for _ in range(4)))
        try:
            for store in stores:
                assert await store.ping()
        finally:
            for store in stores:
                await store.close()


async def test_listen_gets_the_ids_of_another_instances_batches(database_url: str, dialect: str) -> None:
    listener = await AuditStore.open(database_url)
    writer = await AuditStore.open(database_url)
    try:
        if dialect == "sqlite":
            with pytest.raises(RuntimeError, match="needs PostgreSQL"):
                await listener.listen(lambda ids: None)
            return
        received: list[list[int]] = []

        def ids() -> list[int]:
            return sorted(i for batch in received for i in batch)

        close = await listener.listen(received.append)
        small = await writer.insert(make_entries(3))
        await wait_for(lambda: ids() == small)
        received.clear()
        big = await writer.insert(make_entries(2500))  # ids need more than one 8000-byte payload
        await wait_for(lambda: ids() == big)
        assert len(received) >= 2
        assert await writer.insert(make_entries(0)) == []
        # Closed: nothing more arrives. Another listener, still open, receives the next batch: by
        # then a listener that close() had left listening would have been sent it too.
        witness: list[list[int]] = []
        close_witness = await listener.listen(witness.append)
        await close()
        later = await writer.insert(make_entries(2))
        await wait_for(lambda: sorted(i for batch in witness for i in batch) == later)
        await close_witness()
        assert ids() == big
    finally:
        await listener.close()
        await writer.close()


@pytest.mark.parametrize("outage", ["postgres"], indirect=True)  # LISTEN/NOTIFY is PostgreSQL-only
async def test_listen_reconnects_after_the_connection_drops(outage: Outage) -> None:
    await outage.bring_up()
    listener = await AuditStore.open(outage.url)
    reconnected = asyncio.Event()
    received: list[int] = []
    close = await listener.listen(received.extend, on_reconnect=reconnected.set, heartbeat=0.2)
    direct = await AuditStore.open(outage.url.replace(f":{outage.proxy.port}/", ":5432/"))  # type: ignore[union-attr]
    try:
        first = await direct.insert(make_entries(2))
        await wait_for(lambda: received == first)
        await outage.take_down()  # the listener's connection is cut: it must connect again
        await outage.bring_up()
        await asyncio.wait_for(reconnected.wait(), 10)
        second = await direct.insert(make_entries(2))
        await wait_for(lambda: received == first + second)
    finally:
        await close()
        await direct.close()
        await listener.close()


async def test_shadow_copies_are_paired_with_the_requests_they_copied(store: AuditStore) -> None:
    """Per model and target: each side's failures, latency, tokens and cost, over the pairs only."""
    old = datetime.now(UTC) - timedelta(hours=2)
    entries = [
        make_entry(1, model="chat", backend="primary", latency_ms=100.0, cost_usd=0.01),
        make_entry(2, model="chat", backend="primary", latency_ms=300.0, cost_usd=0.03),
        make_entry(3, model="chat", backend="primary", latency_ms=50.0),  # not copied
        make_entry(11, model="chat", backend="mirror", upstream_model="next", shadow_of="req-1",
                   client_key=None, latency_ms=150.0, completion_tokens=40, cost_usd=0.5),
        make_entry(12, model="chat", backend="mirror", upstream_model="next", shadow_of="req-2",
                   client_key=None, latency_ms=250.0, status="error", http_status=502, cost_usd=None),
        make_entry(13, model="chat", backend="mirror", upstream_model="next", shadow_of="req-1",
                   client_key=None, ts=old),  # before the window
        make_entry(14, model="chat", backend="mirror", upstream_model="next", shadow_of="req-missing",
                   client_key=None),  # its request is not in the log
    ]  # fmt: skip
    await store.insert(entries)
    [found] = await store.shadow_comparison(datetime.now(UTC) - timedelta(hours=1))
    assert found["model"] == "chat" and found["target"] == {"backend": "mirror", "model": "next"}
    assert found["pairs"] == 2 and found["shadow_slower"] == 1
    primary, shadow = found["primary"], found["shadow"]
    assert (primary["errors"], shadow["errors"], shadow["error_rate"]) == (0, 1, 0.5)
    assert (primary["mean_latency_ms"], shadow["mean_latency_ms"]) == (200.0, 200.0)
    assert (primary["output_tokens"], shadow["output_tokens"]) == (40, 60)
    assert primary["cost_usd"] == pytest.approx(0.04) and shadow["cost_usd"] == pytest.approx(0.5)
    assert await store.shadow_comparison(datetime.now(UTC)) == []
