"""Browser fixtures: Debian's chromium driven by Playwright (no browser download), one browser per
test module and a fresh context (cookies, storage) per test, at a laptop's screen size.

Screenshots the tests take go to the test's temp directory; with `UPDATE_SCREENSHOTS=1` they are
also copied to docs/screenshots/ (the README shows them).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("GATEWAY_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
NO_CHROMIUM = "no chromium binary (apt-get install chromium, as .ci/run does; or set GATEWAY_CHROMIUM)"
if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip(NO_CHROMIUM, allow_module_level=True)

from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright  # noqa: E402

from tests.conftest import service_missing  # noqa: E402
from tests.e2e.upstreams import Upstreams, fake_upstreams  # noqa: E402

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
VIEWPORT = {"width": 1280, "height": 800}


@pytest.fixture(scope="module")
def up() -> Iterator[Upstreams]:
    """Fake OpenAI and Anthropic upstreams for a module's gateways."""
    with fake_upstreams() as upstreams:
        yield upstreams


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Module scope: Playwright's sync API keeps an event loop running on this thread while it is
    # open, which would break asyncio tests in modules that run after this one.
    if CHROMIUM is None:
        service_missing(NO_CHROMIUM)  # under CI (else the module was skipped above): a failure
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Browser, gateway_server: Callable[..., object]) -> Iterator[BrowserContext]:
    # After `gateway_server`, so it is closed before the test's gateways stop: a context still open
    # holds kept-alive connections, which a draining gateway keeps `drain_idle_seconds` (2 s).
    opened = browser.new_context(viewport=VIEWPORT, accept_downloads=True, locale="en-GB", timezone_id="UTC")
    opened.set_default_timeout(15_000)
    yield opened
    opened.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    """A page that fails the test on any uncaught JavaScript error."""
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def screenshot(tmp_path: Path) -> Callable[[Page, str], Path]:
    """`screenshot(page, "logs")`: a PNG of the viewport, or of the whole page with `full_page=True`
    (into docs/screenshots with UPDATE_SCREENSHOTS=1)."""

    def take(page: Page, name: str, *, full_page: bool = False) -> Path:
        path = tmp_path / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        assert path.read_bytes().startswith(b"\x89PNG")
        if os.environ.get("UPDATE_SCREENSHOTS") == "1":
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, SCREENSHOTS / path.name)
        return path

    return take
