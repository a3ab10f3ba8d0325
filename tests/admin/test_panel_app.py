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


async def test_a_static_file_name_too_long_for_the_filesystem_is_a_404(tmp_path: Path) -> None:
    """Found by the endpoint fuzz (tests/e2e/test_fuzz.py): the file system refused the name (ENAMETOOLONG)
    and the OSError became a 500."""
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG)
    app = create_app(path, env={"GW_ADMIN_KEY": ADMIN_KEY}, watch=False)
    async with app.fallback.test_app() as running:
        client = running.test_client()
        for name in ("x" * 300, "js/" + "y" * 5000):
            response = await client.get(f"/admin/static/{name}")
            assert response.status_code == 404, await response.get_data()
            assert response.headers["content-type"] == "application/problem+json"
        assert (await client.get("/admin/static/js/main.js")).status_code == 200


BROKEN_JSON = [
    b"\x96\xc7\x93n\x06",  # not UTF-8: Quart's get_json raised UnicodeDecodeError outside its own try
    b"[" * 5000 + b"]" * 5000,  # the standard library's parser raised RecursionError
    b'{"chat": {"total": NaN}}',  # the standard library's parser took NaN for a number
    b'{"key": Infinity}',
]


async def test_admin_json_bodies_that_are_not_json_are_400_problems(tmp_path: Path) -> None:
    """Found by the endpoint fuzz: admin endpoints reading JSON answered such bodies with a 500."""
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG)
    app = create_app(path, env={"GW_ADMIN_KEY": ADMIN_KEY}, watch=False)
    async with app.fallback.test_app() as running:
        client = running.test_client()
        version = (await client.get("/admin/api/config", headers={"x-api-key": ADMIN_KEY})).headers["etag"]
        for body in BROKEN_JSON:
            for method, route, headers in (
                ("PATCH", "/admin/api/config/timeouts", {"x-api-key": ADMIN_KEY, "if-match": version}),
                ("POST", "/admin/api/session", {}),
            ):
                response = await client.open(
                    route, method=method, data=body, headers={"content-type": "application/json", **headers}
                )
                assert response.status_code == 400, (route, body[:20], await response.get_data())
                assert response.headers["content-type"] == "application/problem+json"
    assert "NaN" not in path.read_text()


async def test_conditional_and_range_refusals_of_panel_files_are_problems(tmp_path: Path) -> None:
    """Found by the endpoint fuzz: a failed `If-Match` on a panel page got Werkzeug's 412 with the page
    itself as the body; an unsatisfiable `Range` a bare 416."""
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG)
    app = create_app(path, env={"GW_ADMIN_KEY": ADMIN_KEY}, watch=False)
    async with app.fallback.test_app() as running:
        client = running.test_client()
        for route, headers, status in (
            ("/admin", {"if-match": '"not-this-one"'}, 412),
            ("/admin/static/js/main.js", {"if-match": "\xff"}, 412),
            ("/admin/static/js/main.js", {"range": "bytes=99999999-"}, 416),
        ):
            response = await client.get(route, headers=headers)
            assert response.status_code == status, route
            assert response.headers["content-type"] == "application/problem+json"
            body = await response.get_json()
            assert body["status"] == status and body["request_id"] == response.headers["x-request-id"]


async def test_non_ascii_digits_in_admin_query_numbers_are_400s(tmp_path: Path) -> None:
    """`"²".isdigit()` is true but `int("²")` raises: `limit=²` and `minutes=²` were 500s."""
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG)
    app = create_app(path, env={"GW_ADMIN_KEY": ADMIN_KEY}, watch=False)
    async with app.fallback.test_app() as running:
        client = running.test_client()
        for route, name in (("/admin/api/logs", "limit"), ("/admin/api/logs/backends", "minutes")):
            for value in ("²", "٣", "1²"):
                response = await client.get(
                    route, query_string={name: value}, headers={"x-api-key": ADMIN_KEY}
                )
                assert response.status_code == 400, (route, value, await response.get_data())
                assert (await response.get_json())["field"] == name
