"""A gateway behind a reverse proxy on the same host (issue 15, defects 1 and 6): the admin API never
answers anonymously, the model API without client keys serves only local requests, the real client
address comes from trusted proxies only, and failed admin authentications are throttled per real
client address on every admin entry."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from gateway.admin.secret import TOKEN_ENV_VAR, TOKEN_FILE

from gateway.testing.process import GatewayProcess, free_port, start_gateway
from gateway.testing.proxy import ADMIN_CALLS, ATTACKER_HEADERS, ReverseProxy
from tests.conftest import wait_until
from tests.e2e.audit_support import live_tail_handshake
from tests.e2e.upstreams import GATEWAY_ENV, Upstreams, assert_problem, backends_yaml, fake_upstreams

ADMIN_KEY, CLIENT_KEY = "admin-key-proxy-tests", "client-key-proxy-tests"
ENV = {**GATEWAY_ENV, "GW_ADMIN_KEY": ADMIN_KEY, "GW_CLIENT_KEY": CLIENT_KEY}
#: The address the proxies connect from, and the one the gateways trust.
PROXY_SOURCE = "127.0.0.2"
#: The smallest config a gateway serves: one model (its backend need not be reachable here).
KEYLESS = """\
backends:
  up: {type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
models:
  m: {chain: [{backend: up}]}
reload: {watch: false}
"""
ATTACKER, REAL_ADMIN = "198.51.100.9", "203.0.113.7"


@pytest.fixture(scope="module")
def up() -> Iterator[Upstreams]:
    with fake_upstreams() as upstreams:
        yield upstreams


@pytest.fixture(scope="module")
def keyless(gateway_server_module) -> GatewayProcess:
    """The default setup: loopback bind, no client keys, no admin keys."""
    return gateway_server_module(KEYLESS, env=GATEWAY_ENV)


@pytest.fixture(scope="module")
def proxies(keyless: GatewayProcess) -> Iterator[dict[str, ReverseProxy]]:
    """nginx's bare proxy_pass (Host rewritten) and a Host-preserving proxy (Caddy's default)."""
    with (
        ReverseProxy.in_thread(keyless.base_url) as nginx,
        ReverseProxy.in_thread(keyless.base_url, preserve_host=True) as caddy,
    ):
        yield {"nginx": nginx, "caddy": caddy}


def _admin_call(base_url: str, method: str, path: str, headers: dict[str, str]) -> requests.Response:
    body = {"json": {"chat": {"total": 7}}} if method == "PATCH" else {}
    extra = {"if-match": "*"} if method == "PATCH" else {}
    return requests.request(method, base_url + path, headers={**headers, **extra}, timeout=10, **body)


# -- defect 1: the admin API --------------------------------------------------------------------


@pytest.mark.parametrize("sent", ATTACKER_HEADERS.values(), ids=ATTACKER_HEADERS.keys())
def test_the_admin_api_refuses_anonymous_callers_through_a_same_host_proxy(
    keyless: GatewayProcess, proxies: dict[str, ReverseProxy], sent: dict[str, str]
) -> None:
    before = keyless.config_path.read_bytes()
    for name, proxy in proxies.items():
        for method, path in ADMIN_CALLS:
            response = _admin_call(proxy.base_url, method, path, sent)
            body = assert_problem(response, 401)
            assert TOKEN_FILE in body["detail"], (name, method, path)
    assert keyless.config_path.read_bytes() == before


def test_the_local_admin_token_opens_the_admin_api_through_the_proxy(
    keyless: GatewayProcess, proxies: dict[str, ReverseProxy]
) -> None:
    proxy = proxies["nginx"]
    config = requests.get(proxy.url("/admin/api/config"), headers=keyless.admin_headers, timeout=10)
    assert config.status_code == 200, config.text
    reload = requests.post(proxy.url("/admin/api/config/reload"), headers=keyless.admin_headers, timeout=10)
    assert reload.status_code == 200, reload.text
    etag = requests.get(proxy.url("/admin/api/config/timeouts"), headers=keyless.admin_headers, timeout=10)
    headers = {**keyless.admin_headers, "if-match": etag.headers["etag"]}
    edit = requests.patch(
        proxy.url("/admin/api/config/timeouts"), json={"chat": {"total": 321}}, headers=headers, timeout=10
    )
    assert edit.status_code == 200, edit.text
    assert "total: 321" in keyless.config_path.read_text()
    # The live tail's WebSocket takes it too, as it takes an admin key.
    assert live_tail_handshake(keyless, {**keyless.admin_headers, "origin": keyless.base_url}) == 101
    assert live_tail_handshake(keyless, {"origin": keyless.base_url}) == 401


def test_direct_loopback_callers_need_the_token_too(keyless: GatewayProcess) -> None:
    for host in ("localhost", "127.0.0.1"):
        headers = {"host": f"{host}:{keyless.port}"}
        for method, path in ADMIN_CALLS:
            assert_problem(_admin_call(keyless.base_url, method, path, headers), 401)
    me = requests.get(keyless.url("/admin/api/session"), headers=keyless.admin_headers, timeout=10)
    assert (me.status_code, me.json()["name"], me.json()["admin_keys_configured"]) == (200, "local", False)
    assert_problem(
        requests.get(keyless.url("/admin/api/config"), headers={"x-api-key": "not-the-token"}, timeout=10),
        401,
    )


def test_the_panel_signs_in_with_the_token(keyless: GatewayProcess) -> None:
    session = requests.Session()
    signed = session.post(keyless.url("/admin/api/session"), json={"key": keyless.admin_token}, timeout=10)
    assert signed.status_code == 200, signed.text
    assert signed.json()["name"] == "local"
    csrf = signed.json()["csrf_token"]
    assert session.get(keyless.url("/admin/api/config"), timeout=10).status_code == 200
    # A session opened with the token survives reloads while no admin keys are configured.
    headers = {"origin": keyless.base_url, "x-csrf-token": csrf}
    assert (
        session.post(keyless.url("/admin/api/config/reload"), headers=headers, timeout=10).status_code == 200
    )
    assert session.get(keyless.url("/admin/api/config"), timeout=10).status_code == 200
    assert keyless.admin_token not in keyless.log()


# -- defect 1: the model API without client keys --------------------------------------------------


def test_the_model_api_without_client_keys_serves_only_local_requests(
    keyless: GatewayProcess, proxies: dict[str, ReverseProxy]
) -> None:
    assert requests.get(keyless.url("/v1/models"), timeout=10).status_code == 200
    local = {"host": f"localhost:{keyless.port}"}
    assert requests.get(keyless.url("/v1/models"), headers=local, timeout=10).status_code == 200
    rebound = assert_problem(
        requests.get(keyless.url("/v1/models"), headers={"host": "evil.example"}, timeout=10), 401
    )
    assert "evil.example" in rebound["detail"] and "auth.client_keys" in rebound["detail"]
    for name, proxy in proxies.items():
        for label, sent in ATTACKER_HEADERS.items():
            if not sent or set(sent) == {"host"}:
                continue  # a proxy that adds nothing cannot be told from a local client (documented)
            response = requests.get(proxy.url("/v1/models"), headers=sent, timeout=10)
            assert response.status_code == 401, (name, label)
            assert_problem(response, 401)
    chat = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}
    with ReverseProxy.in_thread(keyless.base_url, forward_for="192.0.2.1") as recipe:
        for path, body in (("/v1/models", None), ("/v1/chat/completions", chat)):
            response = requests.request("POST" if body else "GET", recipe.url(path), json=body, timeout=10)
            assert "came through a proxy" in assert_problem(response, 401)["detail"]


def test_trusted_proxies_without_client_keys_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(KEYLESS + "server: {trusted_proxies: ['127.0.0.1/32']}\n")
    checked = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check", "--format", "json", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 1, checked.stdout
    (error,) = json.loads(checked.stdout)["errors"]
    assert error["path"] == "server.trusted_proxies" and "auth.client_keys" in error["message"]
    with pytest.raises(RuntimeError, match="trusted_proxies"):
        start_gateway(config, timeout=20)


# -- trusted proxies: the real client address -----------------------------------------------------


def _behind_proxy(up: Upstreams, directory: Path, *, admin_keys: bool = True) -> str:
    admin = "[{name: ops, key: '${GW_ADMIN_KEY}'}]" if admin_keys else "[]"
    return f"""\
