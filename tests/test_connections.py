"""RequestGuard, the ASGI half of the connection policy, below the e2e level: the body deadline, the
drain's 503, and that nothing bounds a response or a receive after the body."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from gateway.connections import Drain, RequestGuard

SCOPE = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}


class Exchange:
    """Scripted client side: `messages` are what receive returns, in order; after them, receive
    waits (a client that stopped sending) until `hang_up` is set. Everything sent is kept."""

    def __init__(self, *messages: dict[str, Any]) -> None:
        self.messages = list(messages)
        self.hang_up = asyncio.Event()
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        if self.messages:
            return self.messages.pop(0)
        await self.hang_up.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return self.sent[0]["status"]

    def header(self, name: bytes) -> bytes | None:
        return dict(self.sent[0]["headers"]).get(name)

    def problem(self) -> dict[str, Any]:
        return orjson.loads(b"".join(m.get("body", b"") for m in self.sent[1:]))


def chunk(body: bytes, more: bool) -> dict[str, Any]:
    return {"type": "http.request", "body": body, "more_body": more}


def test_a_body_not_received_in_time_gets_408_and_the_app_sees_a_disconnect() -> None:
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            seen.append(message["type"])
            if message["type"] == "http.disconnect":
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})  # too late: dropped
        await send({"type": "http.response.body", "body": b"late"})

    exchange = Exchange(chunk(b'{"mod', more=True))
    asyncio.run(RequestGuard(app, 0.2, Drain())(SCOPE, exchange.receive, exchange.send))
    assert seen == ["http.request", "http.disconnect"]
    assert exchange.status == 408
    assert exchange.header(b"content-type") == b"application/problem+json"
    assert exchange.header(b"connection") == b"close"
    problem = exchange.problem()
    assert problem["type"] == "/problems/request-timeout"
    assert "server.timeouts.body_seconds" in problem["detail"]
    assert len(exchange.sent) == 2  # the app's late answer went nowhere


def test_after_the_body_nothing_is_bounded() -> None:
    """An app streaming an answer, waiting for the client's disconnect past body_seconds."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert (await receive())["more_body"] is False
        await send({"type": "http.response.start", "status": 200, "headers": []})
        asyncio.get_running_loop().call_later(0.5, exchange.hang_up.set)
        assert (await receive())["type"] == "http.disconnect"  # after 0.5 s, beyond 0.1 s: not cut
        await send({"type": "http.response.body", "body": b"done"})

    exchange = Exchange(chunk(b"{}", more=False))
    asyncio.run(RequestGuard(app, 0.1, Drain())(SCOPE, exchange.receive, exchange.send))
    assert exchange.status == 200
    assert exchange.sent[-1]["body"] == b"done"


def test_while_draining_the_app_is_not_called_and_the_answer_is_503_after_the_body() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise AssertionError("the app must not see a request that arrives during the drain")

    drain = Drain()
    drain.started = True
    exchange = Exchange(chunk(b"{", more=True), chunk(b"}", more=False))
    asyncio.run(RequestGuard(app, 5, drain)(SCOPE, exchange.receive, exchange.send))
    assert exchange.messages == []  # the body was read before answering
    assert exchange.status == 503
    assert exchange.header(b"connection") == b"close"
    assert exchange.header(b"retry-after") == b"1"
    problem = exchange.problem()
    assert problem["type"] == "/problems/draining"
    assert problem["request_id"] == exchange.header(b"x-request-id").decode()


def test_lifespan_and_other_scopes_pass_through() -> None:
    called: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        called.append(scope["type"])

    drain = Drain()
    drain.started = True
    asyncio.run(RequestGuard(app, 5, drain)({"type": "lifespan"}, Exchange().receive, Exchange().send))
    assert called == ["lifespan"]
