"""Canary releases through `gateway serve --workers 2` and fake upstreams over loopback: a canary that
fails one request in five is rolled back within its window in every worker; gateway.yaml changes by
exactly its weight line and a comment saying why; the log has the numbers; with
`admin.write_back: false` the file is untouched and `/admin/api/routing` offers the patch."""

from __future__ import annotations

import contextlib
import difflib
import json
import sqlite3
from collections.abc import Iterator

import pytest
import requests
from gateway.admin.secret import TOKEN_FILE

from gateway.testing import Behaviour, FakeOpenAI
from gateway.testing.inprocess import gateway_in_thread
from tests.conftest import wait_until

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hello canary"}]}
CANARY = "    canary: {target: {backend: fresh, model: chat-2}, weight: 50, rollback: {error_rate: 0.05, min_requests: 10, window: 5m}}  # the new version"  # noqa: E501


@pytest.fixture
def fakes() -> Iterator[tuple[FakeOpenAI, FakeOpenAI]]:
    with FakeOpenAI.in_thread() as stable, FakeOpenAI.in_thread() as fresh:
        fresh.behaviour = Behaviour(fail_every=5, status=503)  # 20 % of the canary's requests fail
        yield stable, fresh


def config(stable: FakeOpenAI, fresh: FakeOpenAI, write_back: bool) -> str:
    return f"""# the chat model, with a canary of its next version
backends:
  stable: {{type: openai_compatible, base_url: "{stable.base_url}"}}
  fresh: {{type: openai_compatible, base_url: "{fresh.base_url}"}}
models:
  chat:
    chain: [{{backend: stable}}]
{CANARY}
admin: {{write_back: {str(write_back).lower()}}}
reload: {{debounce_ms: 20}}
"""


def events(gateway, name: str) -> list[dict]:
    found = []
    for line in gateway.log().splitlines():
        if f'"{name}"' in line:
            record = json.loads(line)
            if record.get("event") == name:
                found.append(record)
    return found


def worker_pids(gateway) -> set[int]:
    return {record["worker_pid"] for record in events(gateway, "worker_started")}


def rolled_back_everywhere(gateway) -> bool:
    """Every worker has the canary at weight 0: it decided so, or was told."""
    told = {
        r["pid"]
        for r in events(gateway, "canary_rolled_back") + events(gateway, "canary_rolled_back_by_peer")
    }
    return told >= worker_pids(gateway)


def until_rolled_back(gateway, fresh: FakeOpenAI) -> int:
    """Send requests (each answered 200: a failed canary attempt fails over) until a worker rolls the
    canary back; the number sent."""
    sent = 0
    while not events(gateway, "canary_rolled_back"):
        response = requests.post(gateway.url("/v1/chat/completions"), json=CHAT, timeout=30)
        assert response.status_code == 200, response.text
        sent += 1
        assert sent < 400, "the canary was never rolled back"
    return sent


def no_canary_traffic(gateway, fresh: FakeOpenAI) -> None:
    fresh.reset_stats()
    for _ in range(40):
        response = requests.post(gateway.url("/v1/chat/completions"), json=CHAT, timeout=30)
        assert response.status_code == 200
        assert response.headers["x-gateway-backend"] == "stable"
    assert fresh.stats.total == 0


