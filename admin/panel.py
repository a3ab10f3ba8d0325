"""The admin panel in the browser: its pages and static files under /admin, and sign-in / sign-out
under /admin/api/session. `install_panel(app)` wires it (and the `admin.enabled` switch) into the app,
and loads the session secret and the local admin token at startup.

The pages are one static HTML shell plus JavaScript modules that read the admin API; every page's
URL (`/admin/logs?status=error`, `/admin/usage`, `/admin/settings`, `/admin/status`) serves the
shell, so a view can be bookmarked or shared.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from gateway.admin.access import (
    LOCAL_ADMIN,
    admin_client_address,
    authenticate_admin,
    check_origin,
    local_token_needed,
    refuse_if_throttled,
)
from gateway.admin.secret import (
    AdminTokenUnavailable,
    SessionSecretUnavailable,
    load_admin_token,
    load_session_secret,
)
from gateway.admin.session import COOKIE_NAME, COOKIE_PATH, AdminSessions
from quart import Blueprint, Quart, Response, current_app, g, request, send_from_directory, websocket

from gateway.errors import (
    FieldError,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
)

__all__ = ["PAGES", "STATIC_DIR", "install_panel", "pages", "session_api", "sign_in_url"]

log = logging.getLogger("gateway.admin")

STATIC_DIR = Path(__file__).with_name("static")
#: The panel's pages (each serves the same shell; the JavaScript shows the page the URL names).
PAGES = ("logs", "usage", "models", "backends", "keys", "settings", "status", "signin")

# The shell loads only its own files: no inline script, nothing from another origin, never framed.
_PAGE_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-cache",
}

pages = Blueprint("admin_panel", __name__, url_prefix="/admin")
session_api = Blueprint("admin_session", __name__, url_prefix="/admin/api/session")


# -- pages -----------------------------------------------------------------------------------------


@pages.get("")
@pages.get("/")
@pages.get("/<any(logs, usage, models, backends, keys, settings, status, signin):page>")
async def shell(page: str = "logs") -> Response:
    response = await send_from_directory(STATIC_DIR, "index.html")
    response.headers.update(_PAGE_HEADERS)
    return response


@pages.get("/static/<path:name>")
async def static(name: str) -> Response:
    try:
        response = await send_from_directory(STATIC_DIR, name)
    except OSError:  # a name the file system refuses (too long, ...): no such file
        raise NotFound(f"no file {name[:100]!r} in the panel's static files") from None
    response.headers["x-content-type-options"] = "nosniff"
    response.headers["cache-control"] = "no-cache"  # revalidated (ETag): an upgrade shows at once
    return response


# -- sessions --------------------------------------------------------------------------------------


def _json(data: Any, status: int = 200) -> Response:
    response = Response(orjson.dumps(data), status=status, content_type="application/json")
    response.headers["cache-control"] = "no-store"  # carries the CSRF token
    return response


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


@session_api.get("")
async def who_am_i() -> Response:
    """Who this browser (or key) is to the admin API, and the CSRF token of its session."""
    runtime = current_app.live.current
    principal = authenticate_admin(runtime)
    session = g.admin_session
    via = "session" if session else "key"
    return _json(
        {
            "signed_in": True,
            "name": principal.name,
            "via": via,
            "csrf_token": session.csrf_token if session else None,
            "expires_at": _iso(session.expires_at) if session else None,
            "admin_keys_configured": not runtime.keys.admins_open,
        }
    )


@session_api.post("")
async def sign_in() -> Response:
    """`{"key": "<admin key>"}` → a session cookie for the panel (failed tries are throttled). Without
    admin keys configured, the key is the local admin token."""
    check_origin()
    sessions: AdminSessions = current_app.admin_sessions
    runtime = current_app.live.current
    address = admin_client_address(runtime)
    refuse_if_throttled(sessions, address)
    if not request.is_json:
        raise UnsupportedMediaType('send {"key": "<admin key>"} as application/json')
    body = await request.get_json(silent=True)
    key = body.get("key") if isinstance(body, dict) else None
    if not isinstance(key, str) or not key.strip():
        raise FieldError("key", "send the admin key as a non-empty string")
    key = key.strip()
    keys = runtime.keys
    principal = LOCAL_ADMIN if sessions.is_local_token(key, keys) else keys.lookup(key)
    if principal is None or principal.role != "admin":
        sessions.throttle.failed(address, key)
        log.warning(
            "admin sign-in refused for %s",
            address,
            extra={"event": "admin_sign_in_refused", "client": address},
        )
        if principal is not None:
            raise Forbidden("client keys cannot open the admin panel; use an admin key (auth.admin_keys)")
        if keys.admins_open:
            raise Unauthorized(f"the token is not valid; {local_token_needed(sessions)}")
        raise Unauthorized("the key is not valid")
    if sessions.signer is None:
        raise ServiceUnavailable(f"admin panel sessions are unavailable: {sessions.unavailable}")
    sessions.throttle.succeeded(address)
    lifetime = int(runtime.config.admin.session_hours * 3600) or 1
    cookie, csrf = sessions.signer.issue(hashlib.sha256(key.encode()).hexdigest(), lifetime)
    log.info("admin %s signed in", principal.name, extra={"event": "admin_sign_in", "admin": principal.name})
    response = _json(
        {
            "signed_in": True,
            "name": principal.name,
            "via": "session",
            "csrf_token": csrf,
            "expires_at": _iso(int(datetime.now(UTC).timestamp()) + lifetime),
            "admin_keys_configured": not keys.admins_open,
        }
    )
    response.set_cookie(
        COOKIE_NAME,
        cookie,
        max_age=lifetime,
        path=COOKIE_PATH,
        secure=request.scheme == "https",
        httponly=True,
        samesite="Strict",
    )
    return response


@session_api.delete("")
async def sign_out() -> Response:
    """End this browser's session (the cookie is deleted; with the session cookie, CSRF rules apply)."""
    check_origin()
    principal = authenticate_admin(current_app.live.current)
    log.info(
        "admin %s signed out", principal.name, extra={"event": "admin_sign_out", "admin": principal.name}
    )
    response = _json({"signed_in": False})
    response.delete_cookie(
        COOKIE_NAME, path=COOKIE_PATH, secure=request.scheme == "https", httponly=True, samesite="Strict"
    )
    return response


