"""`gateway.auth` below the request layer: key hashing and generation, the key a request presents,
the key table (client and admin keys, model allowlists), trusted proxies' edge cases, and the
exposure check a start or reload runs."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from gateway.auth import (
    ANONYMOUS,
    KeyTable,
    Principal,
    TrustedProxies,
    exposure_issue,
    generate_key,
    key_sha256,
    presented_key,
)
from gateway.config.load import parse_config
from gateway.config.model import AdminKey, AuthConfig, ClientKey

MODELS = """
backends:
  b: {type: openai_compatible, base_url: "http://127.0.0.1:1/v1"}
models:
  m: {chain: [{backend: b}]}
"""


def test_key_sha256_is_the_hex_digest() -> None:
    assert key_sha256("secret") == hashlib.sha256(b"secret").hexdigest()


def test_generated_keys_are_new_and_hashed() -> None:
    key, digest = generate_key()
    assert re.fullmatch(r"gw-[A-Za-z0-9_-]{43}", key)
    assert digest == key_sha256(key)
    assert generate_key()[0] != key


@pytest.mark.parametrize(
    ("authorization", "x_api_key", "key"),
    [
        ("Bearer abc", None, "abc"),
        ("bearer  abc  ", None, "abc"),
        ("BEARER abc", None, "abc"),
        ("Basic abc", None, None),
        ("Bearer ", None, None),
        ("Bearer", None, None),
        (None, " k1 ", "k1"),
        ("Bearer abc", "k1", "k1"),  # x-api-key first
        (None, "", None),
        ("", None, None),
        (None, None, None),
    ],
)
def test_presented_key(authorization: str | None, x_api_key: str | None, key: str | None) -> None:
    assert presented_key(authorization, x_api_key) == key


def table(allow_unauthenticated: bool = False, **clients: tuple[str, ...]) -> KeyTable:
    return KeyTable(
        AuthConfig(
            client_keys=tuple(
                ClientKey(name, key_sha256(name + "-key"), models) for name, models in clients.items()
            ),
            admin_keys=(AdminKey("ops", key_sha256("ops-key")),),
            allow_unauthenticated=allow_unauthenticated,
        )
    )


def test_the_key_table_finds_clients_and_admins() -> None:
    keys = table(app=("*",))
    assert keys.lookup("app-key") == Principal("app", "client", None)
    admin = keys.lookup("ops-key")
    assert admin is not None and (admin.name, admin.role) == ("ops", "admin")
    assert keys.lookup("nope") is None
    assert keys.lookup("") is None and keys.lookup(None) is None
    assert not keys.clients_open and not keys.admins_open and not keys.anyone


def test_without_keys_the_table_is_open() -> None:
    keys = KeyTable(AuthConfig(client_keys=(), admin_keys=(), allow_unauthenticated=True))
    assert keys.clients_open and keys.admins_open and keys.anyone


def test_model_allowlists() -> None:
    keys = table(every=("*",), some=("gpt-*", "claude"), mixed=("gpt-4o", "*"))
    every, some, mixed = (keys.lookup(f"{n}-key") for n in ("every", "some", "mixed"))
    assert every is not None and every.allowed is None and every.may_use("anything")
    assert mixed is not None and mixed.allowed is None
    assert some is not None and some.allowed is not None
    assert some.may_use("gpt-4o") and some.may_use("claude")
    assert not some.may_use("claude-3") and not some.may_use("llama")
    assert ANONYMOUS.may_use("anything")


def test_a_proxy_range_need_not_be_its_network_address() -> None:
    proxies = TrustedProxies(["10.0.0.5/8"])
    assert proxies and proxies.trusts("10.200.0.1")
    assert not TrustedProxies()
    assert not TrustedProxies(["10.0.0.0/8"]).trusts("not an address")


def test_garbage_in_x_forwarded_for_trusts_none_of_it() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    headers = [(b"x-forwarded-for", b"1.2.3.4, not-an-address")]
    assert proxies.client_address("10.0.0.1", headers) == "10.0.0.1"
    headers.append((b"x-real-ip", b"5.6.7.8"))
    assert proxies.client_address("10.0.0.1", headers) == "5.6.7.8"


def test_forwarded_for_with_ports_and_ipv6() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    assert proxies.client_address("10.0.0.1", [(b"forwarded", b'for="[2001:db8::1]:443";proto=https')]) == (
        "2001:db8::1"
    )
    assert proxies.client_address("10.0.0.1", [(b"x-forwarded-for", b"1.2.3.4:8080")]) == "1.2.3.4"


def config(auth: str = "") -> object:
    return parse_config((MODELS + auth).encode(), Path("/tmp/gateway.yaml"), env={"CK": "client-key-value"})


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]"])
def test_loopback_binds_are_safe_without_keys(host: str) -> None:
    assert exposure_issue(config(), host) is None  # type: ignore[arg-type]


def test_a_public_bind_without_keys_is_an_issue() -> None:
    issue = exposure_issue(config(), "0.0.0.0")  # type: ignore[arg-type]
    assert issue is not None and issue.startswith("binding 0.0.0.0 serves anyone")
    assert "auth.allow_unauthenticated: true" in issue


@pytest.mark.parametrize(
    "auth",
    [
        'auth:\n  client_keys: [{name: app, key: "${CK}"}]\n',
        "auth:\n  allow_unauthenticated: true\n",
    ],
)
def test_keys_or_an_explicit_opt_out_make_a_public_bind_acceptable(auth: str) -> None:
    assert exposure_issue(config(auth), "0.0.0.0") is None  # type: ignore[arg-type]
