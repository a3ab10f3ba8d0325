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
import contextlib
import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from gateway.admin.access import authenticate_admin, check_origin
from gateway.admin.bench_load import LevelLoad, bench_call
from gateway.admin.bench_lock import BenchLock
from quart import Blueprint, Quart, Response, current_app, g, request

from gateway.audit.bench_store import MAX_HISTORY, BenchRecord, list_bench_runs, save_bench_run
from gateway.audit.record import default_instance
from gateway.backends.base import Backend
from gateway.backends.upstream import AttemptLimits
from gateway.errors import BadRequest, FieldError, GatewayError, NotFound
from gateway.request_ids import new_request_id
from gateway.routing.table import Runtime

__all__ = ["BenchRunner", "install_bench"]

log = logging.getLogger("gateway.admin")

blueprint = Blueprint("admin_bench", __name__, url_prefix="/admin/api/backends")

#: Bounds of a run's parameters (the panel's form and the docs show them).
MAX_LEVELS = 5
MAX_CONCURRENCY = 32
MAX_SECONDS_PER_LEVEL = 20.0
MIN_SECONDS_PER_LEVEL = 0.5
#: The whole series: levels x seconds_per_level.
MAX_TOTAL_SECONDS = 60.0
MAX_TOKENS = 256
DEFAULTS: dict[str, Any] = {
    "concurrency": [1, 4, 8],
    "seconds_per_level": 5,
    "stream": True,
    "max_tokens": 32,
}
#: A request still under way when its level's time is up may take this long to finish.
REQUEST_GRACE_S = 10.0
#: Finished runs this process remembers (shown when the audit database cannot be read).
KEPT_IN_MEMORY = 20
#: How long a cancel waits for the run to wind down before answering.
CANCEL_WAIT_S = 15.0


class BenchmarkRunning(GatewayError):
    """Another benchmark is under way in this gateway process; `run` says which and who started it."""

    status, slug, title = 409, "benchmark-running", "A benchmark is already running"
    openai_type, anthropic_type = "invalid_request_error", "invalid_request_error"


class BenchmarkRefused(GatewayError):
    """The backend cannot be benchmarked now (or the run cancelled); `reason`: `disabled`, `busy`,
    `no-model`, `finished` (a cancel of an ended run) or `other-worker` (a cancel that reached a worker
    process other than the run's)."""

    status, slug, title = 409, "benchmark-refused", "The backend cannot be benchmarked now"
    openai_type, anthropic_type = "invalid_request_error", "invalid_request_error"


@dataclass(frozen=True, slots=True)
class BenchParams:
    concurrency: tuple[int, ...]
    seconds_per_level: float
    stream: bool
    max_tokens: int
    model: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "concurrency": list(self.concurrency),
            "seconds_per_level": self.seconds_per_level,
            "stream": self.stream,
            "max_tokens": self.max_tokens,
            "model": self.model,
        }


