"""The admin panel in real headless Chromium against the real server (`gateway serve` in a subprocess,
fake upstreams): sign-in, the logs page (pages, filters, live rows, the drawer, export), the settings
page writing gateway.yaml, and the status page."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Page, expect

from gateway.testing.otlp import FakeCollector
from gateway.testing.process import GatewayProcess, start_gateway
from tests.conftest import wait_until
from tests.e2e.upstreams import GATEWAY_ENV, Upstreams, backends_yaml

CLIENT_KEY, ADMIN_KEY = "client-key-browser-tests", "admin-key-browser-tests"
ENV = {**GATEWAY_ENV, "GW_CLIENT_KEY": CLIENT_KEY, "GW_ADMIN_KEY": ADMIN_KEY, "LOGFIRE_TOKEN": ""}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
PROJECT_URL = "https://logfire.example/acme/gateway"
MESSAGES = [{"role": "user", "content": "Where is my order?"}]
#: What the fake upstream does for the `broken` and `stuck` backends (a header they send it).
FAILS, HANGS = """x-fake-behaviour: '{"status": 500}'""", """x-fake-behaviour: '{"hang": true}'"""


def config(up: Upstreams, audit_path: Path, *, write_back: bool = True) -> str:
    key = '"${FAKE_KEY}"'
    oa = up.openai.base_url
    return f"""\
# Team gateway. Every comment here must survive the settings page.
auth:
  client_keys:
    - name: billing-app    # the product
      key: ${{GW_CLIENT_KEY}}
  admin_keys:
    - name: ops
      key: ${{GW_ADMIN_KEY}}

backends:
{backends_yaml(up)}
  broken: {{type: openai_compatible, base_url: "{oa}", api_key: {key}, headers: {{{FAILS}}}}}
  stuck: {{type: openai_compatible, base_url: "{oa}", api_key: {key}, headers: {{{HANGS}}}}}

models:
  gpt: {{chain: [{{backend: oa, model: gpt-4o-mini}}]}}
  claude: {{chain: [{{backend: an, model: claude-haiku-4-5}}]}}
  flaky: {{chain: [{{backend: broken, model: gpt-4o}}, {{backend: oa, model: gpt-4o-mini}}]}}
  broken: {{chain: [{{backend: broken, model: gpt-4o}}]}}
  stuck: {{chain: [{{backend: stuck, model: gpt-4o}}]}}
  mirrored:
    chain: [{{backend: oa, model: gpt-4o-mini}}]
    shadow: {{target: {{backend: oa, model: gpt-4o}}, sample_rate: 1}}

timeouts:
  chat:
    total: 30        # half a minute, for now
    first_byte: 25   # the stuck backend never sends one
  embeddings:
    total: 120

failover:
  circuit_breaker: {{failure_threshold: 3, cooldown_seconds: 600}}

audit:
  database_url: "sqlite://{audit_path}"
  flush_interval_ms: 50

telemetry:
  logfire:
    project_url: {PROJECT_URL}

admin:
  write_back: {"true" if write_back else "false"}   # GitOps switch