def sign_in_url(host: str, port: int, token: str) -> str:
    """The panel's sign-in link carrying the local admin token in the fragment, which browsers never
    send: it stays out of access logs, proxies and Referer headers (the panel signs in with it and
    removes it from the address bar)."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/admin/#token={token}"


# -- wiring ----------------------------------------------------------------------------------------


def _is_admin_path(path: str) -> bool:
    return path == "/admin" or path.startswith("/admin/")


def install_panel(app: Quart) -> None:
    """Register the panel's pages and session endpoints, the `admin.enabled` switch (off: every
    /admin path is a 404, the admin API included), and the session secret's loading at startup."""
    sessions = AdminSessions()
    app.admin_sessions = sessions  # type: ignore[attr-defined]
    app.register_blueprint(pages)
    app.register_blueprint(session_api)

    def refuse_if_disabled(path: str, method: str) -> None:
        runtime = app.live.current  # type: ignore[attr-defined]
        if _is_admin_path(path) and runtime is not None and not runtime.config.admin.enabled:
            raise NotFound(f"no route for {method} {path}")

    @app.before_request
    async def admin_enabled() -> None:
        refuse_if_disabled(request.path, request.method)

    @app.before_websocket
    async def admin_enabled_socket() -> None:
        refuse_if_disabled(websocket.path, "GET")

    @app.before_serving
    async def load_secret() -> None:
        live = app.live  # type: ignore[attr-defined]
        try:
            token = await asyncio.to_thread(load_admin_token, live.path, live.env)
        except AdminTokenUnavailable as error:
            sessions.token_unavailable = str(error)
            log.warning(
                "no local admin token (while auth.admin_keys is empty the admin API refuses everyone): %s",
                error,
                extra={"event": "admin_token_unavailable"},
            )
        else:
            sessions.use_local_token(token.value)
        try:
            secret = await asyncio.to_thread(load_session_secret, live.path, live.env)
        except SessionSecretUnavailable as error:
            sessions.unavailable = str(error)
            log.warning("admin panel sign-in is off: %s", error, extra={"event": "admin_sessions_off"})
            return
        sessions.use_secret(secret.key)
        log.debug("admin session secret from %s", secret.source, extra={"pid": os.getpid()})
