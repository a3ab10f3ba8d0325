"""The settings page's sections that edit through the generic edit API (failover, telemetry) and the
audit log's read-only card, in real headless Chromium against `gateway serve` (fake upstreams): each
change is shown as a diff before it is written, the file then holds exactly that diff (comments
kept), and the gateway serves by it at once; with write-back off the page gives a patch `git apply`
takes; a file edited meanwhile is a conflict the page reapplies the change to."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from playwright.sync_api import Browser, Page, expect

from gateway.testing.otlp import FakeCollector
from gateway.testing.process import GatewayProcess
from tests.browser.editing import git_apply, shown_diff
from tests.browser.test_admin_panel import ADMIN, ENV, chat, config, sign_in
from tests.conftest import wait_until
from tests.e2e.upstreams import Upstreams, fake_upstreams

#: The comments of test_admin_panel's config that every save must keep.
COMMENTS = (
    "# Team gateway. Every comment here must survive",
    "# the product",
    "# GitOps switch",
    "total: 30        # half a minute, for now",
)


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    with fake_upstreams() as running:
        yield running


@pytest.fixture
def settings_gateway(gateway_server, upstreams: Upstreams, tmp_path: Path) -> GatewayProcess:
    return gateway_server(config(upstreams, tmp_path / "audit.sqlite3"), env=ENV)


def circuit(gateway: GatewayProcess, backend: str) -> dict:
    body = requests.get(gateway.url("/admin/api/backends"), headers=ADMIN, timeout=10).json()
    [found] = [b for b in body["backends"] if b["name"] == backend]
    return found["circuit"]


def test_failover_change_is_reviewed_written_as_shown_and_live(
    page: Page, settings_gateway: GatewayProcess, tmp_path: Path, screenshot
) -> None:
    gateway = settings_gateway
    before = gateway.config_path.read_bytes()
    assert chat(gateway, "flaky").status_code == 200  # broken first, then oa: it fails over
    sign_in(page, gateway, "/admin/settings")
    section = page.locator("#failover")
    expect(page.locator("#failover-max-attempts")).to_have_value("0")
    expect(page.locator("#failover-circuit-breaker-failure-threshold")).to_have_value("3")
    expect(section).to_contain_text("failover.circuit_breaker.failure_threshold · gateway.yaml line")
    expect(section).to_contain_text("failover.max_attempts · default")
    expect(page.locator("#failover-review")).to_be_disabled()

    # The schema's bounds are checked as you type.
    page.fill("#failover-circuit-breaker-failure-threshold", "0")
    expect(section.locator(".problem").filter(has_text="At least 1")).to_be_visible()
    expect(page.locator("#failover-review")).to_be_disabled()
    page.fill("#failover-circuit-breaker-failure-threshold", "7")
    page.fill("#failover-max-attempts", "1")
    page.click("#failover-review")
    review = section.locator("#review")
    expect(review).to_contain_text("Review: failover: max_attempts, circuit_breaker.failure_threshold")
    expect(review.locator("pre.diff")).to_contain_text(
        "+  circuit_breaker: {failure_threshold: 7, cooldown_seconds: 600}"
    )
    expect(review.locator("pre.diff")).to_contain_text("+  max_attempts: 1")
    diff = shown_diff(page, "#failover #review pre.diff")
    assert gateway.config_path.read_bytes() == before  # nothing written before the save
    page.evaluate("window.scrollTo(0, 0)")  # (the top bar is fixed: it shows where the page is scrolled)
    screenshot(page, "settings", full_page=True)

    page.click("#failover #confirm-save")
    expect(section.locator("#saved")).to_contain_text("Saved and applied")
    after = gateway.config_path.read_bytes()
    assert git_apply(before, diff, tmp_path) == after  # the file changed exactly as shown
    assert all(comment in after.decode() for comment in COMMENTS)
    expect(page.locator("#failover-max-attempts")).to_have_value("1")
    expect(section).to_contain_text("failover.max_attempts · gateway.yaml line")

    # Live: one attempt per request now (the failure is answered, no failover) ...
    answer = chat(gateway, "flaky")
    assert answer.status_code == 502
    # ... and the circuit opens after 7 consecutive failures, not 3 (flaky's two made 2 so far).
    for _ in range(4):
        assert chat(gateway, "broken").status_code == 502
    assert circuit(gateway, "broken")["state"] == "closed"
    assert circuit(gateway, "broken")["consecutive_failures"] == 6
    assert chat(gateway, "broken").status_code == 502
    assert circuit(gateway, "broken")["state"] == "open"


def test_prometheus_is_switched_off_and_on_without_a_restart(
    page: Page, settings_gateway: GatewayProcess
) -> None:
    gateway = settings_gateway
    assert requests.get(gateway.url("/metrics"), timeout=10).status_code == 200
    sign_in(page, gateway, "/admin/settings")
    expect(page.locator("#metrics-state")).to_contain_text("Metrics: on, served at /metrics")
    switch = page.locator("#telemetry-prometheus-enabled")
    expect(switch).to_be_checked()
    expect(page.locator("#telemetry")).to_contain_text("Applies at once, without a restart.")

    switch.uncheck()
    page.click("#telemetry-review")
    diff = page.locator("#telemetry #review pre.diff")
    expect(diff).to_contain_text("+  prometheus:")
    expect(diff).to_contain_text("+    enabled: false")
    page.click("#telemetry #confirm-save")
    expect(page.locator("#telemetry #saved")).to_contain_text("Saved and applied")
    expect(page.locator("#metrics-state")).to_contain_text("Metrics: off: /metrics answers 404")
    off = requests.get(gateway.url("/metrics"), timeout=10)
    assert off.status_code == 404 and off.headers["content-type"].startswith("application/problem+json")

    switch.check()
    page.click("#telemetry-review")
    expect(page.locator("#telemetry #review pre.diff")).to_contain_text("+    enabled: true")
    page.click("#telemetry #confirm-save")
    expect(page.locator("#telemetry #saved")).to_contain_text("Saved and applied")
    assert requests.get(gateway.url("/metrics"), timeout=10).status_code == 200
    assert gateway.process.poll() is None  # the same process all along
    assert all(comment in gateway.config_path.read_text() for comment in COMMENTS)


def test_the_audit_card_shows_retention_database_and_the_last_purge(
    page: Page,
    gateway_server,
    upstreams: Upstreams,
    tmp_path: Path,
) -> None:
    text = config(upstreams, tmp_path / "audit.sqlite3").replace(
        "  flush_interval_ms: 50\n", "  flush_interval_ms: 50\n  retention_days: 14\n"
    )
    gateway = gateway_server(text, env=ENV)
    sign_in(page, gateway, "/admin/settings")
    card = page.locator("#audit-settings")
    expect(card).to_contain_text("14 days: older records are deleted at start and daily")
    expect(page.locator("#audit-database")).to_have_text(f"sqlite://{tmp_path / 'audit.sqlite3'}")
    expect(card).to_contain_text("0 records deleted, by this worker")  # the purge at start
    expect(card.locator("input, select, button")).to_have_count(0)  # read-only


def test_a_database_password_is_shown_only_as_its_reference(
    page: Page,
    gateway_server,
    upstreams: Upstreams,
    tmp_path: Path,
) -> None:
    url = 'database_url: "postgres://gw:${AUDIT_DB_PASSWORD}@127.0.0.1:9/audit"'
    text = config(upstreams, tmp_path / "audit.sqlite3").replace(
        f'database_url: "sqlite://{tmp_path / "audit.sqlite3"}"', url
    )
    assert url in text
    gateway = gateway_server(text, env={**ENV, "AUDIT_DB_PASSWORD": "hunter2-secret"})
    sign_in(page, gateway, "/admin/settings")
    expect(page.locator("#audit-database")).to_have_text(
        "postgres://gw:${AUDIT_DB_PASSWORD}@127.0.0.1:9/audit"
    )
    assert "hunter2-secret" not in page.content()


def test_with_write_back_off_the_failover_change_is_a_patch_git_applies(
    page: Page,
    gateway_server,
    upstreams: Upstreams,
    tmp_path: Path,
) -> None:
    gateway = gateway_server(config(upstreams, tmp_path / "audit.sqlite3", write_back=False), env=ENV)
    before = gateway.config_path.read_bytes()
    sign_in(page, gateway, "/admin/settings")
    expect(page.locator("#write-back-off")).to_be_visible()
    page.locator("#failover-retry-on-http-429").uncheck()
    page.fill("#failover-max-attempts", "2")
    page.click("#failover-review")
    expect(page.locator("#failover #confirm-save")).to_have_text("Show the patch")
    page.click("#failover #confirm-save")
    expect(page.locator("#failover #patch-note")).to_contain_text("Write-back is off")
    patch = shown_diff(page, "#failover pre.patch")
    assert gateway.config_path.read_bytes() == before
    after = git_apply(before, patch, tmp_path).decode()
    assert yaml.safe_load(after)["failover"] == {
        "circuit_breaker": {"failure_threshold": 3, "cooldown_seconds": 600},
        "retry_on": ["connect_error", "timeout", "http_5xx", "overloaded"],
        "max_attempts": 2,
    }
    assert all(comment in after for comment in COMMENTS)


def test_a_file_edited_after_load_is_a_conflict_and_the_change_is_reapplied(
    page: Page, settings_gateway: GatewayProcess
) -> None:
    gateway = settings_gateway
    sign_in(page, gateway, "/admin/settings")
    expect(page.locator("#failover-circuit-breaker-failure-threshold")).to_have_value("3")
    # Someone edits the file on disk after the page loaded.
    text = gateway.config_path.read_text()
    edited = text.replace("cooldown_seconds: 600}", "cooldown_seconds: 900}  # raised by hand")
    assert edited != text
    gateway.config_path.write_text(edited)
    page.fill("#failover-circuit-breaker-failure-threshold", "9")
    page.click("#failover-review")
    expect(page.locator("#failover #conflict")).to_contain_text("gateway.yaml changed since this page loaded")
    assert gateway.config_path.read_text() == edited

    page.click("#failover #reapply")
    expect(page.locator("#failover #review pre.diff")).to_contain_text(
        "+  circuit_breaker: {failure_threshold: 9, cooldown_seconds: 900}  # raised by hand"
    )
    page.click("#failover #confirm-save")
    expect(page.locator("#failover #saved")).to_contain_text("Saved and applied")
    saved = gateway.config_path.read_text()
    assert saved == edited.replace(
        "failure_threshold: 3, cooldown_seconds: 900", "failure_threshold: 9, cooldown_seconds: 900"
    )


def test_one_review_at_a_time_and_the_timeouts_form_still_saves(
    page: Page, settings_gateway: GatewayProcess
) -> None:
    """A section's review replaces another's result on the page (their ids stay unique), and a save
    in one section leaves the others' versions current: the timeouts form saves after it."""
    gateway = settings_gateway
    sign_in(page, gateway, "/admin/settings")
    page.fill("#failover-max-attempts", "3")
    page.click("#failover-review")
    page.click("#failover #confirm-save")
    expect(page.locator("#failover #saved")).to_be_visible()
    page.fill("#chat-total", "40")
    page.click("#save")
    expect(page.locator("#result #saved")).to_contain_text("Saved and applied")
    expect(page.locator("#saved")).to_have_count(1)
    # And the other way round: after the timeouts form saved, a section's change is no conflict.
    page.fill("#failover-circuit-breaker-cooldown-seconds", "45")
    page.click("#failover-review")
    expect(page.locator("#result #saved")).to_have_count(0)
    page.click("#failover #confirm-save")
    expect(page.locator("#failover #saved")).to_be_visible()
    text = gateway.config_path.read_text()
    assert "  max_attempts: 3\n" in text and "total: 40        # half a minute" in text
    assert "{failure_threshold: 3, cooldown_seconds: 45}" in text