def parse_params(body: Any) -> BenchParams:
    """The request body's parameters, each within its bounds; unknown members are refused."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise BadRequest('send a JSON object such as {"concurrency": [1, 4, 8]} (or nothing: the defaults)')
    unknown = set(body) - {*DEFAULTS, "model"}
    if unknown:
        name = sorted(unknown)[0]
        raise FieldError(name, f"unknown field; use {', '.join([*DEFAULTS, 'model'])}")
    levels = body.get("concurrency", DEFAULTS["concurrency"])
    if (
        not isinstance(levels, list)
        or not 1 <= len(levels) <= MAX_LEVELS
        or any(isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CONCURRENCY for n in levels)
    ):
        raise FieldError(
            "concurrency", f"expected 1 to {MAX_LEVELS} whole numbers from 1 to {MAX_CONCURRENCY}"
        )
    seconds = body.get("seconds_per_level", DEFAULTS["seconds_per_level"])
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not MIN_SECONDS_PER_LEVEL <= seconds <= MAX_SECONDS_PER_LEVEL
    ):
        raise FieldError(
            "seconds_per_level",
            f"expected seconds from {MIN_SECONDS_PER_LEVEL:g} to {MAX_SECONDS_PER_LEVEL:g}",
        )
    if len(levels) * seconds > MAX_TOTAL_SECONDS:
        raise FieldError(
            "seconds_per_level",
            f"{len(levels)} levels x {seconds:g} s is over the {MAX_TOTAL_SECONDS:g} s a series may take",
        )
    stream = body.get("stream", DEFAULTS["stream"])
    if not isinstance(stream, bool):
        raise FieldError("stream", "expected true or false")
    max_tokens = body.get("max_tokens", DEFAULTS["max_tokens"])
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_TOKENS:
        raise FieldError("max_tokens", f"expected a whole number from 1 to {MAX_TOKENS}")
    model = body.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip() or len(model) > 255):
        raise FieldError("model", "expected the upstream model's name")
    return BenchParams(tuple(levels), float(seconds), stream, max_tokens, model)


def backend_load(runtime: Runtime, backend: Backend) -> tuple[int, str]:
    """What counts against `admin.benchmark.max_inflight`, and what it is."""
    limit = backend.concurrency
    if limit is not None:
        return limit.in_flight + limit.queued, "requests in flight or queued on the backend"
    return runtime.usage.active, "model-API requests in flight in this gateway process"


def routed_model(runtime: Runtime, backend: str) -> str | None:
    """The upstream model of the first chain step (in file order) that sends to this backend."""
    for route in runtime.models:
        for step in route.chain:
            if step.target.backend == backend:
                return step.target.model
    return None


class ActiveRun:
    """A run under way (and, once ended, what the API shows of it)."""

    def __init__(self, record: BenchRecord, params: BenchParams) -> None:
        self.record = record
        self.params = params
        self.level: LevelLoad | None = None
        self.started = time.monotonic()
        self.task: asyncio.Task[None] | None = None
        self.cancelled_by: str | None = None
        #: None while running; then whether the audit database took it.
        self.stored: bool | None = None
        self.store_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        body = self.record.to_json()
        body["stored"] = self.stored
        body["store_error"] = self.store_error
        body["cancelled_by"] = self.cancelled_by
        if self.record.status == "running":
            level = self.level
            body["progress"] = {
                "level": len(self.record.levels) + 1,
                "levels": len(self.params.concurrency),
                "concurrency": level.concurrency if level else None,
                "level_elapsed_s": round(time.monotonic() - level.started, 2) if level else 0.0,
                "seconds_per_level": self.params.seconds_per_level,
                "requests": len(level.samples) if level else 0,
                "elapsed_s": round(time.monotonic() - self.started, 2),
                "total_s": self.params.seconds_per_level * len(self.params.concurrency),
            }
        return body


class BenchRunner:
    """This process's benchmark: the one run under way and the runs it remembers."""

    def __init__(self, lock: BenchLock) -> None:
        self.active: ActiveRun | None = None
        self.recent: deque[ActiveRun] = deque(maxlen=KEPT_IN_MEMORY)
        #: Shared with the other workers of this gateway.
        self.lock = lock

    def elsewhere(self) -> dict[str, Any] | None:
        """The run another worker process of this gateway has under way, as it recorded it."""
        holder = self.lock.holder()
        if holder is None or holder.get("pid") == os.getpid():
            return None
        return holder

    def claim(self, holder: dict[str, Any]) -> dict[str, Any] | None:
        """Take the gateway-wide lock for a run: None when taken, else the other worker's run. A lock
        file that cannot be made anywhere leaves only the per-process rule (logged)."""
        try:
            return self.lock.take(holder)
        except OSError as error:
            log.warning(
                "benchmark lock unavailable, one run per worker process only: %s",
                error,
                extra={"event": "bench_lock_unavailable"},
            )
            return None

    def start(
        self, app: Quart, runtime: Runtime, backend: Backend, model: str, params: BenchParams, admin: str
    ) -> ActiveRun:
        record = BenchRecord(
            uid=new_request_id(),
            ts=datetime.now(UTC),
            instance=default_instance(),
            admin=admin,
            backend=backend.name,
            backend_type=backend.config.type,
            model=model,
            config_version=runtime.version,
            status="running",
            parameters=params.as_dict() | {"model": model},
        )
        other = self.claim({"id": record.uid, "backend": record.backend, "admin": admin, "pid": os.getpid()})
        if other is not None:
            raise running_elsewhere(other)
        run = ActiveRun(record, params)
        self.active = run
        run.task = asyncio.create_task(self._run(app, run, runtime, backend), name=f"bench {record.uid}")
        run.task.add_done_callback(lambda _task: self._ended(run))
        return run

    def _ended(self, run: ActiveRun) -> None:
        """The run's task is over. Normally `_run` has already let go of everything; a task cancelled
        before it began (or ended by something `_run` does not catch) never ran its own cleanup."""
        if run.record.status == "running":
            run.record.status = "cancelled"
            run.record.finished_at = datetime.now(UTC)
            run.stored, run.store_error = False, "the run ended before it began; nothing to store"
        if self.active is run:
            self.active = None
            self.recent.appendleft(run)
            self.lock.release()

    async def _run(self, app: Quart, run: ActiveRun, runtime: Runtime, backend: Backend) -> None:
        record, params = run.record, run.params
        tier = runtime.timeouts.for_kind("chat")  # a benchmark request is a chat request
        log.info(
            "backend benchmark started",
            extra={
                "event": "bench_started",
                "backend": record.backend,
                "run": record.uid,
                "admin": record.admin,
            },
        )

        def make_call() -> Any:
            return bench_call(
                record.model or "",
                stream=params.stream,
                max_tokens=params.max_tokens,
                request_id=new_request_id(),
            )

        def limits_for() -> AttemptLimits:
            level = run.level
            end = (level.started + level.seconds if level else time.monotonic()) + REQUEST_GRACE_S
            deadline = min(time.monotonic() + tier.total, end)
            return AttemptLimits(connect=tier.connect, first_byte=tier.first_byte, deadline=deadline)

        try:
            status, error = await self._measure(run, runtime, backend, make_call, limits_for)
            record.status, record.error = status, error
            record.finished_at = datetime.now(UTC)
            await self._store(app, run)
        finally:
            self.recent.appendleft(run)
            if self.active is run:
                self.active = None
            self.lock.release()
        log.info(
            "backend benchmark ended",
            extra={"event": "bench_ended", "backend": record.backend, "run": record.uid, "status": status},
        )

    async def _measure(
        self, run: ActiveRun, runtime: Runtime, backend: Backend, make_call: Any, limits_for: Any
    ) -> tuple[str, str | None]:
        """Run the levels in turn; the run's status and error. Cancelled: the partial level is kept."""
        record, params = run.record, run.params
        status, error = "done", None
        with runtime.lease():  # a reload that drops the backend closes it only after the run
            try:
                for concurrency in params.concurrency:
                    run.level = LevelLoad(concurrency, params.seconds_per_level)
                    await run.level.run(backend, record.model or "", make_call, limits_for)
                    record.levels.append(run.level.figures())
                    run.level = None
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                status = "cancelled"
                if run.level is not None and run.level.samples:
                    record.levels.append({**run.level.figures(), "partial": True})
            except Exception as failure:
                status, error = "failed", f"{type(failure).__name__}: {failure}"
                log.exception("backend benchmark failed", extra={"event": "bench_failed", "run": record.uid})
            finally:
                run.level = None
        return status, error

    async def _store(self, app: Quart, run: ActiveRun) -> None:
        try:
            store = await app.audit.store()  # type: ignore[attr-defined]
            await save_bench_run(store, run.record)
        except GatewayError as refused:  # the audit log is off or unreachable
            run.stored, run.store_error = False, refused.detail
        except Exception as failure:
            run.stored, run.store_error = (
                False,
                f"the audit database did not take it ({type(failure).__name__})",
            )
        else:
            run.stored = True

    def find(self, uid: str) -> ActiveRun | None:
        if self.active is not None and self.active.record.uid == uid:
            return self.active
        return next((run for run in self.recent if run.record.uid == uid), None)

    async def close(self) -> None:
        """The gateway is stopping: cancel the run under way and let it end (and be stored)."""
        run = self.active
        if run is not None and run.task is not None:
            run.task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait({run.task}, timeout=CANCEL_WAIT_S)


