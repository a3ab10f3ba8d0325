"""The audit log end to end, through the real server, on SQLite and on PostgreSQL: what a record holds
(and never holds), outages, shutdown, retention, and the admin logs API (pages, filters, export, live
tail, also across two gateway processes sharing one PostgreSQL log)."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
import requests

from gateway.audit.record import AuditEntry
from gateway.audit.store import AuditStore
from tests.conftest import wait_until
from tests.e2e.audit_support import (
    AuditDatabase,
    TcpProxy,
    audit_database,
    live_tail_handshake,
    postgres_available,
)
from tests.e2e.upstreams import GATEWAY_ENV, Upstreams, backends_yaml, fake_upstreams

KINDS = pytest.mark.parametrize("kind", ["sqlite", "postgres"])
CLIENT_KEY, ADMIN_KEY = "client-key-audit-tests", "admin-key-audit-tests"
ENV = {**GATEWAY_ENV, "GW_CLIENT_KEY": CLIENT_KEY, "GW_ADMIN_KEY": ADMIN_KEY}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
MESSAGES = [{"role": "user", "content": "What is the capital of Portugal?"}]


@pytest.fixture(scope="module")
def up() -> Iterator[Upstreams]:
    with fake_upstreams() as upstreams:
        yield upstreams


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path: Path) -> Iterator[AuditDatabase]:
    with audit_database(request.param, tmp_path) as database:
        yield database


def config(up: Upstreams, database_url: str, audit: str = "", timeouts: str = "") -> str:
    key = '"${FAKE_KEY}"'
    oa = up.openai.base_url
    failing = """headers: {x-fake-behaviour: '{"status": 500}'}"""
    hanging = """headers: {x-fake-behaviour: '{"hang": true}'}"""
    return f"""
auth:
  client_keys:
    - name: billing-app
      key: ${{GW_CLIENT_KEY}}
  admin_keys:
    - name: ops
      key: ${{GW_ADMIN_KEY}}
backends:
{backends_yaml(up)}
  broken: {{type: openai_compatible, base_url: "{oa}", api_key: {key}, {failing}}}
  stuck: {{type: openai_compatible, base_url: "{oa}", api_key: {key}, {hanging}}}
models:
  gpt: {{chain: [{{backend: oa, model: gpt-4o-mini}}]}}
  gpt-official: {{chain: [{{backend: oa-official, model: gpt-4o-mini}}]}}
  claude: {{chain: [{{backend: an, model: claude-haiku-4-5}}]}}
  flaky: {{chain: [{{backend: broken, model: gpt-4o}}, {{backend: oa, model: gpt-4o-mini}}]}}
  stuck: {{chain: [{{backend: stuck, model: gpt-4o}}]}}
