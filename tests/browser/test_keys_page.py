"""The Keys page in real headless Chromium against the real server (`gateway serve` in a subprocess, fake
upstreams): a new key's hash written to gateway.yaml and the key shown once and working at once, a
key's models allowlist and limits, revoking (and the refusal to lock out the session), the patch with
write-back off, and a conflict resolved by reapplying."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Page, expect

from gateway.testing.process import GatewayProcess
from tests.browser import editing
from tests.browser.editing import git_apply, shown_diff
from tests.conftest import wait_until
from tests.e2e.upstreams import GATEWAY_ENV, Upstreams, backends_yaml

CLIENT_KEY, ADMIN_KEY = "client-key-keys-page", "admin-key-keys-page"
REPORTS_KEY, OLD_KEY, LEGACY_KEY = "reports-key-keys-page", "old-key-keys-page", "legacy-key-keys-page"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
ENV = {**GATEWAY_ENV, "GW_CLIENT_KEY": CLIENT_KEY, "GW_ADMIN_KEY": ADMIN_KEY}
MESSAGES = [{"role": "user", "content": "Hello"}]


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def config(up: Upstreams, audit: Path, *, write_back: bool = True) -> str:
    return f"""\
# Team gateway. Every comment here must survive the keys page.
auth:
  client_keys:
    - name: billing-app    # the product
      key: ${{GW_CLIENT_KEY}}
    - name: reports        # nightly jobs
      key_sha256: {sha256(REPORTS_KEY)}
      limits:
        requests_per_minute: 1000   # generous
    - name: old-app
      key_sha256: {sha256(OLD_KEY)}
    - name: legacy
      key_sha256: {sha256(LEGACY_KEY)}
  admin_keys:
    - name: ops
      key: ${{GW_ADMIN_KEY}}

backends:
{backends_yaml(up)}

models:
  gpt: {{chain: [{{backend: oa, model: gpt-4o-mini}}]}}
  claude: {{chain: [{{backend: an, model: claude-haiku-4-5}}]}}

audit:
  database_url: "sqlite://{audit}"
  flush_interval_ms: 50

admin:
  write_back: {"true" if write_back else "false"}   # GitOps switch