def _summary(run: ActiveRun) -> dict[str, Any]:
    return {
        "id": run.record.uid,
        "backend": run.record.backend,
        "admin": run.record.admin,
        "pid": os.getpid(),
    }


def running_elsewhere(other: dict[str, Any]) -> BenchmarkRunning:
    """The 409 for a start while `other` (a run's summary, maybe another worker's) is under way."""
    where = "" if other.get("pid") in (None, os.getpid()) else f" in worker process {other['pid']}"
    return BenchmarkRunning(
        f"{other.get('admin') or 'an admin'} is benchmarking backend '{other.get('backend', '?')}'{where} "
        f"(run {other.get('id', '?')}); wait for it to end or cancel it",
        run={"id": other.get("id"), "backend": other.get("backend"), "admin": other.get("admin")},
    )


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
        raise running_elsewhere(_summary(active))
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
    latest = next((run for run in runner.recent if run.record.backend == name), None)
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
            "running": active.to_json() if active is not None and active.record.backend == name else None,
            "active": _summary(active) if active is not None else runner.elsewhere(),
            "latest": latest.to_json() if latest is not None else None,
            "history": history,
            "history_error": history_error,
            "defaults": DEFAULTS,
            "bounds": {
                "levels": MAX_LEVELS,
                "concurrency": MAX_CONCURRENCY,
                "seconds_per_level": [MIN_SECONDS_PER_LEVEL, MAX_SECONDS_PER_LEVEL],
                "total_seconds": MAX_TOTAL_SECONDS,
                "max_tokens": MAX_TOKENS,
            },
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
