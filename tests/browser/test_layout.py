"""Every page of the admin panel fits the screen, on a phone (390 px) and on a laptop (1366 px): real
headless Chromium against the real server, over the Usage page's seeded audit log (so tables have rows).

On each page × screen: nothing makes the page scroll sideways (a failure names the elements that stick
out), every table sits in a wrapper that scrolls it sideways on its own, and the top bar holds its
parts side by side or on rows of their own, each on one line, none over another, none outside the bar.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from gateway.audit.store import AuditStore
from gateway.testing.process import GatewayProcess
from tests.audit.conftest import run_sync
from tests.browser.test_usage_page import ADMIN_KEY, ENV, entries
from tests.browser.test_usage_page import config as usage_config

#: name → (width, height, phone?). A small window: where the laptop's one-row top bar ran out of room.
SCREENS = {"phone": (390, 844, True), "small-window": (720, 900, False), "desktop": (1366, 768, False)}
#: The admin's name in the top bar: a long one, as real key names are.
ADMIN_NAME = "platform-on-call-team"
#: The top bar is one row of 48 px on a laptop; on a phone the page links may take a row below it.
BAR_HEIGHT = 48

TIMEOUTS = """\
timeouts:
  chat: {total: 30, first_byte: 25}
  embeddings: {total: 120}
"""


async def _seed(path: Path) -> None:
    store = await AuditStore.open(f"sqlite://{path}")
    try:
        await store.insert(entries(datetime.now(UTC)))
    finally:
        await store.close()


@pytest.fixture(scope="module")
def gateway(gateway_server_module, tmp_path_factory) -> GatewayProcess:
    audit = tmp_path_factory.mktemp("audit") / "audit.sqlite3"
    run_sync(_seed(audit))
    text = usage_config(audit)
    assert "name: ops," in text
    return gateway_server_module(text.replace("name: ops,", f"name: {ADMIN_NAME},") + TIMEOUTS, env=ENV)


def sign_in(page: Page, gateway: GatewayProcess, path: str) -> None:
    page.goto(gateway.url(path))
    page.fill("#admin-key", ADMIN_KEY)
    page.click("form button[type=submit]")
    expect(page.locator(".topbar")).to_be_visible()


def open_logs_drawer(page: Page) -> None:
    page.locator("#records tr.record").first.click()
    expect(page.locator("#drawer #failover-path")).to_be_visible()


def edit_a_timeout(page: Page) -> None:
    page.fill("#chat-total", "45")  # an unsaved edit: its field shows the longer "was … now …" hint
    expect(page.locator("#timeouts .field.changed")).to_have_count(1)


#: The panel's views: name → (URL, what shows once its data is in, what to do then). The names are
#: those of the screenshots in docs/screenshots ("<name>.png", "<name>-phone.png").
VIEWS: dict[str, tuple[str, str, Callable[[Page], None] | None]] = {
    "signin": ("/admin/signin", "#admin-key", None),
    "logs": ("/admin/logs", "#records tr.record >> nth=0", None),
    "logs-drawer": ("/admin/logs", "#records tr.record >> nth=0", open_logs_drawer),
    "usage": ("/admin/usage", "#chart-spend rect.bar >> nth=0", None),
    "models": ("/admin/models", ".model-card >> nth=0", None),
    "backends": ("/admin/backends", ".backend-card >> nth=0", None),
    "keys": ("/admin/keys", "#client-keys", None),
    "settings": ("/admin/settings", "#chat-total", edit_a_timeout),
    "status": ("/admin/status", "#backends tbody tr >> nth=0", None),
}

#: Elements whose right edge is past the viewport (outermost first), as "tag#id.class (right px)".
STICKING_OUT = """(width) => {
  const out = [];
  for (const element of document.querySelectorAll("body *")) {
    const box = element.getBoundingClientRect();
    if (box.width === 0 || box.right <= width + 0.5) continue;
    if (out.some((outer) => outer.element.contains(element))) continue;
    const name = element.tagName.toLowerCase() + (element.id ? `#${element.id}` : "")
      + [...element.classList].map((c) => `.${c}`).join("");
    out.push({ element, text: `${name} (right ${Math.round(box.right)} px)` });
  }
  return out.map((item) => item.text);
}"""

#: Each table, and the nearest element around it that scrolls sideways (its overflow-x and box).
TABLES = """() => [...document.querySelectorAll("main table, #drawer table")].map((table) => {
  let wrap = table.parentElement;
  while (wrap && !["auto", "scroll"].includes(getComputedStyle(wrap).overflowX)) wrap = wrap.parentElement;
  const name = table.id || table.className;
  if (!wrap || wrap === document.documentElement || wrap === document.body) return { name, wrap: null };
  const box = wrap.getBoundingClientRect();
  return { name, wrap: wrap.id || wrap.className, left: box.left, right: box.right };
})"""

#: The top bar's box, and its parts': their boxes and how many lines their text takes.
TOP_BAR = """() => {
  const bar = document.querySelector(".topbar");
  const lines = (element) => {
    const range = document.createRange();
    range.selectNodeContents(element);
    const boxes = [...range.getClientRects()].filter((r) => r.width > 0);
    return new Set(boxes.map((r) => Math.round(r.top))).size;
  };
  const rect = (element) => {
    const box = element.getBoundingClientRect();
    return { left: box.left, right: box.right, top: box.top, bottom: box.bottom, height: box.height };
  };
  const parts = [...bar.children].filter((child) => child.getClientRects().length > 0);
  const texts = [...bar.querySelectorAll("a, span, button")].filter((e) => e.getClientRects().length > 0
    && e.textContent.trim());
  return {
    bar: rect(bar),
    parts: parts.map((part) => ({ name: part.className || part.tagName.toLowerCase(), ...rect(part) })),
    texts: texts.map((e) => ({ text: e.textContent.trim(), lines: lines(e),
      cut: e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).display !== "inline",
      ellipsis: getComputedStyle(e).textOverflow === "ellipsis" && e.title === e.textContent })),
    mainTop: document.querySelector("main").getBoundingClientRect().top,
  };
}"""


@pytest.fixture(params=list(SCREENS), scope="module")
def screen(request, browser: Browser) -> Iterator[tuple[str, Any]]:
    """A browser context with the screen's size (a phone's: touch, 2× pixels), shared by a screen's tests."""
    width, height, phone = SCREENS[request.param]
    context = browser.new_context(
        viewport={"width": width, "height": height},
        locale="en-GB",
        timezone_id="UTC",
        **({"device_scale_factor": 2, "is_mobile": True, "has_touch": True} if phone else {}),
    )
    context.set_default_timeout(15_000)
    yield request.param, context
    context.close()


def overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return min(a["right"], b["right"]) - max(a["left"], b["left"]) > 0.5 and (
        min(a["bottom"], b["bottom"]) - max(a["top"], b["top"]) > 0.5
    )


def within(part: dict[str, float], box: dict[str, float]) -> bool:
    return (
        part["left"] >= box["left"] - 0.5
        and part["right"] <= box["right"] + 0.5
        and part["top"] >= box["top"] - 0.5
        and part["bottom"] <= box["bottom"] + 0.5
    )


def assert_no_sideways_scroll(page: Page, width: int) -> None:
    scroll_width, inner_width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    # A phone widens its layout viewport to fit what is too wide: innerWidth grows past the screen's.
    assert scroll_width <= width and inner_width == width, (
        f"the page scrolls sideways (scrollWidth {scroll_width}, innerWidth {inner_width}, "
        f"screen {width} px); sticking out: {page.evaluate(STICKING_OUT, width)}"
    )


def assert_tables_scroll_in_wrappers(page: Page, width: int) -> None:
    for table in page.evaluate(TABLES):
        assert table["wrap"], f"table {table['name']} has no wrapper that scrolls it sideways"
        assert table["left"] >= -0.5 and table["right"] <= width + 0.5, (
            f"the wrapper of table {table['name']} is not within the screen: {table}"
        )


def assert_top_bar_holds_its_parts(page: Page, most_height: float) -> dict[str, float]:
    """Its parts inside it and apart, their text on one line (cut short only with "…" and the whole
    text in the title), at most `most_height` high, the page below it; returns its box."""
    top = page.evaluate(TOP_BAR)
    bar, parts = top["bar"], top["parts"]
    for i, part in enumerate(parts):
        assert within(part, bar), f"{part['name']} sticks out of the top bar {bar}: {part}"
        for other in parts[i + 1 :]:
            assert not overlap(part, other), f"{part['name']} overlaps {other['name']}: {part}, {other}"
    for text in top["texts"]:
        assert text["lines"] == 1, f"top bar text wraps: {text}"
        assert not text["cut"] or text["ellipsis"], f"top bar text is cut: {text}"
    expect(page.locator("#who-name")).to_have_text(ADMIN_NAME)
    assert bar["height"] <= most_height, f"the top bar is {bar['height']} px high (at most {most_height})"
    assert top["mainTop"] >= bar["bottom"] - 0.5, "the top bar covers the page"
    return bar


@pytest.mark.parametrize("view", list(VIEWS))
def test_the_page_fits_the_screen(view: str, screen, gateway: GatewayProcess, screenshot) -> None:
    screen_name, context = screen
    width = SCREENS[screen_name][0]
    path, ready, prepare = VIEWS[view]
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        context.clear_cookies()  # each view signs in afresh
        if view == "signin":
            page.goto(gateway.url(path))
        else:
            sign_in(page, gateway, path)
        expect(page.locator(ready)).to_be_visible()
        if prepare:
            prepare(page)

        assert_no_sideways_scroll(page, width)
        assert_tables_scroll_in_wrappers(page, width)
        if view != "signin":
            rows = 1 if screen_name == "desktop" else 2  # narrower: the page links on a row of their own
            bar = assert_top_bar_holds_its_parts(page, rows * BAR_HEIGHT)
            drawer = page.locator("#drawer")
            if drawer.is_visible():
                box = drawer.bounding_box()
                assert box is not None and box["y"] >= bar["bottom"] - 0.5, "the drawer covers the top bar"

        # The laptop's screenshots are test_admin_panel's; the phone's of the pages with a test of
        # their own (usage, models, backends, keys, settings) are taken there.
        if screen_name == "phone" and view in ("signin", "logs", "logs-drawer", "status"):
            screenshot(page, f"{view}-phone", full_page=view != "logs-drawer")  # the drawer: as on screen
        assert not errors, f"JavaScript errors on the page: {errors}"
    finally:
        page.close()
