"""The admin config API over HTTP: who may use it, and write-back of timeouts into gateway.yaml."""

from __future__ import annotations

import pytest
import requests

from gateway.config.load import config_version

ADMIN, CLIENT = "admin-key-for-tests", "client-key-for-tests"
ENV = {"GW_ADMIN_KEY": ADMIN, "GW_CLIENT_KEY": CLIENT, "OPENAI_API_KEY": "sk-never-written-back"}

CONFIG = """\
# Team gateway: comments must survive the settings page.
auth:
  client_keys:
    - name: app          # the product
      key: ${GW_CLIENT_KEY}
  admin_keys:
    - name: ops
      key: ${GW_ADMIN_KEY}

backends:
  openai:
    type: openai
    api_key: ${OPENAI_API_KEY}   # injected by the orchestrator
models:
  chat:
    chain: [{backend: openai, model: gpt-4o}]

timeouts:
  chat:
    total: 900      # 15 minutes
  embeddings:
    total: 120

admin:
  write_back: WRITE_BACK   # GitOps switch
reload:
  watch: false
"""


def admin(key: str = ADMIN) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture
def gateway(gateway_server):
    return gateway_server(CONFIG.replace("WRITE_BACK", "true"), env=ENV, ready_path="/health-not-yet")


def assert_problem(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert {"type", "title", "status", "detail", "instance", "request_id"} <= body.keys()
    assert body["status"] == status
    assert body["request_id"] == response.headers["x-request-id"]
    return body


ENDPOINTS = [
    ("GET", "/admin/api/config"),
    ("GET", "/admin/api/config/file"),
    ("GET", "/admin/api/config/timeouts"),
    ("POST", "/admin/api/config/reload"),
    ("PATCH", "/admin/api/config/timeouts"),
    ("GET", "/admin/api/config/tree"),
    ("PATCH", "/admin/api/config"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_admin_endpoints_refuse_anonymous_and_client_keys(gateway, method: str, path: str) -> None:
    anonymous = requests.request(method, gateway.url(path), timeout=5)
    assert_problem(anonymous, 401)
    wrong = requests.request(method, gateway.url(path), headers=admin("not-a-key"), timeout=5)
    assert_problem(wrong, 401)
    client = requests.request(method, gateway.url(path), headers={"x-api-key": CLIENT}, timeout=5)
    assert "client keys cannot" in assert_problem(client, 403)["detail"]


def test_cross_origin_state_changes_are_refused(gateway) -> None:
    headers = {**admin(), "origin": "http://evil.example"}
    assert_problem(requests.post(gateway.url("/admin/api/config/reload"), headers=headers, timeout=5), 403)
    same = {**admin(), "origin": gateway.base_url}
    assert requests.post(gateway.url("/admin/api/config/reload"), headers=same, timeout=5).status_code == 200


def test_admin_key_cannot_call_the_model_api(gateway) -> None:
    assert_problem(requests.get(gateway.url("/v1/models"), headers=admin(), timeout=5), 403)
    ok = requests.get(gateway.url("/v1/models"), headers={"x-api-key": CLIENT}, timeout=5)
    assert ok.status_code == 200


def read_timeouts(gateway) -> tuple[str, dict]:
    response = requests.get(gateway.url("/admin/api/config/timeouts"), headers=admin(), timeout=5)
    assert response.status_code == 200
    return response.headers["etag"], response.json()["timeouts"]


def test_timeout_edit_writes_the_file_and_applies_it(gateway) -> None:
    etag, timeouts = read_timeouts(gateway)
    assert timeouts["chat"]["total"] == 900
    before = gateway.config_path.read_text()
    response = requests.patch(
        gateway.url("/admin/api/config/timeouts"),
        json={"chat": {"total": 600, "first_byte": 45}},
        headers={**admin(), "if-match": etag},
        timeout=5,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    after = gateway.config_path.read_text()
    assert after == before.replace(
        "total: 900      # 15 minutes", "total: 600      # 15 minutes\n    first_byte: 45"
    )
    assert "${OPENAI_API_KEY}" in after and "sk-never" not in after
    assert body["reload"]["outcome"] == "applied"
    assert body["version"] == config_version(after.encode())
    assert body["timeouts"]["chat"] == {"total": 600, "connect": 10, "first_byte": 45}
    assert "+    total: 600      # 15 minutes" in body["diff"]
    assert read_timeouts(gateway)[1]["chat"]["total"] == 600


def test_stale_edit_gets_409_with_the_current_version(gateway) -> None:
    etag, _ = read_timeouts(gateway)
    gateway.config_path.write_text(gateway.config_path.read_text().replace("total: 120", "total: 121"))
    before = gateway.config_path.read_bytes()
    response = requests.patch(
        gateway.url("/admin/api/config/timeouts"),
        json={"chat": {"total": 60}},
        headers={**admin(), "if-match": etag},
        timeout=5,
    )
    body = assert_problem(response, 409)
    assert body["current_version"] == config_version(before)
    assert response.headers["etag"] == f'"{config_version(before)}"'
    assert gateway.config_path.read_bytes() == before


def test_edit_that_breaks_the_schema_is_refused(gateway) -> None:
    etag, _ = read_timeouts(gateway)
    before = gateway.config_path.read_bytes()
    response = requests.patch(
        gateway.url("/admin/api/config/timeouts"),
        json={"chat": {"total": 100000}},
        headers={**admin(), "if-match": etag},
        timeout=5,
    )
    body = assert_problem(response, 422)
    assert body["errors"][0]["path"] == "timeouts.chat.total"
    assert "at most 86400" in body["errors"][0]["message"]
    assert gateway.config_path.read_bytes() == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"chat": {"total": -1}}, "chat.total"),
        ({"chat": {"total": "600"}}, "chat.total"),
        ({"chat": {"totl": 5}}, "chat.totl"),
        ({"images": {"total": 5}}, "images"),
    ],
)
def test_malformed_edits_are_400_naming_the_field(gateway, body: dict, field: str) -> None:
    etag, _ = read_timeouts(gateway)
    response = requests.patch(
        gateway.url("/admin/api/config/timeouts"), json=body, headers={**admin(), "if-match": etag}, timeout=5
    )
    assert assert_problem(response, 400)["field"] == field


def test_edit_without_if_match_is_428(gateway) -> None:
    response = requests.patch(
        gateway.url("/admin/api/config/timeouts"), json={"chat": {"total": 5}}, headers=admin(), timeout=5
    )
    assert_problem(response, 428)


def test_write_back_off_returns_the_patch_and_leaves_the_file(gateway_server) -> None:
    gateway = gateway_server(CONFIG.replace("WRITE_BACK", "false"), env=ENV, ready_path="/health-not-yet")
    etag, _ = read_timeouts(gateway)
    before = gateway.config_path.read_bytes()
    response = requests.patch(
        gateway.url("/admin/api/config/timeouts"),
        json={"chat": {"total": 300}},
        headers={**admin(), "if-match": etag},
        timeout=5,
    )
    body = assert_problem(response, 409)
    assert "+    total: 300      # 15 minutes" in body["patch"]
    assert gateway.config_path.read_bytes() == before  # nothing written: nothing for a reload to apply
    assert read_timeouts(gateway)[1]["chat"]["total"] == 900


def test_config_file_endpoint_returns_the_bytes_and_version(gateway) -> None:
    response = requests.get(gateway.url("/admin/api/config/file"), headers=admin(), timeout=5)
    assert response.content == gateway.config_path.read_bytes()
    assert response.headers["etag"] == f'"{config_version(response.content)}"'
