"""Who may use the admin API: admin keys only; without any configured, loopback clients only.

State-changing requests from a browser must come from the gateway's own origin (CSRF).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from quart import request

from gateway.auth import Principal, presented_key
from gateway.config.compile import Runtime
from gateway.config.load import is_loopback
from gateway.errors import Forbidden, Unauthorized

__all__ = ["authenticate_admin", "check_origin"]

LOCAL_ADMIN = Principal(name="local", role="admin")


def authenticate_admin(runtime: Runtime) -> Principal:
    keys = runtime.keys
    key = presented_key(request.headers.get("authorization"), request.headers.get("x-api-key"))
    if key is None:
        if keys.admins_open and is_loopback(request.remote_addr or ""):
            return LOCAL_ADMIN
        if keys.admins_open:
            raise Unauthorized("no admin keys are configured, so the admin API only answers loopback clients")
        raise Unauthorized("an admin key is required: send Authorization: Bearer <key>")
    principal = keys.lookup(key)
    if principal is None:
        raise Unauthorized("the key is not valid")
    if principal.role != "admin":
        raise Forbidden("client keys cannot use the admin API")
    return principal


def check_origin() -> None:
    """Refuse a state change whose Origin is another site (a browser sends Origin on such requests)."""
    origin = request.headers.get("origin")
    if origin is None:  # not a browser, or a same-origin GET-like request
        return
    if urlsplit(origin).netloc != request.host:
        raise Forbidden(f"cross-origin request refused (Origin {origin} is not {request.host})")