def test_the_page_fits_a_phone(browser: Browser, settings_gateway: GatewayProcess, screenshot) -> None:
    context = browser.new_context(
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        locale="en-GB",
        timezone_id="UTC",
    )
    try:
        page = context.new_page()
        sign_in(page, settings_gateway, "/admin/settings")
        expect(page.locator("#audit-fields")).to_contain_text("by this worker")
        page.fill("#failover-max-attempts", "2")
        page.click("#failover-review")
        expect(page.locator("#failover #review pre.diff")).to_be_visible()
        width, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width <= inner == 390
        # Keyboard: the review's save button has the focus, and Enter saves.
        expect(page.locator("#failover #confirm-save")).to_be_focused()
        page.locator("#failover #cancel-change").focus()
        page.keyboard.press("Enter")
        expect(page.locator("#failover #review")).to_have_count(0)
        page.locator("#failover-review").focus()
        page.keyboard.press("Enter")
        expect(page.locator("#failover #review pre.diff")).to_be_visible()
        # The screen as the admin sees it: the failover section's change under review.
        page.evaluate("document.querySelector('#failover #review').scrollIntoView({block: 'end'})")
        screenshot(page, "settings-phone")
    finally:
        context.close()


def test_traces_are_switched_off_and_on_and_renamed_without_a_restart(
    page: Page, gateway_server, upstreams: Upstreams, tmp_path: Path
) -> None:
    collector = FakeCollector()
    gateway: GatewayProcess | None = None
    try:
        env = {**ENV, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.traces_url}
        env["OTEL_BSP_SCHEDULE_DELAY"] = "50"
        gateway = gateway_server(config(upstreams, tmp_path / "audit.sqlite3"), env=env)

        def traced() -> set[str]:
            return {
                attribute.value.string_value
                for span in list(collector.spans)
                if span.name == "model request"
                for attribute in span.attributes
                if attribute.key == "request_id"
            }

        sign_in(page, gateway, "/admin/settings")
        expect(page.locator("#tracing-state")).to_contain_text("Traces: on: spans go to otlp")
        page.locator("#telemetry-logfire-enabled").uncheck()
        page.click("#telemetry-review")
        expect(page.locator("#telemetry #review pre.diff")).to_contain_text("+    enabled: false")
        page.click("#telemetry #confirm-save")
        expect(page.locator("#telemetry #saved")).to_be_visible()
        expect(page.locator("#tracing-state")).to_contain_text(
            "Traces: off (telemetry.logfire.enabled is false)"
        )
        assert chat(gateway, "gpt", "while-dark").status_code == 200

        page.locator("#telemetry-logfire-enabled").check()
        page.fill("#telemetry-logfire-service-name", "gw-from-the-panel")
        page.click("#telemetry-review")
        diff = page.locator("#telemetry #review pre.diff")
        expect(diff).to_contain_text("+    service_name: gw-from-the-panel")
        page.click("#telemetry #confirm-save")
        expect(page.locator("#telemetry #saved")).to_be_visible()
        expect(page.locator("#tracing-state")).to_contain_text("Traces: on: spans go to otlp")
        assert chat(gateway, "gpt", "while-lit").status_code == 200
        wait_until(lambda: "while-lit" in traced(), timeout=15)
        # Spans leave in the order they end: one made while tracing was off would be here by now.
        assert "while-dark" not in traced()
        assert "gw-from-the-panel" in {r.get("service.name") for r in list(collector.resources)}
        assert gateway.process.poll() is None
    finally:
        if gateway is not None:  # first: at exit it sends its last spans, retrying while none answers
            gateway.stop()
        collector.close()


