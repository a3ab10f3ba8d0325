"""The models page in real headless Chromium against a real `gateway serve` (fake upstreams): a chain
reordered by drag and by keyboard, targets added and removed, aliases changed, a model created,
renamed and deleted, each shown as a diff before it is written, the file changed exactly as shown,
and the change live on the model API; write-back off gives a patch `git apply` takes; a file edited
on disk meanwhile is a conflict the page reapplies its change to."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Locator, Page, expect

from gateway.testing.process import GatewayProcess
from tests.browser import editing
from tests.browser.editing import git_apply, shown_diff
from tests.conftest import wait_until
from tests.e2e.upstreams import GATEWAY_ENV, Upstreams, backends_yaml, config_version

CLIENT_KEY, ADMIN_KEY = "client-key-models-page", "admin-key-models-page"
ENV = {**GATEWAY_ENV, "GW_CLIENT_KEY": CLIENT_KEY, "GW_ADMIN_KEY": ADMIN_KEY, "SUPPORT_MODEL": "gpt-4o"}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
GIT = shutil.which("git")


def config(up: Upstreams, audit_path: Path, *, write_back: bool = True) -> str:
    return f"""\
# Team gateway. Every comment here must survive the models page.
auth:
  client_keys:
    - name: billing-app    # the product
      key: ${{GW_CLIENT_KEY}}
  admin_keys:
    - name: ops
      key: ${{GW_ADMIN_KEY}}

backends:
{backends_yaml(up)}

models:
  # Customer support: the official API first, Anthropic when it fails.
  support:
    description: Customer support bot
    aliases: [helpdesk]
    chain:
      - backend: oa-official   # primary
        model: ${{SUPPORT_MODEL}}
      - backend: an            # fallback
        model: claude-haiku-4-5
        capabilities: {{json_schema: false}}
  triage:
    chain:
      - backend: oa
        model: gpt-4o-mini
      - backend: an
        model: claude-haiku-4-5   # the cheap one
  claude: {{chain: [{{backend: an, model: claude-haiku-4-5}}]}}
  # Three requests in four to OpenAI, one to Anthropic (docs/routing.md).
  balanced:
    chain:
      - group:
          strategy: weighted
          targets:
            - {{backend: oa, model: gpt-4o-mini, weight: 3}}
            - {{backend: an, model: claude-haiku-4-5, weight: 1}}
    canary: {{target: {{backend: oa, model: gpt-4o-canary}}, weight: 0, rollback: {{error_rate: 0.2}}}}
  gpt: {{chain: [{{backend: oa, model: gpt-4o-mini}}]}}   # the default
  writer: {{chain: [{{backend: oa, model: gpt-4o-mini}}]}}
  drafts:
    chain:
      - backend: an
        model: claude-haiku-4-5
      - backend: oa
        model: gpt-4o-mini

audit:
  database_url: "sqlite://{audit_path}"
  flush_interval_ms: 50

admin:
  write_back: {"true" if write_back else "false"}   # GitOps switch
