"""Admin panel sessions: a signed cookie that names the admin key it was opened with, and the
throttle on failed admin authentications.

The cookie is `<payload>.<signature>`, both base64url: the payload is JSON with the key's
fingerprint (an HMAC of its SHA-256 under the session secret, so the cookie reveals nothing about
the key), when it was issued and when it expires, and the CSRF token the panel's JavaScript sends
back as `X-CSRF-Token` on every state change. Nothing is stored on the server, so every worker
accepts every other worker's sessions. A session is valid while its signature checks out, it has not
expired (nor outlived the *current* `admin.session_hours`), and its key is still among the config's
admin keys: removing or rotating a key ends its sessions at the next reload. A session opened with
the local admin token (no admin keys configured) is valid while no admin keys are configured and the
token is the same.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

import orjson

from gateway.auth import KeyTable, Principal

__all__ = [
    "COOKIE_NAME",
    "COOKIE_PATH",
    "CSRF_HEADER",
    "LOCAL_ADMIN",
    "AdminSession",
    "AdminSessions",
    "SessionSigner",
    "SignInThrottle",
]

COOKIE_NAME = "gateway_admin_session"
#: The cookie goes to the panel and its API (and the live-tail WebSocket), nowhere else.
COOKIE_PATH = "/admin"
CSRF_HEADER = "x-csrf-token"
#: Who the local admin token signs in as (no admin keys configured).
LOCAL_ADMIN = Principal(name="local", role="admin")


@dataclass(frozen=True, slots=True)
class AdminSession:
    principal: Principal
    csrf_token: str
    issued_at: int  # epoch seconds
    expires_at: int


class SessionSigner:
    """Issues and checks session cookies with one secret key (HMAC-SHA256)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def fingerprint(self, key_sha256: str) -> str:
        mac = hmac.new(self._key, b"admin key:" + key_sha256.encode(), hashlib.sha256).digest()
        return _b64(mac[:16])

    def issue(self, key_sha256: str, lifetime_s: float, *, now: float | None = None) -> tuple[str, str]:
        """A new cookie value for the admin key with this hash, and its CSRF token."""
        issued = int(time.time() if now is None else now)
        csrf = secrets.token_urlsafe(24)
        payload = {
            "kid": self.fingerprint(key_sha256),
            "iat": issued,
            "exp": issued + max(1, int(lifetime_s)),
            "csrf": csrf,
        }
        return self._sign(orjson.dumps(payload)), csrf

    def verify(
        self,
        cookie: str,
        keys: KeyTable,
        max_age_s: float,
        *,
        local_token_sha256: str = "",
        now: float | None = None,
    ) -> AdminSession | None:
        """The session this cookie stands for, or None (forged, malformed, expired, key gone).
        `local_token_sha256`: the hash of the local admin token, which counts while no admin keys
        are configured."""
        payload = self._unsign(cookie)
        if payload is None:
            return None
        try:
            claims = orjson.loads(payload)
            kid, issued, expires, csrf = claims["kid"], claims["iat"], claims["exp"], claims["csrf"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None
        if not (isinstance(kid, str) and isinstance(csrf, str)):
            return None
        if not (isinstance(issued, int) and isinstance(expires, int)):
            return None
        current = time.time() if now is None else now
        if current >= expires or current >= issued + max_age_s:
            return None
        candidates = list(keys.admins.items())
        if keys.admins_open and local_token_sha256:
            candidates.append((local_token_sha256, LOCAL_ADMIN))
        for key_sha256, principal in candidates:
            if hmac.compare_digest(self.fingerprint(key_sha256), kid):
                return AdminSession(principal, csrf, issued, min(expires, int(issued + max_age_s)))
        return None

    def authentic(self, cookie: str) -> bool:
        """Whether this gateway signed the cookie (however old it is, whatever key it names)."""
        return self._unsign(cookie) is not None

    def _sign(self, payload: bytes) -> str:
        body = _b64(payload)
        return f"{body}.{_b64(self._mac(body))}"

    def _unsign(self, cookie: str) -> bytes | None:
        if len(cookie) > 1024 or cookie.count(".") != 1:
            return None
        body, signature = cookie.split(".")
        try:
            given = _unb64(signature)
            payload = _unb64(body)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(given, self._mac(body)):
            return None
        return payload

    def _mac(self, body: str) -> bytes:
        return hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


class SignInThrottle:
    """At most `max_failures` failed admin authentications per client address in any `window_s`
    seconds: sign-ins, wrong keys on the admin API, forged session cookies, WebSocket handshakes.

    The address is the real client's (`server.trusted_proxies`), so behind a proxy an attacker's
    failures do not lock out the admin at another address. A failure repeated with the same
    credential (a stale cookie sent by several requests of one page, a script polling with a revoked
    key) counts once: the throttle limits guesses, and repeating one is not a new guess.

    Kept in memory per worker process (so N workers allow up to N times as many), for at most
    `max_addresses` addresses (the least recently failing are forgotten first); the key space of
    admin keys makes guessing hopeless anyway, this stops a script from trying.
    """

    def __init__(self, max_failures: int = 5, window_s: float = 60.0, max_addresses: int = 10_000) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._max_addresses = max_addresses
        #: Per address: (when, a digest of the credential tried or "") of its recent failures.
        self._failures: OrderedDict[str, deque[tuple[float, str]]] = OrderedDict()

    def retry_after(self, address: str, *, now: float | None = None) -> int:
        """Seconds until this address may try again (0: now)."""
        failures = self._failures.get(address)
        if failures is None:
            return 0
        current = time.monotonic() if now is None else now
        while failures and failures[0][0] <= current - self.window_s:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return 0
        if len(failures) < self.max_failures:
            return 0
        return max(1, math.ceil(failures[0][0] + self.window_s - current))

    def failed(self, address: str, credential: str | None = None, *, now: float | None = None) -> None:
        """Count a failure of `address`; `credential`: what it tried (the same one counts once)."""
        current = time.monotonic() if now is None else now
        digest = hashlib.sha256(credential.encode()).hexdigest()[:32] if credential else ""
        failures = self._failures.setdefault(address, deque(maxlen=self.max_failures))
        if not digest or all(tried != digest for _, tried in failures):
            failures.append((current, digest))
        self._failures.move_to_end(address)
        while len(self._failures) > self._max_addresses:  # a flood of addresses: forget the oldest
            self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)


