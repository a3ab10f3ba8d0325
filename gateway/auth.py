"""Who is calling: client and admin keys, looked up by the SHA-256 of the presented key; where a request
comes from (`is_local_request`, `TrustedProxies`); and when a config exposes the gateway to callers
that no key stops (`exposure_issue`)."""

from __future__ import annotations

import fnmatch
import hashlib
import ipaddress
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.config.model import AuthConfig, Config

__all__ = [
    "PROXY_EVIDENCE",
    "KeyTable",
    "Principal",
    "TrustedProxies",
    "exposure_issue",
    "generate_key",
    "host_name",
    "is_local_request",
    "is_loopback",
    "key_sha256",
    "not_local_because",
    "presented_key",
]

#: Headers only a proxy adds (ASGI header names, lower case). A request carrying any of them came
#: through a proxy, whatever its peer address says, so it is never local.
PROXY_EVIDENCE = frozenset(
    {b"forwarded", b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto", b"x-real-ip", b"via"}
)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. `name` goes into logs and the audit log; the key never does."""

    name: str
    role: str  # "client" | "admin" | "anonymous"
    allowed: re.Pattern[str] | None = None  # None: every model

    def may_use(self, model: str) -> bool:
        return self.allowed is None or self.allowed.match(model) is not None


ANONYMOUS = Principal(name="anonymous", role="anonymous")


def key_sha256(key: str) -> str:
    """What `key_sha256:` holds for a key: its SHA-256, in hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> tuple[str, str]:
    """A new random key and its SHA-256 (`gateway key new`, `POST /admin/api/keys/new`): 256 bits
    from the OS, `gw-` in front so a secret scanner and a person can tell what it is."""
    key = "gw-" + secrets.token_urlsafe(32)
    return key, key_sha256(key)


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
        #: Without client keys: serve every caller (True) or local ones only (False).
        self.anyone = auth.allow_unauthenticated

    def lookup(self, key: str | None) -> Principal | None:
        if not key:
            return None
        digest = key_sha256(key)
        return self.clients.get(digest) or self.admins.get(digest)


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback address (`::ffff:127.0.0.1`, a dual-stack socket's view, included)."""
    if host == "localhost":
        return True
    ip = _ip(host.strip("[]"))
    return ip is not None and ip.is_loopback


def host_name(host: str | bytes | None) -> str:
    """The name part of a Host header value (`localhost:8080` → `localhost`, `[::1]:80` → `::1`)."""
    if host is None:
        return ""
    text = host.decode("latin-1") if isinstance(host, bytes) else host
    try:
        return urlsplit(f"//{text}").hostname or ""
    except ValueError:  # a malformed IPv6 literal or port
        return ""


def is_local_request(peer: str | None, headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """A request from this machine, not relayed (see `not_local_because`)."""
    return not_local_because(peer, headers) is None


def not_local_because(peer: str | None, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """Why a request is not local, or None when it is: the peer is a loopback address, no header
    shows a proxy (`PROXY_EVIDENCE`), and the Host names a loopback address, so a web page that
    pointed its own name at 127.0.0.1 (DNS rebinding) does not pass. `headers`: raw ASGI headers.

    A same-host proxy that adds no forwarding header and sets Host to 127.0.0.1 (nginx's bare
    `proxy_pass`) is indistinguishable from a local client; that is why such a gateway needs keys."""
    if not peer or not is_loopback(peer):
        return f"it comes from {peer or 'an unknown address'}, not from this machine"
    host = None
    for name, value in headers:
        if name in PROXY_EVIDENCE:
            return f"it came through a proxy (it carries {name.decode('latin-1')})"
        if name == b"host":
            host = value
    name = host_name(host)
    if not is_loopback(name):
        return f"it is addressed to {name or 'no host'}, not to localhost"
    return None


class TrustedProxies:
    """`server.trusted_proxies`, compiled: the real client address of a request relayed by them.

    The client is the peer, unless the peer is a trusted proxy: then it is the rightmost address of
    X-Forwarded-For (else of Forwarded's `for=`) that is not itself a trusted proxy, else X-Real-IP,
    else the peer. Addresses left of the first untrusted one were written by whoever sent the request
    and prove nothing, so they are never read.
    """

    __slots__ = ("networks",)

    def __init__(self, cidrs: Iterable[str] = ()) -> None:
        self.networks = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: str) -> bool:
        ip = _ip(address)
        return ip is not None and any(ip in network for network in self.networks)

    def client_address(self, peer: str, headers: Iterable[tuple[bytes, bytes]]) -> str:
        """The real client address (see the class docstring); `headers`: raw ASGI headers."""
        if not self.networks or not self.trusts(peer):
            return peer
        forwarded_for: list[str] = []
        forwarded: list[str] = []
        real_ip = ""
        for name, value in headers:
            if name == b"x-forwarded-for":
                forwarded_for.extend(value.decode("latin-1").split(","))
            elif name == b"forwarded":
                forwarded.extend(_forwarded_for(value.decode("latin-1")))
            elif name == b"x-real-ip":
                real_ip = value.decode("latin-1")
        for entry in reversed(forwarded_for or forwarded):
            address = _address(entry)
            if address is None:
                break  # garbage where an address should be: trust none of this header
            if not self.trusts(address):
                return address
        address = _address(real_ip) if real_ip else None
        return address if address is not None else peer


def _forwarded_for(value: str) -> list[str]:
    """The `for=` values of a Forwarded header (RFC 7239), in order."""
    found = []
    for element in value.split(","):
        for pair in element.split(";"):
            name, _, token = pair.strip().partition("=")
            if name.lower() == "for":
                found.append(token)
    return found


def _address(entry: str) -> str | None:
    """An IP address from a forwarding header entry (`1.2.3.4`, `1.2.3.4:80`, `"[::1]:80"`), or None."""
    text = entry.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    ip = _ip(text)
    return str(ip) if ip is not None else None


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def exposure_issue(config: Config, host: str) -> str | None:
    """Why serving `config` on `host` would be unsafe, or None: no client keys on a non-loopback bind
    without `auth.allow_unauthenticated`. (A declared proxy without keys, `server.trusted_proxies`,
    is refused by the loader itself: no bind address makes it safe.)"""
    if config.auth.client_keys or config.auth.allow_unauthenticated:
        return None
    if is_loopback(host):
        return None
    return (
        f"binding {host} serves anyone who can reach it, and no client keys are configured: add "
        "auth.client_keys, bind 127.0.0.1, or set auth.allow_unauthenticated: true to accept this"
    )
