"""The settings API's edit transaction against the real server: concurrent edits across two worker
processes lose no update, and an edit that the reload would reject is refused before any write."""

from __future__ import annotations

import threading
from collections import Counter

import requests
import yaml

from gateway.config.load import config_version
from tests.conftest import wait_until, wait_watching, writers_lock_held

ADMIN = "admin-key-for-edit-tests"
ENV = {"GW_ADMIN_KEY": ADMIN}
HEADERS = {"authorization": f"Bearer {ADMIN}"}

CONFIG = """\
# Edited concurrently by two settings pages.
auth:
  admin_keys:
    - name: ops
      key: ${GW_ADMIN_KEY}
backends:
  up: {type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}   # never called
models:
  chat: {chain: [{backend: up}]}
timeouts:
  chat:
    total: 900   # 15 minutes
admin:
  write_back: true
reload:
  debounce_ms: 20
"""

#: Schema-valid, but its prepare fails: a local model loaded at startup from a path with no model.
UNSTARTABLE_BACKEND = """\
  local:
    type: mlx
    path: no-model-here
    load: startup
"""


def file_etag(gateway, session: requests.Session) -> str:
    response = session.get(gateway.url("/admin/api/config/file"), headers=HEADERS, timeout=10)
    assert response.status_code == 200, response.text
    return response.headers["etag"]


def status_of_each_worker(gateway, workers: int) -> dict[int, dict]:
    """`GET /admin/api/config` from every worker (new connections spread over them)."""
    seen: dict[int, dict] = {}

    def all_answered() -> bool:
        response = requests.get(
            gateway.url("/admin/api/config"), headers={**HEADERS, "connection": "close"}, timeout=10
        )
        body = response.json()
        seen[body["worker_pid"]] = body
        return len(seen) == workers

    wait_until(all_answered, timeout=20)
    return seen


def test_two_workers_same_if_match_one_wins_every_round(gateway_server) -> None:
    gateway = gateway_server(CONFIG, env=ENV, workers=2, ready_path="/health-not-yet")
    status_of_each_worker(gateway, 2)  # both workers are up before the rounds start
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    with requests.Session() as reader:
        for round_ in range(50):
            etag = file_etag(gateway, reader)
            values = (100 + round_, 200 + round_)
            start = threading.Barrier(2)
            answers: dict[int, requests.Response] = {}

            def patch(
                value: int,
                etag: str = etag,
                start: threading.Barrier = start,
                answers: dict[int, requests.Response] = answers,
            ) -> None:
                start.wait()
                # A new connection each time, so the two land on either worker.
                answers[value] = requests.patch(
                    gateway.url("/admin/api/config/timeouts"),
                    json={"chat": {"total": value}},
                    headers={**HEADERS, "if-match": etag, "connection": "close"},
                    timeout=30,
                )

            threads = [threading.Thread(target=patch, args=(value,)) for value in values]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            codes = sorted(answer.status_code for answer in answers.values())
            statuses.update(codes)
            if codes != [200, 409]:
                failures.append(f"round {round_}: {codes} {[a.text[:300] for a in answers.values()]}")
                continue
            (winner,) = [value for value, answer in answers.items() if answer.status_code == 200]
            (loser,) = [answer for answer in answers.values() if answer.status_code == 409]
            raw = gateway.config_path.read_bytes()
            won = answers[winner].json()
            if yaml.safe_load(raw)["timeouts"]["chat"]["total"] != winner:
                failures.append(f"round {round_}: the file does not hold the winner's value {winner}")
            if won["version"] != config_version(raw) or won["previous_version"] != etag.strip('"'):
                failures.append(f"round {round_}: versions {won['previous_version']} -> {won['version']}")
            if won["reload"]["outcome"] != "applied" or won["timeouts"]["chat"]["total"] != winner:
                failures.append(f"round {round_}: the winner was not applied: {won['reload']}")
            if loser.json()["current_version"] != config_version(raw):
                failures.append(f"round {round_}: the loser was told {loser.json()['current_version']}")
    assert not failures, "\n".join(failures[:10])
    assert statuses == {200: 50, 409: 50}
    # Each worker ends on the last version, and the 50 edits were made by both of them.
    final = config_version(gateway.config_path.read_bytes())
    wait_until(lambda: {s["version"] for s in status_of_each_worker(gateway, 2).values()} == {final}, 10)
    applied_by = {
        pid: sum(1 for e in status["history"] if e["source"] == "api" and e["outcome"] == "applied")
        for pid, status in status_of_each_worker(gateway, 2).items()
    }
    assert sum(applied_by.values()) == 50, applied_by
    assert all(applied_by.values()), f"every edit was made by one worker: {applied_by}"