def test_a_failing_canary_is_rolled_back_in_every_worker_and_in_the_file(gateway_server, fakes) -> None:
    stable, fresh = fakes
    text = config(stable, fresh, write_back=True)
    gateway = gateway_server(text, workers=2)
    until_rolled_back(gateway, fresh)
    wait_until(lambda: gateway.config_path.read_text() != text, timeout=10)
    wait_until(lambda: rolled_back_everywhere(gateway), timeout=10)

    after = gateway.config_path.read_text()
    changed = [
        line
        for line in difflib.unified_diff(text.splitlines(), after.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert changed[0] == "-" + CANARY
    assert changed[2] == "+" + CANARY.replace("weight: 50", "weight: 0")
    comment = changed[1]
    assert comment.startswith("+    # canary rolled back by the gateway at ") and "(was weight 50)" in comment
    assert "error rate" in comment and "allowed: 5.0% more" in comment
    assert len(changed) == 3  # the weight line and its comment, nothing else

    [decided, *_] = events(gateway, "canary_rolled_back")
    assert decided["model"] == "chat" and decided["rule"] == "error_rate"
    assert decided["canary"]["requests"] >= 10 and decided["canary"]["error_rate"] > 0.05
    assert decided["stable"]["errors"] == 0
    wait_until(lambda: events(gateway, "canary_rollback_written"), timeout=10)
    no_canary_traffic(gateway, fresh)


def test_read_only_keeps_the_file_and_offers_the_patch(gateway_server, fakes) -> None:
    stable, fresh = fakes
    text = config(stable, fresh, write_back=False)
    gateway = gateway_server(text, workers=2)
    until_rolled_back(gateway, fresh)
    wait_until(lambda: rolled_back_everywhere(gateway), timeout=10)
    wait_until(lambda: events(gateway, "canary_rollback_not_written"), timeout=10)
    no_canary_traffic(gateway, fresh)
    assert gateway.config_path.read_text() == text

    def patch_offered() -> bool:
        body = gateway.admin("GET", "/admin/api/routing").json()
        return bool(body["rollbacks"]) and body["rollbacks"][0]["patch"] is not None

    # Either worker answers (a new connection each time): both come to know the decider's patch.
    wait_until(lambda: all(patch_offered() for _ in range(10)), timeout=10)
    body = gateway.admin("GET", "/admin/api/routing").json()
    [rollback] = body["rollbacks"]
    assert rollback["written"] is False and rollback["rule"] == "error_rate"
    patch = rollback["patch"]
    assert "-" + CANARY in patch.splitlines()
    assert "+" + CANARY.replace("weight: 50", "weight: 0") in patch.splitlines()
    [model] = body["models"]
    assert model["canary"]["weight"] == 50 and model["canary"]["effective_weight"] == 0
    assert model["canary"]["rolled_back"]["rule"] == "error_rate"
    assert model["steps"] == [{"backend": "stable", "model": "chat", "enabled": True, "circuit": "closed"}]


def test_the_record_and_the_routing_api_say_what_the_canary_did(tmp_path, fakes) -> None:
    """One worker, in this process: the canary's share is tried first (failing over to the chain when
    it fails), the audit record's failover path marks the canary attempt, and `/admin/api/routing`
    counts both sides of the window."""
    stable, fresh = fakes
    database = tmp_path / "audit.sqlite3"
    text = config(stable, fresh, write_back=True).replace("min_requests: 10", "min_requests: 1000")
    text += f'audit: {{database_url: "sqlite://{database}", flush_interval_ms: 20}}\n'
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    with gateway_in_thread(path, watch=False) as running:
        served = [
            requests.post(running.url("/v1/chat/completions"), json=CHAT, timeout=30).headers[
                "x-gateway-backend"
            ]
            for _ in range(10)
        ]
        # Weight 50: every second request tries the canary first; its fifth attempt fails (the fake
        # fails one in five) and fails over to stable.
        assert served == ["stable", "fresh"] * 4 + ["stable", "stable"]
        token = (tmp_path / TOKEN_FILE).read_text().strip()
        body = requests.get(
            running.url("/admin/api/routing"), headers={"authorization": f"Bearer {token}"}, timeout=10
        ).json()

    [model] = body["models"]
    window = model["canary"]["window"]
    assert window["canary"]["requests"] == 5 and window["canary"]["errors"] == 1
    assert window["stable"]["requests"] == 5 + 1 and window["stable"]["errors"] == 0
    assert model["canary"]["effective_weight"] == 50 and model["canary"]["rolled_back"] is None

    def paths() -> list[list[dict]]:
        with contextlib.closing(sqlite3.connect(database)) as db:
            try:
                rows = db.execute("SELECT failover_path FROM audit_records ORDER BY id").fetchall()
            except sqlite3.OperationalError:  # the gateway is still creating the schema
                return []
            return [json.loads(path) for (path,) in rows]

    wait_until(lambda: len(paths()) == 10)
    canary_paths = [p for p in paths() if p[0]["backend"] == "fresh"]
    assert len(canary_paths) == 5
    failed = [p for p in canary_paths if p[0]["outcome"] != "ok"]
    assert [[(s["backend"], s["outcome"]) for s in p] for p in failed] == [
        [("fresh", "http_5xx"), ("stable", "ok")]
    ]
    first = failed[0][0]
    assert first["strategy"] == "canary" and first["reason"] == "canary" and "group" not in first
