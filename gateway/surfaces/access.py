"""Client authentication for the model APIs (`/v1/*`): which principal a request runs as."""

from __future__ import annotations

from quart import request

from gateway.auth import ANONYMOUS, Principal, presented_key
from gateway.config.compile import Runtime
from gateway.errors import Forbidden, Unauthorized

__all__ = ["authenticate_client"]


def authenticate_client(runtime: Runtime) -> Principal:
    keys = runtime.keys
    key = presented_key(request.headers.get("authorization"), request.headers.get("x-api-key"))
    if keys.clients_open:
        return ANONYMOUS
    if key is None:
        raise Unauthorized("an API key is required: send Authorization: Bearer <key> or x-api-key: <key>")
    principal = keys.lookup(key)
    if principal is None:
        raise Unauthorized("the API key is not valid")
    if principal.role != "client":
        raise Forbidden("admin keys cannot call the model API; use a client key")
    return principal
