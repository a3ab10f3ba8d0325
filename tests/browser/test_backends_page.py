"""The Backends page in real headless Chromium against the real server (`gateway serve` in a
subprocess, fake upstreams): the enabled switch, a backend's settings, adding and removing a backend,
each shown as a diff before it is written; the file changed exactly as shown and the change live;
a conflict reapplied on the new file; with write-back off, a patch that `git apply` takes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Page, expect

from gateway.testing.process import GatewayProcess
from tests.browser import editing
from tests.browser.editing import git_apply, shown_diff
from tests.browser.test_admin_panel import ADMIN, ADMIN_KEY, CLIENT_KEY, ENV, FAILS, MESSAGES
from tests.conftest import wait_until
from tests.e2e.upstreams import Upstreams, config_version

#: The line of the backend the switch test turns off and on (a flow mapping with a comment after it).
PRIMARY = (
    '  primary: {{type: openai_compatible, base_url: "{oa}", api_key: "${{FAKE_KEY}}"}}   # the main upstream'
)


def config(up: Upstreams, *, write_back: bool = True, local: bool = True) -> str:
    """The test file; `local` adds an mlx backend (never loaded, but its start costs a few seconds)."""
    oa, an = up.openai.base_url, up.anthropic.base_url
    primary = PRIMARY.format(oa=oa)
    mlx = "  local: {type: mlx, hf_repo: mlx-community/none-such, load: first_use}   # never loaded here\n"
    return f"""\
# Team gateway. Every comment here must survive the backends page.
auth:
  client_keys:
    - name: billing-app    # the product
      key: ${{GW_CLIENT_KEY}}
  admin_keys:
    - name: ops
      key: ${{GW_ADMIN_KEY}}

backends:
{primary}
  secondary:
    type: anthropic          # the fallback
    base_url: "{an}"
    api_key: ${{FAKE_KEY}}
    max_concurrency: 8       # the provider's plan
  cloud: {{type: openai, api_key: "${{MISSING_OPENAI_KEY:-}}"}}   # no key in this environment
  spare: {{type: openai_compatible, base_url: "{oa}"}}
  broken: {{type: openai_compatible, base_url: "{oa}", api_key: "${{FAKE_KEY}}", headers: {{{FAILS}}}}}
{mlx if local else ""}
models:
  duo: {{chain: [{{backend: primary, model: gpt-4o-mini}}, {{backend: secondary, model: claude-haiku-4-5}}]}}
  solo: {{chain: [{{backend: primary, model: gpt-4o-mini}}]}}
  bad: {{chain: [{{backend: broken, model: gpt-4o}}]}}

failover:
  circuit_breaker: {{failure_threshold: 3, cooldown_seconds: 600}}   # global, on the Settings page

admin:
  write_back: {"true" if write_back else "false"}   # GitOps switch
"""


@pytest.fixture(scope="module")
def shared(gateway_server_module, up: Upstreams) -> GatewayProcess:
    """One gateway for the module's write-back tests; each test starts from the original file."""
    return gateway_server_module(config(up), env=ENV)


def sign_in(page: Page, gateway: GatewayProcess) -> None:
    editing.sign_in(page, gateway, "/admin/backends", ADMIN_KEY, ready=".backend-card")


def serving_version(gateway: GatewayProcess) -> str:
    return requests.get(gateway.url("/admin/api/config"), headers=ADMIN, timeout=5).json()["version"]


@pytest.fixture
def gateway(shared: GatewayProcess, up: Upstreams) -> GatewayProcess:
    """The shared gateway, serving the original file again (a test before may have changed it)."""
    original = config(up)
    if shared.config_path.read_text() != original:
        shared.config_path.write_text(original)
    version = config_version(shared.config_path)
    wait_until(lambda: serving_version(shared) == version, timeout=10, interval=0.05)
    return shared


def card(page: Page, name: str):
    return page.locator(f'.backend-card[data-backend="{name}"]')


def served_by(gateway: GatewayProcess, model: str) -> str:
    """Which backend answered a chat request to `model` (the gateway says in x-gateway-backend)."""
    response = requests.post(
        gateway.url("/v1/chat/completions"),
        json={"model": model, "messages": MESSAGES, "max_tokens": 5},
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
        timeout=10,
    )
    return response.headers.get("x-gateway-backend", f"none ({response.status_code})")


def patches_sent(page: Page) -> list[str]:
    sent: list[str] = []
    page.on("request", lambda request: sent.append(request.url) if request.method == "PATCH" else None)
    return sent


