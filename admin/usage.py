"""Admin usage API: requests, tokens and spend from the audit log, grouped by key, model, backend and
UTC day or hour, and each key's budget with what is spent of it (the panel's Usage page reads it).

- `GET /admin/api/usage?group_by=day,client&since=&until=&client=&model=&backend=` →
  `{group_by, since, until, filters, rows: [...], truncated, totals: {...}, periods, budgets: [...]}`.
  Rows and totals carry `requests`, `success`, `error`, `timeout`, `rejected`, `limited`, the four
  token sums, `cost_usd` (the known costs) and `unpriced_requests` (requests with tokens but no price:
  `cost_usd` is then a lower bound). Default range: the last 30 UTC days, today included.
- `budgets`: every client key of the live config (or `anonymous` when there are none) with its
  effective `budget_usd` (its own limits over `auth.default_limits`; null: no cap) and its spend in
  the current UTC day and month, whatever the range asked.
- `format=csv`: the rows as CSV (a download), the group columns then the measures; text cells that a
  spreadsheet would take for a formula are prefixed with `'`.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any

import orjson
from gateway.admin.access import authenticate_admin
from gateway.admin.spreadsheet import csv_cell
from quart import Blueprint, Response, current_app, request

from gateway.audit.record import format_ts
from gateway.audit.usage import GROUP_BY, MEASURES, SpendPeriods, UsageQuery, UsageQueryError
from gateway.config.model import AuthConfig, Budget, KeyLimits
from gateway.errors import FieldError

__all__ = ["blueprint", "budget_of"]

blueprint = Blueprint("admin_usage", __name__, url_prefix="/admin/api/usage")

#: The key name the audit log gives callers when no client keys are configured.
ANONYMOUS = "anonymous"


@blueprint.before_request
async def require_admin() -> None:
    authenticate_admin(current_app.live.current)


def _query(now: datetime) -> UsageQuery:
    try:
        return UsageQuery.from_query(request.args, now)
    except UsageQueryError as error:
        extra = {"accepted": list(GROUP_BY)} if error.field == "group_by" else {}
        raise FieldError(error.field, str(error), **extra) from None


@blueprint.get("")
async def usage() -> Response:
    now = datetime.now(UTC)
    query = _query(now)
    kind = request.args.get("format") or "json"
    if kind not in ("json", "csv"):
        raise FieldError("format", "must be json or csv")
    store = await current_app.audit.store()
    rows, truncated = await store.usage(query)
    if kind == "csv":
        return _csv(query, rows, now)
    [totals], _ = await store.usage(UsageQuery(since=query.since, until=query.until, **_filters(query)))
    auth = current_app.live.current.config.auth
    keys = budget_keys(auth)
    spent = await store.spend(now, [name for name, _ in keys])
    periods = SpendPeriods.at(now)
    body = {
        **query.as_dict(),
        "rows": rows,
        "truncated": truncated,
        "totals": totals,
        "periods": {"day": format_ts(periods.day), "month": format_ts(periods.month)},
        "budgets": [_budget(name, budget, spent.get(name)) for name, budget in keys],
    }
    return Response(orjson.dumps(body), content_type="application/json")


def _filters(query: UsageQuery) -> dict[str, str | None]:
    return {"client": query.client, "model": query.model, "backend": query.backend}


def budget_keys(auth: AuthConfig) -> list[tuple[str, Budget]]:
    """Each client key's name and effective budget, in config order; `anonymous` (under the default
    limits) when no keys are configured."""
    if not auth.client_keys:
        return [(ANONYMOUS, budget_of(None, auth.default_limits))]
    return [(key.name, budget_of(key.limits, auth.default_limits)) for key in auth.client_keys]


def budget_of(limits: KeyLimits | None, defaults: KeyLimits | None) -> Budget:
    """A key's budget: its own limits over the defaults, member by member."""
    if limits is not None:
        return limits.over(defaults).budget_usd
    return defaults.budget_usd if defaults is not None else Budget()


def _budget(name: str, budget: Budget, spent: dict[str, Any] | None) -> dict[str, Any]:
    spent = spent or {"spent_day": 0.0, "unpriced_day": 0, "spent_month": 0.0, "unpriced_month": 0}
    return {
        "client": name,
        "per_day": budget.per_day,
        "spent_day": spent["spent_day"],
        "unpriced_day": spent["unpriced_day"],
        "per_month": budget.per_month,
        "spent_month": spent["spent_month"],
        "unpriced_month": spent["unpriced_month"],
    }


def _csv(query: UsageQuery, rows: list[dict[str, Any]], now: datetime) -> Response:
    columns = [*query.group_columns(), *MEASURES]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in rows:
        writer.writerow(csv_cell(row.get(column)) for column in columns)
    response = Response(out.getvalue().encode(), content_type="text/csv; charset=utf-8")
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    response.headers["content-disposition"] = f'attachment; filename="gateway-usage-{stamp}.csv"'
    return response
