"""Backend benchmark from the admin panel ("Test performance" on a backend's tile): a short series of
concurrency levels against one backend of the live config, progress while it runs, a cancel, and the
result stored in the audit database (`bench_runs`) with the config version it ran under.

- `POST /admin/api/backends/<name>/bench` `{"concurrency": [1, 4, 8], "seconds_per_level": 5,
  "stream": true, "max_tokens": 32, "model": "<upstream model>"}` (every member optional) → 202 with
  the run (`id`, `status: running`, `progress`).
- `GET /admin/api/backends/<name>/bench` → the run under way (if any, on any backend), this process's
  latest run of the backend, and its stored history, newest first (`?limit=`, 1..100).
- `DELETE /admin/api/backends/<name>/bench/<id>` → cancels the run; it ends as `cancelled`, keeping
  the levels finished and the figures of the level it was in (`partial: true`).

One run at a time per gateway: in a process, and across its worker processes through a lock file
(`gateway.admin.bench_lock`; instances on other hosts do not share it). A run is refused (409
problem+json) while another runs, while the backend is disabled or has more than
`admin.benchmark.max_inflight` requests in flight or queued, and when no model of the config routes
to it and the request names no `model`. Requests go straight to the backend object
(`gateway.admin.bench_load`), not through the gateway's own HTTP front. A cancel must reach the
worker running the run (another one answers 409 naming its pid).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from gateway.admin.access import authenticate_admin, check_origin
from gateway.admin.bench_lock import BenchLock
from gateway.admin.bench_params import DEFAULTS, bounds, parse_params
from gateway.admin.bench_runner import (
    CANCEL_WAIT_S,
    BenchmarkRefused,
    BenchRunner,
    backend_load,
    routed_model,
    running_elsewhere,
    summary,
)
from quart import Blueprint, Quart, Response, current_app, g, request

from gateway.audit.bench_store import MAX_HISTORY, list_bench_runs
from gateway.backends.base import Backend
from gateway.errors import BadRequest, FieldError, GatewayError, NotFound
from gateway.routing.table import Runtime

__all__ = ["blueprint", "install_bench"]

blueprint = Blueprint("admin_bench", __name__, url_prefix="/admin/api/backends")


def install_bench(app: Quart) -> None:
    """Register the benchmark API and the runner it uses (cancelled when the app stops)."""
    runner = BenchRunner(BenchLock(app.live.path))  # type: ignore[attr-defined]
    app.bench_runner = runner  # type: ignore[attr-defined]
    app.register_blueprint(blueprint)
    app.after_serving(runner.close)


def _json(data: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(data),
        status=status,
        content_type="application/json",
        headers={"cache-control": "no-store"},
    )


def _runner() -> BenchRunner:
    return current_app.bench_runner  # type: ignore[attr-defined,no-any-return]


def _backend(runtime: Runtime, name: str) -> Backend:
    backend = runtime.backends.get(name)
    if backend is None:
        raise NotFound(f"no backend '{name}' in the config")
    return backend


@blueprint.before_request
async def require_admin() -> None:
    g.bench_admin = authenticate_admin(current_app.live.current).name  # type: ignore[attr-defined]
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        check_origin()


@blueprint.post("/<name>/bench")
async def start_bench(name: str) -> Response:
    runtime: Runtime = current_app.live.current  # type: ignore[attr-defined]
    backend = _backend(runtime, name)
    body = None
    if await request.get_data():
        body = await request.get_json(force=True, silent=True)
        if body is None:
            raise BadRequest("the request body is not valid JSON")
    params = parse_params(body)
    runner = _runner()
    active = runner.active
    if active is not None:
        raise running_elsewhere(summary(active))
    settings = runtime.config.backend(name) or backend.config
    if not settings.enabled:
        raise BenchmarkRefused(
            f"backend '{name}' is disabled ({settings.disabled_reason or 'enabled: false'})",
            reason="disabled",
        )
    limit = runtime.config.admin.benchmark.max_inflight
    load, what = backend_load(runtime, backend)
    if load > limit:
        raise BenchmarkRefused(
            f"backend '{name}' is busy: {load} {what}, over admin.benchmark.max_inflight ({limit}); "
            "try again when it is quieter",
            reason="busy",
            load=load,
            max_inflight=limit,
            headers={"retry-after": "5"},
        )
    model = params.model or routed_model(runtime, name)
    if model is None:
        raise BenchmarkRefused(
            f"no model of the config routes to backend '{name}': send the upstream model as \"model\"",
            reason="no-model",
        )
    run = runner.start(current_app._get_current_object(), runtime, backend, model, params, g.bench_admin)  # type: ignore[attr-defined]
    return _json(run.to_json(), 202)


@blueprint.get("/<name>/bench")
async def bench_status(name: str) -> Response:
    runtime: Runtime = current_app.live.current  # type: ignore[attr-defined]
    _backend(runtime, name)
    try:
        limit = int(request.args.get("limit", "10"))
    except ValueError:
        raise FieldError("limit", f"expected a whole number from 1 to {MAX_HISTORY}") from None
    if not 1 <= limit <= MAX_HISTORY:
        raise FieldError("limit", f"expected a whole number from 1 to {MAX_HISTORY}")
    runner = _runner()
    active = runner.active
    mine = active if active is not None and active.record.backend == name else None
    running = mine if mine is not None and mine.record.status == "running" else None
    # A run that has ended is still `active` while it is being stored: it is the latest already.
    latest = mine if mine is not None and running is None else None
    latest = latest or next((run for run in runner.recent if run.record.backend == name), None)
    history: list[dict[str, Any]] = []
    history_error = None
    try:
        store = await current_app.audit.store()  # type: ignore[attr-defined]
        history = [record.to_json() for record in await list_bench_runs(store, name, limit)]
    except GatewayError as refused:
        history_error = refused.detail
    except Exception as failure:
        history_error = f"the audit database could not be read ({type(failure).__name__})"
    if history_error is not None:  # what this process remembers instead
        history = [run.to_json() for run in runner.recent if run.record.backend == name][:limit]
    return _json(
        {
            "backend": name,
            "running": running.to_json() if running is not None else None,
            "active": summary(active) if active is not None else runner.elsewhere(),
            "latest": latest.to_json() if latest is not None else None,
            "history": history,
            "history_error": history_error,
            "defaults": DEFAULTS,
            "bounds": bounds(),
        }
    )


@blueprint.delete("/<name>/bench/<run_id>")
async def cancel_bench(name: str, run_id: str) -> Response:
    runtime: Runtime = current_app.live.current  # type: ignore[attr-defined]
    _backend(runtime, name)
    runner = _runner()
    run = runner.find(run_id)
    other = runner.elsewhere() if run is None else None
    if other is not None and other.get("id") == run_id:
        raise BenchmarkRefused(
            f"run '{run_id}' runs in worker process {other.get('pid')}, not the one this request reached; "
            "send the cancel again",
            reason="other-worker",
            pid=other.get("pid"),
            headers={"retry-after": "0"},
        )
    if run is None or run.record.backend != name:
        raise NotFound(f"no benchmark run '{run_id}' of backend '{name}' in this gateway process")
    if run.record.status != "running" or run.task is None:
        raise BenchmarkRefused(f"run '{run_id}' has already ended ({run.record.status})", reason="finished")
    run.cancelled_by = g.bench_admin
    run.task.cancel()
    await asyncio.wait({run.task}, timeout=CANCEL_WAIT_S)
    return _json(run.to_json())
