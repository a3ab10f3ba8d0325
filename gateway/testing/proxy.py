"""A reverse proxy on loopback for tests, by default shaped like nginx's bare `proxy_pass`: every
request goes to the upstream with the client's headers, except Host, which becomes the upstream's
host:port, and no forwarding header of its own.

Options turn it into the other common setups: `preserve_host` passes the client's Host through (Caddy's
default, nginx's `proxy_set_header Host $host`); `forward_for` appends an address to X-Forwarded-For
and sets X-Real-IP, as the recommended recipes do with the client's address (a test names the address
it wants the proxy to have seen, since every test client is on loopback); `source_address` makes the
proxy connect to the upstream from another loopback address (127.0.0.2), so a gateway can tell it
from clients that call it directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Self
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

__all__ = ["ADMIN_CALLS", "ATTACKER_HEADERS", "ReverseProxy"]

#: What an attacker may send through the proxy to pass for a local client.
ATTACKER_HEADERS: dict[str, dict[str, str]] = {
    "none": {},
    "host localhost": {"host": "localhost"},
    "host 127.0.0.1": {"host": "127.0.0.1"},
    "x-forwarded-for": {"x-forwarded-for": "127.0.0.1"},
    "x-real-ip": {"x-real-ip": "127.0.0.1"},
    "forwarded": {"forwarded": "for=127.0.0.1;host=localhost;proto=http"},
    "via": {"via": "1.1 localhost"},
    "x-forwarded-host": {"x-forwarded-host": "localhost"},
    "x-forwarded-proto": {"x-forwarded-proto": "http"},
    "combined": {
        "host": "127.0.0.1",
        "x-forwarded-for": "127.0.0.1",
        "x-real-ip": "::1",
        "x-forwarded-host": "localhost",
    },
}
#: (method, path): read the config, reload it, rewrite gateway.yaml.
ADMIN_CALLS = (
    ("GET", "/admin/api/config"),
    ("POST", "/admin/api/config/reload"),
    ("PATCH", "/admin/api/config/timeouts"),
)

#: Connection-level headers a proxy never relays (RFC 9110, 7.6.1), plus what aiohttp sets itself.
_NOT_RELAYED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)


class ReverseProxy:
    def __init__(
        self,
        upstream: str,
        *,
        preserve_host: bool = False,
        forward_for: str | None = None,
        source_address: str | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.preserve_host = preserve_host
        self.forward_for = forward_for
        self.source_address = source_address
        self.host, self.port = "127.0.0.1", 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    async def _relay(self, request: web.Request) -> web.Response:
        assert self._session is not None
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _NOT_RELAYED]
        if not self.preserve_host:
            headers = [(k, v) for k, v in headers if k.lower() != "host"]
            headers.append(("Host", urlsplit(self.upstream).netloc))
        if self.forward_for is not None:
            earlier = request.headers.get("x-forwarded-for")
            headers = [(k, v) for k, v in headers if k.lower() not in ("x-forwarded-for", "x-real-ip")]
            chain = f"{earlier}, {self.forward_for}" if earlier else self.forward_for
            headers += [("X-Forwarded-For", chain), ("X-Real-IP", self.forward_for)]
        body = await request.read()
        async with self._session.request(
            request.method,
            self.upstream + request.rel_url.raw_path_qs,
            headers=headers,
            data=body or None,
            allow_redirects=False,
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        ) as answer:
            payload = await answer.read()
            relayed = [(k, v) for k, v in answer.headers.items() if k.lower() not in _NOT_RELAYED]
            response = web.Response(status=answer.status, body=payload)
            for name, value in relayed:
                response.headers.add(name, value)
            return response

    async def start(self) -> Self:
        local = (self.source_address, 0) if self.source_address else None
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=local), cookie_jar=aiohttp.DummyCookieJar()
        )
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._relay)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.host, self.port).start()
        self._runner = runner
        self.port = runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    @classmethod
    @contextlib.contextmanager
    def in_thread(cls, upstream: str, **options: object) -> Iterator[ReverseProxy]:
        """Run the proxy on its own event loop in a daemon thread, for synchronous clients."""
        proxy = cls(upstream, **options)  # type: ignore[arg-type]
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="reverse-proxy", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(proxy.start(), loop).result(timeout=30)
            yield proxy
        finally:
            asyncio.run_coroutine_threadsafe(proxy.close(), loop).result(timeout=30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
            loop.close()
