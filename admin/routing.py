"""`GET /admin/api/routing`: how each model's traffic is split now, in the worker that answers.

Per model: the chain's steps (a target, or a balanced group with each member's weight, intended
share, requests answered, requests in flight or latency average, circuit state), the canary (its
weight in force, its rules, its window against the stable targets', its rollback) and the shadow
target. Then the recent canary rollbacks, each with whether it was written into gateway.yaml, or the
patch to commit when it was not (`admin.write_back: false`). State is per worker: every worker of
`gateway serve --workers N` balances and judges the requests it serves.
"""

from __future__ import annotations

import os
from typing import Any

import orjson
from gateway.admin.access import authenticate_admin
from quart import Blueprint, Response, current_app

from gateway.config.model import CircuitBreakerPolicy
from gateway.routing.canary import RouteCanary
from gateway.routing.groups import Latency, LeastBusy, RouteGroup, Weighted
from gateway.routing.table import ModelRoute, RouteTarget

__all__ = ["blueprint"]

blueprint = Blueprint("admin_routing", __name__, url_prefix="/admin/api/routing")


@blueprint.before_request
async def require_admin() -> None:
    authenticate_admin(current_app.live.current)


@blueprint.get("")
async def routing() -> Response:
    runtime = current_app.live.current
    policy = runtime.config.failover.circuit_breaker
    body = {
        "version": runtime.version,
        "worker": os.getpid(),
        "models": [_model(route, policy) for route in runtime.models],
        "rollbacks": list(current_app.canaries.history),
    }
    return Response(orjson.dumps(body), content_type="application/json")


def _model(route: ModelRoute, policy: CircuitBreakerPolicy) -> dict[str, Any]:
    steps = route.steps or route.chain
    item: dict[str, Any] = {
        "model": route.name,
        "steps": [_group(s, policy) if type(s) is RouteGroup else _target(s, policy) for s in steps],
        "canary": None if route.canary is None else _canary(route.canary, policy),
        "shadow": None,
    }
    shadow = route.config.shadow
    if shadow is not None:
        item["shadow"] = {
            "target": {"backend": shadow.target.backend, "model": shadow.target.model},
            "sample_rate": shadow.sample_rate,
        }
    return item


def _target(step: RouteTarget, policy: CircuitBreakerPolicy) -> dict[str, Any]:
    return {
        "backend": step.target.backend,
        "model": step.target.model,
        "enabled": step.config.enabled,
        "circuit": step.backend.breaker.current_state(policy),
    }


def _group(group: RouteGroup, policy: CircuitBreakerPolicy) -> dict[str, Any]:
    picker = group.picker
    members = []
    total = sum(t.weight for t in group.config.targets)
    for i, member in enumerate(group.members):
        entry = _target(member, policy)
        entry["served"] = group.served[i]
        if type(picker) is Weighted:
            entry["weight"] = picker.weights[i]
            entry["share"] = round(picker.weights[i] / total, 4) if total else None
        elif type(picker) is LeastBusy:
            entry["in_flight"] = picker.in_flight[i]
        elif type(picker) is Latency:
            average = picker.average[i]
            entry["latency_ms"] = None if average is None else round(average * 1000, 1)
        members.append(entry)
    sticky = group.config.sticky
    return {
        "group": group.index,
        "strategy": group.config.strategy,
        "sticky": None if sticky is None else {"by": sticky.by, "header": sticky.header},
        "members": members,
    }


def _canary(canary: RouteCanary, policy: CircuitBreakerPolicy) -> dict[str, Any]:
    rules = canary.config.rollback
    mine, stable = canary.windows()
    return {
        "target": _target(canary.target, policy),  # type: ignore[arg-type]
        "weight": canary.config.weight,
        "effective_weight": canary.weight,
        "rollback": None
        if rules is None
        else {
            "error_rate": rules.error_rate,
            "p95_latency_ms": rules.p95_latency_ms,
            "min_requests": rules.min_requests,
            "window_seconds": rules.window,
        },
        "window": {"canary": mine.as_dict(), "stable": stable.as_dict()},
        "rolled_back": None if canary.rolled_back is None else canary.rolled_back.as_dict(),
    }
