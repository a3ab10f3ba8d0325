"""Admin JSON API: config status, reload, and write-back edits of the timeout tiers (each edit one
`gateway.runtime.edit` transaction)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from typing import Any

import orjson
from gateway.admin.access import authenticate_admin, check_origin
from quart import Blueprint, Response, current_app, request

from gateway import tracing
from gateway.config.capabilities import capability_list
from gateway.config.issues import ConfigError
from gateway.config.model import TimeoutTier
from gateway.config.schema import load_schema
from gateway.config.writeback import Edit, WriteBackError
from gateway.errors import (
    BadRequest,
    ConfigBusy,
    ConfigRejected,
    FieldError,
    InvalidRequest,
    PreconditionRequired,
    ServiceUnavailable,
    StaleConfigVersion,
    UnsupportedMediaType,
    WriteBackDisabled,
)
from gateway.routing.table import Runtime
from gateway.runtime.configlock import ConfigLockTimeout
from gateway.runtime.edit import ConfigFileUnavailable, StaleVersion, WriteBackOff, edit_config

__all__ = ["blueprint"]

blueprint = Blueprint("admin_api", __name__, url_prefix="/admin/api")

_TIER_FIELDS = ("total", "connect", "first_byte")
_TIERS = ("chat", "completions", "embeddings")


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status=status, content_type="application/json", headers=headers)


def _etag(version: str) -> str:
    return f'"{version}"'


@blueprint.before_request
async def require_admin() -> None:
    authenticate_admin(current_app.live.current)
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        check_origin()


def _tier(tier: TimeoutTier) -> dict[str, float]:
    return {"total": tier.total, "connect": tier.connect, "first_byte": tier.first_byte}


def _timeouts(runtime: Runtime) -> dict[str, dict[str, float]]:
    return {kind: _tier(runtime.timeouts.for_kind(kind)) for kind in _TIERS}


@blueprint.get("/config")
async def config_status() -> Response:
    live = current_app.live
    runtime = live.current
    config = runtime.config
    body = {
        "version": runtime.version,
        "loaded_at": runtime.loaded_at.isoformat(),
        "source": runtime.source,
        "path": str(live.path.absolute()),
        "worker_pid": os.getpid(),
        "write_back": config.admin.write_back,
        "logfire_project_url": config.telemetry.logfire.project_url or None,
        "last_error": live.last_error.as_dict() if live.last_error else None,
        # Whether the file watcher is in place now (`reload.watch`): a save from then on is seen.
        "watching": live.watching,
        "history": [event.as_dict() for event in reversed(live.history)],
        # Whether spans are being made now, and where they go (the environment decides that):
        # `telemetry.logfire` applies on reload, after a moment (configuring takes one).
        "tracing": {
            "on": tracing.enabled(),
            "destination": tracing.destination(),
            "settled": current_app.telemetry.tracing_settled,
        },
        "timeouts": _timeouts(runtime),
        "backends": [
            {
                "name": b.name,
                "type": b.type,
                "enabled": b.enabled,
                "disabled_reason": b.disabled_reason,
                "capabilities": capability_list(b.capabilities),
            }
            for b in config.backends
        ],
        "models": [
            {
                "name": route.name,
                "aliases": list(route.config.aliases),
                "available": route.available,
                "chain": [
                    {
                        "backend": s.target.backend,
                        "model": s.target.model,
                        "capabilities": capability_list(s.capabilities),
                    }
                    for s in route.chain
                ],
            }
            for route in runtime.models
        ],
    }
    return _json(body, headers={"etag": _etag(runtime.version)})


@blueprint.get("/backends")
async def backends() -> Response:
    """Each backend of the live config: enabled, circuit state, concurrency (when limited), and what its
    type adds (for local models the engine's load)."""
    runtime = current_app.live.current
    policy = runtime.config.failover.circuit_breaker
    items = []
    for name, backend in runtime.backends.items():
        config = backend.config
        breaker = backend.breaker
        # This config's settings: a backend carried over by a reload keeps the settings it was built
        # with, whose capabilities (not compared) may be out of date.
        settings = runtime.config.backend(name) or config
        item: dict[str, Any] = {
            "name": name,
            "type": config.type,
            "enabled": config.enabled,
            "disabled_reason": config.disabled_reason,
            "capabilities": capability_list(settings.capabilities),
            "circuit": {
                "state": breaker.state,
                "consecutive_failures": breaker.consecutive_failures,
                "retry_in_seconds": round(breaker.retry_in(policy), 3),
            },
        }
        api_key = getattr(settings, "api_key", None)
        if api_key is not None:
            # Whether the key is set, never the key: the Backends page names the `${VAR}` to set.
            item["api_key_set"] = bool(api_key)
        limit = backend.concurrency
        if limit is not None:
            item["concurrency"] = {
                "max_concurrency": limit.limit,
                "in_flight": limit.in_flight,
                "queued": limit.queued,
                "max_queue": limit.max_queue,
            }
        item.update(backend.describe())
        items.append(item)
    return _json({"version": runtime.version, "backends": items})


@blueprint.get("/config/file")
async def config_file() -> Response:
    """The config file as it is on disk now, with its version as the ETag (for editors and diffs)."""
    from gateway.config.load import config_version

    raw = await asyncio.to_thread(current_app.live.path.read_bytes)
    return Response(
        raw, content_type="application/yaml; charset=utf-8", headers={"etag": _etag(config_version(raw))}
    )


@blueprint.post("/config/reload")
async def reload_config() -> Response:
    event = await current_app.live.reload("api")
    if event.outcome == "rejected":
        raise ConfigRejected(
            f"the config file was not applied ({len(event.issues)} error(s)); version "
            f"{event.previous_version} is still serving: " + "; ".join(str(i) for i in event.issues[:5]),
            errors=[issue.as_dict() for issue in event.issues],
        )
    return _json(event.as_dict())


@blueprint.get("/cache")
async def cache_status() -> Response:
    """The response cache: its store, what it did in this worker, which models use it."""
    runtime: Runtime = current_app.live.current
    cache = runtime.cache
    if cache is None:
        raise ServiceUnavailable("the gateway has no runtime yet")
    return _json(
        {
            "store": cache.store.status(),
            "worker_pid": os.getpid(),
            **cache.stats.as_dict(),
            "models": [{"name": route.name, "mode": route.config.cache.mode} for route in runtime.models],
        }
    )


@blueprint.post("/cache/clear")
async def clear_cache() -> Response:
    """Drop every stored answer, or one model's (`model` in the query or the JSON body)."""
    runtime: Runtime = current_app.live.current
    model = request.args.get("model")
    if model is None and (await request.get_data()):
        body = await request.get_json(force=True, silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("model", ""), str):
            raise BadRequest('the body must be a JSON object, {"model": "<name>"} or {}')
        model = body.get("model") or None
    if model is not None:
        route = runtime.routes.get(model)
        if route is None:
            raise InvalidRequest(f"no model '{model}' in the config")
        model = route.name  # an alias clears its model's entries
    if runtime.cache is None:
        raise ServiceUnavailable("the gateway has no runtime yet")
    try:
        dropped = await runtime.cache.store.clear(model)
    except Exception as error:
        raise ServiceUnavailable(f"the cache store failed: {type(error).__name__}") from None
    return _json({"cleared": dropped, "model": model, "store": runtime.cache.store.kind})


@blueprint.get("/config/timeouts")
async def get_timeouts() -> Response:
    runtime = current_app.live.current
    return _json(
        {
            "version": runtime.version,
            "units": "seconds",
            "timeouts": _timeouts(runtime),
            "fields": _tier_fields(),
            "write_back": runtime.config.admin.write_back,
        },
        headers={"etag": _etag(runtime.version)},
    )


def _tier_fields() -> dict[str, dict[str, Any]]:
    """Each tier field's description and bounds, from the schema (the settings form checks them)."""
    properties = load_schema()["$defs"]["timeout_tier"]["properties"]
    return {
        name: {
            key: properties[name][key]
            for key in ("description", "exclusiveMinimum", "maximum")
            if key in properties[name]
        }
        for name in _TIER_FIELDS
    }


def _parse_timeout_edits(body: Any) -> list[Edit]:
    if not isinstance(body, dict) or not body:
        raise BadRequest('send a JSON object such as {"chat": {"total": 600}}')
    edits = []
    for kind, fields in body.items():
        if kind not in _TIERS:
            raise FieldError(kind, f"unknown timeout tier; use one of {', '.join(_TIERS)}")
        if not isinstance(fields, dict) or not fields:
            raise FieldError(kind, 'expected an object such as {"total": 600}')
        for name, value in fields.items():
            if name not in _TIER_FIELDS:
                raise FieldError(f"{kind}.{name}", f"unknown field; use one of {', '.join(_TIER_FIELDS)}")
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise FieldError(f"{kind}.{name}", "expected a number of seconds greater than 0")
            edits.append(Edit(("timeouts", kind, name), value))
    return edits


@contextlib.contextmanager
def edit_problems(live: Any, expected: str, *, redo: str, edited: str, instead: str) -> Iterator[None]:
    """The edit transaction's refusals as the problems an admin client sees (one mapping for every
    endpoint that edits gateway.yaml): `redo` says what to do after a stale version, `edited` names
    the change ("edited", "patched"), `instead` what to do with the patch when write-back is off."""
    try:
        yield
    except StaleVersion as stale:
        raise StaleConfigVersion(
            f"gateway.yaml changed since you read it (you edited {expected}, it is now "
            f"{stale.current_version}); {redo}",
            current_version=stale.current_version,
            headers={"etag": _etag(stale.current_version)},
        ) from None
    except ConfigError as error:
        raise ConfigRejected(
            f"the gateway would reject the {edited} config, so gateway.yaml was not changed and version "
            f"{live.current.version} is still serving: " + "; ".join(str(i) for i in error.issues[:5]),
            errors=[issue.as_dict() for issue in error.issues],
        ) from None
    except WriteBackError as error:
        raise InvalidRequest(str(error)) from None
    except ConfigLockTimeout as error:
        raise ConfigBusy(f"{error}; try again", headers={"retry-after": "1"}) from None
    except WriteBackOff as off:
        raise WriteBackDisabled(
            f"admin.write_back is false: {instead}", patch=off.diff, version=off.previous_version
        ) from None
    except ConfigFileUnavailable as error:
        raise ServiceUnavailable(f"{error}; nothing was changed") from None


@blueprint.patch("/config/timeouts")
async def patch_timeouts() -> Response:
    """Change timeout tiers in gateway.yaml itself. Requires `If-Match: "<version>"` (the ETag read)."""
    live = current_app.live
    if not request.is_json:
        raise UnsupportedMediaType("send the edit as application/json")
    if_match = request.headers.get("if-match")
    if not if_match:
        raise PreconditionRequired(
            "send If-Match with the config version you edited (the ETag of GET /admin/api/config)"
        )
    expected = if_match.strip().removeprefix("W/").strip('"')
    body = await request.get_json(silent=True)
    if body is None:
        raise BadRequest("the request body is not valid JSON")
    edits = _parse_timeout_edits(body)
    source = "ui" if request.headers.get("x-gateway-client") == "admin-ui" else "api"
    with edit_problems(
        live,
        expected,
        redo="reload the values and edit again",
        edited="edited",
        instead="commit this patch to gateway.yaml instead",
    ):
        result = await edit_config(live, edits, expected, source=source)
    return _json(
        {
            "previous_version": result.previous_version,
            "version": result.version,
            "diff": result.diff,
            "written": result.written,
            "reload": result.event.as_dict(),
            "timeouts": _timeouts(result.runtime),
        },
        headers={"etag": _etag(result.version)},
    )
