"""Client authentication for the model APIs (`/v1/*`): which principal a request runs as."""

from __future__ import annotations

from gateway.auth import ANONYMOUS, KeyTable, Principal, TrustedProxies, not_local_because, presented_key
from gateway.errors import Forbidden, Unauthorized
from gateway.surfaces.http import ModelRequest, Scope

__all__ = ["authenticate_client", "client_address"]


def client_address(proxies: TrustedProxies, scope: Scope) -> str | None:
    """The real client's address: the peer's, or with `server.trusted_proxies` the one a trusted
    proxy forwarded (headers are read only then)."""
    client = scope.get("client")
    peer = client[0] if client else None
    if peer is None or not proxies:
        return peer
    return proxies.client_address(peer, scope["headers"])


def authenticate_client(keys: KeyTable, request: ModelRequest) -> Principal:
    """The caller's principal. Without configured client keys callers are `anonymous`: every caller
    with `auth.allow_unauthenticated`, else only local requests (`gateway.auth.not_local_because`)."""
    if keys.clients_open:
        if keys.anyone:
            return ANONYMOUS
        client = request.scope.get("client")
        reason = not_local_because(client[0] if client else None, request.scope["headers"])
        if reason is None:
            return ANONYMOUS
        raise Unauthorized(
            "no client keys are configured, so the gateway serves only local requests (from this "
            f"machine, addressed to localhost, not through a proxy), and {reason}: configure "
            "auth.client_keys and send one as Authorization: Bearer <key>, or set "
            "auth.allow_unauthenticated: true to serve every caller"
        )
    key = presented_key(request.header(b"authorization"), request.header(b"x-api-key"))
    if key is None:
        raise Unauthorized("an API key is required: send Authorization: Bearer <key> or x-api-key: <key>")
    principal = keys.lookup(key)
    if principal is None:
        raise Unauthorized("the API key is not valid")
    if principal.role != "client":
        raise Forbidden("admin keys cannot call the model API; use a client key")
    return principal
