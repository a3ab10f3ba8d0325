"""Who is calling: client and admin keys, looked up by the SHA-256 of the presented key; and when a
bind address exposes the gateway to callers that no key stops (`exposure_issue`)."""

from __future__ import annotations

import fnmatch
import hashlib
import ipaddress
import re
from dataclasses import dataclass

from gateway.config.model import AuthConfig, Config

__all__ = ["KeyTable", "Principal", "exposure_issue", "is_loopback", "presented_key"]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. `name` goes into logs and the audit log; the key never does."""

    name: str
    role: str  # "client" | "admin" | "anonymous"
    allowed: re.Pattern[str] | None = None  # None: every model

    def may_use(self, model: str) -> bool:
        return self.allowed is None or self.allowed.match(model) is not None


ANONYMOUS = Principal(name="anonymous", role="anonymous")


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a request carries: `Authorization: Bearer KEY` or `x-api-key: KEY`."""
    if x_api_key:
        return x_api_key.strip()
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


class KeyTable:
    """Compiled once per config; lookups are one hash and one dict access."""

    def __init__(self, auth: AuthConfig) -> None:
        self.clients: dict[str, Principal] = {}
        for key in auth.client_keys:
            patterns = key.models
            allowed = (
                None if "*" in patterns else re.compile("|".join(fnmatch.translate(p) for p in patterns))
            )
            self.clients[key.key_sha256] = Principal(name=key.name, role="client", allowed=allowed)
        self.admins = {key.key_sha256: Principal(name=key.name, role="admin") for key in auth.admin_keys}
        self.clients_open = not auth.client_keys
        self.admins_open = not auth.admin_keys

    def lookup(self, key: str | None) -> Principal | None:
        if not key:
            return None
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.clients.get(digest) or self.admins.get(digest)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_issue(config: Config, host: str) -> str | None:
    """Why serving `config` on `host` would be unsafe, or None: no keys on a non-loopback bind."""
    if is_loopback(host) or config.auth.client_keys or config.auth.allow_unauthenticated:
        return None
    return (
        f"binding {host} serves anyone who can reach it, and no client keys are configured: add "
        "auth.client_keys, bind 127.0.0.1, or set auth.allow_unauthenticated: true to accept this"
    )