"""


@pytest.fixture(scope="module")
def gateway(gateway_server_module, up: Upstreams, tmp_path_factory) -> GatewayProcess:
    """One gateway for the module: each test edits its own model."""
    audit = tmp_path_factory.mktemp("audit") / "audit.sqlite3"
    return gateway_server_module(config(up, audit), env=ENV)


def card(page: Page, model: str) -> Locator:
    return page.locator(f'.model-card[data-model="{model}"]')


def targets(page: Page, model: str) -> Locator:
    return card(page, model).locator("ol.chain > li.target")


def chat(gateway: GatewayProcess, model: str) -> requests.Response:
    return requests.post(
        gateway.url("/v1/chat/completions"),
        json={"model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 5},
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
        timeout=10,
    )


def served_by(gateway: GatewayProcess, model: str) -> str:
    response = chat(gateway, model)
    assert response.status_code == 200, response.text
    return response.headers["x-gateway-backend"]


def sign_in(page: Page, gateway: GatewayProcess, path: str = "/admin/models") -> None:
    editing.sign_in(page, gateway, path, ADMIN_KEY, ready=".model-card")


def wait_applied(gateway: GatewayProcess) -> None:
    """Until the gateway serves the file on disk (its watcher reloaded it)."""
    version = config_version(gateway.config_path)
    wait_until(
        lambda: (
            requests.get(gateway.url("/admin/api/config/tree"), headers=ADMIN, timeout=5).json()[
                "serving_version"
            ]
            == version
        ),
        timeout=10,
        interval=0.1,
    )


def save_and_check(page: Page, gateway: GatewayProcess, before: bytes, tmp_path: Path) -> bytes:
    """Save the change under review; the file must be the original with exactly the diff shown applied."""
    diff = shown_diff(page)
    page.click("#confirm-save")
    expect(page.locator("#saved")).to_contain_text("Saved and applied")
    after = gateway.config_path.read_bytes()
    assert after != before
    assert git_apply(before, diff, tmp_path) == after
    wait_applied(gateway)
    return after


def test_a_chain_reordered_by_drag_is_shown_saved_as_shown_and_served(
    page: Page, gateway: GatewayProcess, tmp_path: Path
) -> None:
    before = gateway.config_path.read_bytes()
    assert served_by(gateway, "drafts") == "an"
    sign_in(page, gateway)
    rows = targets(page, "drafts")
    expect(rows).to_have_count(2)
    # Drag the second target's handle onto the first target's upper half: it goes first.
    rows.nth(1).scroll_into_view_if_needed()
    handle, first = rows.nth(1).locator(".drag-handle").bounding_box(), rows.nth(0).bounding_box()
    assert handle is not None and first is not None
    page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
    page.mouse.down()
    page.mouse.move(first["x"] + 40, first["y"] + 10, steps=5)
    # While dragged over the upper half of the first target, a line shows it will go before it.
    expect(rows.nth(0)).to_have_class(re.compile(r"\bdrop-before\b"))
    expect(rows.nth(1)).to_have_class(re.compile(r"\bdragging\b"))
    page.mouse.up()
    expect(rows.nth(0)).to_have_attribute("data-backend", "oa")
    expect(page.locator("#models-announce")).to_contain_text("moved to position 1 of 2")
    expect(page.locator("#review pre.diff")).to_contain_text("+      - backend: oa")
    assert gateway.config_path.read_bytes() == before  # nothing written before the save

    after = save_and_check(page, gateway, before, tmp_path).decode()
    an = "      - backend: an\n        model: claude-haiku-4-5\n"
    oa = "      - backend: oa\n        model: gpt-4o-mini\n"
    assert after == before.decode().replace(an + oa, oa + an)
    assert "# Customer support: the official API first" in after and "# GitOps switch" in after
    assert served_by(gateway, "drafts") == "oa"


def test_a_chain_reordered_by_keyboard_is_announced_and_served(
    page: Page, gateway: GatewayProcess, tmp_path: Path
) -> None:
    before = gateway.config_path.read_bytes()
    assert served_by(gateway, "triage") == "oa"
    sign_in(page, gateway)
    rows = targets(page, "triage")
    rows.nth(0).focus()
    page.keyboard.press("Alt+ArrowDown")
    expect(page.locator("#models-announce")).to_contain_text("oa (gpt-4o-mini) moved to position 2 of 2")
    expect(page.locator("#review pre.diff")).to_contain_text("+      - backend: an")
    expect(rows.nth(1)).to_be_focused()  # still on the moved target once the review is shown
    expect(rows.nth(1)).to_have_attribute("data-backend", "oa")
    after = save_and_check(page, gateway, before, tmp_path).decode()
    assert "        model: claude-haiku-4-5   # the cheap one\n      - backend: oa\n" in after
    assert served_by(gateway, "triage") == "an"
    # The reloaded page shows the saved order, with Move up/down buttons as the other way.
    expect(targets(page, "triage").nth(0)).to_have_attribute("data-backend", "an")
    expect(targets(page, "triage").nth(0).locator(".move-up")).to_be_disabled()


def test_a_target_is_added_then_the_first_removed_and_the_last_cannot_be(
    page: Page, gateway: GatewayProcess, tmp_path: Path
) -> None:
    sign_in(page, gateway)
    claude = card(page, "claude")
    expect(claude.locator(".remove-target")).to_be_disabled()  # the only target

    before = gateway.config_path.read_bytes()
    claude.locator(".add-target select").select_option("oa")
    claude.locator(".add-target input[name=model]").fill("gpt-4o-mini")
    claude.locator(".add-target button[type=submit]").click()
    expect(page.locator("#review pre.diff")).to_contain_text("backend: oa, model: gpt-4o-mini")
    after = save_and_check(page, gateway, before, tmp_path).decode()
    assert (
        "  claude: {chain: [{backend: an, model: claude-haiku-4-5}, {backend: oa, model: gpt-4o-mini}]}\n"
        in after
    )
    expect(targets(page, "claude")).to_have_count(2)

    before = after.encode()
    targets(page, "claude").nth(0).locator(".remove-target").click()
    expect(page.locator("#review pre.diff")).to_contain_text("-  claude:")
    after = save_and_check(page, gateway, before, tmp_path).decode()
    assert "  claude: {chain: [{backend: oa, model: gpt-4o-mini}]}\n" in after
    assert served_by(gateway, "claude") == "oa"


def test_a_target_s_upstream_model_is_changed_then_emptied_to_the_public_name(
    page: Page, gateway: GatewayProcess, tmp_path: Path
) -> None:
    def upstream_model(request_id: str) -> str:
        response = requests.post(
            gateway.url("/v1/chat/completions"),
            json={"model": "writer", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5},
            headers={"authorization": f"Bearer {CLIENT_KEY}", "x-request-id": request_id},
            timeout=10,
        )
        assert response.status_code == 200
        found: list[dict] = []

        def stored() -> bool:
            url, params = gateway.url("/admin/api/logs"), {"request_id": request_id}
            found[:] = requests.get(url, params=params, headers=ADMIN, timeout=5).json()["records"]
            return bool(found)

        wait_until(stored, timeout=10, interval=0.1)
        return found[0]["upstream_model"]

    assert upstream_model("writer-before") == "gpt-4o-mini"
    before = gateway.config_path.read_bytes()
    sign_in(page, gateway)
    row = targets(page, "writer").nth(0)
    row.get_by_label("Upstream model of oa (gpt-4o-mini)").fill("gpt-4o")
    row.locator(".set-model").click()
    expect(page.locator("#review pre.diff")).to_contain_text(
        "+  writer: {chain: [{backend: oa, model: gpt-4o}]}"
    )
    before = save_and_check(page, gateway, before, tmp_path)
    assert upstream_model("writer-changed") == "gpt-4o"

    row = targets(page, "writer").nth(0)
    row.get_by_label("Upstream model of oa (gpt-4o)").fill("")
    row.locator(".set-model").click()
    expect(page.locator("#review pre.diff")).to_contain_text("+  writer: {chain: [{backend: oa}]}")
    save_and_check(page, gateway, before, tmp_path)
    assert upstream_model("writer-emptied") == "writer"


def test_new_aliases_answer_on_the_model_api_and_an_emptied_description_is_removed(
    page: Page, gateway: GatewayProcess, tmp_path: Path
) -> None:
    before = gateway.config_path.read_bytes()
    assert chat(gateway, "support-bot").status_code == 404
    sign_in(page, gateway)
    support = card(page, "support")
    support.locator("summary", has_text="Description, aliases and cache").click()
    # An alias another model has is refused by the gateway's checks at the dry run.
    support.get_by_label("Aliases").fill("helpdesk, gpt")
    support.locator(".review-settings").click()
    expect(page.locator("#rejected")).to_contain_text("gpt")
    assert gateway.config_path.read_bytes() == before
    support.get_by_label("Aliases").fill("helpdesk, support-bot")
    support.get_by_label("Description").fill("")
    support.locator(".review-settings").click()
    expect(page.locator("#review pre.diff")).to_contain_text("+    aliases: [helpdesk, support-bot]")
    after = save_and_check(page, gateway, before, tmp_path).decode()
    assert "description:" not in after.split("support:")[1].split("triage:")[0]
    assert "${SUPPORT_MODEL}" in after  # the reference stays as it was
    response = chat(gateway, "support-bot")
    assert response.status_code == 200
    assert response.headers["x-gateway-backend"] == "oa-official"


def test_a_chain_with_a_balanced_group_is_shown_as_it_is_and_its_other_settings_edited(
    page: Page, gateway: GatewayProcess, tmp_path: Path
) -> None:
    before = gateway.config_path.read_bytes()
    sign_in(page, gateway)
    balanced = card(page, "balanced")
    expect(balanced.locator(".grouped-chain .alert")).to_contain_text("balanced group")
    expect(balanced.locator(".group-members .member-name")).to_have_text(
        ["oa (gpt-4o-mini)", "an (claude-haiku-4-5)"]
    )
    # The target editor's moves, removals and additions are not offered for a grouped chain.
    expect(balanced.locator(".drag-handle, .move-up, .remove-target, .add-target")).to_have_count(0)
    balanced.locator("summary", has_text="Description, aliases and cache").click()
    balanced.get_by_label("Description").fill("Spread over two providers")
    balanced.locator(".review-settings").click()
    expect(page.locator("#review pre.diff")).to_contain_text("+    description: Spread over two providers")
    before = save_and_check(page, gateway, before, tmp_path)
    after = before.decode()
    assert "strategy: weighted" in after and "# Three requests in four" in after
    assert served_by(gateway, "balanced") in ("oa", "an")

    # A member's weight: exactly that number changes in the file.
    weight = card(page, "balanced").get_by_label("Weight of an in balanced's group 1")
    expect(weight).to_have_value("1")
    weight.fill("2")
    card(page, "balanced").locator(".group-members li").nth(1).locator(".set-weight").click()
    expect(page.locator("#review pre.diff")).to_contain_text(
        "+            - {backend: an, model: claude-haiku-4-5, weight: 2}"
    )
    before = save_and_check(page, gateway, before, tmp_path)
    # The strategy.
    card(page, "balanced").get_by_label("Strategy of balanced's group 1").select_option("least_busy")
    card(page, "balanced").locator(".set-strategy").click()
    expect(page.locator("#review pre.diff")).to_contain_text("+          strategy: least_busy")
    before = save_and_check(page, gateway, before, tmp_path)
    expect(card(page, "balanced").locator(".set-weight").first).to_be_visible()
    expect(card(page, "balanced").locator(".member-weight").first).to_contain_text("weighted strategy only")
    # The canary's weight: from 0 (off) to 100, and the canary serves.
    canary = card(page, "balanced").locator(".canary-editor")
    expect(canary).to_contain_text("oa (gpt-4o-canary)")
    expect(canary).to_contain_text("Rolled back by itself at +20% errors")
    canary.get_by_label("Canary weight of balanced").fill("100")
    canary.locator(".set-canary-weight").click()
    expect(page.locator("#review pre.diff")).to_contain_text("weight: 100, rollback:")
    save_and_check(page, gateway, before, tmp_path)
    assert chat(gateway, "balanced").json()["model"] == "gpt-4o-canary"


def test_cache_settings_from_the_schema_are_added_then_an_emptied_one_removed(
    page: Page, gateway: GatewayProcess, tmp_path: Path
) -> None:
    def cache_of_second_request() -> str:
        body = {"model": "gpt", "messages": [{"role": "user", "content": "Cache me"}], "temperature": 0}
        headers = {"authorization": f"Bearer {CLIENT_KEY}"}
        for _ in range(2):
            url = gateway.url("/v1/chat/completions")
            response = requests.post(url, json=body, headers=headers, timeout=10)
            assert response.status_code == 200
        return response.headers.get("x-gateway-cache", "")

    assert cache_of_second_request() != "hit"
    before = gateway.config_path.read_bytes()
    sign_in(page, gateway)
    gpt = card(page, "gpt")
    gpt.locator("summary", has_text="Description, aliases and cache").click()
    mode, ttl = gpt.get_by_label("mode", exact=True), gpt.get_by_label("ttl_seconds")
    expect(mode.locator("option")).to_have_text(["default (off)", "off", "exact", "semantic"])
    expect(ttl).to_have_attribute("max", "31536000")  # the schema's bound
    mode.select_option("exact")
    ttl.fill("0")
    gpt.locator(".review-settings").click()
    expect(gpt.locator(".model-settings .problem").last).to_contain_text("At least 1")
    ttl.fill("60")
    gpt.locator(".review-settings").click()
    expect(page.locator("#review pre.diff")).to_contain_text("cache: {mode: exact, ttl_seconds: 60}")
    before = save_and_check(page, gateway, before, tmp_path)
    assert cache_of_second_request() == "hit"

    gpt = card(page, "gpt")  # drawn again from the saved file, its settings still open
    expect(gpt.get_by_label("ttl_seconds")).to_have_value("60")
    gpt.get_by_label("ttl_seconds").fill("")
    gpt.locator(".review-settings").click()
    expect(page.locator("#review pre.diff")).to_contain_text("-  gpt:")
    after = save_and_check(page, gateway, before, tmp_path).decode()
    gpt_line = "  gpt: {chain: [{backend: oa, model: gpt-4o-mini}], cache: {mode: exact}}   # the default\n"
    assert gpt_line in after


def test_a_model_is_created_renamed_and_deleted(page: Page, gateway: GatewayProcess, tmp_path: Path) -> None:
    sign_in(page, gateway)
    before = gateway.config_path.read_bytes()
    page.fill("#new-model-name", "summaries")
    page.select_option("#new-model-backend", "an")
    page.fill("#new-model-upstream", "claude-haiku-4-5")
    page.click("#new-model button[type=submit]")
    expect(page.locator("#review pre.diff")).to_contain_text("+  summaries:")
    before = save_and_check(page, gateway, before, tmp_path)
    assert served_by(gateway, "summaries") == "an"

    summaries = card(page, "summaries")
    summaries.locator("summary", has_text="Rename or delete").click()
    summaries.get_by_label("New name for summaries").fill("digests")
    summaries.locator(".rename-model button[type=submit]").click()
    expect(page.locator("#review pre.diff")).to_contain_text("+  digests:")
    before = save_and_check(page, gateway, before, tmp_path)
    assert chat(gateway, "summaries").status_code == 404
    assert served_by(gateway, "digests") == "an"

    digests = card(page, "digests")
    digests.locator("summary", has_text="Rename or delete").click()
    digests.locator(".delete-model").click()
    expect(digests.locator(".delete-confirm")).to_contain_text("Delete digests?")
    digests.locator(".confirm-delete").click()
    expect(page.locator("#review pre.diff")).to_contain_text("-  digests:")
    save_and_check(page, gateway, before, tmp_path)
    assert chat(gateway, "digests").status_code == 404


def test_a_file_edited_on_disk_meanwhile_is_a_conflict_and_the_move_is_reapplied(
    page: Page, gateway: GatewayProcess
) -> None:
    sign_in(page, gateway)
    expect(targets(page, "support").nth(0)).to_have_attribute("data-backend", "oa-official")
    # Someone edits the file by hand after the page loaded: a third target at the head of the chain.
    edited = gateway.config_path.read_text().replace(
        "    chain:\n      - backend: oa-official   # primary\n",
        "    chain:\n      - backend: oa   # added by hand\n        model: gpt-4o-mini\n"
        "      - backend: oa-official   # primary\n",
    )
    gateway.config_path.write_text(edited)
    wait_applied(gateway)

    # Move the fallback (an) first, as the page shows it: position 1.
    # The dry run is sent with the version the page loaded: the review reports the conflict.
    targets(page, "support").nth(1).locator(".move-up").click()
    expect(page.locator("#conflict")).to_contain_text("gateway.yaml changed since this page loaded")
    assert gateway.config_path.read_text() == edited
    page.click("#reapply")
    # Reapplied from the intent: `an` moves to the head of the new chain, past the hand-added target.
    expect(page.locator("#review pre.diff")).to_contain_text("+      - backend: an")
    page.click("#confirm-save")
    expect(page.locator("#saved")).to_contain_text("Saved and applied")
    after = gateway.config_path.read_text()
    assert after.split("  support:")[1].split("  triage:")[0].count("- backend:") == 3
    # The moved target's own comment goes with its old lines (a move in a sequence is a remove and
    # an add); every other comment stays.
    assert after.index("- backend: an") < after.index("- backend: oa   # added by hand")
    assert after.index("- backend: oa   # added by hand") < after.index("- backend: oa-official   # primary")
    wait_applied(gateway)
    assert served_by(gateway, "support") == "an"


def test_references_are_read_only_the_keys_link_and_the_page_fits_a_phone(
    page: Page, gateway: GatewayProcess, screenshot
) -> None:
    sign_in(page, gateway)
    support = card(page, "support")
    reference = support.locator("code.reference", has_text="${SUPPORT_MODEL}")
    expect(reference).to_be_visible()
    expect(support.locator("li.target").filter(has=reference).locator("input")).to_have_count(0)
    # The target's own capabilities, its backend's type and state.
    fallback = support.locator('li.target[data-backend="an"]')
    expect(fallback.locator(".capabilities")).to_contain_text("json_schema no")
    expect(fallback).to_contain_text("anthropic")
    expect(fallback).to_contain_text("enabled")
    expect(page.locator("#limits-note a")).to_have_attribute("href", "/admin/keys")
    expect(page.locator("#write-back-off")).to_have_count(0)
    screenshot(page, "models")
    page.set_viewport_size({"width": 390, "height": 844})
    expect(card(page, "triage")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")
    screenshot(page, "models-phone")


def test_with_write_back_off_the_page_gives_a_patch_git_applies(
    page: Page, gateway_server, up: Upstreams, tmp_path: Path
) -> None:
    gateway = gateway_server(config(up, tmp_path / "audit.sqlite3", write_back=False), env=ENV)
    before = gateway.config_path.read_bytes()
    sign_in(page, gateway)
    expect(page.locator("#write-back-off")).to_be_visible()
    targets(page, "triage").nth(0).focus()
    page.keyboard.press("Alt+ArrowDown")
    expect(page.locator("#confirm-save")).to_have_text("Show the patch")
    page.click("#confirm-save")
    expect(page.locator("#patch-note")).to_contain_text("Write-back is off")
    patch = page.locator("pre.patch").inner_text().rstrip("\n") + "\n"
    assert gateway.config_path.read_bytes() == before
    changed = git_apply(before, patch, tmp_path).decode()
    assert changed == before.decode().replace(
        "      - backend: oa\n        model: gpt-4o-mini\n"
        "      - backend: an\n        model: claude-haiku-4-5   # the cheap one\n",
        "      - backend: an\n        model: claude-haiku-4-5   # the cheap one\n"
        "      - backend: oa\n        model: gpt-4o-mini\n",
    )
