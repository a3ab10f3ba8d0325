"""Readiness: can this process serve requests now? Each check says what it looked at.

Not ready (503) only when it cannot serve: no config loaded yet, shutting down (draining after
SIGTERM), or a model with no usable target.

- config: a config is loaded.
- draining: the process is not shutting down.
- models: every public model has a target that is enabled and whose circuit is not open. An open
  circuit whose cooldown is over counts as usable: the next request probes it, and a process taken
  out of rotation would otherwise never get that request.
- audit: reported, never a reason to be not ready. With the audit database down the gateway still
  serves and its records wait in memory, then in the spill file; taking the process out of rotation
  would not bring the database back, and every replica sharing it would leave the load balancer at
  once. The check says `"status": "degraded"` while the database is down, with the numbers (`lost`
  counts records the spill file could not take either; the metrics carry it for alerts).
- limits: reported, never a reason to be not ready, like the audit check: `degraded` while the
  limits store (Redis) fails, with `on_store_down` saying what requests get meanwhile (served
  unlimited, or refused with 503).
- local_models (only once a local model is loaded): reported, never a reason to be not ready:
  `degraded` when mlx computes on its bundled reference BLAS (about 30x slower for fp32 models),
  with the fix in `detail`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.routing.table import Runtime

__all__ = ["readiness"]


def readiness(
    runtime: Runtime | None, audit_stats: Mapping[str, Any], *, draining: bool = False
) -> tuple[bool, dict[str, Any]]:
    """(ready, checks): each check is `{"ok": bool, ...what it found}`; `ready` is every check's ok."""
    checks: dict[str, Any] = {}
    checks["draining"] = (
        {"ok": False, "detail": "shutting down: finishing the requests in progress"}
        if draining
        else {"ok": True}
    )
    if runtime is None:
        checks["config"] = {"ok": False, "detail": "no config loaded yet"}
        checks["audit"] = _audit(audit_stats, None)
        checks["models"] = {"ok": False, "detail": "no config loaded yet"}
    else:
        checks["config"] = {
            "ok": True,
            "version": runtime.version,
            "loaded_at": runtime.loaded_at.isoformat(),
        }
        checks["audit"] = _audit(audit_stats, runtime.config.audit.buffer_records)
        checks["limits"] = _limits(runtime)
        checks["models"] = _models(runtime)
        local = _local_models(runtime)
        if local is not None:
            checks["local_models"] = local
    return all(check["ok"] for check in checks.values()), checks


def _audit(stats: Mapping[str, Any], limit: int | None) -> dict[str, Any]:
    if not stats.get("enabled"):
        return {"ok": True, "status": "off", "detail": "audit log off"}
    db_up = bool(stats.get("db_up"))
    buffered = int(stats.get("buffered", 0))
    check: dict[str, Any] = {
        "ok": True,  # see the module's docstring: audit trouble is reported, not a reason to leave
        "status": "ok" if db_up else "degraded",
        "db_up": db_up,
        "buffered": buffered,
        "buffer_records": limit,
        "spilled": int(stats.get("spilled", 0)),
        "replayed": int(stats.get("replayed", 0)),
        "spill_bytes": int(stats.get("spill_bytes", 0)),
        "lost": int(stats.get("lost", 0)),
        "last_error": stats.get("last_error"),
    }
    if not db_up:
        check["detail"] = (
            "the audit database is down: records go to the spill file and are replayed when it answers"
        )
    return check


def _limits(runtime: Runtime) -> dict[str, Any]:
    status = runtime.limits.status()
    up = bool(status["up"])
    check: dict[str, Any] = {
        "ok": True,  # as for the audit: a shared store's outage would take every replica out at once
        "status": "ok" if up else "degraded",
        **status,
    }
    if not up:
        serving = (
            "requests are served without limits"
            if status["on_store_down"] == "allow"
            else "limited requests are refused with 503"
        )
        check["detail"] = f"the limits store is unreachable: {serving} (limits.on_store_down)"
    return check


def _local_models(runtime: Runtime) -> dict[str, Any] | None:
    """The loaded local models' BLAS: `degraded` (still ready) when one computes on mlx's bundled
    reference BLAS, with the fix. None when no local model is loaded."""
    engines = runtime.local_models.engines
    if not engines:
        return None
    slow = [engine for engine in engines if engine.blas_warning]
    check: dict[str, Any] = {
        "ok": True,  # slow is not down: the model still answers
        "status": "degraded" if slow else "ok",
        "loaded": [str(engine.path) for engine in engines],
        "blas": sorted({engine.blas for engine in engines}),
    }
    if slow:
        check["detail"] = slow[0].blas_warning
    return check


def _models(runtime: Runtime) -> dict[str, Any]:
    policy = runtime.config.failover.circuit_breaker
    models: dict[str, Any] = {}
    for route in runtime.models:
        usable = []
        unusable = {}
        for step in route.chain:
            name = step.backend.name
            if not step.config.enabled:
                unusable[name] = "disabled"
            elif step.backend.breaker.current_state(policy) == "open":
                unusable[name] = "circuit open"
            else:
                usable.append(name)
        models[route.name] = {"ok": bool(usable), "usable": usable, "unusable": unusable}
    return {"ok": all(m["ok"] for m in models.values()), "models": models}
