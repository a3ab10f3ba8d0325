"""The `proxy` phase's probe: a gateway on its defaults (loopback bind, no admin keys, no client keys)
behind a reverse proxy on the same host, attacked through it with every header a client may send to
pass for a local caller. The admin API must refuse each call (401) and leave gateway.yaml as it was;
the model API must refuse requests that show a proxy; the local admin token must still work.

The proxies are `gateway.testing.ReverseProxy`: nginx's bare `proxy_pass` (Host rewritten to the
upstream's, no forwarding headers) and a Host-preserving one (Caddy's default)."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import requests

from gateway.testing.process import start_gateway
from gateway.testing.proxy import ADMIN_CALLS, ATTACKER_HEADERS, ReverseProxy

__all__ = ["probe_same_host_proxy"]

_CONFIG = """\
backends:
  up: {type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
models:
  m: {chain: [{backend: up}]}
reload: {watch: false}
"""


def _call(base_url: str, method: str, path: str, headers: dict[str, str]) -> int:
    body: dict[str, Any] = {"json": {"chat": {"total": 7}}} if method == "PATCH" else {}
    extra = {"if-match": "*"} if method == "PATCH" else {}
    response = requests.request(method, base_url + path, headers={**headers, **extra}, timeout=10, **body)
    return response.status_code


def probe_same_host_proxy() -> dict[str, Any]:
    """Run the attack; the counts go into the phase's notes. `admin_served` and `model_served` must
    be 0, `config_unchanged` true and `token_works` true."""
    with tempfile.TemporaryDirectory(prefix="gateway-proxy-probe-") as workdir:
        config = Path(workdir) / "gateway.yaml"
        config.write_text(_CONFIG)
        gateway = start_gateway(config, env={"GATEWAY_ADMIN_TOKEN": ""})
        try:
            before = config.read_bytes()
            admin: Counter[int] = Counter()
            model: Counter[int] = Counter()
            with (
                ReverseProxy.in_thread(gateway.base_url) as nginx,
                ReverseProxy.in_thread(gateway.base_url, preserve_host=True) as caddy,
            ):
                for proxy in (nginx, caddy):
                    for headers in ATTACKER_HEADERS.values():
                        for method, path in ADMIN_CALLS:
                            admin[_call(proxy.base_url, method, path, headers)] += 1
                        # The model API without client keys: a request showing a proxy is not local.
                        if any(name != "host" for name in headers):
                            model[_call(proxy.base_url, "GET", "/v1/models", headers)] += 1
                token = gateway.admin_headers
                token_works = (
                    requests.get(nginx.url("/admin/api/config"), headers=token, timeout=10).status_code == 200
                )
            direct: Counter[int] = Counter()
            for method, path in ADMIN_CALLS:  # loopback, no proxy, no token: refused as well
                direct[_call(gateway.base_url, method, path, {})] += 1
            return {
                "header_combinations": len(ATTACKER_HEADERS),
                "proxies": ["nginx proxy_pass (Host rewritten)", "Host-preserving"],
                "admin_calls": sum(admin.values()),
                "admin_by_status": dict(sorted(admin.items())),
                "admin_served": sum(n for status, n in admin.items() if status < 400),
                "direct_without_token_by_status": dict(sorted(direct.items())),
                "model_calls_showing_a_proxy": sum(model.values()),
                "model_by_status": dict(sorted(model.items())),
                "model_served": sum(n for status, n in model.items() if status < 400),
                "config_unchanged": config.read_bytes() == before,
                "token_works": token_works,
            }
        finally:
            gateway.stop()