def test_the_switch_disables_a_backend_as_the_diff_shows_and_requests_fail_over(
    page: Page, gateway: GatewayProcess, up: Upstreams, tmp_path: Path
) -> None:
    before = gateway.config_path.read_text()
    assert served_by(gateway, "duo") == "primary"
    sign_in(page, gateway)
    primary = card(page, "primary")
    expect(primary.locator(".used-by")).to_have_text("duo, solo")
    expect(primary.locator(".api-key")).to_contain_text("${FAKE_KEY}")
    expect(primary.locator(".api-key [data-key-set]")).to_have_text("set")
    expect(primary.locator(".live .circuit")).to_have_text("closed")
    # A cloud backend whose key variable is empty: off, and the page says which variable to set.
    expect(card(page, "cloud").locator(".api-key [data-key-set]")).to_have_text("empty")
    expect(card(page, "cloud").locator(".disabled-reason")).to_contain_text("set MISSING_OPENAI_KEY")
    assert "sk-fake" not in page.content()  # the resolved key is never on the page
    listing = requests.get(gateway.url("/admin/api/backends"), headers=ADMIN, timeout=5)
    keys = {b["name"]: b.get("api_key_set") for b in listing.json()["backends"]}
    assert keys == {
        "primary": True,
        "secondary": True,
        "cloud": False,
        "spare": False,
        "broken": True,
        "local": None,
    }
    assert "sk-fake" not in listing.text

    primary.get_by_role("switch", name="primary enabled").uncheck()
    review = page.locator("#review")
    expect(review.locator("pre.diff")).to_contain_text("enabled: false")
    # solo has no other target: the review says so before anything is written.
    expect(review.locator(".review-warning")).to_contain_text("Model solo has no other enabled target")
    expect(review.locator(".review-warning")).to_have_count(1)  # duo still has secondary
    diff = shown_diff(page, "#review pre.diff")
    assert before == gateway.config_path.read_text()  # nothing written yet
    page.click("#confirm-save")
    expect(page.locator("#saved")).to_contain_text("Saved and applied")

    after = gateway.config_path.read_text()
    primary_line = PRIMARY.format(oa=up.openai.base_url)
    assert after == before.replace(primary_line, primary_line.replace('}"}', '}", enabled: false}'))
    assert git_apply(before, diff, tmp_path / "shown") == after  # the file is what the diff said
    # Live: duo's requests go to the next target of its chain, solo has none left.
    assert served_by(gateway, "duo") == "secondary"
    assert served_by(gateway, "solo").startswith("none")
    expect(primary.get_by_role("switch", name="primary enabled")).not_to_be_checked()
    expect(primary.locator(".badge.off")).to_be_visible()

    primary.get_by_role("switch", name="primary enabled").check()
    expect(page.locator("#review pre.diff")).to_contain_text(
        "-" + primary_line.replace('}"}', '}", enabled: false}')
    )
    expect(page.locator("#review .review-warning")).to_have_count(0)
    page.click("#confirm-save")
    expect(page.locator("#saved")).to_contain_text("Saved and applied")
    assert gateway.config_path.read_text() == before  # `enabled: false` removed: the file as it was
    assert served_by(gateway, "duo") == "primary"


