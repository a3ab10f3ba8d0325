"""Plain-ASGI plumbing for the model API, the hot path: read a request, write JSON, SSE or a problem.

The model API does not go through Quart: per-request framework work is most of what a gateway adds,
and a bare ASGI handler costs a fraction of it. Everything else (admin, 404s) is Quart's.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from gateway.errors import PROBLEM_CONTENT_TYPE, GatewayError, PayloadTooLarge, problem_body
from gateway.request_ids import new_request_id

__all__ = ["ClientDisconnected", "ModelRequest"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_CLIENT_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
_WANTED = frozenset(
    {
        b"authorization",
        b"x-api-key",
        b"x-request-id",
        b"content-length",
        b"content-type",
        b"anthropic-version",
        # The response cache's client control (gateway/cache/cache.py).
        b"cache-control",
        b"x-gateway-cache",
        b"x-gateway-cache-ttl",
    }
)


class ClientDisconnected(Exception):
    """The client went away before the gateway finished reading or answering."""


class ModelRequest:
    """One model-API request: the few headers the gateway reads, the body, and the ways to answer."""

    __slots__ = ("headers", "path", "protocol", "receive", "request_id", "scope", "send", "started_response")

    def __init__(self, scope: Scope, receive: Receive, send: Send, protocol: str) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.path: str = scope["path"]
        self.protocol = protocol
        self.started_response = False
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name in _WANTED:
                headers[name] = value
        self.headers = headers
        incoming = headers.get(b"x-request-id", b"")
        self.request_id = (
            incoming.decode() if incoming and _CLIENT_REQUEST_ID.match(incoming) else new_request_id()
        )

    @property
    def method(self) -> str:
        return self.scope["method"]

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return value.decode("latin-1") if value is not None else None

    async def body(self, limit: int) -> bytes:
        """The whole request body; 413 problem past `limit` bytes."""
        declared = self.headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"the request body is {int(declared)} bytes; this gateway accepts {limit}")
        chunks = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the request body exceeds {limit} bytes (server.max_body_bytes)")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _headers(
        self, content_type: bytes, extra: list[tuple[bytes, bytes]] | None
    ) -> list[tuple[bytes, bytes]]:
        rid = self.request_id.encode()
        headers = [(b"content-type", content_type), (b"x-request-id", rid), (b"request-id", rid)]
        if extra:
            headers.extend(extra)
        return headers

    async def respond(
        self, status: int, body: bytes, content_type: bytes = b"application/json", extra=None
    ) -> None:
        headers = self._headers(content_type, extra)
        headers.append((b"content-length", str(len(body)).encode()))
        self.started_response = True
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})

    async def start_stream(self, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        headers = self._headers(b"text/event-stream; charset=utf-8", extra)
        headers += [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
        self.started_response = True
        await self.send({"type": "http.response.start", "status": 200, "headers": headers})

    async def stream_chunk(self, chunk: bytes) -> None:
        await self.send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def end_stream(self) -> None:
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})

    async def problem(self, error: GatewayError) -> None:
        body = problem_body(error, request_id=self.request_id, instance=self.path, protocol=self.protocol)
        extra = [(name.encode(), value.encode()) for name, value in error.headers.items()]
        await self.respond(error.status, orjson.dumps(body), PROBLEM_CONTENT_TYPE.encode(), extra)

    async def wait_disconnect(self) -> None:
        """Return when the client disconnects (run as a task while streaming)."""
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                return
