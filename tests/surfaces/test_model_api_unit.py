"""The model API surface (`gateway.surfaces.model_api.ModelAPI`) as the ASGI app it is, called in
process (no server, no subprocess): its routing table, the method and body checks, the models list,
a request answered through a real upstream on loopback, and a client that goes away mid-request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from gateway.routing.trail import RequestTrail
from gateway.runtime.live import LiveRuntime
from gateway.surfaces.model_api import ROUTES, ModelAPI

ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "up",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


class Upstream:
    """An OpenAI-compatible upstream on a free loopback port: answers at once, or holds the answer
    until `release` is set (`hold`)."""

    def __init__(self) -> None:
        self.url = ""
        self.hold = False
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self.requests = 0

    async def answer(self, request: web.Request) -> web.Response:
        self.requests += 1
        await request.read()
        self.arrived.set()
        if self.hold:
            await self.release.wait()
        return web.json_response(ANSWER)


class Audit:
    active = True

    def __init__(self) -> None:
        self.trails: list[RequestTrail] = []

    def record(self, trail: RequestTrail) -> None:
        self.trails.append(trail)


class Exchange:
    """One ASGI request to the app: what it sent back."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int | None:
        starts = [m for m in self.messages if m["type"] == "http.response.start"]
        return starts[0]["status"] if starts else None

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(next(m for m in self.messages if m["type"] == "http.response.start")["headers"])

    def json(self) -> Any:
        return orjson.loads(
            b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.response.body")
        )


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server = Upstream()
    app = web.Application()
    app.router.add_post("/{tail:.*}", server.answer)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    yield server
    server.release.set()
    await runner.cleanup()


class Surface:
    def __init__(self, api: ModelAPI, audit: Audit) -> None:
        self.api = api
        self.audit = audit
        self.fallen_back: list[str] = []

    async def call(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        receive: Any = None,
        headers: list[tuple[bytes, bytes]] | None = None,
        kind: str = "http",
    ) -> Exchange:
        exchange = Exchange()
        scope = {
            "type": kind,
            "method": method,
            "path": path,
            "headers": [(b"host", b"localhost"), *(headers or [])],
            "client": ("127.0.0.1", 40000),
        }
        sent = False

        async def once() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client stays
            raise AssertionError("unreachable")

        await self.api(scope, receive or once, exchange.send)
        return exchange


@pytest.fixture
async def surface(tmp_path: Path, upstream: Upstream) -> AsyncIterator[Surface]:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        f'backends:\n  b: {{type: openai_compatible, base_url: "{upstream.url}"}}\n'
        "models:\n  chat: {chain: [{backend: b, model: up}], aliases: [talk]}\n"
        "reload: {watch: false}\nserver: {max_body_bytes: 2000}\n"
    )
    live = LiveRuntime(path)
    await live.start()
    audit = Audit()
    holder: dict[str, Surface] = {}

    async def fallback(scope: dict[str, Any], receive: Any, send: Any) -> None:
        holder["s"].fallen_back.append(scope["path"])

    holder["s"] = Surface(ModelAPI(live, fallback, audit), audit)
    yield holder["s"]
    await live.close()


CHAT = orjson.dumps({"model": "chat", "messages": [{"role": "user", "content": "hello"}]})


@pytest.mark.parametrize("path", sorted(ROUTES))
async def test_a_wrong_method_is_405_naming_the_right_one(surface: Surface, path: str) -> None:
    method = "DELETE"
    exchange = await surface.call(method, path)
    assert exchange.status == 405
    assert exchange.headers[b"allow"] == ROUTES[path].method.encode()
    assert exchange.headers[b"content-type"] == b"application/problem+json"
    problem = exchange.json()
    assert problem["request_id"] == exchange.headers[b"x-request-id"].decode()
    assert f"DELETE is not allowed on {path}; use {ROUTES[path].method}" in problem["detail"]
    assert surface.fallen_back == []


