"""Readiness: can this process serve requests now? Each check says what it looked at.

- config: a config is loaded.
- audit: the audit database answers, or the writer's buffer still has room (records are not lost).
- models: every public model has a target that is enabled and whose circuit is not open. An open
  circuit whose cooldown is over counts as usable: the next request probes it, and a process taken
  out of rotation would otherwise never get that request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.routing.table import Runtime

__all__ = ["readiness"]


def readiness(runtime: Runtime | None, audit_stats: Mapping[str, Any]) -> tuple[bool, dict[str, Any]]:
    """(ready, checks): each check is `{"ok": bool, ...what it found}`."""
    checks: dict[str, Any] = {}
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
        checks["models"] = _models(runtime)
    return all(check["ok"] for check in checks.values()), checks


def _audit(stats: Mapping[str, Any], limit: int | None) -> dict[str, Any]:
    if not stats.get("enabled"):
        return {"ok": True, "detail": "audit log off"}
    buffered = int(stats.get("buffered", 0))
    db_up = bool(stats.get("db_up"))
    ok = db_up or (limit is not None and buffered < limit)
    check: dict[str, Any] = {"ok": ok, "db_up": db_up, "buffered": buffered, "buffer_records": limit}
    if not ok:
        check["detail"] = "the audit database is down and the buffer is full"
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