timeouts:
  chat: {{total: 30, first_byte: 1}}
{timeouts}
audit:
  database_url: "{database_url}"
  flush_interval_ms: 50
{audit}
"""


def oai(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url("/v1"), api_key=CLIENT_KEY, max_retries=0)


def logs(gateway, **params: Any) -> dict[str, Any]:
    response = requests.get(gateway.url("/admin/api/logs"), params=params, headers=ADMIN, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def record_of(gateway, request_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def arrived() -> bool:
        found[:] = logs(gateway, request_id=request_id)["records"]
        return bool(found)

    wait_until(arrived, timeout=10, interval=0.1)
    assert len(found) == 1
    return found[0]


def test_records_hold_the_metadata_of_each_kind_of_outcome(gateway_server, up: Upstreams, db) -> None:
    gateway = gateway_server(config(up, db.url()), env=ENV)
    client = oai(gateway)

    ok = client.chat.completions.with_raw_response.create(model="gpt", messages=MESSAGES, max_tokens=5)
    completion = ok.parse()
    record = record_of(gateway, ok.headers["x-request-id"])
    assert record["status"] == "success" and record["http_status"] == 200
    assert record["surface"] == "openai" and record["endpoint"] == "chat" and record["stream"] is False
    assert record["client_key"] == "billing-app"
    assert (record["model"], record["backend"], record["backend_type"], record["upstream_model"]) == (
        "gpt",
        "oa",
        "openai_compatible",
        "gpt-4o-mini",
    )
    assert record["prompt_tokens"] == completion.usage.prompt_tokens
    assert record["completion_tokens"] == completion.usage.completion_tokens == 5
    assert record["cached_tokens"] == record["cache_creation_tokens"] == 0  # none reported by the upstream
    assert record["attempts"] == 1 and record["error_type"] is None
    assert record["config_version"] == ok.headers["x-config-version"]
    assert record["latency_ms"] > 0 and record["ttft_ms"] is None
    assert CLIENT_KEY not in json.dumps(record)

    # Failover: the path names both steps, the record the backend that served.
    flaky = client.chat.completions.with_raw_response.create(model="flaky", messages=MESSAGES)
    record = record_of(gateway, flaky.headers["x-request-id"])
    assert record["status"] == "success" and record["backend"] == "oa" and record["attempts"] == 2
    assert [(s["backend"], s["outcome"], s["status"]) for s in record["failover_path"]] == [
        ("broken", "http_5xx", 500),
        ("oa", "ok", 200),
    ]

    # Streamed through the Anthropic surface: time to first token and the streamed usage.
    claude = anthropic.Anthropic(base_url=gateway.base_url, api_key=CLIENT_KEY, max_retries=0)
    with claude.messages.stream(model="claude", max_tokens=7, messages=MESSAGES) as stream:
        final = stream.get_final_message()
        request_id = stream.response.headers["x-request-id"]
    record = record_of(gateway, request_id)
    assert record["surface"] == "anthropic" and record["stream"] is True
    assert record["backend_type"] == "anthropic" and record["status"] == "success"
    assert record["completion_tokens"] == final.usage.output_tokens == 7
    assert 0 < record["ttft_ms"] <= record["latency_ms"]

    # Refused by the gateway before any backend: rejected, with the problem type.
    denied = requests.post(
        gateway.url("/v1/chat/completions"),
        json={"model": "gpt", "messages": MESSAGES},
        headers={"authorization": "Bearer wrong"},
        timeout=5,
    )
    record = record_of(gateway, denied.headers["x-request-id"])
    assert (record["status"], record["http_status"], record["error_type"]) == (
        "rejected",
        401,
        "unauthorized",
    )
    assert record["client_key"] is None and record["attempts"] == 0
    unknown = requests.post(
        gateway.url("/v1/chat/completions"),
        json={"model": "nope", "messages": MESSAGES},
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
        timeout=5,
    )
    record = record_of(gateway, unknown.headers["x-request-id"])
    assert (record["status"], record["http_status"], record["model"]) == ("rejected", 404, "nope")
    # Invalid, but its model was readable: the record keeps it, so filtering by model finds it.
    invalid = requests.post(
        gateway.url("/v1/chat/completions"),
        json={"model": "gpt", "messages": "not a list"},
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
        timeout=5,
    )
    assert invalid.status_code == 400, invalid.text
    record = record_of(gateway, invalid.headers["x-request-id"])
    assert (record["status"], record["http_status"], record["model"]) == ("rejected", 400, "gpt")

    # A backend that never answers: a timeout, after the first-byte limit.
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="stuck", messages=MESSAGES)
    record = record_of(gateway, raised.value.response.headers["x-request-id"])
    assert (record["status"], record["http_status"]) == ("timeout", 504)
    assert record["failover_path"][0]["outcome"] == "timeout"
    assert 900 < record["latency_ms"] < 10_000


def test_no_prompt_tool_argument_or_answer_text_is_ever_stored(gateway_server, up: Upstreams, db) -> None:
    canary = "Cz" + secrets.token_hex(8)  # 18 characters: the fakes echo up to 20 of a tool result
    gateway = gateway_server(config(up, db.url()), env=ENV)
    client = oai(gateway)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": f"looks up {canary}",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        }
    ]
    conversation = [
        {"role": "system", "content": f"Secret system prompt {canary}"},
        {"role": "user", "content": f"Find {canary} please"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": json.dumps({"q": canary})},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": canary},
    ]
    answer = client.chat.completions.create(model="gpt", messages=conversation, tools=tools)
    assert canary in answer.choices[0].message.content  # the answer carries it too
    streamed = client.chat.completions.create(model="gpt", messages=conversation, stream=True)
    assert canary in "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    claude = anthropic.Anthropic(base_url=gateway.base_url, api_key=CLIENT_KEY, max_retries=0)
    claude.messages.create(
        model="claude",
        max_tokens=30,
        system=f"system {canary}",
        messages=[{"role": "user", "content": f"tell me about {canary}"}],
    )
    claude.messages.count_tokens(model="claude", messages=[{"role": "user", "content": canary}])
    with pytest.raises(openai.BadRequestError):  # a rejected request with the canary in a bad field
        client.chat.completions.create(model="gpt", messages=[{"role": canary, "content": canary}])
    # The Responses API: translated (a function call round trip) and passed through (streamed).
    items = [
        {"role": "user", "content": f"Find {canary} please"},
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "lookup",
            "arguments": json.dumps({"q": canary}),
        },
        {"type": "function_call_output", "call_id": "call_1", "output": canary},
    ]
    function = {"type": "function", **tools[0]["function"]}
    raw = client.responses.with_raw_response.create(
        model="claude", instructions=f"Secret {canary}", input=items, tools=[function]
    )
    assert canary in raw.parse().output_text
    record = record_of(gateway, raw.headers["x-request-id"])
    assert (record["surface"], record["endpoint"], record["backend_type"]) == (
        "responses",
        "chat",
        "anthropic",
    )
    assert record["completion_tokens"] == raw.parse().usage.output_tokens
    events = list(client.responses.create(model="gpt-official", input=items, tools=[function], stream=True))
    assert canary in "".join(e.delta for e in events if e.type == "response.output_text.delta")
    wait_until(lambda: db.count() >= 7, timeout=10, interval=0.1)
    gateway.stop()  # everything flushed; the SQLite WAL checkpointed or not, both files are searched
    assert db.count() == 7
    stored = db.everything_as_text()
    assert "billing-app" in stored  # the search does see the records' text
    assert canary not in stored
    assert canary not in gateway.log()


@KINDS
def test_database_outage_loses_nothing_and_duplicates_nothing(
    gateway_server, up: Upstreams, tmp_path: Path, kind: str
) -> None:
    """The database is away while requests arrive (more than the buffer holds, so some spill to disk);
    every request is served, and once it is back every record arrives exactly once."""
    with audit_database(kind, tmp_path) as db:
        proxy: TcpProxy | None = None
        if kind == "postgres":
            # Create the schema first, then take the database away behind a proxy.
            proxy = TcpProxy()
            proxy.up()
            url = db.url(proxy.port)
            warm = gateway_server(config(up, url), env=ENV, name="warm.yaml")
            oai(warm).chat.completions.create(model="gpt", messages=MESSAGES, max_tokens=2)
            wait_until(lambda: db.count() == 1, timeout=10, interval=0.1)
            warm.stop()
            proxy.down()
            before = 1
        else:
            # A path whose parent is a file: SQLite cannot open it until the file makes way.
            blocker = tmp_path / "later"
            blocker.write_text("not a directory")
            url = f"sqlite://{blocker / 'audit.sqlite3'}"
            db = AuditDatabase("sqlite", str(blocker / "audit.sqlite3"))
            before = 0
        gateway = gateway_server(config(up, url, audit="  buffer_records: 10\n  batch_size: 5"), env=ENV)
        client = oai(gateway)
        sent = []
        for _ in range(40):
            response = client.chat.completions.with_raw_response.create(
                model="gpt", messages=MESSAGES, max_tokens=2
            )
            assert response.status_code == 200
            sent.append(response.headers["x-request-id"])

        def stats() -> dict[str, Any]:
            return requests.get(gateway.url("/admin/api/logs/stats"), headers=ADMIN, timeout=5).json()

        # Ten held in memory (buffer_records), the rest spilled to disk. Read as one snapshot, once
        # settled: a record past the buffer is spilled by the writer's next turn, not by the request.
        seen: dict[str, Any] = {}

        def settled() -> bool:
            seen.update(stats())
            return seen["buffered"] + seen["spilled"] == 40 and seen["buffered"] <= 10

        wait_until(settled, timeout=10, interval=0.1)
        assert seen["spilled"] >= 30 and seen["written"] == 0 and seen["db_up"] is False
        # The logs API says the database is away, as a problem (not a 500).
        down = requests.get(gateway.url("/admin/api/logs"), headers=ADMIN, timeout=10)
        assert down.status_code == 503 and "audit database" in down.json()["detail"]

        if proxy is not None:
            proxy.up()
        else:
            blocker.unlink()
            blocker.mkdir()
        wait_until(lambda: db.count() == before + 40, timeout=30, interval=0.2)

        def accounted() -> bool:  # the writer holds nothing more: what is stored is all there will be
            now = stats()
            return now["buffered"] == 0 and now["spill_bytes"] == 0 and now["written"] + now["replayed"] == 40

        wait_until(accounted, timeout=30, interval=0.1)
        rows = db.rows()
        assert len(rows) == before + 40
        assert sorted(r["request_id"] for r in rows[before:]) == sorted(sent)
        assert len({r["uid"] for r in rows}) == len(rows)
        after = stats()
        assert after["db_up"] is True and after["lost"] == 0
        assert after["replayed"] == after["spilled"] > 0
        assert after["written"] + after["replayed"] == 40
        gateway.stop()
        assert not list(tmp_path.glob("gateway-audit.spill.jsonl*"))
        if proxy is not None:
            proxy.down()


def test_ready_stays_200_with_the_audit_database_down_and_records_spilling(
    gateway_server, up: Upstreams, tmp_path: Path
) -> None:
    """The gateway serves and spills: /ready says "degraded" in its audit check (and metrics say
    why) but stays 200, so replicas sharing the database do not all leave the load balancer."""
    blocker = tmp_path / "later"  # a file where a directory should be: SQLite cannot open the log
    blocker.write_text("not a directory")
    url = f"sqlite://{blocker / 'audit.sqlite3'}"
    gateway = gateway_server(config(up, url, audit="  buffer_records: 5\n  batch_size: 5"), env=ENV)
    client = oai(gateway)
    for _ in range(20):
        client.chat.completions.create(model="gpt", messages=MESSAGES, max_tokens=2)
    audit: dict[str, Any] = {}

    def spilling() -> bool:
        ready = requests.get(gateway.url("/ready"), timeout=5)
        assert ready.status_code == 200, ready.text
        audit.update(ready.json()["checks"]["audit"])
        return audit["spilled"] == 20

    wait_until(spilling, timeout=10, interval=0.1)
    ready = requests.get(gateway.url("/ready"), timeout=5).json()
    assert ready["status"] == "ready" and ready["degraded"] == ["audit"]
    assert audit["status"] == "degraded" and audit["db_up"] is False and audit["spill_bytes"] > 0
    assert "cannot open the audit database" in audit["last_error"] and "spill file" in audit["detail"]
    metrics = requests.get(gateway.url("/metrics"), headers=ADMIN, timeout=5).text
    assert "gateway_audit_database_up 0.0" in metrics
    assert "gateway_audit_buffered_records 0.0" in metrics
    assert f"gateway_audit_spill_bytes {float(audit['spill_bytes'])}" in metrics

    blocker.unlink()
    blocker.mkdir()
    db = AuditDatabase("sqlite", str(blocker / "audit.sqlite3"))
    wait_until(lambda: db.count() == 20, timeout=30, interval=0.2)
    wait_until(
        lambda: requests.get(gateway.url("/ready"), timeout=5).json()["checks"]["audit"]["status"] == "ok",
        timeout=10,
    )
    ready = requests.get(gateway.url("/ready"), timeout=5).json()
    assert ready["degraded"] == [] and ready["checks"]["audit"]["spill_bytes"] == 0


@KINDS
def test_records_in_the_buffer_at_sigterm_are_written(
    gateway_server, up: Upstreams, tmp_path: Path, kind: str
) -> None:
    with audit_database(kind, tmp_path) as db:
        # Nothing is flushed on its own for a minute: what is in the database came from the shutdown.
        audit = "  flush_interval_ms: 60000\n  batch_size: 1000"
        text = config(up, db.url(), audit=audit).replace("  flush_interval_ms: 50\n", "")
        gateway = gateway_server(text, env=ENV)

        def stats() -> dict[str, Any]:
            return requests.get(gateway.url("/admin/api/logs/stats"), headers=ADMIN, timeout=5).json()

        # The writer opens the database in the background; records that arrive before it is open are
        # written as soon as it is, so wait for that first.
        wait_until(lambda: stats()["db_up"], timeout=10, interval=0.05)
        client = oai(gateway)
        sent = [
            client.chat.completions.with_raw_response.create(
                model="gpt", messages=MESSAGES, max_tokens=2
            ).headers["x-request-id"]
            for _ in range(25)
        ]
        assert stats()["buffered"] == 25 and stats()["written"] == 0
        assert gateway.stop(signal.SIGTERM) == 0
        assert sorted(r["request_id"] for r in db.rows()) == sorted(sent)


def test_switching_the_audit_database_under_load_loses_nothing(
    gateway_server, up: Upstreams, tmp_path: Path
) -> None:
    """`audit.database_url` moves back and forth between two SQLite files (and PostgreSQL when it
    answers) while clients keep sending; after a graceful stop every answered request has exactly one
    record, in one of the databases."""
    with contextlib.ExitStack() as stack:
        databases = [
            AuditDatabase("sqlite", str(tmp_path / "one.sqlite3")),
            AuditDatabase("sqlite", str(tmp_path / "two.sqlite3")),
        ]
        if postgres_available():
            databases.append(stack.enter_context(audit_database("postgres", tmp_path)))
        texts = [config(up, db.url()) + "reload: {watch: false}\n" for db in databases]
        gateway = gateway_server(texts[0], env=ENV)
        answered: list[str] = []
        failures: list[str] = []
        stop = threading.Event()

        def send() -> None:
            with requests.Session() as session:
                while not stop.is_set():
                    response = session.post(
                        gateway.url("/v1/chat/completions"),
                        json={"model": "gpt", "messages": MESSAGES, "max_tokens": 2},
                        headers={"authorization": f"Bearer {CLIENT_KEY}"},
                        timeout=30,
                    )
                    if response.status_code == 200:
                        answered.append(response.headers["x-request-id"])
                    else:
                        failures.append(response.text)

        senders = [threading.Thread(target=send) for _ in range(6)]
        for sender in senders:
            sender.start()
        try:
            for turn in range(1, 10):
                # Traffic between two reloads: a few more answers (or a failure) first.
                so_far = len(answered)
                wait_until(lambda so_far=so_far: len(answered) >= so_far + 3 or bool(failures), timeout=30)
                gateway.config_path.write_text(texts[turn % len(texts)])
                reload = requests.post(gateway.url("/admin/api/config/reload"), headers=ADMIN, timeout=10)
                assert reload.json()["outcome"] == "applied", reload.text
            so_far = len(answered)
            wait_until(lambda: len(answered) >= so_far + 3 or bool(failures), timeout=30)
        finally:
            stop.set()
            for sender in senders:
                sender.join()
        assert gateway.stop(signal.SIGTERM) == 0
        assert not failures
        stored = [
            row["request_id"] for db in databases for row in db.query("SELECT request_id FROM audit_records")
        ]
        assert len(stored) == len(set(stored)), "a record was stored twice"
        missing = set(answered) - set(stored)
        spilled = [path.name for path in tmp_path.glob("gateway-audit.spill.jsonl*")]
        assert not missing, (
            f"{len(missing)} of {len(answered)} answered requests have no record; spill files: {spilled}"
        )
        assert len(stored) == len(answered)
        assert not spilled  # every database answered: each writer wrote what it was handed
        assert all(db.count() > 0 for db in databases)  # each database took its share


@KINDS
def test_retention_deletes_back_dated_records_at_start(
    gateway_server, up: Upstreams, tmp_path: Path, kind: str
) -> None:
    with audit_database(kind, tmp_path) as db:
        now = datetime.now(UTC)
        # Written before the gateway starts: two past the 7-day retention, three inside it.
        ages = {"old-1": 8, "old-2": 30, "new-1": 6.9, "new-2": 1, "new-3": 0}
        asyncio.run(
            _insert(db.url(), [_entry(name, now - timedelta(days=age)) for name, age in ages.items()])
        )
        assert db.count() == 5
        gateway_server(config(up, db.url(), audit="  retention_days: 7"), env=ENV)
        wait_until(lambda: db.count() == 3, timeout=10, interval=0.1)
        assert sorted(r["request_id"] for r in db.rows()) == ["new-1", "new-2", "new-3"]


def _entry(request_id: str, ts: datetime, **overrides: Any) -> AuditEntry:
    return AuditEntry(
        uid=secrets.token_hex(16),
        ts=ts,
        request_id=request_id,
        trace_id=None,
        instance="test",
        client_key="billing-app",
        surface="openai",
        endpoint="chat",
        model="gpt",
        backend="oa",
        backend_type="openai_compatible",
        upstream_model="gpt-4o-mini",
        stream=False,
        status="success",
        http_status=200,
        error_type=None,
        attempts=1,
        failover_path=[],
        latency_ms=12.5,
        ttft_ms=None,
        prompt_tokens=10,
        completion_tokens=2,
        config_version="0123456789abcdef",
        **overrides,
    )


async def _insert(url: str, entries: list[AuditEntry]) -> None:
    store = await AuditStore.open(url)
    try:
        await store.insert(entries)
    finally:
        await store.close()


def test_pages_filters_and_export(gateway_server, up: Upstreams, db) -> None:
    gateway = gateway_server(config(up, db.url()), env=ENV)
    client = oai(gateway)
    claude = anthropic.Anthropic(base_url=gateway.base_url, api_key=CLIENT_KEY, max_retries=0)
    for _ in range(30):
        client.chat.completions.create(model="gpt", messages=MESSAGES, max_tokens=2)
    for _ in range(12):
        claude.messages.create(model="claude", max_tokens=2, messages=MESSAGES)
    for _ in range(9):
        requests.post(
            gateway.url("/v1/chat/completions"), json={"model": "gpt"}, headers=ADMIN, timeout=5
        )  # an admin key cannot call the model API: rejected
    wait_until(lambda: db.count() == 51, timeout=10, interval=0.1)

    # Infinite scroll: pages of 7, newest first, while new requests keep arriving.
    seen: list[int] = []
    cursor = None
    stop = threading.Event()

    def keep_sending() -> None:
        while not stop.is_set():
            client.chat.completions.create(model="gpt", messages=MESSAGES, max_tokens=1)

    sender = threading.Thread(target=keep_sending)
    sender.start()
    try:
        while True:
            page = logs(gateway, limit=7, **({"cursor": cursor} if cursor else {}))
            seen += [r["id"] for r in page["records"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
    finally:
        stop.set()
        sender.join()
    assert len(seen) == len(set(seen))  # no record twice
    first_51 = sorted(r["id"] for r in db.rows())[:51]
    assert set(first_51) <= set(seen)  # every record that existed before the scroll began

    only_claude = logs(gateway, model="claude", limit=100)["records"]
    assert len(only_claude) == 12 and {r["backend_type"] for r in only_claude} == {"anthropic"}
    rejected = logs(gateway, status="rejected", limit=100)["records"]
    assert len(rejected) == 9 and {r["http_status"] for r in rejected} == {403}
    by_type = logs(gateway, backend_type="anthropic", status="success", limit=100)["records"]
    assert [r["id"] for r in by_type] == [r["id"] for r in only_claude]
    middle = sorted(only_claude, key=lambda r: r["id"])[5]["ts"]
    since = logs(gateway, model="claude", since=middle, limit=100)["records"]
    assert len(since) == 7 and all(r["ts"] >= middle for r in since)
    until = logs(gateway, model="claude", until=middle, limit=100)["records"]
    assert len(until) == 5 and all(r["ts"] < middle for r in until)  # `until` is exclusive

    bad = requests.get(gateway.url("/admin/api/logs"), params={"status": "fine"}, headers=ADMIN, timeout=5)
    assert bad.status_code == 400 and "status" in bad.json()["detail"]
    bad = requests.get(gateway.url("/admin/api/logs"), params={"cursor": "xx"}, headers=ADMIN, timeout=5)
    assert bad.status_code == 400
    bad = requests.get(
        gateway.url("/admin/api/logs"), params={"since": "yesterday"}, headers=ADMIN, timeout=5
    )
    assert bad.status_code == 400

    exported = requests.get(
        gateway.url("/admin/api/logs/export"), params={"model": "claude"}, headers=ADMIN, timeout=10
    )
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("application/x-ndjson")
    assert "attachment" in exported.headers["content-disposition"]
    lines = [json.loads(line) for line in exported.text.splitlines()]
    assert sorted(r["id"] for r in lines) == sorted(r["id"] for r in only_claude)
    as_csv = requests.get(
        gateway.url("/admin/api/logs/export"),
        params={"status": "rejected", "format": "csv"},
        headers=ADMIN,
        timeout=10,
    )
    table = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert len(table) == 9 and {row["status"] for row in table} == {"rejected"}
    assert json.loads(table[0]["failover_path"]) == []


def test_cache_token_counts_in_pages_and_exports(gateway_server, up: Upstreams, db) -> None:
    now = datetime.now(UTC)
    asyncio.run(
        _insert(
            db.url(),
            [
                _entry("cached", now, cached_tokens=8, cache_creation_tokens=2),
                _entry("older", now - timedelta(minutes=1)),  # as rows written before the counts were kept
            ],
        )
    )
    gateway = gateway_server(config(up, db.url()), env=ENV)
    cached, older = logs(gateway, limit=10)["records"]
    assert (cached["request_id"], cached["cached_tokens"], cached["cache_creation_tokens"]) == (
        "cached",
        8,
        2,
    )
    assert (older["request_id"], older["cached_tokens"], older["cache_creation_tokens"]) == (
        "older",
        None,
        None,
    )

    exported = requests.get(gateway.url("/admin/api/logs/export"), headers=ADMIN, timeout=10)
    lines = {line["request_id"]: line for line in map(json.loads, exported.text.splitlines())}
    assert lines["cached"]["cached_tokens"] == 8 and lines["older"]["cache_creation_tokens"] is None
    as_csv = requests.get(
        gateway.url("/admin/api/logs/export"), params={"format": "csv"}, headers=ADMIN, timeout=10
    )
    table = {row["request_id"]: row for row in csv.DictReader(io.StringIO(as_csv.text))}
    assert (table["cached"]["cached_tokens"], table["cached"]["cache_creation_tokens"]) == ("8", "2")
    assert (table["older"]["cached_tokens"], table["older"]["cache_creation_tokens"]) == ("", "")


def test_csv_export_neutralises_cells_a_spreadsheet_would_evaluate(
    gateway_server, up: Upstreams, tmp_path: Path
) -> None:
    """A client chooses the model name (refused, 404, but recorded) and the request id: in the CSV, a
    text cell that starts like a formula is prefixed with `'`; numbers stay numbers."""
    gateway = gateway_server(config(up, f"sqlite://{tmp_path / 'a.sqlite3'}"), env=ENV)
    formula = '=HYPERLINK("http://x.example","y")'
    refused = requests.post(
        gateway.url("/v1/chat/completions"),
        json={"model": formula, "messages": MESSAGES},
        headers={"authorization": f"Bearer {CLIENT_KEY}", "x-request-id": "-2-3"},
        timeout=10,
    )
    assert refused.status_code == 404 and refused.headers["x-request-id"] == "-2-3"
    oai(gateway).chat.completions.create(
        model="gpt", messages=MESSAGES, max_tokens=2, extra_headers={"x-request-id": "ok-1"}
    )
    assert record_of(gateway, "-2-3")["model"] == formula  # stored as sent
    record_of(gateway, "ok-1")

    as_csv = requests.get(
        gateway.url("/admin/api/logs/export"), params={"format": "csv"}, headers=ADMIN, timeout=10
    )
    assert as_csv.status_code == 200
    table = {row["id"]: row for row in csv.DictReader(io.StringIO(as_csv.text))}
    cells = [cell for row in table.values() for cell in row.values()]
    assert not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")]
    bad, ok = sorted(table.values(), key=lambda row: int(row["id"]))
    assert (bad["request_id"], bad["model"], bad["http_status"]) == ("'-2-3", "'" + formula, "404")
    assert (ok["request_id"], ok["model"], ok["completion_tokens"]) == ("ok-1", "gpt", "2")
    # JSON Lines carries the values as stored (a JSON reader does not evaluate them).
    exported = requests.get(gateway.url("/admin/api/logs/export"), headers=ADMIN, timeout=10)
    assert formula in [json.loads(line)["model"] for line in exported.text.splitlines()]


def test_logs_api_is_for_admins_only(gateway_server, up: Upstreams, tmp_path: Path) -> None:
    gateway = gateway_server(config(up, f"sqlite://{tmp_path / 'a.sqlite3'}"), env=ENV)
    for path in ("/admin/api/logs", "/admin/api/logs/export", "/admin/api/logs/stats"):
        assert requests.get(gateway.url(path), timeout=5).status_code == 401
        client = requests.get(gateway.url(path), headers={"x-api-key": CLIENT_KEY}, timeout=5)
        assert client.status_code == 403

    assert live_tail_handshake(gateway, {}) == 401
    assert live_tail_handshake(gateway, {"x-api-key": CLIENT_KEY}) == 403
    assert live_tail_handshake(gateway, {**ADMIN, "origin": "https://evil.example"}) == 403
    assert live_tail_handshake(gateway, {**ADMIN, "origin": gateway.base_url}) == 101


async def _tail(
    url: str, query: dict[str, str], want: int, timeout: float, following: threading.Event
) -> list[dict[str, Any]]:
    """Up to `want` records from the live tail; sets `following` once the tail said it follows."""
    records: list[dict[str, Any]] = []
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, params=query, headers=ADMIN) as socket,
    ):
        ready = await socket.receive_json(timeout=10)
        assert ready["type"] == "ready" and ready["following"] is True, ready
        following.set()
        deadline = time.monotonic() + timeout
        while len(records) < want and time.monotonic() < deadline:
            try:
                message = await socket.receive_json(timeout=max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                break
            if message["type"] == "record":
                records.append(message["record"])
    return records


def test_live_tail_across_two_gateways_on_one_postgres(gateway_server, up: Upstreams, tmp_path: Path) -> None:
    with audit_database("postgres", tmp_path) as db:
        first = gateway_server(config(up, db.url()), env=ENV, name="first.yaml")
        second = gateway_server(config(up, db.url()), env=ENV, name="second.yaml")
        results: list[list[dict[str, Any]]] = []
        url = first.url("/admin/api/logs/live").replace("http", "ws", 1)
        following = threading.Event()
        tail = threading.Thread(
            target=lambda: results.append(asyncio.run(_tail(url, {"model": "claude"}, 4, 20, following)))
        )
        tail.start()
        assert following.wait(20), "the live tail never said it follows the database"
        sent = []
        claude = {"first": first, "second": second}
        for name in ("first", "second", "second", "first"):
            client = anthropic.Anthropic(base_url=claude[name].base_url, api_key=CLIENT_KEY, max_retries=0)
            response = client.messages.with_raw_response.create(
                model="claude", max_tokens=2, messages=MESSAGES
            )
            sent.append(response.headers["x-request-id"])
            oai(claude[name]).chat.completions.create(model="gpt", messages=MESSAGES, max_tokens=1)
        tail.join(timeout=30)
        tail_records = results[0]
        assert sorted(r["request_id"] for r in tail_records) == sorted(sent)  # only the filter's records
        assert len({r["instance"] for r in tail_records}) == 2  # from both processes
        wait_until(lambda: db.count() == 8, timeout=10, interval=0.1)  # the last gpt record too


def test_live_tail_on_sqlite_shows_every_worker(gateway_server, up: Upstreams, tmp_path: Path) -> None:
    gateway = gateway_server(config(up, f"sqlite://{tmp_path / 'w.sqlite3'}"), env=ENV, workers=2)
    results: list[list[dict[str, Any]]] = []
    url = gateway.url("/admin/api/logs/live").replace("http", "ws", 1)
    following = threading.Event()
    tail = threading.Thread(
        target=lambda: results.append(asyncio.run(_tail(url, {"status": "success"}, 12, 20, following)))
    )
    tail.start()
    assert following.wait(20), "the live tail never said it follows the database"
    client = oai(gateway)
    sent = []
    for _ in range(12):  # the two workers share the connections: both serve some
        with openai.OpenAI(base_url=gateway.url("/v1"), api_key=CLIENT_KEY, max_retries=0) as fresh:
            response = fresh.chat.completions.with_raw_response.create(
                model="gpt", messages=MESSAGES, max_tokens=1
            )
        sent.append(response.headers["x-request-id"])
    client.close()
    tail.join(timeout=30)
    assert sorted(r["request_id"] for r in results[0]) == sorted(sent)
    assert len({r["instance"] for r in results[0]}) == 2


def test_audit_off_writes_nothing(gateway_server, up: Upstreams, tmp_path: Path) -> None:
    path = tmp_path / "off.sqlite3"
    gateway = gateway_server(config(up, f"sqlite://{path}", audit="  enabled: false"), env=ENV)
    oai(gateway).chat.completions.create(model="gpt", messages=MESSAGES, max_tokens=1)
    off = requests.get(gateway.url("/admin/api/logs"), headers=ADMIN, timeout=5)
    assert off.status_code == 503 and "audit.enabled" in off.json()["detail"]
    gateway.stop()
    assert not path.exists()


def test_sigterm_ends_live_tails_instead_of_waiting_for_them(
    gateway_server, up: Upstreams, tmp_path: Path
) -> None:
    """Hypercorn waits for open connections on SIGTERM: an open live tail must be ended (1001) rather
    than hold the worker for the whole graceful-shutdown period (here 60 s, past `stop()`'s 15 s)."""
    text = config(up, f"sqlite://{tmp_path / 's.sqlite3'}").replace(
        "auth:", "server:\n  graceful_shutdown_seconds: 60\nauth:", 1
    )
    gateway = gateway_server(text, env=ENV)
    url = gateway.url("/admin/api/logs/live").replace("http", "ws", 1)
    closed: list[tuple[Any, Any]] = []

    open_tail = threading.Event()

    async def watch() -> None:
        async with aiohttp.ClientSession() as session, session.ws_connect(url, headers=ADMIN) as socket:
            assert (await socket.receive_json(timeout=10))["type"] == "ready"
            open_tail.set()
            message = await socket.receive(timeout=30)
            closed.append((message.type, socket.close_code))

    watcher = threading.Thread(target=lambda: asyncio.run(watch()))
    watcher.start()
    assert open_tail.wait(20), "the live tail did not open"
    assert gateway.stop(signal.SIGTERM) == 0
    watcher.join(timeout=10)
    assert closed and closed[0][0] in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert closed[0][1] == 1001
