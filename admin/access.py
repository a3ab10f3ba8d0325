"""Who may use the admin API: admin keys, or the admin panel's session cookie (opened with an admin
key); without any admin keys configured, loopback clients only.

State-changing requests from a browser must come from the gateway's own origin (CSRF); those made
with the session cookie must also carry the session's CSRF token.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from gateway.admin.session import COOKIE_NAME, CSRF_HEADER, AdminSession
from quart import current_app, g, request, websocket

from gateway.auth import Principal, is_loopback, presented_key
from gateway.errors import Forbidden, Unauthorized
from gateway.routing.table import Runtime

__all__ = ["authenticate_admin", "check_origin"]

LOCAL_ADMIN = Principal(name="local", role="admin")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def authenticate_admin(runtime: Runtime, *, socket: bool = False) -> Principal:
    """The admin making this request (or WebSocket handshake, with `socket`); 401/403 otherwise.

    `g.admin_session` is the panel session when the session cookie was used (else None).
    """
    keys = runtime.keys
    incoming = websocket if socket else request
    g.admin_session = None
    key = presented_key(incoming.headers.get("authorization"), incoming.headers.get("x-api-key"))
    if key is None:
        if keys.admins_open:
            if not is_loopback(incoming.remote_addr or ""):
                raise Unauthorized(
                    "no admin keys are configured, so the admin API only answers loopback clients"
                )
            # A page elsewhere may point its own name at 127.0.0.1 (DNS rebinding); its requests then
            # pass the Origin check, but not this one.
            hostname = urlsplit(f"//{incoming.host}").hostname or ""
            if not is_loopback(hostname):
                raise Forbidden(
                    "no admin keys are configured, so the admin API only answers requests addressed "
                    f"to a loopback name (localhost, 127.0.0.1), not {incoming.host}"
                )
            return LOCAL_ADMIN
        cookie = incoming.cookies.get(COOKIE_NAME)
        if cookie:
            return _session_admin(runtime, cookie, socket=socket)
        raise Unauthorized("an admin key is required: send Authorization: Bearer <key>, or sign in at /admin")
    principal = keys.lookup(key)
    if principal is None:
        raise Unauthorized("the key is not valid")
    if principal.role != "admin":
        raise Forbidden("client keys cannot use the admin API")
    return principal


def _session_admin(runtime: Runtime, cookie: str, *, socket: bool) -> Principal:
    sessions = getattr(current_app, "admin_sessions", None)
    session: AdminSession | None = None
    if sessions is not None:
        session = sessions.verify(cookie, runtime.keys, runtime.config.admin.session_hours)
    if session is None:
        raise Unauthorized("the admin session has expired or is no longer valid; sign in again at /admin")
    if socket:
        check_origin(socket=True, required=True)
    elif request.method not in _SAFE_METHODS:
        # The cookie goes along whatever page made the request: prove it was the panel's own.
        check_origin(required=True)
        token = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(token.encode(), session.csrf_token.encode()):
            raise Forbidden(
                "missing or wrong X-CSRF-Token: a state change made with the session cookie needs the "
                "token GET /admin/api/session returns"
            )
    g.admin_session = session
    return session.principal


def check_origin(*, socket: bool = False, required: bool = False) -> None:
    """Refuse a state change (or a WebSocket, which browsers open from any page) whose Origin is
    another site. A browser always sends Origin on these; other clients need not, unless `required`
    (requests that rely on the session cookie, which only browsers send)."""
    incoming = websocket if socket else request
    origin = incoming.headers.get("origin")
    if origin is None:  # not a browser
        if required:
            raise Forbidden("a request made with the session cookie must carry an Origin header")
        return
    if urlsplit(origin).netloc != incoming.host:
        raise Forbidden(f"cross-origin request refused (Origin {origin} is not {incoming.host})")
