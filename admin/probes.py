"""`GET /health` (liveness), `GET /ready` (readiness) and the Prometheus endpoint (`GET /metrics`, or
`telemetry.prometheus.path`). None of them needs a client key; metrics may require an admin key.

The metrics path comes from the live config, so it is matched before routing (a reload may move it).
"""

from __future__ import annotations

import os

import orjson
from gateway.admin.access import authenticate_admin
from quart import Blueprint, Response, current_app, request

from gateway.telemetry.health import readiness

__all__ = ["blueprint"]

blueprint = Blueprint("telemetry", __name__)


def _json(data: object, status: int = 200) -> Response:
    return Response(
        orjson.dumps(data),
        status=status,
        content_type="application/json",
        headers={"cache-control": "no-store"},
    )


@blueprint.get("/health")
async def health() -> Response:
    """The process answers. Nothing else is checked: a failing check here means restart it."""
    return _json({"status": "ok", "pid": os.getpid()})


@blueprint.get("/ready")
async def ready() -> Response:
    """200 while this process can serve; 503 before a config is loaded, while draining after SIGTERM,
    or when a model has no usable target. Audit trouble shows as `degraded`, not as a 503."""
    app = current_app
    ok, checks = readiness(app.live.current, app.audit.stats(), draining=app.draining)
    degraded = [name for name, check in checks.items() if check.get("status") == "degraded"]
    body = {"status": "ready" if ok else "not ready", "degraded": degraded, "checks": checks}
    return _json(body, 200 if ok else 503)


@blueprint.before_app_request
async def metrics() -> Response | None:
    app = current_app
    runtime = app.live.current
    if runtime is None:
        return None
    settings = runtime.config.telemetry.prometheus
    if not settings.enabled or request.path != settings.path or request.method not in ("GET", "HEAD"):
        return None
    if settings.require_admin_key:
        authenticate_admin(runtime)
    app.telemetry.sync()
    body, content_type = app.telemetry.metrics.render(request.headers.get("accept"))
    return Response(body, content_type=content_type, headers={"cache-control": "no-store"})
