"""The admin JSON API's handlers (`admin/api.py`) in this process through Quart's test client: who may
call them, the config status and its ETag, the backends list, reload (applied, and a broken file
refused with the old config still serving), the cache endpoints' checks, and the timeout edit's
preconditions (JSON, If-Match, a fresh version, valid fields) and write-back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.app import create_app

ADMIN_KEY, CLIENT_KEY = "admin-key-api-unit", "client-key-api-unit"
CONFIG = """\
backends:
  up: {type: openai_compatible, base_url: "http://127.0.0.1:9/v1", api_key: "${UP_KEY:-}"}
models:
  m: {chain: [{backend: up}], aliases: [mm]}
auth:
  client_keys: [{name: app, key: "${GW_CLIENT_KEY}"}]
  admin_keys: [{name: ops, key: "${GW_ADMIN_KEY}"}]
audit:
  enabled: false
admin:
  write_back: true
reload:
  watch: false
"""
ENV = {"GW_ADMIN_KEY": ADMIN_KEY, "GW_CLIENT_KEY": CLIENT_KEY}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


class Admin:
    def __init__(self, client: Any, path: Path) -> None:
        self.client = client
        self.path = path

    async def get(self, route: str, **headers: str) -> Any:
        return await self.client.get(route, headers={**ADMIN, **headers})

    async def post(self, route: str, **kwargs: Any) -> Any:
        return await self.client.post(route, headers={**ADMIN, **kwargs.pop("headers", {})}, **kwargs)

    async def patch(self, route: str, **kwargs: Any) -> Any:
        return await self.client.patch(route, headers={**ADMIN, **kwargs.pop("headers", {})}, **kwargs)


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG)
    app = create_app(path, env=ENV, watch=False).fallback
    async with app.test_app() as running:
        yield Admin(running.test_client(), path)


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"authorization": "Bearer wrong"}, 401), ({"authorization": f"Bearer {CLIENT_KEY}"}, 403)],
)
@pytest.mark.parametrize("route", ["/admin/api/config", "/admin/api/backends", "/admin/api/config/timeouts"])
async def test_only_admins_read(admin: Admin, route: str, headers: dict[str, str], status: int) -> None:
    answer = await admin.client.get(route, headers=headers)
    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/problem+json"
    assert (await answer.get_json())["request_id"]


async def test_config_status_names_the_version_in_its_etag(admin: Admin) -> None:
    answer = await admin.get("/admin/api/config")
    body = await answer.get_json()
    assert answer.status_code == 200
    assert answer.headers["etag"] == f'"{body["version"]}"'
    assert body["path"] == str(admin.path.absolute())
    assert body["write_back"] is True
    assert body["last_error"] is None
    assert [m["name"] for m in body["models"]] == ["m"]
    assert body["models"][0]["aliases"] == ["mm"]
    assert body["models"][0]["chain"][0]["backend"] == "up"
    assert body["backends"][0]["name"] == "up"
    assert set(body["timeouts"]) == {"chat", "completions", "embeddings"}


async def test_backends_say_their_circuit_and_whether_a_key_is_set(admin: Admin) -> None:
    body = await (await admin.get("/admin/api/backends")).get_json()
    [up] = body["backends"]
    assert up["circuit"] == {"state": "closed", "consecutive_failures": 0, "retry_in_seconds": 0.0}
    assert up["api_key_set"] is False
    assert "concurrency" not in up


async def test_reload_applies_a_changed_file(admin: Admin) -> None:
    before = (await (await admin.get("/admin/api/config")).get_json())["version"]
    admin.path.write_text(CONFIG.replace("aliases: [mm]", "aliases: [mm, mmm]"))
    answer = await admin.post("/admin/api/config/reload")
    assert answer.status_code == 200
    assert (await answer.get_json())["outcome"] == "applied"
    status = await (await admin.get("/admin/api/config")).get_json()
    assert status["version"] != before
    assert status["models"][0]["aliases"] == ["mm", "mmm"]


async def test_reload_of_a_broken_file_is_refused_and_changes_nothing(admin: Admin) -> None:
    before = await (await admin.get("/admin/api/config")).get_json()
    admin.path.write_text(CONFIG.replace("chain: [{backend: up}]", "chain: [{backend: nowhere}]"))
    answer = await admin.post("/admin/api/config/reload")
    assert answer.status_code == 422
    assert "nowhere" in (await answer.get_json())["detail"]
    after = await (await admin.get("/admin/api/config")).get_json()
    assert after["version"] == before["version"]
    assert after["last_error"] is not None


async def test_a_cross_site_post_is_refused(admin: Admin) -> None:
    answer = await admin.post("/admin/api/config/reload", headers={"origin": "https://evil.example"})
    assert answer.status_code == 403


async def test_the_cache_endpoints_check_their_input(admin: Admin) -> None:
    status = await admin.get("/admin/api/cache")
    assert status.status_code == 200
    not_object = await admin.post("/admin/api/cache/clear", json=[1])
    assert not_object.status_code == 400
    unknown = await admin.post("/admin/api/cache/clear", json={"model": "nope"})
    assert unknown.status_code == 422
    assert "no model 'nope' in the config" in (await unknown.get_json())["detail"]


async def test_timeouts_read_with_their_bounds(admin: Admin) -> None:
    answer = await admin.get("/admin/api/config/timeouts")
    body = await answer.get_json()
    assert answer.headers["etag"] == f'"{body["version"]}"'
    assert body["units"] == "seconds"
    assert set(body["fields"]) == {"total", "connect", "first_byte"}
    assert body["timeouts"]["chat"]["total"] > 0


async def etag(admin: Admin) -> str:
    return (await admin.get("/admin/api/config/timeouts")).headers["etag"]


async def test_a_timeout_edit_needs_json_and_if_match(admin: Admin) -> None:
    not_json = await admin.patch(
        "/admin/api/config/timeouts", data="chat", headers={"content-type": "text/plain"}
    )
    assert not_json.status_code == 415
    no_match = await admin.patch("/admin/api/config/timeouts", json={"chat": {"total": 100}})
    assert no_match.status_code == 428
    assert "If-Match" in (await no_match.get_json())["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"chats": {"total": 1}}, "chats"),
        ({"chat": {}}, "chat"),
        ({"chat": 5}, "chat"),
        ({"chat": {"totl": 1}}, "chat.totl"),
        ({"chat": {"total": 0}}, "chat.total"),
        ({"chat": {"total": -1}}, "chat.total"),
        ({"chat": {"total": True}}, "chat.total"),
        ({"chat": {"total": "60"}}, "chat.total"),
    ],
)
async def test_a_timeout_edit_names_the_bad_field(admin: Admin, body: dict[str, Any], field: str) -> None:
    answer = await admin.patch(
        "/admin/api/config/timeouts", json=body, headers={"if-match": await etag(admin)}
    )
    assert answer.status_code == 400
    assert (await answer.get_json())["field"] == field
    assert admin.path.read_text() == CONFIG


@pytest.mark.parametrize("body", [{}, [1]])
async def test_a_timeout_edit_must_be_a_non_empty_object(admin: Admin, body: Any) -> None:
    answer = await admin.patch(
        "/admin/api/config/timeouts", json=body, headers={"if-match": await etag(admin)}
    )
    assert answer.status_code == 400


async def test_a_stale_timeout_edit_is_409_with_the_current_etag(admin: Admin) -> None:
    answer = await admin.patch(
        "/admin/api/config/timeouts", json={"chat": {"total": 100}}, headers={"if-match": '"stale"'}
    )
    assert answer.status_code == 409
    assert answer.headers["etag"] == await etag(admin)
    assert admin.path.read_text() == CONFIG


async def test_a_timeout_edit_is_written_back_and_served(admin: Admin) -> None:
    tag = await etag(admin)
    answer = await admin.patch(
        "/admin/api/config/timeouts", json={"chat": {"total": 123}}, headers={"if-match": f"W/{tag}"}
    )
    body = await answer.get_json()
    assert answer.status_code == 200, body
    assert body["timeouts"]["chat"]["total"] == 123
    assert answer.headers["etag"] == f'"{body["version"]}"' != tag
    assert "123" in admin.path.read_text()
    assert (await (await admin.get("/admin/api/config/timeouts")).get_json())["timeouts"]["chat"][
        "total"
    ] == 123
