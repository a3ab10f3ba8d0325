"""Client authentication for the model APIs (`/v1/*`): which principal a request runs as."""

from __future__ import annotations

from gateway.auth import ANONYMOUS, KeyTable, Principal, presented_key
from gateway.errors import Forbidden, Unauthorized

__all__ = ["authenticate_client"]


def authenticate_client(keys: KeyTable, authorization: str | None, x_api_key: str | None) -> Principal:
    """The caller's principal. Without configured client keys every caller is `anonymous` (loopback-only
    binds, or `auth.allow_unauthenticated`)."""
    if keys.clients_open:
        return ANONYMOUS
    key = presented_key(authorization, x_api_key)
    if key is None:
        raise Unauthorized("an API key is required: send Authorization: Bearer <key> or x-api-key: <key>")
    principal = keys.lookup(key)
    if principal is None:
        raise Unauthorized("the API key is not valid")
    if principal.role != "client":
        raise Forbidden("admin keys cannot call the model API; use a client key")
    return principal
