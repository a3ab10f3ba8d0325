"""The panel's app wiring in this process (Quart's test client): what needs a scheme or a setup the
subprocess tests cannot easily give."""

from __future__ import annotations

from pathlib import Path

from gateway.app import create_app

ADMIN_KEY = "admin-key-in-process"
CONFIG = """\
backends:
  up: {type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
models:
  m: {chain: [{backend: up}]}
auth:
  admin_keys: [{name: ops, key: "${GW_ADMIN_KEY}"}]
audit:
  enabled: false
admin:
  session_hours: 0.5
"""


async def test_over_https_the_session_cookie_is_secure(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG)
    app = create_app(path, env={"GW_ADMIN_KEY": ADMIN_KEY}, watch=False)
    async with app.fallback.test_app() as running:
        client = running.test_client()
        response = await client.post("/admin/api/session", json={"key": ADMIN_KEY}, scheme="https")
        assert response.status_code == 200
        cookie = response.headers["set-cookie"]
        assert "; Secure" in cookie and "; HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert "Max-Age=1800" in cookie
        plain = await client.post("/admin/api/session", json={"key": ADMIN_KEY}, scheme="http")
        assert "Secure" not in plain.headers["set-cookie"]