def test_the_routing_table() -> None:
    assert {p: (r.method, r.protocol, r.endpoint) for p, r in ROUTES.items()} == {
        "/v1/chat/completions": ("POST", "openai", "chat"),
        "/v1/completions": ("POST", "openai", "completions"),
        "/v1/embeddings": ("POST", "openai", "embeddings"),
        "/v1/models": ("GET", "openai", None),
        "/v1/messages": ("POST", "anthropic", "chat"),
        "/v1/messages/count_tokens": ("POST", "anthropic", "count_tokens"),
        "/v1/responses": ("POST", "responses", "chat"),
    }


@pytest.mark.parametrize(
    ("path", "kind"),
    [("/admin/api/backends", "http"), ("/v1/chat", "http"), ("/v1/chat/completions", "websocket")],
)
async def test_other_paths_and_scopes_go_to_the_fallback(surface: Surface, path: str, kind: str) -> None:
    exchange = await surface.call("GET", path, kind=kind)
    assert surface.fallen_back == [path]
    assert exchange.messages == []
    assert surface.audit.trails == []


async def test_the_models_list(surface: Surface) -> None:
    exchange = await surface.call("GET", "/v1/models")
    assert exchange.status == 200
    assert [m["id"] for m in exchange.json()["data"]] == ["chat", "talk"]
    assert exchange.headers[b"x-config-version"]
    assert surface.audit.trails == []  # the models list is no model request


async def test_a_chat_request_is_answered_and_audited(surface: Surface, upstream: Upstream) -> None:
    exchange = await surface.call("POST", "/v1/chat/completions", CHAT)
    assert exchange.status == 200
    assert exchange.json()["choices"][0]["message"]["content"] == "hi"
    [trail] = surface.audit.trails
    assert (trail.http_status, trail.model, trail.endpoint, trail.surface) == (200, "chat", "chat", "openai")
    assert upstream.requests == 1


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (b"{not json", 400, "the request body is not valid JSON"),
        (b"[1, 2]", 400, "the request body must be a JSON object"),
        (
            b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}',
            404,
            "Model 'nope' not found; available: chat, talk",
        ),
        (
            b'{"model": "chat", "messages": [{"role": "user", "content": "' + b"x" * 3000 + b'"}]}',
            413,
            "exceeds 2000 bytes",
        ),
    ],
)
async def test_body_checks(
    surface: Surface, upstream: Upstream, body: bytes, status: int, detail: str
) -> None:
    exchange = await surface.call("POST", "/v1/chat/completions", body)
    assert exchange.status == status
    assert detail in exchange.json()["detail"]
    [trail] = surface.audit.trails
    assert trail.http_status == status
    assert upstream.requests == 0


async def test_a_declared_length_past_the_limit_is_refused_before_reading(surface: Surface) -> None:
    exchange = await surface.call("POST", "/v1/messages", b"{}", headers=[(b"content-length", b"5000")])
    assert exchange.status == 413
    assert "the request body is 5000 bytes; this gateway accepts 2000" in exchange.json()["detail"]
    assert exchange.json()["type"]  # problem+json in the client's protocol's shape, with a type


async def test_a_client_gone_while_the_upstream_works_is_499_with_no_answer(
    surface: Surface, upstream: Upstream
) -> None:
    upstream.hold = True
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": CHAT, "more_body": False}
        await upstream.arrived.wait()  # the request reached the upstream: now the client leaves
        return {"type": "http.disconnect"}

    exchange = await surface.call("POST", "/v1/chat/completions", receive=receive)
    assert exchange.messages == []  # nobody to answer
    [trail] = surface.audit.trails
    assert (trail.http_status, trail.error_type) == (499, "client-disconnected")
    assert upstream.requests == 1


async def test_a_client_gone_before_its_body_arrived_is_499(surface: Surface, upstream: Upstream) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    exchange = await surface.call("POST", "/v1/chat/completions", receive=receive)
    assert exchange.messages == []
    assert surface.audit.trails[0].http_status == 499
    assert upstream.requests == 0
