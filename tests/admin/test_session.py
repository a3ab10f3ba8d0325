"""Session cookies (signing, expiry, keys leaving the config) and the sign-in throttle."""

from __future__ import annotations

import hashlib

from gateway.admin.session import SessionSigner, SignInThrottle

from gateway.auth import KeyTable
from gateway.config.model import AdminKey, AuthConfig


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def keys(*admins: str) -> KeyTable:
    return KeyTable(AuthConfig((), tuple(AdminKey(f"admin-{k}", sha(k)) for k in admins), False))


SIGNER = SessionSigner(b"k" * 32)
NOW = 1_800_000_000.0


def test_a_cookie_names_its_admin_and_carries_the_csrf_token() -> None:
    cookie, csrf = SIGNER.issue(sha("one"), 3600, now=NOW)
    session = SIGNER.verify(cookie, keys("zero", "one"), 7200, now=NOW + 10)
    assert session is not None
    assert session.principal.name == "admin-one" and session.principal.role == "admin"
    assert session.csrf_token == csrf and session.expires_at == NOW + 3600
    assert "one" not in cookie and sha("one") not in cookie  # the cookie says nothing about the key


def test_expired_tampered_and_foreign_cookies_are_none() -> None:
    table = keys("one")
    cookie, _ = SIGNER.issue(sha("one"), 60, now=NOW)
    assert SIGNER.verify(cookie, table, 7200, now=NOW + 60) is None  # expired
    assert SIGNER.verify(cookie, table, 30, now=NOW + 31) is None  # session_hours lowered since
    body, signature = cookie.split(".")
    assert SIGNER.verify(f"{body}x.{signature}", table, 7200, now=NOW) is None
    tampered = signature[:-2] + ("BB" if signature.endswith("AA") else "AA")  # never the same signature
    assert SIGNER.verify(f"{body}.{tampered}", table, 7200, now=NOW) is None
    assert SessionSigner(b"other" * 8).verify(cookie, table, 7200, now=NOW) is None
    for junk in ("", ".", "a.b.c", "%%%.%%%", "x" * 2000):
        assert SIGNER.verify(junk, table, 7200, now=NOW) is None


def test_a_session_ends_when_its_key_leaves_the_config() -> None:
    cookie, _ = SIGNER.issue(sha("one"), 3600, now=NOW)
    assert SIGNER.verify(cookie, keys("one", "two"), 7200, now=NOW) is not None
    assert SIGNER.verify(cookie, keys("two"), 7200, now=NOW) is None


def test_the_throttle_allows_a_few_failures_per_window_and_address() -> None:
    throttle = SignInThrottle(max_failures=3, window_s=60)
    for second in range(3):
        assert throttle.retry_after("10.0.0.1", now=100 + second) == 0
        throttle.failed("10.0.0.1", now=100 + second)
    assert throttle.retry_after("10.0.0.1", now=103) == 57  # until the first failure leaves the window
    assert throttle.retry_after("10.0.0.2", now=103) == 0
    assert throttle.retry_after("10.0.0.1", now=160.5) == 0
    throttle.failed("10.0.0.2", now=200)
    throttle.succeeded("10.0.0.2")
    assert throttle.retry_after("10.0.0.2", now=200) == 0


def test_the_throttle_forgets_the_oldest_addresses_past_its_size() -> None:
    throttle = SignInThrottle(max_failures=1, window_s=60, max_addresses=2)
    for address in ("a", "b", "c"):
        throttle.failed(address, now=1)
    assert throttle.retry_after("a", now=2) == 0
    assert throttle.retry_after("c", now=2) == 59


def test_the_same_wrong_credential_counts_once() -> None:
    throttle = SignInThrottle(max_failures=2, window_s=60)
    for second in range(5):  # a stale cookie sent by every request of a page
        throttle.failed("10.0.0.1", "stale", now=100 + second)
    assert throttle.retry_after("10.0.0.1", now=105) == 0
    throttle.failed("10.0.0.1", "another guess", now=106)
    assert throttle.retry_after("10.0.0.1", now=106) == 54


def test_a_session_opened_with_the_local_token_holds_while_no_admin_keys_exist() -> None:
    token_sha = hashlib.sha256(b"local-token").hexdigest()
    cookie, _ = SIGNER.issue(token_sha, 3600, now=NOW)
    session = SIGNER.verify(cookie, keys(), 7200, local_token_sha256=token_sha, now=NOW + 1)
    assert session is not None and session.principal.name == "local"
    assert SIGNER.verify(cookie, keys(), 7200, local_token_sha256="0" * 64, now=NOW + 1) is None
    assert SIGNER.verify(cookie, keys("one"), 7200, local_token_sha256=token_sha, now=NOW + 1) is None
    # A character of the signature that carries only data bits (the last one of unpadded base64url
    # carries 2 padding bits: "A" and "B" decode to the same bytes there).
    body, _, signature = cookie.rpartition(".")
    flipped = f"{body}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"
    assert SIGNER.authentic(cookie) and not SIGNER.authentic(flipped)
