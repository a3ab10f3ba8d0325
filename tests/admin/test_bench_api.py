"""The backend benchmark API (`/admin/api/backends/<name>/bench`) through the real server over HTTP,
against fake OpenAI upstreams: a run is stored in the audit log and comes back in the history; a
second run is refused while one runs; a cancel ends the run as cancelled with its partial figures;
a busy, disabled or unknown backend is refused; client keys cannot start one; with the audit
database down the run still reports its figures and says they were not stored."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from gateway.testing import Behaviour, FakeAnthropic, FakeOpenAI
from tests.audit.conftest import PG_HOST, PG_PORT, PG_SKIP, pg_execute, postgres_available, run_sync
from tests.conftest import service_missing, wait_until

CLIENT_KEY = "client-key-bench-api"
ENV = {"GW_CLIENT_KEY": CLIENT_KEY}
PROBLEM = "application/problem+json"
#: The shortest series the API takes, so the tests spend little time benchmarking.
QUICK = {"concurrency": [1, 2], "seconds_per_level": 0.5}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.in_thread() as server:
        yield server


@pytest.fixture(autouse=True)
def fresh(fake: FakeOpenAI) -> None:
    fake.behaviour = Behaviour(reply_tokens=8)
    fake.reset_stats()


def config(fake: FakeOpenAI, database: str, *, max_inflight: int = 2) -> str:
    return f"""\
backends:
  up: {{type: openai_compatible, base_url: "{fake.base_url}"}}
  other: {{type: openai_compatible, base_url: "{fake.base_url}"}}
  limited: {{type: openai_compatible, base_url: "{fake.base_url}", max_concurrency: 4}}
  paused: {{type: openai_compatible, base_url: "{fake.base_url}", enabled: false}}
models:
  gpt: {{chain: [{{backend: up, model: gpt-4o-mini}}]}}
  second: {{chain: [{{backend: other, model: gpt-4o}}]}}
  slow: {{chain: [{{backend: limited, model: gpt-4o}}]}}
  disabled: {{chain: [{{backend: paused, model: gpt-4o}}, {{backend: up, model: gpt-4o}}]}}
auth:
  client_keys: [{{name: app, key: "${{GW_CLIENT_KEY}}"}}]
audit:
  database_url: "{database}"
admin:
  benchmark: {{max_inflight: {max_inflight}}}
reload:
  watch: false
