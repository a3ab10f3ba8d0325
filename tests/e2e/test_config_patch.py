"""The generic config edit API over HTTP: `GET /admin/api/config/tree` and JSON Patch edits of
gateway.yaml with `PATCH /admin/api/config` (If-Match, dry run, refusals, write_back off + git apply)."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import requests
import yaml

from gateway.config.load import config_version
from tests.conftest import wait_until

ADMIN = "admin-key-for-patch-tests"
SECRET = "sk-never-shown-in-the-tree"
ENV = {"GW_ADMIN_KEY": ADMIN, "OPENAI_API_KEY": SECRET}
PATCH_TYPE = "application/json-patch+json"

CONFIG = """\
# Team gateway: comments must survive the settings page.
auth:
  admin_keys:
    - name: ops
      key: ${GW_ADMIN_KEY}
backends:
  openai:
    type: openai
    api_key: ${OPENAI_API_KEY}   # injected by the orchestrator
  up: {type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}   # never called
models:
  chat:
    chain:
      - backend: up
        model: small     # cheap first
timeouts:
  chat:
    total: 900      # 15 minutes
admin:
  write_back: WRITE_BACK   # GitOps switch
reload:
  watch: false
"""


def admin(**extra: str) -> dict[str, str]:
    return {"authorization": f"Bearer {ADMIN}", **extra}


@pytest.fixture
def gateway(gateway_server):
    return gateway_server(CONFIG.replace("WRITE_BACK", "true"), env=ENV, ready_path="/health-not-yet")


@pytest.fixture(scope="module")
def unchanged(gateway_server_module):
    """One gateway for every rejected patch: each must leave it (file and version) as it found it."""
    return gateway_server_module(CONFIG.replace("WRITE_BACK", "true"), env=ENV, ready_path="/health-not-yet")


def tree(gateway) -> requests.Response:
    response = requests.get(gateway.url("/admin/api/config/tree"), headers=admin(), timeout=10)
    assert response.status_code == 200, response.text
    return response


def patch(gateway, ops, etag: str | None, *, query: str = "", content_type: str = PATCH_TYPE):
    headers = admin(**{"content-type": content_type})
    if etag is not None:
        headers["if-match"] = etag
    url = gateway.url("/admin/api/config" + query)
    return requests.patch(url, data=json.dumps(ops), headers=headers, timeout=30)


def problem(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return response.json()


def test_the_tree_shows_each_source_and_never_an_environment_value(gateway) -> None:
    response = tree(gateway)
    body = response.json()
    assert response.headers["etag"] == f'"{config_version(gateway.config_path.read_bytes())}"'
    assert SECRET not in response.text and ADMIN not in response.text
    total = body["tree"]["entries"]["timeouts"]["entries"]["chat"]["entries"]["total"]
    assert total == {
        "pointer": "/timeouts/chat/total",
        "source": {"kind": "file", "line": 18, "column": 12},
        "value": 900,
    }
    key = body["tree"]["entries"]["backends"]["entries"]["openai"]["entries"]["api_key"]
    assert key["source"]["kind"] == "env" and key["source"]["variables"] == ["OPENAI_API_KEY"]
    assert key["reference"] == "${OPENAI_API_KEY}" and "value" not in key
    port = body["tree"]["entries"]["server"]["entries"]["port"]
    assert port == {"pointer": "/server/port", "source": {"kind": "default"}, "value": 8080}


def test_a_literal_secret_saved_in_a_refused_file_is_not_shown(gateway) -> None:
    literal = "sk-pasted-by-mistake-0123456789"
    text = gateway.config_path.read_text().replace("${OPENAI_API_KEY}", literal)
    gateway.config_path.write_text(text)  # reload.watch is off: the file is not applied
    response = tree(gateway)
    assert literal not in response.text
    key = response.json()["tree"]["entries"]["backends"]["entries"]["openai"]["entries"]["api_key"]
    assert "redacted" in key and "value" not in key


def test_a_patch_edits_the_file_and_applies_it(gateway) -> None:
    etag = tree(gateway).headers["etag"]
    before = gateway.config_path.read_text()
    ops = [
        {"op": "test", "path": "/timeouts/chat/total", "value": 900},
        {"op": "replace", "path": "/timeouts/chat/total", "value": 600},
        {"op": "add", "path": "/models/chat/chain/-", "value": {"backend": "openai", "model": "gpt-4o"}},
        {"op": "add", "path": "/models/chat/aliases", "value": ["default"]},
    ]
    response = patch(gateway, ops, etag)
    assert response.status_code == 200, response.text
    body = response.json()
    after = gateway.config_path.read_text()
    assert after == before.replace("total: 900      # 15", "total: 600      # 15").replace(
        "        model: small     # cheap first\n",
        "        model: small     # cheap first\n      - backend: openai\n        model: gpt-4o\n"
        "    aliases:\n      - default\n",
    )
    assert body["written"] and body["previous_version"] == etag.strip('"')
    assert body["version"] == config_version(after.encode()) == response.headers["etag"].strip('"')
    assert body["reload"]["outcome"] == "applied" and "+    total: 600" in body["diff"]
    status = requests.get(gateway.url("/admin/api/config"), headers=admin(), timeout=10).json()
    assert status["version"] == body["version"] and status["timeouts"]["chat"]["total"] == 600


def test_a_dry_run_returns_the_diff_and_writes_nothing(gateway) -> None:
    etag = tree(gateway).headers["etag"]
    before = gateway.config_path.read_bytes()
    ops = [{"op": "replace", "path": "/timeouts/chat/total", "value": 300}]
    body = patch(gateway, ops, etag, query="?dry_run=true").json()
    assert body["dry_run"] is True and body["written"] is False
    assert "-    total: 900      # 15 minutes" in body["diff"] and "+    total: 300" in body["diff"]
    assert gateway.config_path.read_bytes() == before
    status = requests.get(gateway.url("/admin/api/config"), headers=admin(), timeout=10).json()
    assert status["version"] == etag.strip('"')


@pytest.mark.parametrize(
    ("ops", "status", "slug", "op_index"),
    [
        (
            [
                {"op": "replace", "path": "/timeouts/chat/total", "value": 1},
                {"op": "test", "path": "/timeouts/chat/total", "value": 900},
            ],
            409,
            "patch-test-failed",
            1,
        ),
        (
            [{"op": "replace", "path": "/backends/openai/api_key", "value": "sk-x"}],
            422,
            "patch-not-applicable",
            0,
        ),
        ([{"op": "remove", "path": "/nothing"}], 422, "patch-not-applicable", 0),
        ([{"op": "add", "path": "no-slash", "value": 1}], 400, "invalid-patch", 0),
        ([{"op": "replace", "path": "/timeouts/chat/total", "value": -5}], 422, "config-rejected", None),
    ],
)
def test_a_rejected_patch_changes_nothing(unchanged, ops, status: int, slug: str, op_index) -> None:
    gateway = unchanged
    etag = tree(gateway).headers["etag"]
    before = gateway.config_path.read_bytes()
    body = problem(patch(gateway, ops, etag), status)
    assert body["type"] == f"/problems/{slug}"
    if op_index is not None:
        assert body["op_index"] == op_index and body["path"] == ops[op_index]["path"]
    if slug == "patch-not-applicable" and "api_key" in ops[0]["path"]:
        assert "${OPENAI_API_KEY}" in body["detail"] and SECRET not in body["detail"]
    assert gateway.config_path.read_bytes() == before
    status_body = requests.get(gateway.url("/admin/api/config"), headers=admin(), timeout=10).json()
    assert status_body["version"] == etag.strip('"')


def test_content_type_and_if_match_are_required(gateway) -> None:
    etag = tree(gateway).headers["etag"]
    ops = [{"op": "replace", "path": "/timeouts/chat/total", "value": 600}]
    assert problem(patch(gateway, ops, etag, content_type="application/json"), 415)["type"].endswith(
        "unsupported-media-type"
    )
    problem(patch(gateway, ops, None), 428)
    stale = problem(patch(gateway, ops, '"0000000000000000"'), 409)
    assert stale["current_version"] == etag.strip('"')


def test_two_patches_with_the_same_if_match_one_wins(gateway_server) -> None:
    """Two workers, so the two patches of a round may land in either: one wins, the other is told
    the winner's version."""
    gateway = gateway_server(
        CONFIG.replace("WRITE_BACK", "true"), env=ENV, workers=2, ready_path="/health-not-yet"
    )
    pids: set[int] = set()

    def both_workers_answer() -> bool:
        response = requests.get(
            gateway.url("/admin/api/config"), headers=admin(connection="close"), timeout=10
        )
        pids.add(response.json()["worker_pid"])
        return len(pids) == 2

    wait_until(both_workers_answer, timeout=20)
    for round_ in range(5):
        etag = tree(gateway).headers["etag"]
        start = threading.Barrier(2)
        answers: dict[int, requests.Response] = {}

        def send(value: int, etag: str = etag, start=start, answers=answers) -> None:
            start.wait()
            ops = [{"op": "replace", "path": "/timeouts/chat/total", "value": value}]
            headers = admin(**{"content-type": PATCH_TYPE, "if-match": etag, "connection": "close"})
            answers[value] = requests.patch(
                gateway.url("/admin/api/config"), data=json.dumps(ops), headers=headers, timeout=30
            )

        threads = [threading.Thread(target=send, args=(value,)) for value in (100 + round_, 200 + round_)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        codes = sorted(answer.status_code for answer in answers.values())
        assert codes == [200, 409], [a.text for a in answers.values()]
        (winner,) = [value for value, answer in answers.items() if answer.status_code == 200]
        raw = gateway.config_path.read_bytes()
        assert yaml.safe_load(raw)["timeouts"]["chat"]["total"] == winner
        (loser,) = [answer for answer in answers.values() if answer.status_code == 409]
        assert loser.json()["type"] == "/problems/stale-config-version"
        assert loser.json()["current_version"] == config_version(raw) == answers[winner].json()["version"]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_write_back_off_returns_a_patch_git_apply_takes(gateway_server, tmp_path: Path) -> None:
    gateway = gateway_server(CONFIG.replace("WRITE_BACK", "false"), env=ENV, ready_path="/health-not-yet")
    etag = tree(gateway).headers["etag"]
    before = gateway.config_path.read_bytes()
    ops = [
        {"op": "remove", "path": "/models/chat/chain/0/model"},
        {"op": "add", "path": "/backends/up/enabled", "value": True},
        {"op": "move", "from": "/backends/openai", "path": "/backends/primary"},
        {"op": "replace", "path": "/models/chat/chain/0/backend", "value": "primary"},
    ]
    body = problem(patch(gateway, ops, etag), 409)
    assert body["type"] == "/problems/write-back-disabled"
    assert gateway.config_path.read_bytes() == before
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / gateway.config_path.name).write_bytes(before)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / "change.patch").write_text(body["patch"])
    subprocess.run(["git", "apply", "--check", "change.patch"], cwd=repo, check=True)
    subprocess.run(["git", "apply", "change.patch"], cwd=repo, check=True)
    applied = yaml.safe_load((repo / gateway.config_path.name).read_text())
    assert "primary" in applied["backends"] and applied["backends"]["up"]["enabled"] is True
    assert applied["models"]["chat"]["chain"] == [{"backend": "primary"}]


def test_a_cross_origin_patch_is_refused(gateway) -> None:
    etag = tree(gateway).headers["etag"]
    headers = admin(**{"content-type": PATCH_TYPE, "if-match": etag, "origin": "http://evil.example"})
    ops = [{"op": "replace", "path": "/timeouts/chat/total", "value": 600}]
    before = gateway.config_path.read_bytes()
    response = requests.patch(
        gateway.url("/admin/api/config"), data=json.dumps(ops), headers=headers, timeout=10
    )
    problem(response, 403)
    assert gateway.config_path.read_bytes() == before


def test_a_patch_that_changes_nothing_writes_nothing(gateway) -> None:
    etag = tree(gateway).headers["etag"]
    before = gateway.config_path.stat().st_mtime_ns, gateway.config_path.read_bytes()
    ops = [
        {"op": "test", "path": "/timeouts/chat/total", "value": 900},
        {"op": "replace", "path": "/timeouts/chat/total", "value": 900},
    ]
    response = patch(gateway, ops, etag)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["written"] is False and body["diff"] == "" and body["version"] == etag.strip('"')
    assert body["reload"]["outcome"] == "unchanged"
    assert (gateway.config_path.stat().st_mtime_ns, gateway.config_path.read_bytes()) == before