"""


@pytest.fixture(scope="module")
def gateway(gateway_server_module, up: Upstreams, tmp_path_factory) -> GatewayProcess:
    """One gateway for the tests that write: each edits keys no other test touches."""
    audit = tmp_path_factory.mktemp("audit") / "audit.sqlite3"
    return gateway_server_module(config(up, audit), env=ENV)


def sign_in(page: Page, gateway: GatewayProcess) -> None:
    editing.sign_in(page, gateway, "/admin/keys", ADMIN_KEY, ready="#client-keys")


def chat(gateway: GatewayProcess, key: str, model: str = "gpt") -> requests.Response:
    return requests.post(
        gateway.url("/v1/chat/completions"),
        json={"model": model, "messages": MESSAGES, "max_tokens": 5},
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )


def row(page: Page, name: str):
    return page.locator(f'tr[data-key="{name}"]')


def test_a_new_client_key_is_stored_as_its_hash_shown_once_and_works_at_once(
    page: Page, gateway: GatewayProcess, screenshot, tmp_path: Path
) -> None:
    sign_in(page, gateway)
    expect(row(page, "billing-app")).to_contain_text("${GW_CLIENT_KEY}")
    expect(row(page, "reports")).to_contain_text(f"SHA-256 {sha256(REPORTS_KEY)[:8]}…")
    expect(row(page, "reports")).to_contain_text("1,000 req/min")
    before = gateway.config_path.read_bytes()

    page.click("#new-client-key")
    expect(page.locator("#key-name")).to_be_focused()
    page.fill("#key-name", "bad name")
    page.click("#review-key")
    expect(page.locator("#key-form .problem").first).to_contain_text("Does not match")
    page.fill("#key-name", "billing-app")
    page.click("#review-key")
    expect(page.locator("#key-form .problem").first).to_contain_text("already exists")
    page.fill("#key-name", "mobile-app")
    page.fill("#key-models", "gpt")
    page.fill("#limit-requests_per_minute", "30")
    page.fill("#limit-per_day", "2.5")
    page.click("#review-key")
    expect(page.locator("#review pre.diff")).to_contain_text("+    - name: mobile-app")
    diff = shown_diff(page)
    [digest] = [
        line.split()[-1].strip("\"'")
        for line in diff.splitlines()
        if line.startswith("+") and "key_sha256:" in line
    ]
    assert len(digest) == 64 and "gw-" not in diff
    expect(page.locator("#new-key")).to_have_count(0)  # no key before the save

    page.click("#confirm-save")
    expect(page.locator("#saved")).to_contain_text("Saved and applied")
    expect(page.locator("#new-key")).to_contain_text("Shown once")
    key = page.input_value("#new-key-value")
    assert key.startswith("gw-") and sha256(key) == digest
    screenshot(page, "keys")

    after = gateway.config_path.read_bytes()
    assert key.encode() not in after and digest.encode() in after
    # The diff shown before the save is exactly the change written; every comment survived.
    assert git_apply(before, diff, tmp_path) == after
    assert b"# Team gateway. Every comment here must survive" in after
    assert b"requests_per_minute: 1000   # generous" in after

    assert chat(gateway, key).status_code == 200
    assert chat(gateway, key, "claude").status_code == 403  # its allowlist: gpt only
    assert chat(gateway, "gw-" + "x" * 43).status_code == 401
    expect(row(page, "mobile-app")).to_contain_text(f"SHA-256 {digest[:8]}…")
    expect(row(page, "mobile-app")).to_contain_text("30 req/min · $2.5/day")

    used: dict[str, int] = {}

    def counted() -> bool:
        answer = requests.get(
            gateway.url("/admin/api/usage"), params={"group_by": "client"}, headers=ADMIN, timeout=10
        )
        used.update({r["client"]: r["requests"] for r in answer.json()["rows"]})
        return used.get("mobile-app", 0) >= 2

    wait_until(counted, timeout=10, interval=0.1)
    page.reload()
    expect(row(page, "mobile-app").locator("td.usage")).to_contain_text(f"{used['mobile-app']} requests")
    expect(page.locator("#new-key")).to_have_count(0)
    assert key not in page.content()


def test_a_keys_models_allowlist_and_emptied_limits(page: Page, gateway: GatewayProcess) -> None:
    assert chat(gateway, REPORTS_KEY, "gpt").status_code == 200
    sign_in(page, gateway)
    row(page, "reports").get_by_role("button", name="Edit models and limits of reports").click()
    expect(page.locator("#limit-requests_per_minute")).to_have_value("1000")
    page.fill("#key-models", "claude")
    page.fill("#limit-requests_per_minute", "")
    page.click("#review-key")
    diff = page.locator("#review pre.diff")
    expect(diff).to_contain_text("-      limits:")
    expect(diff).to_contain_text("claude")
    page.click("#confirm-save")
    expect(page.locator("#saved")).to_be_visible()
    text = gateway.config_path.read_text()
    assert "requests_per_minute: 1000" not in text and "# nightly jobs" in text
    assert chat(gateway, REPORTS_KEY, "gpt").status_code == 403
    assert chat(gateway, REPORTS_KEY, "claude").status_code == 200
    expect(row(page, "reports").locator("td.models")).to_have_text("claude")

    page.click("#edit-default-limits")
    page.fill("#limit-concurrent_requests", "8")
    page.click("#review-key")
    expect(page.locator("#review pre.diff")).to_contain_text("+  default_limits:")
    page.click("#confirm-save")
    expect(page.locator("#default-limits")).to_have_text("8 at once")
    assert "  default_limits:\n    concurrent_requests: 8\n" in gateway.config_path.read_text()


def test_a_revoked_key_gets_401_and_the_sessions_own_admin_key_is_not_revoked(
    page: Page, gateway: GatewayProcess
) -> None:
    assert chat(gateway, OLD_KEY).status_code == 200
    sign_in(page, gateway)

    row(page, "ops").get_by_role("button", name="Revoke ops").click()
    expect(page.locator("#revoke-refused")).to_contain_text("You are signed in with ops")
    expect(page.locator("#revoke-refused")).to_contain_text("local admin token")

    row(page, "old-app").get_by_role("button", name="Revoke old-app").click()
    expect(page.locator("#confirm-revoke")).to_contain_text("Revoke the client key old-app?")
    page.click("#revoke-yes")
    expect(page.locator("#review pre.diff")).to_contain_text("-    - name: old-app")
    with page.expect_request(lambda r: r.method == "PATCH" and "dry_run" not in r.url) as sent:
        page.click("#confirm-save")
    ops = json.loads(sent.value.post_data or "[]")
    assert ops == [
        {"op": "test", "path": "/auth/client_keys/2/name", "value": "old-app"},
        {"op": "remove", "path": "/auth/client_keys/2"},
    ]
    expect(page.locator("#saved")).to_be_visible()
    assert chat(gateway, OLD_KEY).status_code == 401
    expect(row(page, "old-app")).to_have_count(0)


def test_a_conflict_is_reapplied_by_the_keys_name(page: Page, gateway: GatewayProcess) -> None:
    sign_in(page, gateway)
    expect(row(page, "legacy")).to_be_visible()
    # Someone adds a key by hand on disk: legacy moves down the list.
    edited = gateway.config_path.read_text().replace(
        "  client_keys:\n",
        "  client_keys:\n    - {name: by-hand, key_sha256: " + "ab" * 32 + "}  # added by hand\n",
        1,
    )
    gateway.config_path.write_text(edited)

    row(page, "legacy").get_by_role("button", name="Revoke legacy").click()
    page.click("#revoke-yes")
    expect(page.locator("#conflict")).to_contain_text("gateway.yaml changed since this page loaded")
    assert gateway.config_path.read_text() == edited
    page.click("#reapply")
    expect(page.locator("#review pre.diff")).to_contain_text("-    - name: legacy")
    page.click("#confirm-save")
    expect(page.locator("#saved")).to_be_visible()
    text = gateway.config_path.read_text()
    assert "name: by-hand" in text and "# added by hand" in text and "name: legacy" not in text
    assert chat(gateway, LEGACY_KEY).status_code == 401
    expect(row(page, "by-hand")).to_be_visible()


def test_with_write_back_off_the_new_keys_patch_applies_and_the_key_is_shown(
    page: Page, gateway_server, up: Upstreams, tmp_path: Path
) -> None:
    readonly = gateway_server(config(up, tmp_path / "audit.sqlite3", write_back=False), env=ENV)
    original = readonly.config_path.read_bytes()
    sign_in(page, readonly)
    expect(page.locator("#write-back-off")).to_be_visible()
    old = row(page, "old-app")
    old.get_by_role("button", name="Rotate old-app").click()
    expect(page.locator("#rotate")).to_contain_text("Create old-app-2")
    expect(page.locator("#runbook")).to_contain_text("Revoke the leaked key")
    page.click("#rotate-create")
    expect(page.locator("#key-name")).to_have_value("old-app-2")
    page.click("#review-key")
    expect(page.locator("#review pre.diff")).to_contain_text("+    - name: old-app-2")
    page.click("#confirm-save")
    expect(page.locator("#patch-note")).to_contain_text("Write-back is off")
    expect(page.locator("#new-key-pending")).to_contain_text("works only once the patch")
    key = page.input_value("#new-key-value")
    patch = page.locator("pre.patch").inner_text()
    assert key not in patch and sha256(key) in patch
    assert readonly.config_path.read_bytes() == original
    assert chat(readonly, key).status_code == 401  # not applied: the key is worth nothing yet

    applied = git_apply(original, patch, tmp_path)
    assert applied.decode().count("- name: old-app") == 2  # old and new side by side
    assert sha256(key).encode() in applied and key.encode() not in applied


def test_on_a_phone_with_the_keyboard(page: Page, gateway: GatewayProcess, screenshot) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    sign_in(page, gateway)
    assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")
    page.focus("#new-client-key")
    page.keyboard.press("Enter")
    expect(page.locator("#key-name")).to_be_focused()
    page.keyboard.type("phone-app")
    assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")
    page.click("#cancel-key")
    screenshot(page, "keys-phone")


def test_the_first_admin_key_is_shown_before_the_local_token_sessions_end(
    page: Page, gateway_server, up: Upstreams, tmp_path: Path
) -> None:
    text = config(up, tmp_path / "audit.sqlite3")
    text = text.replace("  admin_keys:\n    - name: ops\n      key: ${GW_ADMIN_KEY}\n", "")
    local = gateway_server(text, env=ENV)
    page.goto(local.url("/admin/keys"))
    page.fill("#admin-key", local.admin_token)
    page.click("form button[type=submit]")
    expect(page.locator("#admin-keys")).to_have_count(0)  # none yet
    page.click("#new-admin-key")
    expect(page.locator("#first-admin-key")).to_contain_text("turns the local admin token off")
    page.fill("#key-name", "ops-2")
    page.click("#review-key")
    page.click("#confirm-save")
    expect(page.locator("#new-key")).to_contain_text("this session has ended")
    key = page.input_value("#new-key-value")
    assert key not in local.config_path.read_text() and sha256(key) in local.config_path.read_text()

    page.reload()
    page.fill("#admin-key", key)
    page.click("form button[type=submit]")
    expect(page.locator("#who-name")).to_have_text("ops-2")
    expect(row(page, "ops-2")).to_contain_text(f"SHA-256 {sha256(key)[:8]}…")
