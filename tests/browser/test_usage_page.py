"""The Usage page in real headless Chromium against the real server (`gateway serve` in a subprocess)
over an audit log seeded through AuditStore: the charts' bars and legend per key and per model, the
budgets (one over its cap, one key without a budget), unknown costs, a range with no data, the CSV
export, and a phone's width without horizontal scrolling."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from gateway.audit.record import AuditEntry
from gateway.audit.store import AuditStore
from gateway.audit.usage import day_start, month_start
from gateway.testing.process import GatewayProcess
from tests.audit.conftest import make_entry, run_sync
from tests.e2e.upstreams import GATEWAY_ENV

ADMIN_KEY = "admin-key-usage-page"
ENV = {
    **GATEWAY_ENV,
    "GW_ADMIN_KEY": ADMIN_KEY,
    "GW_APP": "k-app-usage",
    "GW_RESEARCH": "k-research-usage",
    "GW_BATCH": "k-batch-usage",
}


def config(audit_path: Path) -> str:
    return f"""\
auth:
  admin_keys: [{{name: ops, key: "${{GW_ADMIN_KEY}}"}}]
  client_keys:
    - name: billing-app
      key: ${{GW_APP}}
      limits: {{budget_usd: {{per_day: 5, per_month: 150}}}}
    - name: research
      key: ${{GW_RESEARCH}}
    - name: batch
      key: ${{GW_BATCH}}
      limits: {{budget_usd: {{per_day: 1}}}}
backends:
  oa: {{type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}}
  an: {{type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}}
  local: {{type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}}
models:
  gpt: {{chain: [{{backend: oa, model: gpt-4o-mini}}]}}
  claude: {{chain: [{{backend: an, model: claude-haiku-4-5}}]}}
  llama: {{chain: [{{backend: local, model: llama}}]}}
audit:
  database_url: "sqlite://{audit_path}"
reload:
  watch: false
