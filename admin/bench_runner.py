"""The backend benchmark of one gateway process (`BenchRunner`): the run under way (`ActiveRun`), its
levels measured in turn (`gateway.admin.bench_load`), the gateway-wide lock that keeps it the only
one (`gateway.admin.bench_lock`), the result stored in the audit database when it ends, and the runs
this process remembers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

from gateway.admin.bench_load import LevelLoad, bench_call
from gateway.admin.bench_lock import BenchLock
from gateway.admin.bench_params import BenchParams
from quart import Quart

from gateway.audit.bench_store import BenchRecord, save_bench_run
from gateway.audit.record import default_instance
from gateway.backends.base import Backend
from gateway.backends.upstream import AttemptLimits
from gateway.errors import GatewayError
from gateway.request_ids import new_request_id
from gateway.routing.table import Runtime

__all__ = [
    "ActiveRun",
    "BenchRunner",
    "BenchmarkRefused",
    "BenchmarkRunning",
    "backend_load",
    "routed_model",
    "running_elsewhere",
    "summary",
]

log = logging.getLogger("gateway.admin")

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


def summary(run: ActiveRun) -> dict[str, Any]:
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
