"""`POST /admin/api/keys/new` in this process (Quart's test client): admins only, never cached, a fresh
key each time whose SHA-256 is the one answered, and refused from another site like every admin POST."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import pytest

from gateway.app import create_app

ADMIN_KEY, CLIENT_KEY = "admin-key-keys-api", "client-key-keys-api"
CONFIG = """\
backends:
  up: {type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
models:
  m: {chain: [{backend: up}]}
auth:
  client_keys: [{name: app, key: "${GW_CLIENT_KEY}"}]
  admin_keys: [{name: ops, key: "${GW_ADMIN_KEY}"}]
audit:
  enabled: false
"""
ENV = {"GW_ADMIN_KEY": ADMIN_KEY, "GW_CLIENT_KEY": CLIENT_KEY}
ROUTE = "/admin/api/keys/new"


@pytest.fixture
def app(tmp_path: Path):
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG)
    return create_app(path, env=ENV, watch=False).fallback


async def test_an_admin_gets_a_new_key_and_its_hash_never_cached(app, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    async with app.test_app() as running:
        client = running.test_client()
        answers = [
            await client.post(ROUTE, headers={"authorization": f"Bearer {ADMIN_KEY}"}) for _ in range(3)
        ]
    bodies = [await answer.get_json() for answer in answers]
    for answer, body in zip(answers, bodies, strict=True):
        assert answer.status_code == 200
        assert answer.headers["cache-control"] == "no-store"
        assert set(body) == {"key", "key_sha256"}
        assert re.fullmatch(r"gw-[A-Za-z0-9_-]{43}", body["key"])  # what `gateway key new` makes
        assert body["key_sha256"] == hashlib.sha256(body["key"].encode()).hexdigest()
    assert len({body["key"] for body in bodies}) == 3
    logged = "\n".join(record.getMessage() + repr(record.__dict__) for record in caplog.records)
    assert not any(body["key"] in logged or body["key_sha256"] in logged for body in bodies)


async def test_without_an_admin_key_it_is_refused(app) -> None:
    async with app.test_app() as running:
        client = running.test_client()
        anonymous = await client.post(ROUTE)
        as_client = await client.post(ROUTE, headers={"authorization": f"Bearer {CLIENT_KEY}"})
        wrong = await client.post(ROUTE, headers={"authorization": "Bearer not-a-key"})
        by_get = await client.get(ROUTE, headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert anonymous.status_code == 401 and wrong.status_code == 401
    assert as_client.status_code == 403
    assert by_get.status_code == 405
    for refused in (anonymous, as_client, wrong):
        assert refused.headers["content-type"] == "application/problem+json"


async def test_another_sites_request_and_a_session_without_its_csrf_token_are_refused(app) -> None:
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    async with app.test_app() as running:
        client = running.test_client()
        cross = await client.post(ROUTE, headers={**admin, "origin": "https://evil.example"})
        signed_in = await client.post("/admin/api/session", json={"key": ADMIN_KEY})
        assert signed_in.status_code == 200
        csrf = (await signed_in.get_json())["csrf_token"]
        own = {"origin": "http://localhost"}
        no_token = await client.post(ROUTE, headers=own)
        no_origin = await client.post(ROUTE, headers={"x-csrf-token": csrf})
        other_site = await client.post(
            ROUTE, headers={"origin": "https://evil.example", "x-csrf-token": csrf}
        )
        good = await client.post(ROUTE, headers={**own, "x-csrf-token": csrf})
    assert cross.status_code == 403
    assert "cross-origin" in (await cross.get_json())["detail"]
    assert no_token.status_code == 403 and "X-CSRF-Token" in (await no_token.get_json())["detail"]
    assert no_origin.status_code == 403 and other_site.status_code == 403
    assert good.status_code == 200 and good.headers["cache-control"] == "no-store"
    assert (await good.get_json())["key"].startswith("gw-")
