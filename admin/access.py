"""Who may use the admin API: admin keys, or the admin panel's session cookie (opened with an admin
key); without any admin keys configured, the local admin token (`.gateway-admin-token`) in their
place. Never anyone anonymously: a peer address or Host header proves nothing behind a proxy.

Failed authentications are counted per real client address (`server.trusted_proxies`); an address
past the limit gets 429 with Retry-After on every admin entry until its failures age out.

State-changing requests from a browser must come from the gateway's own origin (CSRF); those made
with the session cookie must also carry the session's CSRF token.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from gateway.admin.secret import TOKEN_ENV_VAR, TOKEN_FILE
from gateway.admin.session import COOKIE_NAME, CSRF_HEADER, LOCAL_ADMIN, AdminSession, AdminSessions
from quart import current_app, g, request, websocket

from gateway.auth import Principal, presented_key
from gateway.errors import Forbidden, RateLimited, Unauthorized
from gateway.routing.table import Runtime

__all__ = ["LOCAL_ADMIN", "admin_client_address", "authenticate_admin", "check_origin", "refuse_if_throttled"]

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def admin_client_address(runtime: Runtime, *, socket: bool = False) -> str:
    """The real client address of this request: the peer, or what a trusted proxy forwarded."""
    incoming = websocket if socket else request
    peer = incoming.remote_addr or ""
    if not runtime.proxies or not peer:
        return peer
    return runtime.proxies.client_address(peer, incoming.scope["headers"])


def refuse_if_throttled(sessions: AdminSessions, address: str) -> None:
    wait = sessions.throttle.retry_after(address)
    if wait:
        raise RateLimited(
            f"too many failed admin authentications from {address}; try again in {wait} s",
            headers={"retry-after": str(wait)},
        )


def authenticate_admin(runtime: Runtime, *, socket: bool = False) -> Principal:
    """The admin making this request (or WebSocket handshake, with `socket`); 401/403/429 otherwise.

    `g.admin_session` is the panel session when the session cookie was used (else None).
    """
    keys = runtime.keys
    incoming = websocket if socket else request
    sessions: AdminSessions = current_app.admin_sessions  # type: ignore[attr-defined]
    g.admin_session = None
    address = admin_client_address(runtime, socket=socket)
    refuse_if_throttled(sessions, address)
    key = presented_key(incoming.headers.get("authorization"), incoming.headers.get("x-api-key"))
    if key is None:
        cookie = incoming.cookies.get(COOKIE_NAME)
        if cookie:
            return _session_admin(runtime, sessions, cookie, address, socket=socket)
        if keys.admins_open:
            raise Unauthorized(local_token_needed(sessions))
        raise Unauthorized("an admin key is required: send Authorization: Bearer <key>, or sign in at /admin")
    principal = keys.lookup(key)
    if principal is None:
        if sessions.is_local_token(key, keys):
            return LOCAL_ADMIN
        sessions.throttle.failed(address, key)
        if keys.admins_open:
            raise Unauthorized(f"the key is not valid; {local_token_needed(sessions)}")
        raise Unauthorized("the key is not valid")
    if principal.role != "admin":
        raise Forbidden("client keys cannot use the admin API")
    return principal


def local_token_needed(sessions: AdminSessions) -> str:
    """What a caller of a gateway without admin keys must send, and where to find it."""
    if sessions.token_unavailable:
        return (
            "no admin keys are configured, and the local admin token is unavailable "
            f"({sessions.token_unavailable}): configure auth.admin_keys or set {TOKEN_ENV_VAR}"
        )
    return (
        "no admin keys are configured: send the local admin token as Authorization: Bearer <token> "
        f"(it is in {TOKEN_FILE} next to the config file, or {TOKEN_ENV_VAR}), or open the sign-in "
        "URL the gateway printed at start"
    )


def _session_admin(
    runtime: Runtime, sessions: AdminSessions, cookie: str, address: str, *, socket: bool
) -> Principal:
    session: AdminSession | None = sessions.verify(cookie, runtime.keys, runtime.config.admin.session_hours)
    if session is None:
        if sessions.signer is not None and not sessions.signer.authentic(cookie):
            sessions.throttle.failed(address, cookie)  # forged; an expired or revoked one is no guess
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
