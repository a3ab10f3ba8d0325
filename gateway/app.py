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

from quart import Quart

from admin.api import blueprint as admin_api
from gateway.config.live import LiveRuntime
from gateway.config.watch import watch_config
from gateway.problems import install_problem_handlers
from gateway.surfaces.model_api import ModelAPI

__all__ = ["GatewayApp", "create_app"]

log = logging.getLogger("gateway")


class GatewayApp(Quart):
    """The Quart side: admin API, lifespan, problem+json for unknown routes."""

    live: LiveRuntime


def create_app(
    config_path: str | os.PathLike[str] = "gateway.yaml",
    *,
    host: str | None = None,
    env: Mapping[str, str] | None = None,
    watch: bool | None = None,
) -> ModelAPI:
    """The gateway (an ASGI app) for the config file at `config_path`.

    The model API is answered by `ModelAPI` directly; everything else, lifespan included, by Quart
    (reachable as `.fallback`).

    `host` is the address actually bound (for the keys-required check); `watch` overrides
    `reload.watch` from the file.
    """
    app = GatewayApp(__name__)
    app.live = LiveRuntime(config_path, host=host, env=env)
    install_problem_handlers(app)
    app.register_blueprint(admin_api)
    stop_watching = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    @app.before_serving
    async def startup() -> None:
        runtime = await app.live.start()
        config = runtime.config
        app.config["MAX_CONTENT_LENGTH"] = config.server.max_body_bytes
        if config.auth.allow_unauthenticated and not config.auth.client_keys:
            log.warning(
                "serving clients without API keys (auth.allow_unauthenticated is true)",
                extra={"event": "auth_open"},
            )
        # What startup built lives as long as the process: keep it out of every future collection.
        gc.collect()
        gc.freeze()
        if watch if watch is not None else config.reload.watch:
            stop_watching.clear()
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
        await app.live.close()

    return ModelAPI(app.live, app)