"""


@dataclass(frozen=True)
class Seeded:
    client: str
    model: str
    days_ago: int
    requests: int
    cost_each: float | None  # None: tokens but no price
    status: str = "success"


#: Per day: billing-app's gpt every day of the week, its claude the last 3 days; research's claude the
#: last 4 days and an unpriced llama yesterday; batch over its day budget today (and refused once);
#: one record 40 days back, outside the default 30 days.
SEEDS = [
    *(Seeded("billing-app", "gpt", day, 2, 0.5) for day in range(7)),
    *(Seeded("billing-app", "claude", day, 1, 1.25) for day in range(3)),
    *(Seeded("research", "claude", day, 1, 0.75) for day in range(4)),
    Seeded("research", "llama", 1, 2, None),
    Seeded("batch", "gpt", 0, 3, 0.5),
    Seeded("batch", "gpt", 0, 1, None, status="rejected"),
    Seeded("billing-app", "gpt", 40, 1, 500.0),
]
BACKEND = {"gpt": "oa", "claude": "an", "llama": "local"}


def entries(now: datetime) -> list[AuditEntry]:
    """The records of SEEDS, each at noon of its day (today: a second ago, if that is earlier)."""
    refused = {
        "http_status": 429,
        "limit_name": "budget_usd.per_day",
        "backend": None,
        **dict.fromkeys(("prompt_tokens", "completion_tokens", "cached_tokens", "cache_creation_tokens")),
    }
    made = []
    for seed in SEEDS:
        day = day_start(now) - timedelta(days=seed.days_ago)
        ts = max(day, min(day + timedelta(hours=12), now - timedelta(seconds=1)))
        values = {
            "client_key": seed.client,
            "model": seed.model,
            "backend": BACKEND[seed.model],
            "cost_usd": seed.cost_each,
            "status": seed.status,
            **(refused if seed.status == "rejected" else {}),
        }
        made.extend(make_entry(len(made) + i, ts=ts, **values) for i in range(seed.requests))
    return made


def days_with(client: str | None = None, model: str | None = None, recent: int = 30) -> set[int]:
    return {
        s.days_ago
        for s in SEEDS
        if s.days_ago < recent and client in (None, s.client) and model in (None, s.model)
    }


def spent(client: str, since: datetime, now: datetime) -> float:
    total = 0.0
    for entry in entries(now):
        if entry.client_key == client and entry.ts >= since and entry.cost_usd is not None:
            total += entry.cost_usd
    return total


async def _seed(path: Path, now: datetime) -> None:
    store = await AuditStore.open(f"sqlite://{path}")
    try:
        await store.insert(entries(now))
    finally:
        await store.close()


@pytest.fixture(scope="module")
def gateway(gateway_server_module, tmp_path_factory) -> Iterator[GatewayProcess]:
    audit = tmp_path_factory.mktemp("audit") / "audit.sqlite3"
    run_sync(_seed(audit, datetime.now(UTC)))
    yield gateway_server_module(config(audit), env=ENV)


def sign_in(page: Page, gateway: GatewayProcess, path: str) -> None:
    page.goto(gateway.url(path))
    page.fill("#admin-key", ADMIN_KEY)
    page.click("form button[type=submit]")
    expect(page.locator(".topbar")).to_be_visible()


def bars(page: Page, chart: str, series: str):
    return page.locator(f'#{chart} rect.bar[data-series="{series}"]')


def test_the_usage_page_charts_spend_tokens_and_requests_per_key_and_per_model(
    page: Page, gateway: GatewayProcess, screenshot
) -> None:
    now = datetime.now(UTC)
    sign_in(page, gateway, "/admin/usage")
    expect(page.locator(".topbar nav a[aria-current=page]")).to_have_text("Usage")
    expect(page.locator("#usage-range")).to_have_value("30d")

    # Per key: ranked by spend over the 30 days (billing-app 10.75, research 3.00, batch 1.50).
    legend = page.locator("#usage-legend li")
    expect(legend).to_have_text(["billing-app", "research", "batch"])
    for client in ("billing-app", "research", "batch"):
        expect(bars(page, "chart-requests", client)).to_have_count(len(days_with(client)))
        expect(bars(page, "chart-spend", client)).to_have_count(len(days_with(client)))
    # Each chart has a bar per day with data, nothing for the 40-day-old record, and a 30-day axis.
    assert page.locator("#chart-spend").get_attribute("viewBox") == "0 0 420 200"
    expect(page.locator("#chart-spend")).to_have_attribute("data-buckets", "30")
    today = day_start(now).date().isoformat()
    batch_today = bars(page, "chart-requests", "batch")
    expect(batch_today).to_have_attribute("data-bucket", today)
    expect(batch_today).to_have_attribute("data-value", "4")  # 3 answered + 1 refused
    expect(bars(page, "chart-spend", "batch")).to_have_attribute("data-value", "1.5")
    expect(bars(page, "chart-tokens", "batch")).to_have_attribute("data-value", "90")  # 3 × (10 + 20)

    expect(page.locator('#usage-totals [data-stat="requests"] strong')).to_have_text("27")
    expect(page.locator('#usage-totals [data-stat="spend"] strong')).to_have_text("≥ $15.25")
    expect(page.locator("#unpriced-note")).to_contain_text("2 request(s) reported tokens but have no price")

    # Budgets: billing-app under its caps, batch over its day cap (red), research without a budget.
    app_day = spent("billing-app", day_start(now), now)
    app_month = spent("billing-app", month_start(now), now)
    app = page.locator('#keys tr[data-client="billing-app"]')
    expect(app.locator('[data-period="day"]')).to_contain_text(
        f"${app_day:.2f} of $5.00 ({round(app_day / 5 * 100)}%)"
    )
    expect(app.locator('[data-period="month"]')).to_contain_text(f"${app_month:,.2f} of $150.00")
    expect(app.locator(".budget-meter.over")).to_have_count(0)
    batch = page.locator('#keys tr[data-client="batch"]')
    expect(batch.locator('[data-period="day"]')).to_contain_text("$1.50 of $1.00 (150%)")
    expect(batch.locator('[data-period="day"] .budget-meter.over')).to_have_count(1)
    expect(batch.locator('[data-period="month"]')).to_contain_text("no budget")
    research = page.locator('#keys tr[data-client="research"]')
    expect(research.locator('[data-period="day"]')).to_contain_text("$0.75 no budget")
    expect(research.locator("td").nth(2)).to_have_text("≥ $3.00")

    # Per model: the table, and unknown spend for a model without prices.
    models = page.locator("#models tbody tr")
    expect(models).to_have_count(3)
    expect(page.locator('#models tr[data-model="llama"] td').nth(5)).to_have_text("unknown")
    expect(page.locator('#models tr[data-model="gpt"] td').nth(0)).to_have_text("18")
    screenshot(page, "usage", full_page=True)

    page.select_option("#usage-group", "model")
    expect(legend).to_have_text(["gpt", "claude", "llama"])
    assert "group=model" in page.url
    expect(bars(page, "chart-requests", "gpt")).to_have_count(len(days_with(model="gpt")))
    expect(bars(page, "chart-requests", "llama")).to_have_count(1)
    expect(bars(page, "chart-spend", "llama")).to_have_count(0)  # no known cost: no spend bar
    expect(bars(page, "chart-tokens", "llama")).to_have_count(1)

    page.select_option("#usage-range", "7d")
    expect(page.locator("#chart-requests")).to_have_attribute("data-buckets", "7")
    expect(bars(page, "chart-requests", "gpt")).to_have_count(7)

    # The last 24 hours go by hour: today's records are in UTC hour buckets of 24 on the axis.
    page.select_option("#usage-range", "24h")
    expect(page.locator("#chart-requests")).to_have_attribute("aria-label", "Requests per hour")
    expect(page.locator("#chart-requests")).to_have_attribute("data-buckets", "24")
    expect(page.locator("#chart-requests rect.bar")).not_to_have_count(0)
    hours = page.locator("#chart-requests rect.bar").evaluate_all(
        "bars => bars.map(bar => bar.dataset.bucket)"
    )
    assert all(len(hour) == 20 and hour.endswith(":00:00Z") for hour in hours), hours
    assert f"{now:%Y-%m-%dT%H}:00:00Z" >= max(hours)


def test_a_range_without_requests_says_so_and_keeps_the_budgets(page: Page, gateway: GatewayProcess) -> None:
    sign_in(page, gateway, "/admin/usage?range=custom&since=2020-01-01&until=2020-01-07")
    expect(page.locator("#usage-empty")).to_have_text("No requests in this range.")
    expect(page.locator("#chart-spend")).to_have_count(0)
    expect(page.locator("#keys tbody tr")).to_have_count(3)
    expect(page.locator("#models-empty")).to_be_visible()
    expect(page.locator('#usage-totals [data-stat="spend"] strong')).to_have_text("$0.00")


def test_the_csv_export_is_what_the_charts_show(page: Page, gateway: GatewayProcess) -> None:
    sign_in(page, gateway, "/admin/usage?range=7d&group=client")
    expect(page.locator("#usage-legend li")).to_have_count(3)
    with page.expect_download() as started:
        page.click("#export-csv")
    download = started.value
    assert download.suggested_filename.startswith("gateway-usage-") and download.suggested_filename.endswith(
        ".csv"
    )
    table = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))
    assert list(table[0])[:2] == ["day", "client"]
    per_key: dict[str, int] = {}
    for row in table:
        per_key[row["client"]] = per_key.get(row["client"], 0) + int(row["requests"])
    assert per_key == {"billing-app": 17, "research": 6, "batch": 4}


def test_the_usage_page_fits_a_phone(browser: Browser, gateway: GatewayProcess, screenshot) -> None:
    context = browser.new_context(
        viewport={"width": 390, "height": 844},
        locale="en-GB",
        timezone_id="UTC",
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    try:
        page = context.new_page()
        sign_in(page, gateway, "/admin/usage")
        expect(page.locator("#chart-spend rect.bar")).not_to_have_count(0)
        expect(page.locator("#keys")).to_be_visible()
        widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1] == 390, f"the page scrolls sideways: {widths}"
        for shown in ("#chart-spend", '#keys tr[data-client="batch"] [data-period="month"]'):
            box = page.locator(shown).bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, shown
        expect(page.locator('#keys tr[data-client="batch"] [data-period="day"]')).to_contain_text("(150%)")
        screenshot(page, "usage-phone", full_page=True)
    finally:
        context.close()