"""


@pytest.fixture(scope="module")
def gateway(gateway_server_module, fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory):
    database = tmp_path_factory.mktemp("audit") / "audit.sqlite3"
    return gateway_server_module(config(fake, f"sqlite://{database}", max_inflight=0), env=ENV)


def start(
    gateway, backend: str = "up", body: dict[str, Any] | None = None, **kwargs: Any
) -> requests.Response:
    return gateway.admin(
        "POST", f"/admin/api/backends/{backend}/bench", json=QUICK if body is None else body, **kwargs
    )


def status(gateway, backend: str = "up") -> dict[str, Any]:
    response = gateway.admin("GET", f"/admin/api/backends/{backend}/bench")
    assert response.status_code == 200, response.text
    return response.json()


def ended(gateway, backend: str, run_id: str) -> dict[str, Any]:
    """Wait for the run to end and to be stored (or not: `stored` false); its record as this process
    reports it. An ended run is the latest while it is still being stored (`stored` null)."""

    def done() -> bool:
        latest = status(gateway, backend)["latest"] or {}
        return latest.get("id") == run_id and latest.get("stored") is not None

    wait_until(done, timeout=30, interval=0.1)
    return status(gateway, backend)["latest"]


def cancel(gateway, backend: str, run_id: str) -> requests.Response:
    return gateway.admin("DELETE", f"/admin/api/backends/{backend}/bench/{run_id}", timeout=30)


def test_a_run_is_stored_and_returned_in_the_history(gateway, fake: FakeOpenAI) -> None:
    response = start(gateway, body={**QUICK, "stream": True, "max_tokens": 8})
    assert response.status_code == 202, response.text
    run = response.json()
    assert run["status"] == "running" and run["backend"] == "up" and run["model"] == "gpt-4o-mini"
    assert run["progress"]["levels"] == 2

    latest = ended(gateway, "up", run["id"])
    assert latest["status"] == "done" and latest["stored"] is True and latest["admin"] == "local"
    assert [level["concurrency"] for level in latest["levels"]] == [1, 2]
    for level in latest["levels"]:
        assert level["requests"] >= 1 and level["errors"] == 0 and level["requests_per_s"] > 0
        assert level["latency_ms"]["p50"] <= level["latency_ms"]["p95"]
        assert level["ttft_ms"]["p50"] is not None  # streamed: time to the first event
        assert level["output_tokens_per_s"] > 0  # the usage the stream reported
    assert fake.stats.total >= 2  # the backend itself was called

    version = gateway.admin("GET", "/admin/api/config").json()["version"]
    history = status(gateway, "up")["history"]
    assert history[0]["id"] == run["id"]
    assert history[0]["config_version"] == version and history[0]["backend_type"] == "openai_compatible"
    assert history[0]["levels"] == latest["levels"]
    assert history[0]["parameters"] == {
        "concurrency": [1, 2],
        "seconds_per_level": 0.5,
        "stream": True,
        "max_tokens": 8,
        "model": "gpt-4o-mini",
    }


def test_errors_of_the_backend_are_counted_not_raised(gateway, fake: FakeOpenAI) -> None:
    fake.behaviour = Behaviour(status=500)
    run = start(gateway, body={"concurrency": [1], "seconds_per_level": 0.5, "stream": False}).json()
    latest = ended(gateway, "up", run["id"])
    level = latest["levels"][0]
    assert latest["status"] == "done" and level["errors"] == level["requests"] >= 1
    assert level["error_kinds"] == {"http_5xx": level["errors"]} and level["latency_ms"]["p50"] is None


def test_a_second_run_is_refused_while_one_runs(gateway, fake: FakeOpenAI) -> None:
    fake.behaviour = Behaviour(latency_ms=200)
    first = start(gateway, body={"concurrency": [1], "seconds_per_level": 20}).json()
    try:
        for backend in ("up", "other"):
            refused = start(gateway, backend)
            assert refused.status_code == 409
            assert refused.headers["content-type"].startswith(PROBLEM)
            problem = refused.json()
            assert problem["type"].endswith("/benchmark-running")
            assert problem["run"] == {"id": first["id"], "backend": "up", "admin": "local"}
            assert "local" in problem["detail"] and "'up'" in problem["detail"]
        assert status(gateway, "other")["active"]["id"] == first["id"]
    finally:
        assert cancel(gateway, "up", first["id"]).status_code == 200


def test_cancel_ends_the_run_as_cancelled_and_keeps_partial_figures(gateway, fake: FakeOpenAI) -> None:
    fake.behaviour = Behaviour(latency_ms=50)
    run = start(gateway, body={"concurrency": [1, 2], "seconds_per_level": 20}).json()
    wait_until(
        lambda: (status(gateway)["running"] or {}).get("progress", {}).get("requests", 0) >= 2, timeout=20
    )

    response = cancel(gateway, "up", run["id"])
    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert cancelled["status"] == "cancelled" and cancelled["cancelled_by"] == "local"
    assert cancelled["levels"][0]["partial"] is True and cancelled["levels"][0]["requests"] >= 2
    assert status(gateway)["running"] is None

    wait_until(lambda: status(gateway)["history"][0]["id"] == run["id"], timeout=10)
    stored = status(gateway)["history"][0]
    assert stored["status"] == "cancelled" and stored["levels"] == cancelled["levels"]

    again = cancel(gateway, "up", run["id"])
    assert again.status_code == 409 and again.json()["reason"] == "finished"
    assert cancel(gateway, "up", "no-such-run").status_code == 404


def test_a_busy_backend_is_refused(gateway, fake: FakeOpenAI) -> None:
    """`limited` counts its requests (max_concurrency); max_inflight is 0 here, so one is too many."""
    fake.behaviour = Behaviour(latency_ms=3000)
    body = {"model": "slow", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(
            requests.post, gateway.url("/v1/chat/completions"), json=body, headers=headers, timeout=30
        )

        def in_flight() -> int:
            listing = gateway.admin("GET", "/admin/api/backends").json()["backends"]
            return next(b for b in listing if b["name"] == "limited")["concurrency"]["in_flight"]

        wait_until(lambda: in_flight() == 1, timeout=10)
        refused = start(gateway, "limited")
        assert refused.status_code == 409 and refused.headers["content-type"].startswith(PROBLEM)
        problem = refused.json()
        assert problem["reason"] == "busy" and problem["load"] == 1 and problem["max_inflight"] == 0
        assert "admin.benchmark.max_inflight" in problem["detail"]
        assert pending.result().status_code == 200
    wait_until(lambda: in_flight() == 0, timeout=10)


def test_disabled_unknown_and_bad_requests_are_refused(gateway) -> None:
    disabled = start(gateway, "paused")
    assert disabled.status_code == 409 and disabled.json()["reason"] == "disabled"
    unknown = start(gateway, "nowhere")
    assert unknown.status_code == 404 and unknown.headers["content-type"].startswith(PROBLEM)
    assert gateway.admin("GET", "/admin/api/backends/nowhere/bench").status_code == 404
    for body, field in [
        ({"concurrency": [0]}, "concurrency"),
        ({"concurrency": [1, 2, 3, 4, 5, 6]}, "concurrency"),
        ({"concurrency": [1, 2, 4], "seconds_per_level": 20.5}, "seconds_per_level"),
        ({"concurrency": [1, 2, 4, 8], "seconds_per_level": 20}, "seconds_per_level"),
        ({"max_tokens": 100000}, "max_tokens"),
        ({"stream": "yes"}, "stream"),
        ({"prompt": "mine"}, "prompt"),
    ]:
        refused = start(gateway, body=body)
        assert refused.status_code == 400, body
        assert refused.json()["field"] == field
    assert status(gateway)["running"] is None


def test_client_keys_and_anonymous_callers_are_refused(gateway) -> None:
    url = gateway.url("/admin/api/backends/up/bench")
    as_client = requests.post(url, json=QUICK, headers={"authorization": f"Bearer {CLIENT_KEY}"}, timeout=10)
    assert as_client.status_code == 403 and as_client.headers["content-type"].startswith(PROBLEM)
    assert requests.post(url, json=QUICK, timeout=10).status_code == 401
    assert requests.get(url, timeout=10).status_code == 401
    assert status(gateway)["running"] is None


def test_with_the_audit_database_down_the_run_says_it_was_not_stored(
    gateway_server, fake: FakeOpenAI, tmp_path: Path
) -> None:
    database = tmp_path / "not-there-yet" / "audit.sqlite3"  # its directory does not exist
    down = gateway_server(config(fake, f"sqlite://{database}"), env=ENV)
    run = start(down, body={"concurrency": [1], "seconds_per_level": 0.5}).json()
    latest = ended(down, "up", run["id"])
    assert latest["status"] == "done" and latest["levels"][0]["requests"] >= 1
    assert latest["stored"] is False and "audit database" in latest["store_error"]
    view = status(down)
    assert view["history_error"] and view["history"][0]["id"] == run["id"]


def test_one_run_at_a_time_across_worker_processes(gateway_server, fake: FakeOpenAI, tmp_path: Path) -> None:
    """Two workers: whichever a request reaches, a second start is refused while the first runs, and
    every worker names the run under way; a cancel that reaches the other worker says so (409) and
    is sent again until it reaches the run's."""
    fake.behaviour = Behaviour(latency_ms=50)
    workers = gateway_server(config(fake, f"sqlite://{tmp_path / 'audit.sqlite3'}"), env=ENV, workers=2)
    first = start(workers, body={"concurrency": [1], "seconds_per_level": 20})
    assert first.status_code == 202, first.text
    run_id = first.json()["id"]
    reached: set[bool] = set()  # whether a refusal came from the run's own worker or the other

    def refused_by_both_workers() -> bool:
        refused = start(workers, "other")
        assert refused.status_code == 409 and refused.json()["run"]["id"] == run_id
        reached.add("in worker process" in refused.json()["detail"])
        view = status(workers, "other")
        assert view["active"]["id"] == run_id and view["active"]["backend"] == "up"
        return reached == {True, False}

    wait_until(refused_by_both_workers, timeout=15, interval=0.01)

    def cancelled() -> bool:
        response = cancel(workers, "up", run_id)
        if response.status_code == 409:
            assert response.json()["reason"] == "other-worker"
        return response.status_code == 200

    wait_until(cancelled, timeout=20, interval=0.05)
    wait_until(lambda: bool(status(workers)["history"]), timeout=10)
    assert status(workers)["history"][0]["status"] == "cancelled"
    assert status(workers, "other")["active"] is None
    assert start(workers, "other", body={"concurrency": [1], "seconds_per_level": 0.5}).status_code == 202


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL database for the audit log (skipped when nothing answers at 5432)."""
    if not postgres_available():
        service_missing(PG_SKIP)
    name = f"gateway_test_bench_{secrets.token_hex(4)}"
    run_sync(pg_execute(f'CREATE DATABASE "{name}"'))
    yield f"postgres://postgres@{PG_HOST}:{PG_PORT}/{name}"
    run_sync(pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_on_postgresql_the_run_is_stored_and_returned_in_the_history(
    gateway_server, fake: FakeOpenAI, postgres_url: str
) -> None:
    on_postgres = gateway_server(config(fake, postgres_url), env=ENV)
    run = start(on_postgres, body={"concurrency": [1, 2], "seconds_per_level": 0.5, "stream": False}).json()
    latest = ended(on_postgres, "up", run["id"])
    assert latest["status"] == "done" and latest["stored"] is True
    history = status(on_postgres)["history"]
    assert [entry["id"] for entry in history] == [run["id"]]
    assert history[0]["levels"] == latest["levels"] and history[0]["parameters"]["stream"] is False
    assert history[0]["levels"][0]["ttft_ms"] is None  # not streamed: no first token to time


def test_an_anthropic_backend_is_measured_through_its_own_protocol(gateway_server, tmp_path: Path) -> None:
    """The benchmark's request is the gateway's canonical chat request: a backend that speaks another
    protocol translates it as it does for clients, and its streamed events are timed the same way."""
    with FakeAnthropic.in_thread(Behaviour(reply_tokens=6)) as anthropic:
        claude = gateway_server(
            f"""\
backends:
  claude: {{type: anthropic, base_url: "{anthropic.base_url}", api_key: "${{FAKE_KEY}}"}}
models:
  haiku: {{chain: [{{backend: claude, model: claude-haiku-4-5}}]}}
audit:
  database_url: "sqlite://{tmp_path / "audit.sqlite3"}"
reload:
  watch: false
""",
            env={"FAKE_KEY": "sk-fake-anthropic"},
        )
        run = start(claude, "claude", body={"concurrency": [2], "seconds_per_level": 0.5}).json()
        latest = ended(claude, "claude", run["id"])
        level = latest["levels"][0]
        assert latest["status"] == "done" and latest["model"] == "claude-haiku-4-5"
        assert level["errors"] == 0 and level["requests"] >= 1 and level["ttft_ms"]["p50"] is not None
        assert level["output_tokens_per_s"] > 0  # the usage of the translated stream was read
        assert anthropic.stats.total >= 1
