"""Where a request comes from: local or not (`not_local_because`), and the real client address behind
trusted proxies (`TrustedProxies`)."""

from __future__ import annotations

import pytest

from gateway.auth import PROXY_EVIDENCE, TrustedProxies, is_local_request, not_local_because


def headers(**values: str) -> list[tuple[bytes, bytes]]:
    return [(name.replace("_", "-").encode(), value.encode()) for name, value in values.items()]


@pytest.mark.parametrize("host", ["localhost", "localhost:8080", "127.0.0.1:8080", "[::1]:8080", "127.0.0.1"])
def test_a_loopback_peer_addressed_by_a_loopback_name_is_local(host: str) -> None:
    assert is_local_request("127.0.0.1", headers(host=host))
    assert is_local_request("::1", headers(host=host))
    assert is_local_request("::ffff:127.0.0.1", headers(host=host))


@pytest.mark.parametrize("name", sorted(PROXY_EVIDENCE))
def test_any_proxy_header_makes_a_request_not_local(name: bytes) -> None:
    found = [(b"host", b"localhost"), (name, b"127.0.0.1")]
    assert "came through a proxy" in (not_local_because("127.0.0.1", found) or "")


def test_other_peers_and_hosts_are_not_local() -> None:
    assert "10.0.0.5" in (not_local_because("10.0.0.5", headers(host="localhost")) or "")
    assert not_local_because(None, headers(host="localhost"))
    assert "evil.example" in (not_local_because("127.0.0.1", headers(host="evil.example:80")) or "")
    assert not_local_because("127.0.0.1", [])  # no Host at all
    assert not_local_because("127.0.0.1", headers(host="[::1"))  # malformed


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    proxies = TrustedProxies()
    assert not proxies
    assert proxies.client_address("10.0.0.1", headers(x_forwarded_for="1.2.3.4")) == "10.0.0.1"


def test_an_untrusted_peer_cannot_name_another_address() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    assert proxies.client_address("192.0.2.1", headers(x_forwarded_for="1.2.3.4")) == "192.0.2.1"


def test_the_rightmost_untrusted_forwarded_address_is_the_client() -> None:
    proxies = TrustedProxies(["10.0.0.0/8", "127.0.0.1"])
    chain = headers(x_forwarded_for="6.6.6.6, 203.0.113.7, 10.1.1.1")  # 6.6.6.6: the client's own claim
    assert proxies.client_address("127.0.0.1", chain) == "203.0.113.7"
    # Several X-Forwarded-For lines are one list, in order.
    split = [(b"x-forwarded-for", b"6.6.6.6"), (b"x-forwarded-for", b"203.0.113.8:5555, 10.0.0.2")]
    assert proxies.client_address("10.0.0.3", split) == "203.0.113.8"


def test_forwarded_then_x_real_ip_then_the_peer() -> None:
    proxies = TrustedProxies(["127.0.0.0/8"])
    forwarded = headers(forwarded='for=192.0.2.60;proto=http, for="[2001:db8::1]:4711"')
    assert proxies.client_address("127.0.0.1", forwarded) == "2001:db8::1"
    assert proxies.client_address("127.0.0.1", headers(x_real_ip="198.51.100.2")) == "198.51.100.2"
    assert proxies.client_address("127.0.0.1", headers(x_forwarded_for="127.0.0.5")) == "127.0.0.1"
    garbage = headers(x_forwarded_for="unknown", x_real_ip="198.51.100.3")
    assert proxies.client_address("127.0.0.1", garbage) == "198.51.100.3"
    assert proxies.client_address("127.0.0.1", headers(x_real_ip="nonsense")) == "127.0.0.1"
    assert proxies.client_address("::ffff:127.0.0.1", headers(x_real_ip="192.0.2.9")) == "192.0.2.9"
