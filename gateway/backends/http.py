"""What the HTTP backends (openai, anthropic, openai_compatible) share: one aiohttp pool per backend."""

from __future__ import annotations

import aiohttp

from gateway.config.model import BackendConfig

__all__ = ["HTTPBackend"]


class HTTPBackend:
    """A remote backend reached over HTTP. The pool opens in `start` and lives until `close`."""

    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.session: aiohttp.ClientSession | None = None

    @property
    def name(self) -> str:
        return self.config.name

    def default_headers(self) -> dict[str, str]:
        return {name: value.reveal() for name, value in self.config.headers}

    async def start(self) -> None:
        if self.session is not None:
            return
        connector = aiohttp.TCPConnector(
            limit=self.config.max_connections or 100,
            ttl_dns_cache=300,
            enable_cleanup_closed=True,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            headers=self.default_headers(),
            # Deadlines are set per request from the timeout tier; the session has none of its own.
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=True,
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.config.name} {self.config.base_url}>"
