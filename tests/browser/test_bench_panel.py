"""The status page's "Test performance" in real headless Chromium against the real server and a fake
OpenAI upstream: the button starts a run, the backend's tile shows its progress and a Cancel button,
a cancelled run keeps its partial figures, and a finished run's figures per concurrency level appear
on the tile with the earlier runs below."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Page, expect

from gateway.testing import Behaviour, FakeOpenAI
from gateway.testing.process import GatewayProcess
from tests.browser.test_layout import assert_no_sideways_scroll, assert_tables_scroll_in_wrappers

ADMIN_KEY = "admin-key-bench-browser"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.in_thread(Behaviour(latency_ms=40, token_delay_ms=2, reply_tokens=8)) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(
    gateway_server_module, fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> GatewayProcess:
    audit: Path = tmp_path_factory.mktemp("audit") / "audit.sqlite3"
    return gateway_server_module(
        f"""\
auth:
  admin_keys: [{{name: ops, key: "${{GW_ADMIN_KEY}}"}}]
backends:
  up: {{type: openai_compatible, base_url: "{fake.base_url}"}}
  spare: {{type: openai_compatible, base_url: "{fake.base_url}", enabled: false}}
models:
  gpt: {{chain: [{{backend: up, model: gpt-4o-mini}}, {{backend: spare, model: gpt-4o}}]}}
audit:
  database_url: "sqlite://{audit}"
reload:
  watch: false
""",
        env={"GW_ADMIN_KEY": ADMIN_KEY},
    )


def sign_in(page: Page, gateway: GatewayProcess, path: str) -> None:
    page.goto(gateway.url(path))
    page.fill("#admin-key", ADMIN_KEY)
    page.click("form button[type=submit]")
    expect(page.locator(".topbar")).to_be_visible()


def test_test_performance_shows_progress_then_the_result_on_the_tile(
    page: Page, gateway: GatewayProcess, screenshot
) -> None:
    sign_in(page, gateway, "/admin/status")
    expect(page.locator('#backends tr[data-backend="spare"] .bench-open')).to_be_disabled()

    # The row's button starts a run with the defaults (3 levels of 5 s): progress, then Cancel.
    page.click('#backends tr[data-backend="up"] .bench-open')
    tile = page.locator("#bench-up")
    expect(tile.locator(".bench-progress")).to_contain_text("Level 1 of 3 (concurrency 1)")
    expect(tile.locator(".bench-progress")).to_contain_text(re.compile(r"[1-9][0-9]* requests"))
    tile.locator(".bench-cancel").click()
    expect(tile.locator(".bench-result")).to_contain_text("cancelled")
    expect(tile.locator(".bench-progress")).to_have_count(0)
    expect(tile.locator(".bench-result tbody tr").first).to_contain_text("(partial)")

    # A short series from the tile's own form: two levels, then their figures.
    tile.locator(".bench-levels").fill("1, 2")
    tile.locator(".bench-seconds").fill("1")
    tile.locator(".bench-start").click()
    expect(tile.locator(".bench-result")).to_contain_text("done", timeout=30_000)
    figures = tile.locator(".bench-result tbody tr")
    expect(figures).to_have_count(2)
    expect(figures.nth(0)).to_have_attribute("data-concurrency", "1")
    expect(figures.nth(1)).to_have_attribute("data-concurrency", "2")
    expect(figures.nth(1).locator(".rps")).not_to_have_text("0.0")
    expect(tile.locator(".bench-result")).to_contain_text("by ops")
    expect(tile.locator(".bench-not-stored")).to_have_count(0)
    # The cancelled run is in the stored history below; the page's own refresh keeps the tile.
    tile.locator(".bench-history summary").click()
    expect(tile.locator(".bench-history tbody tr")).to_have_count(1)
    expect(tile.locator(".bench-history tbody tr")).to_contain_text("cancelled")
    page.click("text=Refresh")
    expect(tile.locator(".bench-result")).to_contain_text("done")
    tile.scroll_into_view_if_needed()
    screenshot(page, "status-benchmark")


def test_a_refused_run_shows_the_problem_on_the_tile(page: Page, gateway: GatewayProcess) -> None:
    sign_in(page, gateway, "/admin/status")
    page.click('#backends tr[data-backend="up"] .bench-open')
    tile = page.locator("#bench-up")
    expect(tile.locator(".bench-progress")).to_be_visible()
    tile.locator(".bench-levels").fill("1, 2, 4, 8, 16, 32")
    tile.locator(".bench-start").click()  # six levels: refused (400), said on the tile
    expect(tile.locator(".bench-error")).to_contain_text("concurrency: expected 1 to 5 whole numbers")
    tile.locator(".bench-levels").fill("1")
    tile.locator(".bench-start").click()  # while one runs: refused (409)
    expect(tile.locator(".bench-error")).to_contain_text("ops is benchmarking backend 'up'")
    expect(tile.locator(".bench-progress")).to_be_visible()  # the run under way goes on
    tile.locator(".bench-cancel").click()
    expect(tile.locator(".bench-result")).to_contain_text("cancelled")


def test_a_run_under_way_shows_its_tile_when_the_page_opens(page: Page, gateway: GatewayProcess) -> None:
    started = requests.post(
        gateway.url("/admin/api/backends/up/bench"),
        json={"concurrency": [1], "seconds_per_level": 20},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
        timeout=10,
    )
    assert started.status_code == 202, started.text
    sign_in(page, gateway, "/admin/status")
    tile = page.locator("#bench-up")
    expect(tile.locator(".bench-progress")).to_contain_text("Level 1 of 1 (concurrency 1)")
    tile.locator(".bench-cancel").click()
    expect(tile.locator(".bench-result")).to_contain_text("cancelled")


def test_on_a_phone_the_tile_fits_the_screen(browser, gateway: GatewayProcess, screenshot) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        sign_in(page, gateway, "/admin/status")
        page.click('#backends tr[data-backend="up"] .bench-open')
        tile = page.locator("#bench-up")
        expect(tile.locator(".bench-progress")).to_be_visible()
        tile.locator(".bench-cancel").click()
        expect(tile.locator(".bench-result")).to_contain_text("cancelled")
        tile.locator(".bench-levels").fill("1, 2, 4")
        tile.locator(".bench-seconds").fill("0.5")
        tile.locator(".bench-start").click()
        expect(tile.locator(".bench-result")).to_contain_text("done", timeout=30_000)
        tile.locator(".bench-history summary").click()
        assert_no_sideways_scroll(page, 390)
        assert_tables_scroll_in_wrappers(page, 390)
        tile.scroll_into_view_if_needed()
        screenshot(page, "status-benchmark-phone")
    finally:
        context.close()
