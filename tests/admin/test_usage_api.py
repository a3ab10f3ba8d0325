"""GET /admin/api/usage in this process (Quart's test client) over a seeded SQLite audit log: who may
call it, the groups, totals and budgets it answers, its CSV, and the problems for what it cannot
answer. The aggregation itself, on both databases, is tests/audit/test_usage.py's."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from gateway.admin.usage import budget_keys

from gateway.app import create_app
from gateway.audit.store import AuditStore
from gateway.audit.usage import MEASURES, day_start
from gateway.config.model import AuthConfig, Budget, ClientKey, KeyLimits
from tests.audit.conftest import make_entry

ADMIN_KEY, CLIENT_KEY = "admin-key-usage-api", "client-key-usage-api"
ENV = {"GW_ADMIN_KEY": ADMIN_KEY, "GW_CLIENT_KEY": CLIENT_KEY, "GW_OTHER_KEY": "client-key-usage-other"}
ADMIN = {"x-api-key": ADMIN_KEY}


def config(audit: str) -> str:
    return f"""\
backends:
  up: {{type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}}
models:
  gpt: {{chain: [{{backend: up}}]}}
auth:
  admin_keys: [{{name: ops, key: "${{GW_ADMIN_KEY}}"}}]
  client_keys:
    - name: app
      key: "${{GW_CLIENT_KEY}}"
      limits: {{budget_usd: {{per_day: 2}}}}
    - name: research
      key: "${{GW_OTHER_KEY}}"
  default_limits:
    requests_per_minute: 100
    budget_usd: {{per_month: 40}}
audit:
  {audit}
reload:
  watch: false