def test_settings_the_file_lacks_are_added_with_their_section(
    page: Page, gateway_server, upstreams: Upstreams, tmp_path: Path
) -> None:
    text = config(upstreams, tmp_path / "audit.sqlite3")
    block = "failover:\n  circuit_breaker: {failure_threshold: 3, cooldown_seconds: 600}\n\n"
    assert block in text
    gateway = gateway_server(text.replace(block, ""), env=ENV)
    sign_in(page, gateway, "/admin/settings")
    expect(page.locator("#failover-circuit-breaker-failure-threshold")).to_have_value("5")  # the default
    page.fill("#failover-circuit-breaker-failure-threshold", "8")
    page.fill("#failover-max-attempts", "2")
    page.click("#failover-review")
    expect(page.locator("#failover #review pre.diff")).to_contain_text("+failover:")
    page.click("#failover #confirm-save")
    expect(page.locator("#failover #saved")).to_be_visible()
    saved = yaml.safe_load(gateway.config_path.read_text())
    assert saved["failover"] == {"circuit_breaker": {"failure_threshold": 8}, "max_attempts": 2}
    assert all(comment in gateway.config_path.read_text() for comment in COMMENTS)
    # (The fields show the saved file once the section has loaded it.)
    expect(page.locator("#failover")).to_contain_text("failover.max_attempts · gateway.yaml line")
    # Emptying a number puts it back to its default: its line goes.
    page.fill("#failover-max-attempts", "")
    page.click("#failover-review")
    expect(page.locator("#failover #review pre.diff")).to_contain_text("-  max_attempts: 2")
    page.click("#failover #confirm-save")
    expect(page.locator("#failover #saved")).to_be_visible()
    assert yaml.safe_load(gateway.config_path.read_text())["failover"] == {
        "circuit_breaker": {"failure_threshold": 8}
    }
