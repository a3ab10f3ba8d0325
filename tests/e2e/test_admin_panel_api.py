"""The admin panel's server side over HTTP: pages and deep links, sign-in sessions (cookie, CSRF,
expiry, forged cookies, removed keys, throttling), who may call every admin endpoint, the
`admin.enabled` switch, and the backends' recent outcomes."""

from __future__ import annotations

import hashlib
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from gateway.admin.secret import SECRET_FILE, load_session_secret
from gateway.admin.session import COOKIE_NAME, SessionSigner

from gateway.testing.process import GatewayProcess, start_gateway
from tests.conftest import wait_until
from tests.e2e.audit_support import live_tail_handshake
from tests.e2e.upstreams import GATEWAY_ENV, Upstreams, assert_problem, backends_yaml, fake_upstreams

ADMIN_KEY, CLIENT_KEY = "admin-key-panel-tests", "client-key-panel-tests"
ENV = {**GATEWAY_ENV, "GW_ADMIN_KEY": ADMIN_KEY, "GW_CLIENT_KEY": CLIENT_KEY}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
SESSION_HOURS = 2


@pytest.fixture(scope="module")
def up() -> Iterator[Upstreams]:
    with fake_upstreams() as upstreams:
        yield upstreams


def config(up: Upstreams, directory: Path, *, admin_keys: str = "") -> str:
    keys = admin_keys or "[{name: ops, key: '${GW_ADMIN_KEY}'}]"
    return f"""\
auth:
  client_keys: [{{name: app, key: "${{GW_CLIENT_KEY}}"}}]
  admin_keys: {keys}
backends:
{backends_yaml(up)}
models:
  gpt: {{chain: [{{backend: oa, model: gpt-4o-mini}}]}}
audit:
  database_url: "sqlite://{directory / "audit.sqlite3"}"
  flush_interval_ms: 50
admin:
  session_hours: {SESSION_HOURS}
reload:
  watch: false
"""


@pytest.fixture
def gateway(gateway_server, up: Upstreams, tmp_path: Path) -> GatewayProcess:
    return gateway_server(config(up, tmp_path), env=ENV)


@pytest.fixture(scope="module")
def reader(gateway_server_module, up: Upstreams, tmp_path_factory: pytest.TempPathFactory) -> GatewayProcess:
    """One gateway for the tests that only read (the page URLs): no state of theirs carries over."""
    return gateway_server_module(config(up, tmp_path_factory.mktemp("reader")), env=ENV)


def sign_in(gateway: GatewayProcess) -> tuple[requests.Session, str]:
    """A requests session holding the panel's cookie, and the session's CSRF token."""
    session = requests.Session()
    response = session.post(gateway.url("/admin/api/session"), json={"key": ADMIN_KEY}, timeout=5)
    assert response.status_code == 200, response.text
    return session, response.json()["csrf_token"]


def same_origin(gateway: GatewayProcess, csrf: str | None = None) -> dict[str, str]:
    headers = {"origin": gateway.base_url}
    if csrf is not None:
        headers["x-csrf-token"] = csrf
    return headers


