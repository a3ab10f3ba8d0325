"""The model API (OpenAI and Anthropic surfaces) as one ASGI app in front of Quart.

Routes: OpenAI `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `GET /v1/models`;
OpenAI Responses `POST /v1/responses`; Anthropic `POST /v1/messages`, `/v1/messages/count_tokens`.
Any other path goes to Quart (admin API, problem+json 404s). A request reads the live Runtime once
and holds it until its answer is written.

Answers are encoded here, at the edge: a backend hands back either pass-through bytes (it speaks the
client's protocol; they go out untouched) or the canonical form, which the route's `ClientEncoding`
writes in the client's protocol. In-stream errors come from the same encoding.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson

from gateway.backends.upstream import (
    Endpoint,
    EventStream,
    PassThroughReply,
    PassThroughStream,
    Stream,
    UpstreamCall,
    UpstreamFailure,
)
from gateway.cache import (
    CachedAnswer,
    CachePlan,
    PassThroughAssembler,
    ResponseCache,
    StreamAssembler,
    storable,
)
from gateway.config.capabilities import capability_list
from gateway.config.model import Sticky
from gateway.errors import (
    BadRequest,
    Forbidden,
    GatewayError,
    InternalError,
    LimitExceeded,
    MethodNotAllowed,
    ModelNotFound,
)
from gateway.limits import Admission, Limiter
from gateway.pricing import PICODOLLARS_PER_USD, format_usd
from gateway.protocol import anthropic as anthropic_protocol
from gateway.protocol import openai as openai_protocol
from gateway.protocol import openai_legacy
from gateway.protocol import responses as responses_protocol
from gateway.protocol.canonical import ChatRequest, ChatResponse, EmbeddingResponse, Usage
from gateway.protocol.encoding import ClientEncoding, StreamEncoder
from gateway.routing.failover import Attempt, Served, deadline_exceeded, execute
from gateway.routing.groups import Affinity
from gateway.routing.table import ModelRoute, Runtime
from gateway.routing.trail import RequestTrail
from gateway.runtime.live import LiveRuntime
from gateway.surfaces.access import authenticate_client, client_address
from gateway.surfaces.http import ClientDisconnected, ModelRequest, Receive, Scope, Send
from gateway.surfaces.shadow import ShadowTraffic
from gateway.telemetry.requests import RequestTelemetry

__all__ = ["AuditSink", "ModelAPI"]

log = logging.getLogger("gateway.request")


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    protocol: str
    endpoint: Endpoint | None  # None: the models list
    parse: Callable[[Any], Any] | None
    #: How canonical answers are written for this route's clients (None: only pass-through answers).
    encoding: ClientEncoding | None


ROUTES: dict[str, Route] = {
    "/v1/chat/completions": Route(
        "POST", "openai", "chat", openai_protocol.parse_chat_request, openai_protocol.CHAT
    ),
    "/v1/completions": Route(
        "POST", "openai", "completions", openai_legacy.parse_completion_request, openai_protocol.COMPLETIONS
    ),
    # OpenAI-compatible backends' answers pass through; local models answer in the canonical form.
    "/v1/embeddings": Route(
        "POST", "openai", "embeddings", openai_legacy.parse_embedding_request, openai_protocol.EMBEDDINGS
    ),
    "/v1/models": Route("GET", "openai", None, None, None),
    # The Responses API: passed through to `openai` backends, translated for every other.
    "/v1/responses": Route(
        "POST", "responses", "chat", responses_protocol.parse_responses_request, responses_protocol.RESPONSES
    ),
    "/v1/messages": Route(
        "POST", "anthropic", "chat", anthropic_protocol.parse_messages_request, anthropic_protocol.MESSAGES
    ),
    "/v1/messages/count_tokens": Route(
        "POST",
        "anthropic",
        "count_tokens",
        anthropic_protocol.parse_count_tokens_request,
        anthropic_protocol.COUNT_TOKENS,
    ),
}
#: The status an audit record gives a request whose client went away (nginx's 499).
CLIENT_CLOSED = 499
_TIER = {"chat": "chat", "count_tokens": "chat", "completions": "completions", "embeddings": "embeddings"}


async def _unless_disconnected(request: ModelRequest, work: Awaitable[Served]) -> Served:
    """Await `work`, but stop if the client goes away first (a local model then frees its slot, and
    closing the upstream connection stops the upstream's generation too).

    One watcher task whose callback cancels this task: cheaper on the hot path than racing two tasks.
    """
    task = asyncio.current_task()
    assert task is not None
    gone = False

    def on_disconnect(watcher: asyncio.Future[None]) -> None:
        nonlocal gone
        if not watcher.cancelled() and watcher.exception() is None:
            gone = True
            task.cancel()

    watcher = asyncio.ensure_future(request.wait_disconnect())
    watcher.add_done_callback(on_disconnect)
    try:
        return await work
    except asyncio.CancelledError:
        if gone:
            task.uncancel()
            raise ClientDisconnected from None
        raise
    finally:
        watcher.remove_done_callback(on_disconnect)
        watcher.cancel()


class AuditSink(Protocol):
    """Where finished requests' trails go (the audit log): `record` must not block or raise."""

    @property
    def active(self) -> bool: ...

    def record(self, trail: RequestTrail) -> None: ...


class _NoAudit:
    active = False

    def record(self, trail: RequestTrail) -> None:
        pass


def _settle(limiter: Limiter, trail: RequestTrail) -> None:
    """Settle what the limits let through (lease, token correction, spend); never raises."""
    usage = trail.usage
    tokens = None if usage is None else usage.prompt_tokens + usage.completion_tokens
    admissions: list[Admission] = trail.admissions or []
    for admission in admissions:
        try:
            limiter.settle(admission, tokens, trail.cost_usd)
        except Exception:
            log.exception("settling a request's limits failed", extra={"request_id": trail.request_id})


class ModelAPI:
    def __init__(
        self,
        live: LiveRuntime,
        fallback: Callable[[Scope, Receive, Send], Any],
        audit: AuditSink | None = None,
        telemetry: RequestTelemetry | None = None,
        shadows: ShadowTraffic | None = None,
    ) -> None:
        self.live = live
        self.fallback = fallback
        self.audit: AuditSink = audit or _NoAudit()
        #: Spans, metrics and the per-request log line (None: none of them).
        self.telemetry = telemetry
        #: Shadow copies of sampled requests (`models.<m>.shadow`), run in tasks it owns.
        self.shadows = shadows or ShadowTraffic(self.audit, telemetry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if route is None:
            await self.fallback(scope, receive, send)
            return
        # Responses clients read OpenAI's error shape.
        request = ModelRequest(
            scope, receive, send, "openai" if route.protocol == "responses" else route.protocol
        )
        runtime = self.live.current
        if runtime is None:  # only before startup finished
            await self.fallback(scope, receive, send)
            return
        telemetry = self.telemetry
        # Every model request has a trail (cost and limits read it even with audit and telemetry off).
        trail = RequestTrail(route.protocol, route.endpoint or "models", request.request_id)
        observation = (
            telemetry.begin(trail)
            if telemetry is not None and telemetry.active and route.endpoint is not None
            else None
        )
        with runtime.lease():
            try:
                if request.method != route.method:
                    raise MethodNotAllowed(
                        f"{request.method} is not allowed on {request.path}; use {route.method}",
                        headers={"allow": route.method},
                    )
                if route.endpoint is None:
                    await self._models(request, runtime)
                else:
                    await self._serve(request, runtime, route, trail)
            except GatewayError as error:
                trail.http_status, trail.error_type = error.status, error.slug
                if not request.started_response:
                    await request.problem(error)
            except ClientDisconnected:
                trail.http_status, trail.error_type = CLIENT_CLOSED, "client-disconnected"
            except Exception:
                log.exception("model API request failed", extra={"request_id": request.request_id})
                trail.http_status, trail.error_type = 500, "internal-error"
                if not request.started_response:
                    await request.problem(
                        InternalError(
                            f"the gateway failed unexpectedly; quote request id {request.request_id}"
                        )
                    )
            finally:
                if trail.admissions is not None:
                    _settle(runtime.limits, trail)
                if trail.cache is not None and runtime.cache is not None:
                    runtime.cache.stats.count(trail.cache, trail.saved_tokens, trail.saved_usd)
                if route.endpoint is not None:
                    if observation is not None:
                        telemetry.end(trail, observation, runtime.routes)  # type: ignore[union-attr]
                    self.audit.record(trail)

    async def _models(self, request: ModelRequest, runtime: Runtime) -> None:
        principal = authenticate_client(runtime.keys, request)
        created = int(runtime.loaded_at.timestamp())
        # `capabilities` (not OpenAI's): what the model's enabled targets can do between them.
        data = [
            {
                "id": public,
                "object": "model",
                "created": created,
                "owned_by": "gateway",
                "capabilities": capability_list(
                    frozenset().union(*(s.capabilities for s in route.chain if s.config.enabled))
                ),
            }
            for route in runtime.models
            if route.available
            for public in (route.name, *route.config.aliases)
            if principal.may_use(public)
        ]
        body = orjson.dumps({"object": "list", "data": data})
        await request.respond(200, body, extra=[(b"x-config-version", runtime.version.encode())])

    async def _serve(
        self, request: ModelRequest, runtime: Runtime, route: Route, trail: RequestTrail
    ) -> None:
        config = runtime.config
        trail.config_version = runtime.version
        trail.client_address = client_address(runtime.proxies, request.scope)
        principal = authenticate_client(runtime.keys, request)
        trail.client_key = principal.name
        raw = await request.body(config.server.max_body_bytes)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise BadRequest(f"the request body is not valid JSON: {error}") from None
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        assert route.parse is not None and route.endpoint is not None
        if route.encoding is not None and route.encoding.bind is not None:
            route = dataclasses.replace(route, encoding=route.encoding.bind(body))
        named = body.get("model")
        if type(named) is str:
            trail.model = named  # kept on the audit record if the request is refused below
        parsed = route.parse(body)
        model: str = parsed.model
        trail.model = model
        model_route = runtime.routes.get(model)
        if model_route is None or not principal.may_use(model):
            if model_route is not None:
                raise Forbidden(f"this API key ({principal.name}) may not use model '{model}'")
            available = [
                name
                for r in runtime.models
                for name in (r.name, *r.config.aliases)
                if principal.may_use(name) and r.available
            ]
            raise ModelNotFound(
                f"Model '{model}' not found; available: {', '.join(available) or 'none'}", model=model
            )
        tier = runtime.timeouts.for_kind(_TIER[route.endpoint])  # type: ignore[arg-type]
        # Token estimate of the input: the body's length / 4 (its JSON syntax and parameters
        # included: cheap, and corrected to the reported usage when the request ends).
        tokens = 0 if route.endpoint == "count_tokens" else len(raw) >> 2
        limiter = runtime.limits
        rate_headers: list[tuple[bytes, bytes]] = []
        if limiter.keys:
            rules = limiter.keys.get(principal.name)
            if rules is not None:
                try:
                    admission = await limiter.admit(rules, tokens, tier.total)
                except LimitExceeded as refused:
                    trail.limit_name = refused.limit
                    raise
                if admission is not None:
                    trail.admissions = [admission]
                    rate_headers = limiter.headers(admission)
        plan: CachePlan | None = None
        cache = runtime.cache
        if cache is not None and route.endpoint == "chat":
            plan = cache.plan(
                model_route.config.cache,
                route.protocol,
                route.endpoint,
                model_route.name,
                principal.name,
                parsed,
                request.headers,
            )
            trail.cache = plan.result
            if plan.result != "miss":
                plan = None
            else:
                found = await cache.lookup(
                    plan, _embedder(runtime, request.request_id) if plan.semantic is not None else None
                )
                if plan.semantic is not None:
                    trail.cache_similarity = plan.semantic.found
                if found is not None:
                    await self._hit(
                        request, runtime, route, model_route, parsed, trail, cache, found, rate_headers
                    )
                    return
        deadline = time.monotonic() + tier.total
        call = UpstreamCall(
            endpoint=route.endpoint,
            protocol=route.protocol,  # type: ignore[arg-type]
            body=body,
            request=parsed,
            stream=bool(getattr(parsed, "stream", False)),
            request_id=request.request_id,
            public_model=model,
        )
        attempts: list[Attempt] = trail.attempts
        trail.stream = call.stream
        if model_route.shadow is not None:
            self.shadows.offer(runtime, model_route, call, tokens)  # a task; never awaited here
        try:
            async with asyncio.timeout_at(deadline):
                served = await _unless_disconnected(
                    request,
                    execute(
                        model_route,
                        call,
                        tier,
                        config.failover,
                        deadline,
                        attempts,
                        tokens,
                        _affinity(request, principal.name, body) if model_route.sticky else None,
                    ),
                )
        except TimeoutError:
            trail.settle_failed()
            raise deadline_exceeded(tier) from None
        except BaseException:
            trail.settle_failed()  # attempts the upstream billed before the chain gave up
            raise
        trail.backend = served.target.backend.name
        trail.backend_type = served.target.config.type
        trail.upstream_model = served.target.target.model
        if served.quota is not None:
            if trail.admissions is None:
                trail.admissions = [served.quota]
            else:
                trail.admissions.append(served.quota)
        tried = sum(1 for a in served.attempts if a.tried)
        headers = [
            (b"x-gateway-backend", served.target.backend.name.encode()),
            (b"x-gateway-attempts", str(tried).encode()),
            (b"x-config-version", runtime.version.encode()),
            *rate_headers,
        ]
        if trail.cache is not None:
            headers.append((b"x-gateway-cache", trail.cache.encode()))
        result = served.result
        kind = type(result)
        if kind is PassThroughReply:
            trail.http_status = result.status
            trail.settle(result.usage, served.target.price)
            if trail.cost_usd is not None:
                headers.append((b"x-gateway-cost-usd", format_usd(trail.cost_usd).encode()))
            if result.status >= 400:
                trail.error_type = f"http-{result.status}"
            await request.respond(result.status, result.body, result.content_type.encode(), headers)
            if plan is not None and result.status == 200:
                _remember(cache, plan, served, _decode_reply(route.protocol, result.body, result.usage))  # type: ignore[arg-type]
            return
        if kind is PassThroughStream or kind is EventStream:
            trail.http_status, trail.first_byte_at = 200, time.monotonic()
            include_usage = bool(getattr(parsed, "include_usage", False))
            await self._stream(
                request, served, result, route, include_usage, deadline, tier, headers, trail, cache, plan
            )
            return
        # The model reported to the client is the one the gateway asked the backend for.
        body = self._encoding(route, served).reply(result, served.target.target.model)
        trail.http_status = 200
        trail.settle(result.usage, served.target.price)
        if trail.cost_usd is not None:
            headers.append((b"x-gateway-cost-usd", format_usd(trail.cost_usd).encode()))
        await request.respond(200, body, b"application/json", headers)
        if plan is not None and type(result) is ChatResponse:
            _remember(cache, plan, served, result)  # type: ignore[arg-type]

    async def _hit(
        self,
        request: ModelRequest,
        runtime: Runtime,
        route: Route,
        model_route: ModelRoute,
        parsed: ChatRequest,
        trail: RequestTrail,
        cache: ResponseCache,
        found: CachedAnswer,
        rate_headers: list[tuple[bytes, bytes]],
    ) -> None:
        """Answer from the cache: no upstream call, encoded in the client's protocol (streamed when
        asked, as the canonical events of the stored answer). It costs nothing; what it saved is noted."""
        trail.cache = "hit"
        trail.stream = parsed.stream
        trail.upstream_model = found.upstream_model
        response = found.response
        usage = response.usage
        trail.usage, trail.cost_usd = Usage(), 0.0  # nothing was asked of any backend
        if usage is not None:
            trail.saved_tokens = usage.total_tokens
            price = next(
                (
                    t.price
                    for t in model_route.chain
                    if t.backend.name == found.backend and t.target.model == found.upstream_model
                ),
                None,
            )
            if price is not None:
                trail.saved_usd = price.picodollars(usage) / PICODOLLARS_PER_USD
        age = max(0, int(cache.clock() - found.created))
        headers = [
            (b"x-gateway-cache", b"hit"),
            (b"age", str(age).encode()),
            (b"x-gateway-attempts", b"0"),
            (b"x-config-version", runtime.version.encode()),
            *rate_headers,
        ]
        if trail.cache_similarity is not None:
            headers.append((b"x-gateway-cache-similarity", f"{trail.cache_similarity:.4f}".encode()))
        encoding = route.encoding
        assert encoding is not None
        trail.http_status = 200
        if not parsed.stream:
            headers.append((b"x-gateway-cost-usd", format_usd(0.0).encode()))
            body = encoding.reply(response, found.upstream_model)
            await request.respond(200, body, b"application/json", headers)
            return
        encoder = encoding.stream(found.upstream_model, parsed.include_usage)
        await request.start_stream(headers)
        trail.first_byte_at = time.monotonic()
        for event in found.events():
            out = encoder.encode(event)
            if out:
                await request.stream_chunk(out)
        await request.end_stream()

    @staticmethod
    def _encoding(route: Route, served: Served) -> ClientEncoding:
        if route.encoding is None:
            raise InternalError(
                f"backend '{served.target.backend.name}' answered {route.endpoint} in the canonical form, "
                "which this endpoint cannot encode"
            )
        return route.encoding

    async def _stream(
        self,
        request: ModelRequest,
        served: Served,
        stream: Stream,
        route: Route,
        include_usage: bool,
        deadline: float,
        tier: Any,
        headers: list[tuple[bytes, bytes]],
        trail: RequestTrail,
        cache: ResponseCache | None = None,
        plan: CachePlan | None = None,
    ) -> None:
        """Write a stream: pass-through bytes as they come, or canonical events through the route's
        encoder. A failure after the first byte ends it with the protocol's error event (no end marker).
        With a cache `plan`, the answer is assembled on the way and stored if the stream ends normally."""
        backend = served.target.backend.name
        assembler: PassThroughAssembler | StreamAssembler | None = None
        if plan is not None:
            is_events = type(stream) is EventStream
            if is_events:
                assembler = StreamAssembler()
            elif route.protocol != "responses":  # a relayed Responses stream is not stored
                assembler = PassThroughAssembler(route.protocol)
        watch = assembler.feed if assembler is not None else None
        finished = False
        last: bytes = b""  # the last relayed bytes (a Responses error event is numbered after them)

        async def pump() -> None:
            nonlocal last
            encoder: StreamEncoder | None = None
            if type(stream) is EventStream:
                model = served.target.target.model  # what the gateway asked the backend for
                encoder = self._encoding(route, served).stream(model, include_usage)
            await request.start_stream(headers)
            try:
                async with asyncio.timeout_at(deadline):
                    if encoder is None:
                        await request.stream_chunk(stream.first)  # type: ignore[arg-type]
                        last = stream.first
                        if watch is not None:
                            watch(stream.first)  # type: ignore[arg-type]
                        async for chunk in stream.rest:
                            last = chunk
                            await request.stream_chunk(chunk)  # type: ignore[arg-type]
                            if watch is not None:
                                watch(chunk)  # type: ignore[arg-type]
                    else:
                        encode = encoder.encode
                        out = b"".join([encode(event) for event in stream.first])  # type: ignore[union-attr]
                        if watch is not None:
                            for event in stream.first:  # type: ignore[union-attr]
                                watch(event)  # type: ignore[arg-type]
                        if out:
                            await request.stream_chunk(out)
                        async for event in stream.rest:
                            out = encode(event)  # type: ignore[arg-type]
                            if watch is not None:
                                watch(event)  # type: ignore[arg-type]
                            if out:
                                await request.stream_chunk(out)
            except TimeoutError:
                trail.timed_out, trail.error_type = True, "timeout"
                message = f"{deadline_exceeded(tier).detail} (request {request.request_id})"
                await request.stream_chunk(error_event(encoder, message, "timeout"))
            except UpstreamFailure as failure:
                trail.error_type = "stream-failed"
                message = (
                    f"backend '{backend}' failed mid-stream: {failure.detail} (request {request.request_id})"
                )
                await request.stream_chunk(error_event(encoder, message, "server_error"))
            await request.end_stream()

        def error_event(encoder: StreamEncoder | None, message: str, kind: str) -> bytes:
            """The protocol's in-stream error: from the encoder, which knows the stream's state, when
            there is one; a relayed Responses stream's numbered after its last event."""
            if encoder is not None and route.protocol == "responses":
                return encoder.error(message, kind)
            if encoder is None and route.protocol == "responses":
                return responses_protocol.error_after(last, message, kind)
            return self._encoding(route, served).error_event(message, kind)

        pumping = asyncio.ensure_future(pump())
        disconnect = asyncio.ensure_future(request.wait_disconnect())
        try:
            done, _ = await asyncio.wait((pumping, disconnect), return_when=asyncio.FIRST_COMPLETED)
            if pumping in done:
                pumping.result()
                finished = trail.error_type is None
            else:
                trail.error_type = "client-disconnected"
        finally:
            for task in (pumping, disconnect):
                if not task.done():
                    task.cancel()
            await asyncio.gather(pumping, disconnect, return_exceptions=True)
            await stream.aclose()
            # The cost header left with the stream's head, before the usage was known: a stream's
            # cost is in its audit record, log line, span and metric only.
            trail.settle(stream.usage, served.target.price)
            if finished and assembler is not None:
                _remember(cache, plan, served, assembler.answer(stream.usage))  # type: ignore[arg-type]


def _decode_reply(protocol: str, body: bytes, usage: Usage | None) -> ChatResponse | None:
    """A pass-through chat answer in the canonical form (for the cache), or None if it is not one."""
    if protocol == "responses":
        return None  # a Responses object is not stored: the cache keeps translated answers only
    try:
        data = orjson.loads(body)
        if protocol == "anthropic":
            response = anthropic_protocol.parse_messages_response(data)
        else:
            if len(data.get("choices") or ()) != 1:
                return None  # several choices have no place in one canonical answer
            response = openai_protocol.parse_chat_response(data)
    except Exception:
        return None
    return response if usage is None else dataclasses.replace(response, usage=usage)


#: The longest a semantic lookup waits for its embedding (also bounded by the embeddings tier's
#: first_byte): past it the lookup is a miss and the request goes on.
EMBED_TIMEOUT_S = 2.0


def _embedder(runtime: Runtime, request_id: str) -> Callable[[str, str], Awaitable[Any]]:
    """The semantic cache's embedding call: `text` through this gateway's own model `name` (its chain
    and failover, in process). The vector as float32 values, or None on any failure (never raises)."""

    async def embed(name: str, text: str) -> Any:
        route = runtime.routes.get(name)
        if route is None:
            return None
        tier = runtime.timeouts.for_kind("embeddings")
        budget = min(EMBED_TIMEOUT_S, tier.first_byte, tier.total)
        body = {"model": name, "input": text}
        call = UpstreamCall(
            endpoint="embeddings",
            protocol="openai",
            body=body,
            request=openai_legacy.parse_embedding_request(body),
            stream=False,
            request_id=request_id,
            public_model=name,
        )
        deadline = time.monotonic() + budget
        served: Served | None = None
        try:
            async with asyncio.timeout_at(deadline):
                served = await execute(
                    route, call, tier, runtime.config.failover, deadline, None, len(text) >> 2
                )
            return _vector(served.result)
        except Exception:  # a timeout too
            return None
        finally:
            if served is not None and served.quota is not None:
                try:
                    runtime.limits.settle(served.quota, None, None)
                except Exception:
                    log.exception("settling an embedding call's backend quota failed")

    return embed


def _vector(result: Any) -> Any:
    """The first vector of an embeddings answer (OpenAI JSON, floats or base64; or the canonical form)."""
    if type(result) is EmbeddingResponse:
        return np.frombuffer(result.vectors[0], dtype="<f4") if result.vectors else None
    if type(result) is not PassThroughReply or result.status != 200:
        return None
    value = orjson.loads(result.body)["data"][0]["embedding"]
    if isinstance(value, str):
        return np.frombuffer(base64.b64decode(value), dtype="<f4")
    return np.asarray(value, dtype=np.float32)


def _affinity(request: ModelRequest, key_name: str | None, body: dict[str, Any]) -> Affinity:
    """Finds the request's key for a balanced group's `sticky` setting: the client key's name, the
    request's `user` (Anthropic: `metadata.user_id`), or a header's value."""

    def find(sticky: Sticky) -> str | None:
        if sticky.by == "key":
            return key_name
        if sticky.by == "user":
            user = body.get("user")
            if user is None and isinstance(body.get("metadata"), dict):
                user = body["metadata"].get("user_id")
            return user if isinstance(user, str) else None
        wanted = (sticky.header or "").encode("latin-1")
        for name, value in request.scope["headers"]:
            if name == wanted:
                return value.decode("latin-1")
        return None

    return find


def _remember(cache: ResponseCache, plan: CachePlan, served: Served, response: ChatResponse | None) -> None:
    """Store an answer that ended normally (the store never raises; Redis writes in a task)."""
    if response is None or not storable(response):
        return
    target = served.target
    try:
        cache.save(plan, CachedAnswer(response, cache.clock(), target.backend.name, target.target.model))
    except Exception:
        log.exception("storing an answer in the response cache failed")