class AdminSessions:
    """A gateway's admin credentials beyond its keys: the session signer (once the secret is loaded at
    startup), the local admin token, and the throttle."""

    def __init__(self) -> None:
        self.signer: SessionSigner | None = None
        #: Why sessions are off (no secret could be had), for the sign-in answer.
        self.unavailable = "the gateway is still starting"
        self.throttle = SignInThrottle()
        self._local_token = b""
        self._local_token_sha256 = ""
        #: Why there is no local admin token, for the 401 of a gateway without admin keys.
        self.token_unavailable = "the gateway is still starting"

    def use_secret(self, key: bytes) -> None:
        self.signer = SessionSigner(key)
        self.unavailable = ""

    def use_local_token(self, token: str) -> None:
        self._local_token = token.encode()
        self._local_token_sha256 = hashlib.sha256(self._local_token).hexdigest()
        self.token_unavailable = ""

    def is_local_token(self, key: str, keys: KeyTable) -> bool:
        """Whether `key` is the local admin token, and it counts (no admin keys are configured)."""
        return (
            keys.admins_open
            and bool(self._local_token)
            and hmac.compare_digest(key.encode(), self._local_token)
        )

    def verify(self, cookie: str, keys: KeyTable, session_hours: float) -> AdminSession | None:
        if self.signer is None:
            return None
        return self.signer.verify(
            cookie, keys, session_hours * 3600, local_token_sha256=self._local_token_sha256
        )