def test_an_edit_the_reload_would_reject_is_refused_and_the_file_stays(gateway_server) -> None:
    gateway = gateway_server(CONFIG, env=ENV, ready_path="/health-not-yet")
    live_version = config_version(gateway.config_path.read_bytes())
    wait_watching(gateway, headers=HEADERS)
    # Someone saves a file that validates but cannot start; the watcher rejects it.
    broken = CONFIG.replace("models:", UNSTARTABLE_BACKEND + "models:")
    gateway.config_path.write_text(broken)

    def rejected() -> bool:
        status = requests.get(gateway.url("/admin/api/config"), headers=HEADERS, timeout=5).json()
        return status["last_error"] is not None

    wait_until(rejected, timeout=10)
    with requests.Session() as session:
        etag = file_etag(gateway, session)
    assert etag == f'"{config_version(broken.encode())}"'
    before = gateway.config_path.read_bytes()
    response = requests.patch(
        gateway.url("/admin/api/config/timeouts"),
        json={"chat": {"total": 600}},
        headers={**HEADERS, "if-match": etag},
        timeout=10,
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == "/problems/config-rejected"
    (error,) = body["errors"]
    assert error["path"] == "backends.local" and (error["line"], error["column"]) == (8, 3)
    assert "backend failed to start: no model at" in error["message"]
    assert "gateway.yaml was not changed" in body["detail"] and live_version in body["detail"]
    assert gateway.config_path.read_bytes() == before
    status = requests.get(gateway.url("/admin/api/config"), headers=HEADERS, timeout=5).json()
    assert status["version"] == live_version and status["timeouts"]["chat"]["total"] == 900
    # The refused edit is not a reload: the last error is still the file's own rejection.
    assert status["last_error"]["source"] == "file"
    assert [(e["source"], e["outcome"]) for e in status["history"]] == [
        ("file", "rejected"),
        ("startup", "applied"),
    ]


def test_an_edit_that_cannot_get_the_lock_is_503_and_changes_nothing(gateway_server) -> None:
    gateway = gateway_server(CONFIG, env=ENV, ready_path="/health-not-yet")
    with requests.Session() as session:
        etag = file_etag(gateway, session)
    before = gateway.config_path.read_bytes()
    patch = {"json": {"chat": {"total": 600}}, "headers": {**HEADERS, "if-match": etag}, "timeout": 30}
    with writers_lock_held(gateway.config_path) as release:  # another worker stuck mid-edit
        busy = requests.patch(gateway.url("/admin/api/config/timeouts"), **patch)
        release()
    assert busy.status_code == 503, busy.text
    assert busy.headers["content-type"] == "application/problem+json"
    assert busy.headers["retry-after"] == "1"
    body = busy.json()
    assert body["type"] == "/problems/config-busy"
    assert "another change of the config is in progress" in body["detail"]
    assert gateway.config_path.read_bytes() == before
    # The lock is free again: the same edit goes through.
    done = requests.patch(gateway.url("/admin/api/config/timeouts"), **patch)
    assert done.status_code == 200, done.text
    assert done.json()["timeouts"]["chat"]["total"] == 600


def test_a_tiny_timeout_is_written_as_a_float_the_reload_reads(gateway_server) -> None:
    """`1e-07` is a string to YAML 1.1: the settings API must write a form the loader reads back."""
    gateway = gateway_server(CONFIG, env=ENV)
    with requests.Session() as session:
        response = session.patch(
            gateway.url("/admin/api/config/timeouts"),
            json={"chat": {"first_byte": 1e-07}},
            headers={**HEADERS, "if-match": file_etag(gateway, session)},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        assert response.json()["timeouts"]["chat"]["first_byte"] == 1e-07
        assert "first_byte: 1.0e-07" in gateway.config_path.read_text()
        assert yaml.safe_load(gateway.config_path.read_text())["timeouts"]["chat"]["first_byte"] == 1e-07
        refused = session.patch(
            gateway.url("/admin/api/config/timeouts"),
            data='{"chat": {"total": Infinity}}',
            headers={**HEADERS, "if-match": file_etag(gateway, session), "content-type": "application/json"},
            timeout=10,
        )
        assert (
            refused.status_code in (400, 422)
            and refused.headers["content-type"] == "application/problem+json"
        )