# -- pages -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/admin",
        "/admin/",
        "/admin/logs?status=error",
        "/admin/usage?range=7d",
        "/admin/models",
        "/admin/backends",
        "/admin/keys",
        "/admin/settings",
        "/admin/status",
    ],
)
def test_every_page_url_serves_the_panel(reader, path: str) -> None:
    response = requests.get(reader.url(path), timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/admin/static/js/main.js">' in response.text
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy


def test_the_panel_files_are_served_and_nothing_else(gateway) -> None:
    script = requests.get(gateway.url("/admin/static/js/logs.js"), timeout=5)
    assert script.status_code == 200
    assert script.headers["content-type"].split(";")[0] in ("text/javascript", "application/javascript")
    assert "export function mount" in script.text
    assert requests.get(gateway.url("/admin/static/panel.css"), timeout=5).status_code == 200
    assert_problem(requests.get(gateway.url("/admin/static/../panel.py"), timeout=5), 404)
    assert_problem(requests.get(gateway.url("/admin/static/%2e%2e/panel.py"), timeout=5), 404)
    assert_problem(requests.get(gateway.url("/admin/elsewhere"), timeout=5), 404)


# -- who may call what -----------------------------------------------------------------------------

ENDPOINTS = [
    ("GET", "/admin/api/config"),
    ("GET", "/admin/api/config/file"),
    ("GET", "/admin/api/config/timeouts"),
    ("POST", "/admin/api/config/reload"),
    ("PATCH", "/admin/api/config/timeouts"),
    ("GET", "/admin/api/backends"),
    ("GET", "/admin/api/logs"),
    ("GET", "/admin/api/logs/export"),
    ("GET", "/admin/api/logs/stats"),
    ("GET", "/admin/api/logs/backends"),
    ("GET", "/admin/api/usage"),
    ("GET", "/admin/api/session"),
    ("DELETE", "/admin/api/session"),
]
STATE_CHANGES = [(method, path) for method, path in ENDPOINTS if method != "GET"]


def test_every_admin_endpoint_refuses_anonymous_client_and_forged_callers(gateway) -> None:
    forged = {"cookie": f"{COOKIE_NAME}=eyJraWQiOiJ4In0.c2lnbmF0dXJl"}
    for method, path in ENDPOINTS:
        assert_problem(requests.request(method, gateway.url(path), timeout=5), 401)
        assert_problem(requests.request(method, gateway.url(path), headers=forged, timeout=5), 401)
        client = requests.request(method, gateway.url(path), headers={"x-api-key": CLIENT_KEY}, timeout=5)
        assert "client keys cannot" in assert_problem(client, 403)["detail"]
    assert live_tail_handshake(gateway, {}) == 401
    assert live_tail_handshake(gateway, forged) == 401
    assert live_tail_handshake(gateway, {"x-api-key": CLIENT_KEY}) == 403


def test_sign_in_refuses_wrong_and_client_keys_and_other_origins(gateway) -> None:
    url = gateway.url("/admin/api/session")
    assert_problem(requests.post(url, json={"key": "not-a-key"}, timeout=5), 401)
    client = requests.post(url, json={"key": CLIENT_KEY}, timeout=5)
    assert "client keys cannot open the admin panel" in assert_problem(client, 403)["detail"]
    assert_problem(requests.post(url, json={"nothing": 1}, timeout=5), 400)
    assert_problem(requests.post(url, data=f"key={ADMIN_KEY}", timeout=5), 415)  # no HTML form posts
    evil = requests.post(url, json={"key": ADMIN_KEY}, headers={"origin": "https://evil.example"}, timeout=5)
    assert_problem(evil, 403)
    assert "set-cookie" not in evil.headers


def test_the_session_cookie_is_http_only_strict_and_expires(gateway) -> None:
    response = requests.post(
        gateway.url("/admin/api/session"), json={"key": ADMIN_KEY}, headers=same_origin(gateway), timeout=5
    )
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "ops" and body["via"] == "session" and len(body["csrf_token"]) >= 32
    assert response.headers["cache-control"] == "no-store"
    name, _, rest = response.headers["set-cookie"].partition("=")
    attributes = {part.split("=")[0].strip().lower(): part.partition("=")[2] for part in rest.split(";")[1:]}
    assert name == COOKIE_NAME
    assert "httponly" in attributes
    assert attributes["samesite"] == "Strict"
    assert attributes["path"] == "/admin"
    assert attributes["max-age"] == str(SESSION_HOURS * 3600)
    assert "secure" not in attributes  # plain HTTP here; over HTTPS the cookie is Secure


def test_a_session_opens_the_api_and_the_live_tail(gateway) -> None:
    session, csrf = sign_in(gateway)
    me = session.get(gateway.url("/admin/api/session"), timeout=5).json()
    assert (me["name"], me["via"], me["csrf_token"]) == ("ops", "session", csrf)
    assert session.get(gateway.url("/admin/api/config"), timeout=5).status_code == 200
    assert session.get(gateway.url("/admin/api/logs"), timeout=5).status_code == 200
    cookie = {"cookie": f"{COOKIE_NAME}={session.cookies[COOKIE_NAME]}"}
    assert live_tail_handshake(gateway, {**cookie, "origin": gateway.base_url}) == 101
    assert live_tail_handshake(gateway, {**cookie, "origin": "https://evil.example"}) == 403
    assert live_tail_handshake(gateway, cookie) == 403  # only browsers send the cookie, and they send Origin

    out = session.delete(gateway.url("/admin/api/session"), headers=same_origin(gateway, csrf), timeout=5)
    assert out.status_code == 200
    assert COOKIE_NAME not in session.cookies
    assert_problem(session.get(gateway.url("/admin/api/config"), timeout=5), 401)


def test_state_changes_with_the_cookie_need_the_csrf_token_and_the_origin(gateway) -> None:
    session, csrf = sign_in(gateway)
    reload = gateway.url("/admin/api/config/reload")
    for method, path in STATE_CHANGES:
        url = gateway.url(path)
        assert_problem(session.request(method, url, headers=same_origin(gateway), timeout=5), 403)
        wrong = same_origin(gateway, "not-the-token")
        assert_problem(session.request(method, url, headers=wrong, timeout=5), 403)
        evil = {"origin": "https://evil.example", "x-csrf-token": csrf}
        assert_problem(session.request(method, url, headers=evil, timeout=5), 403)
        # Without Origin: not a browser, yet it has the browser's cookie: refused too.
        assert_problem(session.request(method, url, headers={"x-csrf-token": csrf}, timeout=5), 403)
        # An admin key from a page on another site is refused as well.
        foreign = {**ADMIN, "origin": "https://evil.example"}
        assert_problem(requests.request(method, url, headers=foreign, timeout=5), 403)
    assert session.post(reload, headers=same_origin(gateway, csrf), timeout=5).status_code == 200
    etag = session.get(gateway.url("/admin/api/config/timeouts"), timeout=5).headers["etag"]
    edit = session.patch(
        gateway.url("/admin/api/config/timeouts"),
        json={"chat": {"total": 300}},
        headers={**same_origin(gateway, csrf), "if-match": etag},
        timeout=5,
    )
    assert edit.status_code == 200, edit.text
    # An admin key in the header needs neither (browsers never add it on their own).
    assert requests.post(reload, headers=ADMIN, timeout=5).status_code == 200


def _cookie(gateway: GatewayProcess, signer: SessionSigner, *, lifetime: float, now: float) -> dict[str, str]:
    value, _ = signer.issue(hashlib.sha256(ADMIN_KEY.encode()).hexdigest(), lifetime, now=now)
    return {"cookie": f"{COOKIE_NAME}={value}"}


def test_expired_tampered_and_foreign_cookies_are_refused(gateway) -> None:
    secret = load_session_secret(gateway.config_path, env={})
    assert secret.source == str(gateway.config_path.parent / SECRET_FILE)
    signer = SessionSigner(secret.key)
    url = gateway.url("/admin/api/config")
    assert requests.get(url, headers=_cookie(gateway, signer, lifetime=60, now=time.time()), timeout=5).ok
    expired = _cookie(gateway, signer, lifetime=60, now=time.time() - 61)
    assert "sign in again" in assert_problem(requests.get(url, headers=expired, timeout=5), 401)["detail"]
    # Issued long ago with a long life: admin.session_hours (2 h) still bounds it.
    old = _cookie(gateway, signer, lifetime=10 * 86400, now=time.time() - SESSION_HOURS * 3600 - 1)
    assert_problem(requests.get(url, headers=old, timeout=5), 401)
    foreign = _cookie(gateway, SessionSigner(b"another gateway's secret"), lifetime=60, now=time.time())
    assert_problem(requests.get(url, headers=foreign, timeout=5), 401)
    good = _cookie(gateway, signer, lifetime=60, now=time.time())["cookie"]
    payload, signature = good.split("=", 1)[1].split(".")
    tampered = f"{COOKIE_NAME}={payload[:-2]}AA.{signature}"
    assert_problem(requests.get(url, headers={"cookie": tampered}, timeout=5), 401)


def test_a_session_ends_when_its_admin_key_leaves_the_config(gateway, up: Upstreams, tmp_path: Path) -> None:
    session, _ = sign_in(gateway)
    assert session.get(gateway.url("/admin/api/config"), timeout=5).status_code == 200
    other = "another-admin-key-panel-tests"
    rotated = f"[{{name: ops, key_sha256: {hashlib.sha256(other.encode()).hexdigest()}}}]"
    gateway.config_path.write_text(config(up, tmp_path, admin_keys=rotated))
    reload = requests.post(
        gateway.url("/admin/api/config/reload"), headers={"authorization": f"Bearer {other}"}, timeout=5
    )
    assert reload.status_code == 401  # still the old config: the old key reloads it
    assert (
        requests.post(gateway.url("/admin/api/config/reload"), headers=ADMIN, timeout=5).json()["outcome"]
        == "applied"
    )
    assert (
        "sign in again"
        in assert_problem(session.get(gateway.url("/admin/api/config"), timeout=5), 401)["detail"]
    )


def test_failed_sign_ins_are_throttled_per_client_address(gateway) -> None:
    url = gateway.url("/admin/api/session")
    for guess in range(5):
        assert_problem(requests.post(url, json={"key": f"guess-{guess}"}, timeout=5), 401)
    throttled = requests.post(url, json={"key": "guess-5"}, timeout=5)
    body = assert_problem(throttled, 429)
    assert 1 <= int(throttled.headers["retry-after"]) <= 60
    assert "too many failed admin authentications" in body["detail"]
    # Even the right key waits: the throttle answers before any key is looked at, on every admin
    # entry (a key that worked while throttled would tell a guesser when it guessed right).
    assert_problem(requests.post(url, json={"key": ADMIN_KEY}, timeout=5), 429)
    assert_problem(requests.get(gateway.url("/admin/api/config"), headers=ADMIN, timeout=5), 429)
    # The model API is no admin entry.
    models = requests.get(gateway.url("/v1/models"), headers={"x-api-key": CLIENT_KEY}, timeout=5)
    assert models.status_code == 200


def test_sessions_hold_across_workers_and_restarts(gateway_server, up: Upstreams, tmp_path: Path) -> None:
    first = gateway_server(config(up, tmp_path), env=ENV, workers=2)
    session, _ = sign_in(first)
    for _ in range(12):  # whichever worker answers accepts the cookie
        assert session.get(first.url("/admin/api/config"), timeout=5).status_code == 200
    secret = tmp_path / SECRET_FILE
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    before = secret.read_bytes()
    session.close()  # its kept-alive connections (a draining gateway holds idle ones 2 s); cookies stay
    first.stop()
    second = start_gateway(first.config_path, env=ENV, port=first.port)
    try:
        assert session.get(second.url("/admin/api/config"), timeout=5).status_code == 200
        assert secret.read_bytes() == before
    finally:
        session.close()
        second.stop()


def test_the_secret_can_come_from_the_environment(gateway_server, up: Upstreams, tmp_path: Path) -> None:
    gateway = gateway_server(config(up, tmp_path), env={**ENV, "GATEWAY_ADMIN_SECRET": "x" * 40})
    session, _ = sign_in(gateway)
    assert session.get(gateway.url("/admin/api/config"), timeout=5).status_code == 200
    assert not (tmp_path / SECRET_FILE).exists()


# -- the admin.enabled switch and the local admin token -----------------------------------------------------


def test_admin_enabled_false_turns_the_panel_and_the_api_off(
    gateway_server, up: Upstreams, tmp_path: Path
) -> None:
    off = config(up, tmp_path).replace("admin:\n", "admin:\n  enabled: false\n")
    gateway = gateway_server(off, env=ENV)
    for path in ("/admin", "/admin/logs", "/admin/static/js/main.js", "/admin/api/config", "/admin/api/logs"):
        assert_problem(requests.get(gateway.url(path), headers=ADMIN, timeout=5), 404)
    assert_problem(requests.post(gateway.url("/admin/api/session"), json={"key": ADMIN_KEY}, timeout=5), 404)
    assert live_tail_handshake(gateway, {**ADMIN, "origin": gateway.base_url}) == 404
    models = requests.get(gateway.url("/v1/models"), headers={"x-api-key": CLIENT_KEY}, timeout=5)
    assert models.status_code == 200


def test_without_admin_keys_the_local_admin_token_opens_the_panel(
    gateway_server, up: Upstreams, tmp_path: Path
) -> None:
    gateway = gateway_server(config(up, tmp_path, admin_keys="[]"), env=ENV)
    # Nobody is admin for being on loopback (a same-host proxy is on loopback too).
    assert_problem(requests.get(gateway.url("/admin/api/session"), timeout=5), 401)
    assert_problem(requests.get(gateway.url("/admin/api/config"), timeout=5), 401)
    me = requests.get(gateway.url("/admin/api/session"), headers=gateway.admin_headers, timeout=5).json()
    assert (me["name"], me["via"], me["csrf_token"], me["admin_keys_configured"]) == (
        "local",
        "key",
        None,
        False,
    )
    assert_problem(requests.post(gateway.url("/admin/api/session"), json={"key": "x"}, timeout=5), 401)
    session = requests.Session()
    signed = session.post(gateway.url("/admin/api/session"), json={"key": gateway.admin_token}, timeout=5)
    assert signed.status_code == 200 and signed.json()["admin_keys_configured"] is False
    assert session.get(gateway.url("/admin/api/config"), timeout=5).status_code == 200
    # A page on another site whose name resolves to 127.0.0.1 (DNS rebinding) has no token; and the
    # session cookie is not sent to its name, nor would its Origin pass.
    rebound = {"host": f"evil.example:{gateway.port}", "origin": f"http://evil.example:{gateway.port}"}
    assert_problem(requests.get(gateway.url("/admin/api/config"), headers=rebound, timeout=5), 401)
    assert_problem(requests.post(gateway.url("/admin/api/config/reload"), headers=rebound, timeout=5), 401)


# -- recent outcomes per backend --------------------------------------------------------------------


def test_backend_outcomes_count_recent_attempts(gateway) -> None:
    for _ in range(3):
        chat = requests.post(
            gateway.url("/v1/chat/completions"),
            json={"model": "gpt", "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-api-key": CLIENT_KEY},
            timeout=5,
        )
        assert chat.status_code == 200

    def outcomes() -> dict:
        response = requests.get(gateway.url("/admin/api/logs/backends"), headers=ADMIN, timeout=5)
        assert response.status_code == 200
        return response.json()

    def counted() -> bool:
        response = requests.get(gateway.url("/admin/api/logs/backends"), headers=ADMIN, timeout=5)
        # 503 while the audit database is still being opened at startup
        return response.status_code == 200 and response.json()["backends"].get("oa", {}).get("attempts") == 3

    wait_until(counted, timeout=10, interval=0.1)
    body = outcomes()
    assert body["minutes"] == 15
    assert body["backends"] == {
        "oa": {"attempts": 3, "failed": 0, "skipped": 0, "error_rate": 0.0, "outcomes": {"ok": 3}}
    }
    bad = requests.get(gateway.url("/admin/api/logs/backends?minutes=0"), headers=ADMIN, timeout=5)
    assert assert_problem(bad, 400)["field"] == "minutes"


def test_backend_outcomes_say_when_the_audit_log_is_off(
    gateway_server, up: Upstreams, tmp_path: Path
) -> None:
    gateway = gateway_server(config(up, tmp_path).replace("audit:\n", "audit:\n  enabled: false\n"), env=ENV)
    response = requests.get(gateway.url("/admin/api/logs/backends"), headers=ADMIN, timeout=5)
    assert "audit log is off" in assert_problem(response, 503)["detail"]
