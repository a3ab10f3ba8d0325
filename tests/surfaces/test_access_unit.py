"""Client authentication for the model APIs (`gateway.surfaces.access`), in process: which principal a
request runs as with and without client keys, and the real client address behind trusted proxies."""

from __future__ import annotations

import pytest

from gateway.auth import ANONYMOUS, KeyTable, TrustedProxies, key_sha256
from gateway.config.model import AdminKey, AuthConfig, ClientKey
from gateway.errors import Forbidden, Unauthorized
from gateway.surfaces.access import authenticate_client, client_address
from gateway.surfaces.http import ModelRequest


def request(peer: str | None = "127.0.0.1", **headers: str) -> ModelRequest:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()],
        "client": (peer, 50000) if peer is not None else None,
    }
    return ModelRequest(scope, None, None, "openai")  # type: ignore[arg-type]


def keys(clients: tuple[str, ...] = (), admins: tuple[str, ...] = (), anyone: bool = False) -> KeyTable:
    return KeyTable(
        AuthConfig(
            client_keys=tuple(ClientKey(f"client-{k}", key_sha256(k), ("*",)) for k in clients),
            admin_keys=tuple(AdminKey(f"admin-{k}", key_sha256(k)) for k in admins),
            allow_unauthenticated=anyone,
        )
    )


def test_without_client_keys_a_local_caller_is_anonymous() -> None:
    assert authenticate_client(keys(), request(host="localhost:8080")) is ANONYMOUS


@pytest.mark.parametrize(
    ("peer", "headers", "reason"),
    [
        ("10.0.0.5", {"host": "localhost"}, "10.0.0.5"),
        ("127.0.0.1", {"host": "gateway.example.com"}, "gateway.example.com"),
        ("127.0.0.1", {"host": "localhost", "x_forwarded_for": "10.0.0.5"}, "came through a proxy"),
        (None, {"host": "localhost"}, "no client keys are configured"),
    ],
)
def test_without_client_keys_a_remote_caller_is_refused(
    peer: str | None, headers: dict[str, str], reason: str
) -> None:
    with pytest.raises(Unauthorized) as refused:
        authenticate_client(keys(), request(peer, **headers))
    assert reason in refused.value.detail
    assert "auth.allow_unauthenticated: true" in refused.value.detail


def test_allow_unauthenticated_serves_every_caller() -> None:
    assert authenticate_client(keys(anyone=True), request("10.0.0.5", host="example.com")) is ANONYMOUS


@pytest.mark.parametrize("anyone", [False, True])
def test_with_client_keys_a_key_is_required(anyone: bool) -> None:
    with pytest.raises(Unauthorized) as refused:
        authenticate_client(keys(("k1",), anyone=anyone), request(host="localhost"))
    assert refused.value.detail.startswith("an API key is required")


@pytest.mark.parametrize(
    "headers", [{"authorization": "Bearer k1"}, {"x_api_key": "k1"}, {"authorization": "bearer  k1 "}]
)
def test_a_client_key_is_its_principal(headers: dict[str, str]) -> None:
    principal = authenticate_client(keys(("k1", "k2")), request("10.0.0.5", **headers))
    assert (principal.name, principal.role) == ("client-k1", "client")


def test_a_wrong_key_is_refused() -> None:
    with pytest.raises(Unauthorized) as refused:
        authenticate_client(keys(("k1",)), request(authorization="Bearer nope"))
    assert refused.value.detail == "the API key is not valid"
    assert refused.value.status == 401


def test_an_admin_key_is_forbidden_on_the_model_api() -> None:
    with pytest.raises(Forbidden) as refused:
        authenticate_client(keys(("k1",), admins=("boss",)), request(authorization="Bearer boss"))
    assert refused.value.status == 403
    assert "admin keys cannot call the model API" in refused.value.detail


def test_client_address_is_the_peer_without_trusted_proxies() -> None:
    scope = request("10.0.0.5", x_forwarded_for="1.2.3.4").scope
    assert client_address(TrustedProxies(), scope) == "10.0.0.5"
    assert client_address(TrustedProxies(["10.0.0.0/8"]), {**scope, "client": None}) is None


def test_client_address_behind_a_trusted_proxy_is_the_forwarded_one() -> None:
    scope = request("10.0.0.5", x_forwarded_for="1.2.3.4").scope
    assert client_address(TrustedProxies(["10.0.0.0/8"]), scope) == "1.2.3.4"
    assert client_address(TrustedProxies(["192.168.0.0/16"]), scope) == "10.0.0.5"