"""


@pytest.fixture(scope="module")
def sink() -> Iterator[FakeCollector]:
    """Receives the OTLP exports: turns tracing on, so records carry a trace id."""
    receiver = FakeCollector()
    yield receiver
    receiver.close()


def chat(
    gateway: GatewayProcess, model: str, request_id: str | None = None, timeout: float = 10
) -> requests.Response:
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    if request_id:
        headers["x-request-id"] = request_id
    return requests.post(
        gateway.url("/v1/chat/completions"),
        json={"model": model, "messages": MESSAGES, "max_tokens": 5},
        headers=headers,
        timeout=timeout,
    )


def logs(gateway: GatewayProcess, **params: Any) -> list[dict[str, Any]]:
    """Every record matching `params`, through the admin API (what the page should show)."""
    records: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, "limit": 500, **({"cursor": cursor} if cursor else {})}
        body = requests.get(gateway.url("/admin/api/logs"), params=query, headers=ADMIN, timeout=10).json()
        records += body["records"]
        cursor = body["next_cursor"]
        if cursor is None:
            return records


def wait_for_record(gateway: GatewayProcess, request_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def stored() -> bool:
        found[:] = logs(gateway, request_id=request_id)
        return bool(found)

    wait_until(stored, timeout=10, interval=0.1)
    return found[0]


#: Requests the logs gateway serves before its tests, in order: more than one page (50) of records.
#: `flaky` before `broken`, so its failover path is [broken failed, oa ok] (the circuit still closed).
SEEDED = [
    ("gpt", 36),
    ("flaky", 2),
    ("gpt", 2),
    ("claude", 2),
    ("broken", 4),
    ("gpt", 3),
    ("claude", 2),
    ("gpt", 2),
    ("flaky", 1),
]


@pytest.fixture(scope="module")
def gateway(sink: FakeCollector, up: Upstreams, gateway_server_module, tmp_path_factory) -> GatewayProcess:
    """A gateway with 60 records: successes, failovers, errors (and the broken backend's circuit open)."""
    # `sink` and `up` first: set up before the gateways, they are torn down after them (a gateway
    # sends its last spans as it exits, and retries while no collector answers).
    audit = tmp_path_factory.mktemp("audit") / "audit.sqlite3"
    started = gateway_server_module(
        config(up, audit), env={**ENV, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": sink.traces_url}
    )
    sent: dict[str, int] = {}
    for model, count in SEEDED:
        for _ in range(count):
            sent[model] = sent.get(model, 0) + 1
            chat(started, model, f"seed-{model}-{sent[model] - 1}")
    wait_until(lambda: len(logs(started)) == sum(sent.values()), timeout=15, interval=0.1)
    return started


def sign_in(page: Page, gateway: GatewayProcess, path: str = "/admin/logs") -> None:
    page.goto(gateway.url(path))
    page.fill("#admin-key", ADMIN_KEY)
    page.click("form button[type=submit]")
    expect(page.locator(".topbar")).to_be_visible()


def rows(page: Page):
    return page.locator("#records tr.record")


# -- sign-in ---------------------------------------------------------------------------------------


def test_sign_in_refuses_wrong_and_client_keys_and_keeps_the_deep_link(
    page: Page, gateway: GatewayProcess, screenshot
) -> None:
    page.goto(gateway.url("/admin/logs?status=error"))
    expect(page.locator("#admin-key")).to_be_visible()
    expect(page.locator(".topbar")).to_be_hidden()
    screenshot(page, "signin")

    page.fill("#admin-key", "not-a-key")
    page.click("form button[type=submit]")
    expect(page.locator("#sign-in-message")).to_have_text("That key is not valid.")
    page.fill("#admin-key", CLIENT_KEY)
    page.click("form button[type=submit]")
    expect(page.locator("#sign-in-message")).to_contain_text("client keys cannot open the admin panel")
    expect(page.locator(".topbar")).to_be_hidden()

    page.fill("#admin-key", ADMIN_KEY)
    page.click("form button[type=submit]")
    expect(page.locator("#who-name")).to_have_text("ops")
    assert page.url == gateway.url("/admin/logs?status=error")
    expect(page.locator("select[name=status]")).to_have_value("error")
    [cookie] = page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/admin"

    page.click("#sign-out")
    expect(page.locator("#sign-in-message")).to_have_text("You are signed out.")
    assert page.context.cookies() == []
    page.reload()
    expect(page.locator("#admin-key")).to_be_visible()


def test_the_sign_in_link_of_a_gateway_without_admin_keys_signs_in_and_leaves_no_token(
    page: Page, gateway_server
) -> None:
    """The console's link (http://…/admin/#token=…): the panel signs in with the token and takes it
    out of the address bar; without it the panel asks for a key."""
    keyless = gateway_server(
        'backends: {up: {type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}}\n'
        "models: {m: {chain: [{backend: up}]}}\nreload: {watch: false}\n",
        env=GATEWAY_ENV,
    )
    page.goto(keyless.url("/admin/logs"))
    expect(page.locator("#admin-key")).to_be_visible()
    page.goto(keyless.url(f"/admin/status#token={keyless.admin_token}"))
    expect(page.locator("#who-name")).to_have_text("local (admin token)")
    assert page.url == keyless.url("/admin/status")
    assert keyless.admin_token not in page.evaluate("JSON.stringify(history.state) + location.href")
    page.reload()  # the session cookie holds
    expect(page.locator("#who-name")).to_have_text("local (admin token)")
    page.goto(keyless.url("/admin/logs#token=wrong"))
    expect(page.locator("#sign-in-message")).to_contain_text("The sign-in link did not work")


# -- logs ------------------------------------------------------------------------------------------


def test_scrolling_down_loads_the_next_page(page: Page, gateway: GatewayProcess) -> None:
    total = len(logs(gateway))
    assert total > 50
    sign_in(page, gateway)
    expect(rows(page)).to_have_count(50)
    expect(page.locator("#list-end")).to_have_text("Scroll for more")
    page.locator("#records").evaluate("element => { element.scrollTop = element.scrollHeight; }")
    expect(rows(page)).to_have_count(total)
    expect(page.locator("#list-end")).to_have_text("That is every matching record.")
    ids = rows(page).evaluate_all("rows => rows.map(row => row.dataset.id)")
    assert len(set(ids)) == total
    newest_first = [int(i) for i in ids]
    assert newest_first == sorted(newest_first, reverse=True)


def test_status_filter_shows_only_errors_and_goes_in_the_url(page: Page, gateway: GatewayProcess) -> None:
    errors = logs(gateway, status="error")
    assert 0 < len(errors) < len(logs(gateway))
    sign_in(page, gateway)
    expect(rows(page)).to_have_count(50)
    page.select_option("select[name=status]", "error")
    expect(rows(page)).to_have_count(len(errors))
    assert set(rows(page).evaluate_all("rows => rows.map(row => row.dataset.status)")) == {"error"}
    expected = [r["request_id"] for r in errors]
    assert rows(page).evaluate_all("rows => rows.map(row => row.dataset.requestId)") == expected
    assert page.url == gateway.url("/admin/logs?status=error")

    # The URL is the view: opened elsewhere, it shows the same rows.
    other = page.context.new_page()
    other.goto(gateway.url("/admin/logs?status=error&model=broken"))
    expect(other.locator("#records tr.record")).to_have_count(
        len([r for r in errors if r["model"] == "broken"])
    )
    other.close()


def test_the_drawer_shows_a_record_with_its_failover_path_and_trace(
    page: Page, gateway: GatewayProcess, screenshot
) -> None:
    record = wait_for_record(gateway, "seed-flaky-0")
    assert record["trace_id"]  # tracing is on (the OTLP sink)
    sign_in(page, gateway)
    expect(rows(page)).to_have_count(50)
    page.locator("#records").evaluate("element => { element.scrollTop = element.scrollHeight; }")
    row = page.locator('#records tr[data-request-id="seed-flaky-0"]')
    row.scroll_into_view_if_needed()
    row.click()
    drawer = page.locator("#drawer")
    expect(drawer).to_be_visible()
    expect(drawer).to_contain_text("seed-flaky-0")
    expect(drawer).to_contain_text(record["config_version"])
    expect(drawer).to_contain_text("billing-app")
    expect(drawer).to_contain_text("Cached prompt tokens")  # 0: the fake upstream reports no cache use
    expect(drawer).to_contain_text("Prompt tokens written to cache")
    expect(drawer).to_contain_text("Cost (USD)")  # unknown here ("–"): these backends are unpriced
    path = drawer.locator("#failover-path tbody tr")
    expect(path).to_have_count(2)
    expect(path.nth(0)).to_contain_text("broken")
    expect(path.nth(0)).to_contain_text("http_5xx")
    expect(path.nth(1)).to_contain_text("ok")
    link = drawer.locator("#trace-link")
    assert link.get_attribute("href") == f"{PROJECT_URL}?q=trace_id%3D'{record['trace_id']}'"
    page.locator("#records").evaluate("element => { element.scrollTop = 0; }")
    screenshot(page, "logs")
    page.keyboard.press("Escape")
    expect(drawer).to_be_hidden()


def test_a_request_sent_now_appears_live_and_pause_holds_it(page: Page, gateway: GatewayProcess) -> None:
    sign_in(page, gateway)
    expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
    first = f"live-{secrets.token_hex(4)}"
    assert chat(gateway, "gpt", first).status_code == 200
    expect(rows(page).first).to_have_attribute("data-request-id", first)

    page.click("#pause")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "paused")
    held = f"held-{secrets.token_hex(4)}"
    assert chat(gateway, "gpt", held).status_code == 200
    expect(page.locator("#pause")).to_have_text("Resume (1 new)")
    expect(page.locator(f'tr[data-request-id="{held}"]')).to_have_count(0)
    page.click("#pause")
    expect(rows(page).first).to_have_attribute("data-request-id", held)
    expect(page.locator("#live-state")).to_have_attribute("data-state", "live")


def test_export_downloads_the_filtered_records_as_json_lines(page: Page, gateway: GatewayProcess) -> None:
    errors = logs(gateway, status="error")
    sign_in(page, gateway, "/admin/logs?status=error")
    expect(rows(page)).to_have_count(len(errors))
    with page.expect_download() as started:
        page.click("#export")
    download = started.value
    assert download.suggested_filename.endswith(".jsonl")
    lines = Path(download.path()).read_text().splitlines()
    exported = [json.loads(line) for line in lines]
    assert [r["request_id"] for r in exported] == [r["request_id"] for r in errors]
    assert {r["status"] for r in exported} == {"error"}


def test_status_page_shows_the_version_a_rejected_reload_and_backend_health(
    page: Page, gateway: GatewayProcess, screenshot
) -> None:
    good = gateway.config_path.read_text()
    version = requests.get(gateway.url("/admin/api/config"), headers=ADMIN, timeout=5).json()["version"]
    broken = good.replace("    total: 120\n", '    total: "two minutes"\n')
    line = broken.splitlines().index('    total: "two minutes"') + 1
    gateway.config_path.write_text(broken)
    try:

        def rejected() -> bool:
            body = requests.get(gateway.url("/admin/api/config"), headers=ADMIN, timeout=5).json()
            return body["last_error"] is not None

        wait_until(rejected, timeout=10, interval=0.1)
        sign_in(page, gateway, "/admin/status")
        expect(page.locator("#config-version")).to_have_text(version)
        rejected_reload = page.locator("#rejected-reload")
        expect(rejected_reload).to_contain_text(f"gateway.yaml:{line}:12: timeouts.embeddings.total")
        expect(rejected_reload).to_contain_text(f"version {version} is still serving")
        broken_row = page.locator('#backends tr[data-backend="broken"]')
        expect(broken_row.locator(".circuit")).to_contain_text("open")
        expect(broken_row.locator(".error-rate")).to_contain_text("100% (3 of 3)")
        expect(page.locator('#backends tr[data-backend="oa"] .error-rate')).to_contain_text("0%")
        expect(page.locator('#backends tr[data-backend="stuck"] .error-rate')).to_have_text("no requests")
        screenshot(page, "status")
    finally:
        gateway.config_path.write_text(good)
    wait_until(lambda: not rejected(), timeout=10, interval=0.1)
    page.click("text=Refresh")
    expect(page.locator("#rejected-reload")).to_contain_text("a later reload succeeded")


def test_the_live_view_reconnects_after_the_gateway_restarts(
    page: Page, up: Upstreams, tmp_path: Path, gateway_server
) -> None:
    first = gateway_server(config(up, tmp_path / "audit.sqlite3"), env=ENV)
    sign_in(page, first)
    expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
    first.stop()
    expect(page.locator("#live-state")).to_have_attribute("data-state", "reconnecting")
    second = start_gateway(first.config_path, env=ENV, port=first.port)
    try:
        # The same session cookie works for the new process: the signing secret is on disk.
        expect(page.locator("#live-state")).to_have_attribute("data-state", "live", timeout=20_000)
        request_id = f"after-restart-{secrets.token_hex(4)}"
        assert chat(second, "gpt", request_id).status_code == 200
        expect(rows(page).first).to_have_attribute("data-request-id", request_id)
        expect(page.locator(".topbar")).to_be_visible()
    finally:
        second.stop()


# -- settings --------------------------------------------------------------------------------------


@pytest.fixture
def settings_gateway(gateway_server, up: Upstreams, tmp_path: Path) -> GatewayProcess:
    return gateway_server(config(up, tmp_path / "audit.sqlite3"), env=ENV)


def test_a_timeout_saved_in_the_settings_page_is_written_and_enforced(
    page: Page, settings_gateway: GatewayProcess
) -> None:
    gateway = settings_gateway
    before = gateway.config_path.read_text()
    sign_in(page, gateway, "/admin/settings")
    expect(page.locator("#chat-total")).to_have_value("30")
    expect(page.locator("#save")).to_be_disabled()

    # The form checks the schema's bounds before the server does.
    page.fill("#chat-total", "100000")
    expect(page.locator("#save")).to_be_disabled()
    expect(page.locator("#timeouts .problem").first).to_contain_text("At most 86400")
    page.fill("#chat-total", "2")
    page.click("#save")
    expect(page.locator("#saved")).to_contain_text("Saved and applied")
    expect(page.locator("#result pre.diff")).to_contain_text("+    total: 2        # half a minute, for now")
    # (The settings page's screenshot is test_settings_page's.)

    after = gateway.config_path.read_text()
    assert after == before.replace(
        "    total: 30        # half a minute", "    total: 2        # half a minute"
    )
    # The stuck backend never answers: the request now ends at the new 2 s limit, not at 30 s.
    response = chat(gateway, "stuck", timeout=20)
    assert response.status_code == 504
    problem = response.json()
    assert (problem["tier"], problem["limit_seconds"]) == ("chat", 2)


def test_a_stale_edit_shows_the_conflict_and_reloads_the_values(
    page: Page, settings_gateway: GatewayProcess
) -> None:
    gateway = settings_gateway
    sign_in(page, gateway, "/admin/settings")
    expect(page.locator("#embeddings-total")).to_have_value("120")
    # Someone edits the file on disk after the page loaded.
    edited = gateway.config_path.read_text().replace(
        "    total: 120\n", "    total: 121   # raised by hand\n"
    )
    gateway.config_path.write_text(edited)
    page.fill("#chat-total", "45")
    page.click("#save")
    expect(page.locator("#conflict")).to_contain_text("gateway.yaml changed on disk since this page loaded")
    assert gateway.config_path.read_text() == edited  # nothing of ours was written

    page.click("#reload-values")
    expect(page.locator("#reloaded")).to_be_visible()
    expect(page.locator("#embeddings-total")).to_have_value("121")
    expect(page.locator("#chat-total")).to_have_value("30")
    page.fill("#chat-total", "45")
    page.click("#save")
    expect(page.locator("#saved")).to_contain_text("Saved and applied")
    assert "total: 45        # half a minute" in gateway.config_path.read_text()
    assert "total: 121   # raised by hand" in gateway.config_path.read_text()


def test_with_write_back_off_the_settings_page_shows_the_patch(
    page: Page, gateway_server, up: Upstreams, tmp_path: Path
) -> None:
    gateway = gateway_server(config(up, tmp_path / "audit.sqlite3", write_back=False), env=ENV)
    before = gateway.config_path.read_bytes()
    sign_in(page, gateway, "/admin/settings")
    expect(page.locator("#write-back-off")).to_be_visible()
    page.fill("#chat-total", "60")
    page.click("#save")
    expect(page.locator("#patch-note")).to_contain_text("Write-back is off")
    expect(page.locator("#result pre.patch")).to_contain_text(
        "+    total: 60        # half a minute, for now"
    )
    assert gateway.config_path.read_bytes() == before


def test_the_status_page_shows_the_response_cache_and_clears_it(
    page: Page, gateway_server, up: Upstreams, tmp_path: Path
) -> None:
    text = config(up, tmp_path / "audit.sqlite3")
    line = "  gpt: {chain: [{backend: oa, model: gpt-4o-mini}]}"
    assert line in text
    cached = gateway_server(text.replace(line, line[:-1] + ", cache: {mode: exact}}"), env=ENV)
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    body = {"model": "gpt", "messages": MESSAGES, "max_tokens": 5, "temperature": 0}
    answers = [
        requests.post(cached.url("/v1/chat/completions"), json=body, headers=headers, timeout=10)
        for _ in range(2)
    ]
    assert [a.headers["x-gateway-cache"] for a in answers] == ["miss", "hit"]
    sign_in(page, cached, "/admin/status")
    card = page.locator("#cache-card")
    expect(card).to_contain_text("gpt")
    expect(page.locator("#cache-hit-rate")).to_contain_text("50% (1 hits, 1 misses")
    expect(card).to_contain_text("memory: 1 entries")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#cache-clear")
    expect(page.locator("#cache-cleared")).to_contain_text("1 entries dropped")
    expect(card).to_contain_text("memory: 0 entries")


def test_the_status_page_warns_of_a_local_model_on_the_slow_bundled_blas(
    page: Page, gateway_server, tiny_model: Path, tmp_path: Path
) -> None:
    text = f"""
auth:
  admin_keys: [{{name: ops, key: "${{GW_ADMIN_KEY}}"}}]
backends:
  local: {{type: mlx, path: "{tiny_model}", load: startup}}
models:
  local: {{chain: [{{backend: local}}]}}
audit: {{database_url: "sqlite://{tmp_path / "audit.sqlite3"}"}}
"""
    slow = gateway_server(text, env={**ENV, "GATEWAY_OPENBLAS": "off"})
    sign_in(page, slow, "/admin/status")
    warning = page.locator("#blas-warning")
    expect(warning).to_contain_text("Slow local model: local")
    expect(warning).to_contain_text("bundled reference BLAS")


def test_a_shadow_copy_is_marked_and_links_to_the_request_it_copied(
    page: Page, gateway: GatewayProcess
) -> None:
    assert chat(gateway, "mirrored", "mirrored-0").status_code == 200
    wait_until(lambda: bool(logs(gateway, shadow="true", model="mirrored")), timeout=10, interval=0.1)
    [copy] = logs(gateway, shadow="true", model="mirrored")
    assert copy["shadow_of"] == "mirrored-0" and copy["upstream_model"] == "gpt-4o"
    sign_in(page, gateway, "/admin/logs?model=mirrored")
    expect(rows(page)).to_have_count(2)
    copied = page.locator(f'#records tr[data-request-id="{copy["request_id"]}"]')
    expect(copied.locator(".badge.shadow")).to_have_text("shadow")
    expect(page.locator('#records tr[data-request-id="mirrored-0"] .badge.shadow')).to_have_count(0)
    copied.click()
    link = page.locator("#drawer").get_by_role("link", name="mirrored-0")
    expect(link).to_be_visible()
    assert link.get_attribute("href") == "/admin/logs?request_id=mirrored-0"
