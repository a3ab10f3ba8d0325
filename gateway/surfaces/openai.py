"""The OpenAI-compatible surface (`/v1/...`)."""

from __future__ import annotations

import orjson
from quart import Blueprint, Response, current_app

from gateway.surfaces.access import authenticate_client

__all__ = ["blueprint"]

blueprint = Blueprint("openai", __name__)


@blueprint.get("/v1/models")
async def list_models() -> Response:
    """The public models of the current config this key may use (aliases included, unavailable ones not)."""
    runtime = current_app.live.current
    with runtime.lease():
        principal = authenticate_client(runtime)
        created = int(runtime.loaded_at.timestamp())
        data = [
            {"id": public, "object": "model", "created": created, "owned_by": "gateway"}
            for route in runtime.models
            if route.available
            for public in (route.name, *route.config.aliases)
            if principal.may_use(public)
        ]
        body = orjson.dumps({"object": "list", "data": data})
        return Response(body, content_type="application/json", headers={"x-config-version": runtime.version})
