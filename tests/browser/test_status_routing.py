"""The Status page's routing section in Chromium: each model's split (a weighted group with its
shares), the shadow copies against the requests they copied, the canary's numbers against the stable
targets', and, once a failing canary is rolled back with `admin.write_back: false`, an alert holding
the patch to commit (the file untouched)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import pytest
import requests
from playwright.sync_api import Page, expect

from gateway.testing import Behaviour, FakeOpenAI

ADMIN_KEY = "sk-routing-admin-0123456789"
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def fakes() -> Iterator[tuple[FakeOpenAI, FakeOpenAI]]:
    with FakeOpenAI.in_thread() as stable, FakeOpenAI.in_thread() as fresh:
        fresh.behaviour = Behaviour(fail_every=2, status=502)
        yield stable, fresh


def rolled_back(gateway) -> bool:
    return any(
        json.loads(line).get("event") == "canary_rollback_not_written"
        for line in gateway.log().splitlines()
        if "canary_rollback_not_written" in line
    )


def test_the_status_page_shows_the_split_the_canary_and_the_patch_of_its_rollback(
    page: Page, gateway_server, fakes, screenshot
) -> None:
    stable, fresh = fakes
    text = f"""auth:
  allow_unauthenticated: true
  admin_keys: [{{name: ops, key_sha256: "{hashlib.sha256(ADMIN_KEY.encode()).hexdigest()}"}}]
backends:
  stable: {{type: openai_compatible, base_url: "{stable.base_url}"}}
  stable-eu: {{type: openai_compatible, base_url: "{stable.base_url}"}}
  fresh: {{type: openai_compatible, base_url: "{fresh.base_url}"}}
models:
  chat:
    chain:
      - group:
          strategy: weighted
          targets: [{{backend: stable, weight: 3}}, {{backend: stable-eu, weight: 1}}]
    shadow: {{target: {{backend: stable-eu, model: chat-next}}, sample_rate: 1}}
    canary:
      target: {{backend: fresh, model: chat-2}}
      weight: 20
      rollback: {{error_rate: 0.1, min_requests: 4}}
admin: {{write_back: false}}
"""
    gateway = gateway_server(text)
    while not rolled_back(gateway):
        assert requests.post(gateway.url("/v1/chat/completions"), json=CHAT, timeout=30).status_code == 200
    page.goto(gateway.url("/admin/status"))
    page.fill("#admin-key", ADMIN_KEY)
    page.click("form button[type=submit]")
    row = page.locator('#routing tr[data-model="chat"]')
    expect(row.locator(".split")).to_contain_text("weighted: stable 75%")
    expect(row.locator(".split")).to_contain_text("stable-eu 25%")
    canary = row.locator(".canary")
    expect(canary.locator(".canary-weight")).to_have_text("0%")
    expect(canary).to_contain_text("(configured 20%)")
    expect(canary).to_contain_text("rolled back")
    expect(canary).to_contain_text("rolls back at +10% errors")
    alert = page.locator(".alert.rollback")
    expect(alert).to_contain_text("Canary of chat rolled back")
    expect(alert).to_contain_text("Commit this patch to keep it")
    patch = alert.locator("pre.patch")
    expect(patch.locator(".del")).to_have_text("-      weight: 20")
    expect(patch).to_contain_text("+      weight: 0")
    expect(patch.locator(".add").first).to_contain_text("# canary rolled back by the gateway at")
    shadow = row.locator(".shadow")
    expect(shadow).to_contain_text("stable-eu (chat-next), 100% sampled")
    expect(shadow.locator(".shadow-pairs")).to_contain_text("copies in the last 60 min (client → copy)")
    expect(shadow).to_contain_text("failed 0% → 0%")
    assert gateway.config_path.read_text() == text
    screenshot(page, "status-routing", full_page=True)

    # The logs page tells copies from client requests, and filters by it.
    page.goto(gateway.url("/admin/logs"))
    records = page.locator("#records tr.record")
    expect(records.locator(".badge.shadow").first).to_be_visible()
    page.select_option("select[name=shadow]", "true")
    expect(page).to_have_url(gateway.url("/admin/logs?shadow=true"))
    expect(records.first).to_be_visible()
    expect(records.filter(has_not=page.locator(".badge.shadow"))).to_have_count(0)
    page.select_option("select[name=shadow]", "false")
    expect(records.locator(".badge.shadow")).to_have_count(0)
    expect(records.first).to_be_visible()
