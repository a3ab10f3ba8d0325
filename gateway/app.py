"""`create_app(config_path)`: the Quart application, its wiring and its lifespan.

Nothing here runs at import time: the config is loaded, backends started and the watcher launched in
`before_serving`, and all of it is closed in `after_serving`, so a test can build several apps.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from quart import Quart, Request

from gateway.admin.api import blueprint as admin_api
from gateway.admin.bench_runs import install_bench
from gateway.admin.config_edit import blueprint as admin_config_edit
from gateway.admin.keys import blueprint as admin_keys
from gateway.admin.logs import blueprint as admin_logs
from gateway.admin.openapi import blueprint as openapi_document
from gateway.admin.panel import install_panel
from gateway.admin.probes import blueprint as telemetry_endpoints
from gateway.admin.routing import blueprint as admin_routing
from gateway.admin.session import AdminSessions
from gateway.admin.usage import blueprint as admin_usage
from gateway.audit.service import AuditService
from gateway.limits import Clock, system_clock
from gateway.problems import install_problem_handlers
from gateway.runtime.busy import BusyExchange
from gateway.runtime.canary import WORKERS_DIR_ENV, CanaryRollbacks
from gateway.runtime.live import LiveRuntime, ReloadEvent
from gateway.runtime.watch import watch_config
from gateway.surfaces.model_api import ModelAPI
from gateway.surfaces.shadow import ShadowTraffic
from gateway.telemetry.service import Telemetry

if TYPE_CHECKING:
    from logfire import Logfire

__all__ = ["GatewayApp", "create_app"]

log = logging.getLogger("gateway")


class JSONRequest(Request):
    """Quart's request, whose `get_json` parses the body with orjson, as the model API does: a body that
    is not UTF-8, nests past orjson's depth limit or holds NaN/Infinity is not JSON (None when
    `silent`, else Quart's 400). With the standard library the first two were 500s (UnicodeDecodeError
    is raised outside Quart's own try; RecursionError is no ValueError) and NaN was a number."""

    async def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        if not (force or self.is_json):
            return None
        raw = await self.get_data(cache=cache, as_text=False)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            return None if silent else self.on_json_loading_failed(error)


class GatewayApp(Quart):
    """The Quart side: admin API, lifespan, problem+json for unknown routes."""

    request_class = JSONRequest

    live: LiveRuntime
    audit: AuditService
    telemetry: Telemetry
    #: Shadow copies in flight (`models.<m>.shadow`), cancelled at shutdown.
    shadows: ShadowTraffic
    #: Canary rollbacks: written back, told to the other workers, kept for the admin API.
    canaries: CanaryRollbacks
    #: least_busy's in-flight counts, exchanged with the other workers and instances (Redis store).
    busy: BusyExchange
    admin_sessions: AdminSessions
    #: Set when shutdown begins (SIGTERM): `/ready` answers 503 so load balancers stop sending.
    draining: bool = False


def create_app(
    config_path: str | os.PathLike[str] = "gateway.yaml",
    *,
    host: str | None = None,
    env: Mapping[str, str] | None = None,
    watch: bool | None = None,
    logfire_instance: Logfire | None = None,
    limits_clock: Clock | None = None,
) -> ModelAPI:
    """The gateway (an ASGI app) for the config file at `config_path`.

    The model API is answered by `ModelAPI` directly; everything else, lifespan included, by Quart
    (reachable as `.fallback`).

    `host` is the address actually bound (for the keys-required check); `watch` overrides
    `reload.watch` from the file. `logfire_instance`: trace to this Logfire instance whatever the
    config and environment say (tests pass the one `capfire` configured). `limits_clock`: the time
    the rate limits and budgets read (tests pass a `ManualClock`), instead of the system's.
    """
    app = GatewayApp(__name__, static_folder=None)  # the panel serves its own files; no /static route
    app.live = LiveRuntime(config_path, host=host, env=env, clock=limits_clock or system_clock)
    install_problem_handlers(app)
    app.audit = AuditService()
    app.register_blueprint(admin_api)
    app.register_blueprint(admin_config_edit)
    app.register_blueprint(admin_keys)
    app.register_blueprint(admin_logs)
    app.register_blueprint(admin_usage)
    app.register_blueprint(admin_routing)
    install_bench(app)  # the panel's backend benchmark
    install_panel(app)  # the browser panel, sign-in, and the admin.enabled switch
    app.telemetry = Telemetry(logfire_instance)
    app.shadows = ShadowTraffic(app.audit, app.telemetry.requests)
    requests_telemetry = app.telemetry.requests

    def count_rollback(model: str, rule: str) -> None:
        if requests_telemetry.metrics_on:
            requests_telemetry.metrics.canary_rollbacks.labels(model, rule).inc()

    app.canaries = CanaryRollbacks(app.live, count_rollback, os.environ.get(WORKERS_DIR_ENV))
    app.busy = BusyExchange(app.live)
    app.register_blueprint(telemetry_endpoints)
    app.register_blueprint(openapi_document)
    stop_watching = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    applying: set[asyncio.Task[None]] = set()

    def on_reload(event: ReloadEvent) -> None:
        """A reload may change `audit.*` (the service restarts its writer only if it did) and
        `telemetry.*`; metrics count every reload."""
        app.telemetry.on_reload(event.outcome, event.version)
        if event.outcome == "applied" and app.live.current is not None:
            task = asyncio.create_task(app.audit.apply(app.live.current.config.audit))
            applying.add(task)
            task.add_done_callback(applying.discard)

    @app.before_serving
    async def startup() -> None:
        runtime = await app.live.start()
        config = runtime.config
        await app.audit.apply(config.audit)
        await app.telemetry.start(lambda: app.live.current, app.audit)
        app.live.listeners.append(on_reload)
        app.config["MAX_CONTENT_LENGTH"] = config.server.max_body_bytes
        if config.auth.allow_unauthenticated and not config.auth.client_keys:
            log.warning(
                "serving clients without API keys (auth.allow_unauthenticated is true)",
                extra={"event": "auth_open"},
            )
        # What startup built lives as long as the process: keep it out of every future collection.
        gc.collect()
        gc.freeze()
        stop_watching.clear()
        tasks.append(asyncio.create_task(app.canaries.watch(stop_watching)))
        tasks.append(asyncio.create_task(app.busy.run(stop_watching)))
        if watch if watch is not None else config.reload.watch:
            tasks.append(
                asyncio.create_task(watch_config(app.live, stop_watching, config.reload.debounce_ms))
            )

    @app.after_serving
    async def shutdown() -> None:
        stop_watching.set()
        for task in tasks:
            try:
                await asyncio.wait_for(task, timeout=2)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
        tasks.clear()
        await app.busy.leave()
        if applying:
            await asyncio.gather(*applying, return_exceptions=True)
        await app.shadows.close()  # before the audit log closes: cancelled copies are recorded
        await app.canaries.close()  # a rollback's write-back finishes before the config closes
        await app.audit.close()  # flushes the buffered records (or spills them if the database is down)
        if on_reload in app.live.listeners:
            app.live.listeners.remove(on_reload)
        await app.live.close()
        await app.telemetry.close()

    return ModelAPI(app.live, app, app.audit, app.telemetry.requests, app.shadows)