"""


def seed(now: datetime) -> list:
    """Today (at its start, so never later than now) and the day before, and one 40 days back."""
    today, yesterday = day_start(now), day_start(now) - timedelta(days=1)
    return [
        make_entry(1, ts=today, client_key="app", model="gpt", cost_usd=0.5),
        make_entry(2, ts=today, client_key="app", model="gpt", cost_usd=0.25),
        make_entry(3, ts=yesterday, client_key="app", model="gpt", cost_usd=1.0),
        make_entry(4, ts=yesterday, client_key="research", model="llama", cost_usd=None),
        make_entry(5, ts=yesterday, client_key='=HYPERLINK("x")', model="@SUM(1)", cost_usd=0.125),
        make_entry(6, ts=today - timedelta(days=40), client_key="app", model="gpt", cost_usd=64.0),
    ]


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Any]:
    database = tmp_path / "audit.sqlite3"
    store = await AuditStore.open(f"sqlite://{database}")
    await store.insert(seed(datetime.now(UTC)))
    await store.close()
    path = tmp_path / "gateway.yaml"
    path.write_text(config(f'database_url: "sqlite://{database}"'))
    app = create_app(path, env=ENV, watch=False)
    async with app.fallback.test_app() as running:
        yield running.test_client()


async def get(client: Any, query: str = "", headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    response = await client.get(f"/admin/api/usage{query}", headers=ADMIN if headers is None else headers)
    data = await response.get_data()
    kind = response.headers.get("content-type", "")
    return response.status_code, response.headers, orjson.loads(data) if "json" in kind else data.decode()


def problem(status: int, headers: Any, body: Any, expected: int) -> dict[str, Any]:
    assert status == expected, body
    assert headers["content-type"] == "application/problem+json"
    assert body["status"] == expected and body["request_id"] == headers["x-request-id"]
    return body


async def test_only_admins_may_read_usage(client: Any) -> None:
    problem(*await get(client, headers={}), 401)
    body = problem(*await get(client, headers={"x-api-key": CLIENT_KEY}), 403)
    assert "client keys cannot" in body["detail"]


async def test_groups_totals_and_budgets_of_the_last_30_days(client: Any) -> None:
    status, _, body = await get(client, "?group_by=client")
    assert status == 200, body
    now = datetime.now(UTC)
    assert body["group_by"] == ["client"]
    assert body["until"] == (day_start(now) + timedelta(days=1)).strftime("%Y-%m-%dT00:00:00.000000Z")
    assert body["since"] == (day_start(now) - timedelta(days=29)).strftime("%Y-%m-%dT00:00:00.000000Z")
    assert body["truncated"] is False
    rows = {row["client"]: row for row in body["rows"]}
    assert set(rows) == {"app", "research", '=HYPERLINK("x")'}  # 40 days back is out of the range
    assert (rows["app"]["requests"], rows["app"]["cost_usd"], rows["app"]["prompt_tokens"]) == (3, 1.75, 30)
    assert (rows["research"]["cost_usd"], rows["research"]["unpriced_requests"]) == (0.0, 1)
    assert list(body["totals"]) == list(MEASURES)
    assert (body["totals"]["requests"], body["totals"]["cost_usd"], body["totals"]["unpriced_requests"]) == (
        5,
        1.875,
        1,
    )

    # Budgets: every configured key, its own limits over the defaults, spent in this UTC day and month.
    # (Yesterday is in this month unless today is the 1st.)
    yesterday_in_month = day_start(now).day != 1
    assert body["budgets"] == [
        {
            "client": "app",
            "per_day": 2,
            "spent_day": 0.75,
            "unpriced_day": 0,
            "per_month": 40,
            "spent_month": 1.75 if yesterday_in_month else 0.75,
            "unpriced_month": 0,
        },
        {
            "client": "research",
            "per_day": None,
            "spent_day": 0.0,
            "unpriced_day": 0,
            "per_month": 40,
            "spent_month": 0.0,
            "unpriced_month": 1 if yesterday_in_month else 0,
        },
    ]
    assert body["periods"]["day"] == day_start(now).strftime("%Y-%m-%dT00:00:00.000000Z")


async def test_a_range_and_filters(client: Any) -> None:
    today = day_start(datetime.now(UTC))
    since, until = (today - timedelta(days=1)).date().isoformat(), today.date().isoformat()
    status, _, body = await get(client, f"?group_by=day,model&since={since}&until={until}&client=app")
    assert status == 200, body
    assert [(r["day"], r["model"], r["requests"], r["cost_usd"]) for r in body["rows"]] == [
        (since, "gpt", 1, 1.0)
    ]
    assert body["filters"] == {"client": "app", "model": None, "backend": None}
    assert body["totals"]["requests"] == 1


async def test_a_bad_group_by_is_a_400_naming_the_accepted_values(client: Any) -> None:
    body = problem(*await get(client, "?group_by=day,team"), 400)
    assert body["field"] == "group_by"
    assert "client, model, backend, day, hour" in body["detail"] and "'team'" in body["detail"]
    assert body["accepted"] == ["client", "model", "backend", "day", "hour"]
    assert problem(*await get(client, "?since=2020-01-01&until=2024-01-01"), 400)["field"] == "since"
    assert problem(*await get(client, "?until=tomorrow"), 400)["field"] == "until"
    assert problem(*await get(client, "?format=xlsx"), 400)["field"] == "format"


async def test_csv_export_has_the_groups_and_neutralises_formulas(client: Any) -> None:
    status, headers, text = await get(client, "?group_by=day,client&format=csv")
    assert status == 200
    assert headers["content-type"] == "text/csv; charset=utf-8"
    assert headers["content-disposition"].startswith('attachment; filename="gateway-usage-')
    table = list(csv.DictReader(io.StringIO(text)))
    assert list(table[0]) == ["day", "client", *MEASURES]
    assert len(table) == 4  # yesterday: three keys; today: app
    formula = next(row for row in table if "HYPERLINK" in row["client"])
    assert formula["client"] == '\'=HYPERLINK("x")'
    assert (formula["requests"], formula["cost_usd"]) == ("1", "0.125")
    models = list(csv.DictReader(io.StringIO((await get(client, "?group_by=model&format=csv"))[2])))
    assert {row["model"] for row in models} == {"gpt", "llama", "'@SUM(1)"}
    empty = (await get(client, "?group_by=model&format=csv&client=nobody"))[2]
    assert empty.splitlines() == [",".join(["model", *MEASURES])]


async def test_usage_is_a_503_while_the_audit_log_is_off(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(config("enabled: false"))
    app = create_app(path, env=ENV, watch=False)
    async with app.fallback.test_app() as running:
        body = problem(*await get(running.test_client()), 503)
        assert "audit log is off" in body["detail"]


def test_budgets_are_each_keys_limits_over_the_defaults() -> None:
    defaults = KeyLimits(budget_usd=Budget(per_day=1.0, per_month=20.0))
    own = KeyLimits(budget_usd=Budget(per_day=5.0))
    keys = (
        ClientKey("own", "0" * 64, (), own),
        ClientKey("rate-only", "1" * 64, (), KeyLimits(requests_per_minute=10)),
        ClientKey("defaults", "2" * 64, ()),
    )
    assert budget_keys(AuthConfig(keys, (), False, defaults)) == [
        ("own", Budget(5.0, 20.0)),
        ("rate-only", Budget(1.0, 20.0)),
        ("defaults", Budget(1.0, 20.0)),
    ]
    assert budget_keys(AuthConfig(keys, (), False)) == [
        ("own", Budget(5.0)),
        ("rate-only", Budget()),
        ("defaults", Budget()),
    ]
    # Without client keys every caller is `anonymous`, under the default limits.
    assert budget_keys(AuthConfig((), (), True, defaults)) == [("anonymous", Budget(1.0, 20.0))]
    assert budget_keys(AuthConfig((), (), True)) == [("anonymous", Budget())]