def test_a_setting_is_checked_against_the_schema_before_any_request_then_saved_live(
    page: Page, gateway: GatewayProcess
) -> None:
    before = gateway.config_path.read_text()
    sent = patches_sent(page)
    sign_in(page, gateway)
    primary = card(page, "primary")
    primary.locator("summary", has_text="Settings").click()
    field = primary.locator("input[name=max_concurrency]")
    expect(field).to_have_attribute("min", "0")  # the schema's bound
    expect(field).to_have_attribute("placeholder", "default 0")
    expect(field.locator("xpath=..")).to_contain_text("Most requests in flight")

    field.fill("-1")
    expect(field.locator("xpath=..").locator(".problem")).to_have_text("At least 0.")
    primary.get_by_role("button", name="Review changes").click()
    expect(primary.locator(".form-problem")).to_contain_text("max_concurrency: At least 0. Nothing was sent.")
    expect(page.locator("#review")).to_have_count(0)
    assert sent == []

    # The API key takes only a ${VAR} reference, never a key.
    key = primary.locator("input[name=api_key]")
    expect(key).to_have_value("${FAKE_KEY}")
    key.fill("sk-live-123")
    field.fill("4")
    primary.get_by_role("button", name="Review changes").click()
    expect(primary.locator(".form-problem")).to_contain_text("api_key: Only a ${NAME} reference")
    assert sent == []
    key.fill("${FAKE_KEY}")

    primary.get_by_role("button", name="Review changes").click()
    expect(page.locator("#review pre.diff")).to_contain_text('api_key: "${FAKE_KEY}", max_concurrency: 4}')
    page.click("#confirm-save")
    expect(page.locator("#saved")).to_contain_text("Saved and applied")
    assert gateway.config_path.read_text() == before.replace(
        'api_key: "${FAKE_KEY}"}   # the main', 'api_key: "${FAKE_KEY}", max_concurrency: 4}   # the main'
    )
    live = requests.get(gateway.url("/admin/api/backends"), headers=ADMIN, timeout=5).json()["backends"]
    assert next(b for b in live if b["name"] == "primary")["concurrency"]["max_concurrency"] == 4
    expect(primary.locator(".live")).to_contain_text("of 4 in flight")

    # An emptied optional field is removed from the file (its comment with it); nothing else changes.
    secondary = card(page, "secondary")
    secondary.locator("summary", has_text="Settings").click()
    secondary.locator("input[name=max_concurrency]").fill("")
    secondary.get_by_role("button", name="Review changes").click()
    diff = page.locator("#review pre.diff")
    expect(diff).to_contain_text("-    max_concurrency: 8       # the provider's plan")
    expect(diff.locator("span.add")).to_have_count(0)
    page.click("#cancel-change")
    expect(page.locator("#review")).to_have_count(0)

    # A quota on a backend without `limits` adds the whole entry, in the entry's own (flow) style.
    spare = card(page, "spare")
    spare.locator("summary", has_text="Settings").click()
    spare.locator("input[name='limits.requests_per_minute']").fill("60")
    spare.get_by_role("button", name="Review changes").click()
    expect(page.locator("#review pre.diff span.add")).to_have_text(
        [
            re.compile(
                r'^\+  spare: \{type: openai_compatible, base_url: ".*", '
                r"limits: \{requests_per_minute: 60\}\}$"
            )
        ]
    )
    page.click("#cancel-change")
    assert gateway.config_path.read_text() == before.replace(
        'api_key: "${FAKE_KEY}"}   # the main', 'api_key: "${FAKE_KEY}", max_concurrency: 4}   # the main'
    )


def test_a_file_changed_on_disk_is_a_conflict_and_the_change_is_reapplied_to_it(
    page: Page, gateway: GatewayProcess
) -> None:
    sign_in(page, gateway)
    primary = card(page, "primary")
    primary.locator("summary", has_text="Settings").click()
    # Someone edits the file after the page loaded; the gateway applies it.
    old_version = serving_version(gateway)
    edited = gateway.config_path.read_text().replace(
        "max_concurrency: 8       # the provider's plan", "max_concurrency: 9       # raised by hand"
    )
    gateway.config_path.write_text(edited)
    wait_until(lambda: serving_version(gateway) != old_version, timeout=10, interval=0.05)

    primary.locator("input[name=max_queue]").fill("100")
    primary.get_by_role("button", name="Review changes").click()
    expect(page.locator("#conflict")).to_contain_text("gateway.yaml changed since this page loaded")
    assert gateway.config_path.read_text() == edited
    page.click("#reapply")
    expect(page.locator("#review pre.diff")).to_contain_text("max_queue: 100")
    page.click("#confirm-save")
    expect(page.locator("#saved")).to_contain_text("Saved and applied")
    text = gateway.config_path.read_text()
    assert "max_concurrency: 9       # raised by hand" in text
    assert 'api_key: "${FAKE_KEY}", max_queue: 100}   # the main upstream' in text


def test_a_backend_is_added_and_an_unused_one_removed(
    page: Page, gateway: GatewayProcess, up: Upstreams
) -> None:
    before = gateway.config_path.read_text()
    sent = patches_sent(page)
    sign_in(page, gateway)
    # A backend a chain uses cannot be removed: the page says which models use it.
    remove_primary = card(page, "primary").get_by_role("button", name="Remove backend")
    expect(remove_primary).to_be_disabled()
    expect(remove_primary).to_have_accessible_description(
        "Used by duo, solo: take it out of their chains first (Models page)."
    )

    page.click("#add-backend")
    page.fill("#new-name", "extra")
    page.select_option("#new-type", "openai_compatible")
    page.fill("#new-where", up.openai.base_url)
    page.fill("#new-key", "sk-pasted-key")
    page.click("#add-review")
    expect(page.locator("#add-form .form-problem")).to_contain_text("only a ${NAME} reference")
    assert sent == []
    page.fill("#new-key", "${FAKE_KEY}")
    page.click("#add-review")
    diff = page.locator("#review pre.diff")
    expect(diff).to_contain_text("+  extra:")
    expect(diff).to_contain_text("+    api_key: ${FAKE_KEY}")
    page.click("#confirm-save")
    expect(page.locator("#saved")).to_contain_text("Saved and applied")
    assert gateway.config_path.read_text() == before.replace(
        "\n\nmodels:",
        f"\n  extra:\n    type: openai_compatible\n    base_url: {up.openai.base_url}\n"
        "    api_key: ${FAKE_KEY}\n\nmodels:",
    )
    extra = card(page, "extra")
    expect(extra.locator(".used-by")).to_have_text("no model")
    expect(extra.locator(".api-key [data-key-set]")).to_have_text("set")

    extra.get_by_role("button", name="Remove backend").click()
    expect(page.locator("#review pre.diff")).to_contain_text("-  extra:")
    page.click("#confirm-save")
    expect(page.locator("#saved")).to_contain_text("Saved and applied")
    assert gateway.config_path.read_text() == before
    expect(card(page, "extra")).to_have_count(0)