server:
  trusted_proxies: ["{PROXY_SOURCE}/32"]
auth:
  client_keys: [{{name: app, key: "${{GW_CLIENT_KEY}}"}}]
  admin_keys: {admin}
backends:
{backends_yaml(up)}
models:
  gpt: {{chain: [{{backend: oa, model: gpt-4o-mini}}]}}
audit:
  database_url: "sqlite://{directory / "audit.sqlite3"}"
  flush_interval_ms: 50
reload:
  watch: false
"""


@pytest.fixture
def behind_proxy(gateway_server, up: Upstreams, tmp_path: Path) -> GatewayProcess:
    return gateway_server(_behind_proxy(up, tmp_path), env=ENV)


def _audit_addresses(gateway: GatewayProcess) -> list[str | None]:
    import sqlite3

    connection = sqlite3.connect(gateway.config_path.parent / "audit.sqlite3")
    try:
        try:
            rows = connection.execute("SELECT client_address FROM audit_records ORDER BY id").fetchall()
        except sqlite3.OperationalError:  # the gateway is still creating the schema
            return []
        return [row[0] for row in rows]
    finally:
        connection.close()


def test_the_real_client_address_comes_from_trusted_proxies_only(behind_proxy: GatewayProcess) -> None:
    chat = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}
    client = {"x-api-key": CLIENT_KEY}
    with ReverseProxy.in_thread(
        behind_proxy.base_url, forward_for=REAL_ADMIN, source_address=PROXY_SOURCE
    ) as proxy:
        # Whatever the client claims on the left, the trusted proxy's own entry is what counts.
        spoofed = {**client, "x-forwarded-for": "10.9.9.9"}
        assert requests.post(proxy.url("/v1/chat/completions"), json=chat, headers=spoofed, timeout=10).ok
    # Called directly, the peer (127.0.0.1) is no trusted proxy: its forwarding headers are ignored.
    direct = {**client, "x-forwarded-for": "192.0.2.44", "x-real-ip": "192.0.2.44"}
    assert requests.post(behind_proxy.url("/v1/chat/completions"), json=chat, headers=direct, timeout=10).ok
    wait_until(lambda: len(_audit_addresses(behind_proxy)) == 2, timeout=10)
    assert _audit_addresses(behind_proxy) == [REAL_ADMIN, "127.0.0.1"]

    def request_lines() -> list[dict]:  # info lines, written within the log's 50 ms window
        return [json.loads(line) for line in behind_proxy.log().splitlines() if '"event":"request"' in line]

    wait_until(lambda: len(request_lines()) >= 2, timeout=10)
    assert [line["client_address"] for line in request_lines()] == [REAL_ADMIN, "127.0.0.1"]


# -- defect 6: the throttle -----------------------------------------------------------------------


def test_an_attackers_failures_do_not_lock_out_the_admin_behind_the_same_proxy(
    behind_proxy: GatewayProcess,
) -> None:
    with (
        ReverseProxy.in_thread(
            behind_proxy.base_url, forward_for=ATTACKER, source_address=PROXY_SOURCE
        ) as bad,
        ReverseProxy.in_thread(
            behind_proxy.base_url, forward_for=REAL_ADMIN, source_address=PROXY_SOURCE
        ) as ok,
    ):
        for guess in range(5):
            response = requests.post(
                bad.url("/admin/api/session"), json={"key": f"guess-{guess}"}, timeout=10
            )
            assert_problem(response, 401)
        throttled = requests.post(bad.url("/admin/api/session"), json={"key": ADMIN_KEY}, timeout=10)
        assert ATTACKER in assert_problem(throttled, 429)["detail"]
        assert 1 <= int(throttled.headers["retry-after"]) <= 60
        # Every admin entry refuses the attacker's address now, even with the right key.
        admin = {"authorization": f"Bearer {ADMIN_KEY}"}
        assert_problem(requests.get(bad.url("/admin/api/config"), headers=admin, timeout=10), 429)
        # The real admin, behind the very same proxy, is another address.
        signed = requests.post(ok.url("/admin/api/session"), json={"key": ADMIN_KEY}, timeout=10)
        assert signed.status_code == 200, signed.text
        assert requests.get(ok.url("/admin/api/config"), headers=admin, timeout=10).status_code == 200
    # Calling directly, 127.0.0.1 is a third address, also unaffected.
    assert requests.get(behind_proxy.url("/admin/api/config"), headers=admin, timeout=10).status_code == 200


def test_bearer_guessing_on_the_admin_api_is_throttled(behind_proxy: GatewayProcess) -> None:
    url = behind_proxy.url("/admin/api/config")
    for guess in range(5):
        assert_problem(requests.get(url, headers={"authorization": f"Bearer guess-{guess}"}, timeout=10), 401)
    throttled = requests.get(url, headers={"x-api-key": "guess-5"}, timeout=10)
    assert_problem(throttled, 429)
    assert int(throttled.headers["retry-after"]) >= 1


def test_every_admin_entry_counts_failures(behind_proxy: GatewayProcess) -> None:
    """Bearer, x-api-key, a forged session cookie, the live tail's handshake and the sign-in form all
    count toward one limit per address; the same wrong credential repeated counts once."""
    url = behind_proxy.url("/admin/api/config")
    for _ in range(3):  # one stale key, sent three times: one failure
        assert_problem(requests.get(url, headers={"x-api-key": "stale-key"}, timeout=10), 401)
    forged = {"cookie": "gateway_admin_session=e30.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}
    assert_problem(requests.get(url, headers=forged, timeout=10), 401)
    origin = {"origin": behind_proxy.base_url}
    assert live_tail_handshake(behind_proxy, {**origin, "authorization": "Bearer ws-guess"}) == 401
    wrong = requests.post(behind_proxy.url("/admin/api/session"), json={"key": "form-guess"}, timeout=10)
    assert_problem(wrong, 401)
    assert_problem(requests.get(url, headers={"authorization": "Bearer last-guess"}, timeout=10), 401)
    assert live_tail_handshake(behind_proxy, {**origin, "authorization": f"Bearer {ADMIN_KEY}"}) == 429
    assert_problem(requests.get(url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10), 429)


# -- the local admin token ------------------------------------------------------------------------


def test_the_token_file_is_private_and_shared_by_workers_and_restarts(gateway_server, tmp_path: Path) -> None:
    first = gateway_server(KEYLESS, workers=2)
    path = tmp_path / TOKEN_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = path.read_text().strip()
    assert len(token) >= 32
    for _ in range(12):  # whichever worker answers takes the same token
        assert first.admin("GET", "/admin/api/config").status_code == 200
    assert token not in first.log()
    first.stop()
    second = start_gateway(first.config_path, port=first.port)
    try:
        assert path.read_text().strip() == token
        assert second.admin("GET", "/admin/api/config").status_code == 200
    finally:
        second.stop()


def test_the_token_can_come_from_the_environment(gateway_server, tmp_path: Path) -> None:
    given = "t" * 40
    gateway = gateway_server(KEYLESS, env={TOKEN_ENV_VAR: given})
    assert not (tmp_path / TOKEN_FILE).exists()
    assert gateway.admin_token == given
    assert gateway.admin("GET", "/admin/api/config").status_code == 200


def test_a_short_token_in_the_environment_is_refused(gateway_server, tmp_path: Path) -> None:
    gateway = gateway_server(KEYLESS, env={TOKEN_ENV_VAR: "short"})
    refused = requests.get(gateway.url("/admin/api/config"), headers={"x-api-key": "short"}, timeout=10)
    assert "at least 32" in assert_problem(refused, 401)["detail"]


def test_the_token_stops_working_once_admin_keys_exist(gateway_server, tmp_path: Path) -> None:
    gateway = gateway_server(KEYLESS, env=ENV)
    token_headers = gateway.admin_headers
    session = requests.Session()
    signed = session.post(gateway.url("/admin/api/session"), json={"key": gateway.admin_token}, timeout=10)
    assert signed.status_code == 200
    gateway.config_path.write_text(KEYLESS + "auth: {admin_keys: [{name: ops, key: '${GW_ADMIN_KEY}'}]}\n")
    assert gateway.admin("POST", "/admin/api/config/reload").json()["outcome"] == "applied"
    assert_problem(requests.get(gateway.url("/admin/api/config"), headers=token_headers, timeout=10), 401)
    assert_problem(session.get(gateway.url("/admin/api/config"), timeout=10), 401)
    refused = requests.post(gateway.url("/admin/api/session"), json={"key": gateway.admin_token}, timeout=10)
    assert_problem(refused, 401)
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    assert requests.get(gateway.url("/admin/api/config"), headers=admin, timeout=10).status_code == 200


def test_the_console_shows_a_sign_in_url_that_works(tmp_path: Path) -> None:
    """On a terminal the gateway prints http://…/admin/#token=…; the token is the file's."""
    config = tmp_path / "gateway.yaml"
    config.write_text(KEYLESS)
    port = free_port()
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
        cwd=tmp_path,
    )
    os.close(terminal)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while b"#token=" not in seen or not seen.endswith(b"\n"):
            assert time.monotonic() < deadline, seen.decode(errors="replace")
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                seen += os.read(controller, 65536)
        match = re.search(rb"(http://127\.0\.0\.1:\d+/admin/)#token=([0-9a-f]+)", seen)
        assert match is not None, seen
        token = match.group(2).decode()
        assert token == (tmp_path / TOKEN_FILE).read_text().strip()
        url = f"http://127.0.0.1:{port}/admin/api/session"

        def signed_in() -> bool:
            try:
                return requests.post(url, json={"key": token}, timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(signed_in, timeout=30)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)
        os.close(controller)
