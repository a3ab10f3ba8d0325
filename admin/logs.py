"""Admin logs API: the audit log, paged (keyset cursor, for infinite scroll), exported, and tailed live.

- `GET /admin/api/logs?model=&backend_type=&status=&since=&until=&request_id=&shadow=&limit=&cursor=`
  → `{"records": [...], "next_cursor": "..." | null}`, newest first. Pass `next_cursor` back as
  `cursor` for the next page: pages are stable while new records arrive.
- `GET /admin/api/logs/export?format=jsonl|csv&<same filters>`: every matching record, streamed. In
  the CSV, a text cell a spreadsheet would take for a formula (`=`, `+`, `-`, `@`, tab, CR first) is
  prefixed with `'`; JSON Lines carries the values as stored.
- `GET /admin/api/logs/stats`: the writer's counters since the process started (buffered, written,
  spilled, replayed, lost), `spill_bytes` waiting to be replayed, `db_up` and `last_error`;
  `retention_days` and `last_purge` (`{"at", "deleted"}` of this process's last retention purge).
- `GET /admin/api/logs/backends?minutes=15`: each backend's attempts over the last minutes, by
  outcome, with the share that failed (the status page's recent error rate).
- `GET /admin/api/logs/shadow?minutes=60`: shadow copies paired with the requests they copied, per
  model and target: failures, mean latency and time to first byte, tokens and cost on each side.
- `WS /admin/api/logs/live?<same filters>`: first `{"type": "ready", "filters", "following"}` (once
  the feed follows the database, or after a few seconds with `following: false` while it is away),
  then `{"type": "record", "record": {...}}` for each new matching record, from every instance sharing
  a PostgreSQL log; `{"type": "lagged", "dropped": N}` when the
  client read too slowly and missed records.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from gateway.admin.access import authenticate_admin, check_origin
from gateway.admin.spreadsheet import csv_cell
from quart import Blueprint, Response, current_app, request, websocket

from gateway.audit.query import LogFilter
from gateway.audit.record import format_ts
from gateway.errors import BadRequest, FieldError

__all__ = ["blueprint"]

blueprint = Blueprint("admin_logs", __name__, url_prefix="/admin/api/logs")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
#: The CSV export's columns, in order (failover_path as JSON text).
CSV_COLUMNS = (
    "id",
    "ts",
    "request_id",
    "trace_id",
    "instance",
    "client_key",
    "surface",
    "endpoint",
    "model",
    "backend",
    "backend_type",
    "upstream_model",
    "stream",
    "status",
    "http_status",
    "error_type",
    "attempts",
    "failover_path",
    "latency_ms",
    "ttft_ms",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_creation_tokens",
    "config_version",
    "client_address",
    "cost_usd",
    "limit_name",
    "cache",
    "saved_tokens",
    "saved_usd",
    "shadow_of",
)
#: Seconds between keep-alive pings on a quiet live tail.
PING_INTERVAL_S = 20.0
#: How long the live tail's `ready` waits for the feed to follow the database (its LISTEN, or its
#: polling position) before it says `following: false`.
LIVE_READY_WAIT_S = 5.0


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status=status, content_type="application/json")


@blueprint.before_request
async def require_admin() -> None:
    authenticate_admin(current_app.live.current)


@blueprint.before_websocket
async def require_admin_socket() -> None:
    authenticate_admin(current_app.live.current, socket=True)
    check_origin(socket=True)


def _filters(args: Any) -> LogFilter:
    try:
        return LogFilter.from_query(args)
    except ValueError as error:
        raise BadRequest(f"bad filter: {error}") from None


def _limit(args: Any) -> int:
    raw = args.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise FieldError("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


@blueprint.get("")
async def page() -> Response:
    filters = _filters(request.args)
    limit = _limit(request.args)
    store = await current_app.audit.store()
    try:
        records, cursor = await store.page(filters, limit, request.args.get("cursor") or None)
    except ValueError as error:
        raise FieldError("cursor", str(error)) from None
    return _json({"records": records, "next_cursor": cursor})


@blueprint.get("/stats")
async def stats() -> Response:
    return _json(current_app.audit.stats())


#: Attempt outcomes that are not the backend's fault: it answered, refused the client's request, or
#: was not tried at all.
_SKIPS = frozenset({"disabled", "circuit_open", "quota", "incapable"})
_NOT_FAILURES = frozenset({"ok", "client_error"}) | _SKIPS


@blueprint.get("/backends")
async def backend_outcomes() -> Response:
    raw = request.args.get("minutes", "15")
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 1440:
        raise FieldError("minutes", "must be a whole number from 1 to 1440")
    minutes = int(raw)
    since = datetime.now(UTC) - timedelta(minutes=minutes)
    store = await current_app.audit.store()
    counts = await store.backend_outcomes(since)
    backends = {}
    for name, outcomes in sorted(counts.items()):
        tried = sum(n for outcome, n in outcomes.items() if outcome not in _SKIPS)
        failed = sum(n for outcome, n in outcomes.items() if outcome not in _NOT_FAILURES)
        backends[name] = {
            "attempts": tried,
            "failed": failed,
            "skipped": sum(outcomes.values()) - tried,
            "error_rate": round(failed / tried, 4) if tried else None,
            "outcomes": outcomes,
        }
    return _json({"since": format_ts(since), "minutes": minutes, "backends": backends})


@blueprint.get("/shadow")
async def shadow_comparison() -> Response:
    """Shadow copies against the requests they copied, per model and target, over the last minutes."""
    raw = request.args.get("minutes", "60")
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 10080:
        raise FieldError("minutes", "must be a whole number from 1 to 10080 (a week)")
    minutes = int(raw)
    since = datetime.now(UTC) - timedelta(minutes=minutes)
    store = await current_app.audit.store()
    found = await store.shadow_comparison(since)
    return _json({"since": format_ts(since), "minutes": minutes, "models": found})


@blueprint.get("/export")
async def export() -> Response:
    filters = _filters(request.args)
    kind = request.args.get("format", "jsonl")
    if kind not in ("jsonl", "csv"):
        raise FieldError("format", "must be jsonl or csv")
    store = await current_app.audit.store()
    rows = store.export(filters)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if kind == "jsonl":
        body, mimetype = _jsonl(rows), "application/x-ndjson"
    else:
        body, mimetype = _csv(rows), "text/csv; charset=utf-8"
    response = Response(body, content_type=mimetype)
    response.headers["content-disposition"] = f'attachment; filename="gateway-audit-{stamp}.{kind}"'
    response.timeout = None  # a large export may stream for longer than Quart's response timeout
    return response


async def _jsonl(rows: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    batch: list[bytes] = []
    async for row in rows:
        batch.append(orjson.dumps(row))
        if len(batch) >= 500:
            yield b"\n".join(batch) + b"\n"
            batch.clear()
    if batch:
        yield b"\n".join(batch) + b"\n"


async def _csv(rows: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    count = 0
    async for row in rows:
        writer.writerow(_csv_value(row.get(column), column) for column in CSV_COLUMNS)
        count += 1
        if count % 500 == 0:
            yield out.getvalue().encode()
            out.seek(0)
            out.truncate()
    yield out.getvalue().encode()


def _csv_value(value: Any, column: str) -> Any:
    if column == "failover_path":
        value = orjson.dumps(value or []).decode()
    return csv_cell(value)


@blueprint.websocket("/live")
async def live() -> None:
    filters = _filters(websocket.args)
    audit = current_app.audit
    await websocket.accept()
    subscription = audit.subscribe(filters)
    try:
        # `following`: the feed follows the database, so every record written from now on is sent
        # (false: the database is away for now; the feed picks up when it is back).
        following = await audit.following(LIVE_READY_WAIT_S)
        ready = {"type": "ready", "filters": filters.as_dict(), "following": following}
        await websocket.send(orjson.dumps(ready).decode())
        reported = 0
        while True:
            try:
                record = await asyncio.wait_for(subscription.queue.get(), PING_INTERVAL_S)
            except TimeoutError:
                await websocket.send('{"type":"ping"}')
                continue
            if record is None:  # the gateway is stopping; the client reconnects to the next process
                await websocket.close(1001, "the gateway is restarting")
                return
            if subscription.dropped != reported:
                await websocket.send(
                    orjson.dumps({"type": "lagged", "dropped": subscription.dropped - reported}).decode()
                )
                reported = subscription.dropped
            await websocket.send(orjson.dumps({"type": "record", "record": record}).decode())
    finally:
        subscription.close()