def test_the_page_is_keyboard_usable_and_fits_a_phone(
    page: Page, gateway: GatewayProcess, screenshot
) -> None:
    sign_in(page, gateway)
    expect(card(page, "broken").locator(".live .circuit")).to_have_text("closed")
    for _ in range(3):  # the breaker opens after 3 failures in a row
        assert served_by(gateway, "bad").startswith("none")
    switch = card(page, "spare").get_by_role("switch", name="spare enabled")
    switch.focus()
    page.keyboard.press("Space")
    expect(page.locator("#review pre.diff")).to_contain_text("enabled: false")
    expect(page.locator("#confirm-save")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.locator("#cancel-change")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#review")).to_have_count(0)
    expect(switch).to_be_checked()  # cancelled: the switch shows the file again

    # The breaker's live state, refreshed while the page is open (opened meanwhile; its thresholds
    # are global: the Settings page edits them).
    broken = card(page, "broken")
    expect(broken.locator(".live .circuit")).to_have_text("open", timeout=10_000)
    expect(broken.locator(".live")).to_contain_text("3 failed in a row")
    expect(broken.get_by_role("link", name="Settings")).to_have_attribute("href", "/admin/settings")
    expect(broken).to_contain_text('x-fake-behaviour: {"status": 500}')  # headers, read-only

    # A local model's card: its own settings from the schema (no base URL, no API key).
    local = card(page, "local")
    expect(local.locator(".live")).to_contain_text("model not loaded yet")
    local.locator("summary", has_text="Settings").click()
    expect(local.locator("input[name=max_batch_size]")).to_have_attribute("min", "1")
    expect(local.locator("select[name=load]")).to_have_value("first_use")
    expect(local.locator("input[name=base_url], input[name=api_key]")).to_have_count(0)
    # The anthropic branch refines base_url's default; the pattern of every HTTP backend still holds.
    secondary = card(page, "secondary")
    secondary.locator("summary", has_text="Settings").click()
    secondary.locator("input[name=base_url]").fill("ftp://files.example")
    expect(secondary.locator("input[name=base_url] ~ .problem")).to_have_text(
        "Must be an http:// or https:// URL."
    )
    expect(secondary.locator("input[name=base_url] ~ .help-text")).to_contain_text("API root URL")
    secondary.get_by_role("button", name="Undo changes").click()
    secondary.locator("summary", has_text="Settings").click()

    card(page, "primary").locator("summary", has_text="Settings").click()
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "backends")
    page.set_viewport_size({"width": 390, "height": 844})
    page.evaluate("window.scrollTo(0, 0)")
    expect(card(page, "primary")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")
    screenshot(page, "backends-phone")


def test_with_write_back_off_the_page_gives_a_patch_that_git_applies(
    page: Page, gateway_server, up: Upstreams, tmp_path: Path
) -> None:
    readonly = gateway_server(config(up, write_back=False, local=False), env=ENV)
    before = readonly.config_path.read_text()
    sign_in(page, readonly)
    expect(page.locator("#write-back-off")).to_be_visible()
    card(page, "spare").get_by_role("switch", name="spare enabled").uncheck()
    expect(page.locator("#review pre.diff")).to_contain_text("enabled: false")
    expect(page.locator("#confirm-save")).to_have_text("Show the patch")
    page.click("#confirm-save")
    expect(page.locator("#patch-note")).to_contain_text("Write-back is off")
    patch = shown_diff(page, "pre.patch")
    expect(card(page, "spare").get_by_role("switch", name="spare enabled")).to_be_checked()  # as the file is
    assert readonly.config_path.read_text() == before
    spare = f'  spare: {{type: openai_compatible, base_url: "{up.openai.base_url}"}}'
    expected = before.replace(spare, spare[:-1] + ", enabled: false}")
    assert expected != before
    assert git_apply(before, patch, tmp_path / "repo") == expected
