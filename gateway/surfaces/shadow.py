"""Shadow traffic (`models.<m>.shadow`): a sample of a model's requests copied to another target in
background tasks owned by the app, their answers read to the end and discarded.

A copy never delays or changes the client's answer: the request path only decides (one random draw)
and starts a task, never awaits it. At most `max_concurrency` copies per model run at once in this
worker; a copy sampled past that is dropped and counted. A copy holds no client limit and uses no
cache; it goes through the target's own breaker, quota and concurrency limit (`execute` over a
one-target chain), under the request kind's timeout tier, and holds the Runtime it started on
(`Runtime.lease()`), so a reload retires that Runtime's backends only once its copies are done.
What it did (latency, tokens, cost, status: metadata, never content) is an audit record with
`shadow_of` = the client request's id and no key, a `gateway_shadow_requests` count and a span.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from typing import Protocol

from gateway import tracing
from gateway.backends.upstream import (
    EventStream,
    PassThroughReply,
    PassThroughStream,
    UpstreamCall,
    UpstreamFailure,
)
from gateway.errors import GatewayError
from gateway.request_ids import new_request_id
from gateway.routing.failover import execute
from gateway.routing.table import ModelRoute, Runtime
from gateway.routing.trail import RequestTrail
from gateway.telemetry.requests import RequestTelemetry

__all__ = ["SHADOW_SPAN", "ShadowSink", "ShadowTraffic"]

log = logging.getLogger("gateway.shadow")

#: The span of one shadow copy (its backend attempt nests under it).
SHADOW_SPAN = "shadow request"
_TIER = {"chat": "chat", "count_tokens": "chat", "completions": "completions", "embeddings": "embeddings"}


class ShadowSink(Protocol):
    """Where finished copies' trails go (the audit log): `record` must not block or raise."""

    def record(self, trail: RequestTrail) -> None: ...


class _NoRecords:
    def record(self, trail: RequestTrail) -> None:
        pass


class ShadowTraffic:
    """The copies in flight in this worker, and what became of the others.

    `draw`: the sampling's random numbers in [0, 1) (tests pass their own); a request is copied when
    the draw is below the model's `sample_rate`.
    """

    def __init__(
        self,
        audit: ShadowSink | None = None,
        telemetry: RequestTelemetry | None = None,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.audit: ShadowSink = audit or _NoRecords()
        self.telemetry = telemetry
        self.draw = draw
        self.tasks: set[asyncio.Task[None]] = set()
        #: Copies running per public model (what `max_concurrency` bounds).
        self.running: dict[str, int] = {}
        #: Copies dropped at the bound, per public model, since start.
        self.dropped: dict[str, int] = {}

    def offer(self, runtime: Runtime, route: ModelRoute, call: UpstreamCall, tokens: int) -> None:
        """Maybe copy this request to `route.shadow` (in a task; returns at once, never raises)."""
        try:
            self._offer(runtime, route, call, tokens)
        except Exception:  # a fault here must not fail the client's request
            log.exception("starting a shadow request failed", extra={"request_id": call.request_id})

    def _offer(self, runtime: Runtime, route: ModelRoute, call: UpstreamCall, tokens: int) -> None:
        shadow, settings = route.shadow, route.config.shadow
        if shadow is None or settings is None or call.endpoint == "count_tokens":
            return
        rate = settings.sample_rate
        if rate <= 0.0 or (rate < 1.0 and self.draw() >= rate):
            return
        target = shadow.chain[0]
        if self.running.get(route.name, 0) >= settings.max_concurrency:
            self.dropped[route.name] = self.dropped.get(route.name, 0) + 1
            self._count(route.name, target.backend.name, "dropped")
            return
        trail = RequestTrail(call.protocol, call.endpoint, new_request_id(), shadow_of=call.request_id)
        trail.model, trail.stream, trail.config_version = call.public_model, call.stream, runtime.version
        copy = dataclasses.replace(call, body=dict(call.body), request_id=trail.request_id)
        self.running[route.name] = self.running.get(route.name, 0) + 1
        task = asyncio.create_task(self._run(runtime, route, shadow, copy, trail, tokens))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(
        self,
        runtime: Runtime,
        route: ModelRoute,
        shadow: ModelRoute,
        call: UpstreamCall,
        trail: RequestTrail,
        tokens: int,
    ) -> None:
        target = shadow.chain[0]
        tier = runtime.timeouts.for_kind(_TIER[call.endpoint])  # type: ignore[arg-type]
        quota = None
        with (
            runtime.lease(),
            tracing.span(
                SHADOW_SPAN,
                request_id=trail.request_id,
                shadow_of=trail.shadow_of,
                model=route.name,
                backend=target.backend.name,
                upstream_model=target.target.model,
            ) as shadow_span,
        ):
            try:
                deadline = time.monotonic() + tier.total
                async with asyncio.timeout_at(deadline):
                    served = await execute(
                        shadow, call, tier, runtime.config.failover, deadline, trail.attempts, tokens
                    )
                    quota = served.quota
                    trail.backend = target.backend.name
                    trail.backend_type = target.config.type
                    trail.upstream_model = target.target.model
                    result = served.result
                    kind = type(result)
                    if kind is PassThroughStream or kind is EventStream:
                        trail.http_status, trail.first_byte_at = 200, time.monotonic()
                        try:
                            async for _ in result.rest:  # type: ignore[union-attr]
                                pass  # read to the end (usage comes last), then dropped
                        finally:
                            await result.aclose()  # type: ignore[union-attr]
                    else:
                        trail.http_status = result.status if kind is PassThroughReply else 200  # type: ignore[union-attr]
                        if trail.http_status >= 400:
                            trail.error_type = f"http-{trail.http_status}"
                    trail.settle(result.usage, target.price)
            except TimeoutError:
                trail.timed_out, trail.http_status, trail.error_type = True, 504, "timeout"
                trail.settle_failed()
            except GatewayError as error:
                trail.http_status, trail.error_type = error.status, error.slug
                trail.settle_failed()
            except asyncio.CancelledError:  # the app is shutting down
                trail.http_status, trail.error_type = 499, "cancelled"
                raise
            except UpstreamFailure:  # after the first event: the stream was cut short
                trail.http_status, trail.error_type = 502, "stream-failed"
            except Exception:  # a bug: the copy fails, nothing else does
                trail.http_status, trail.error_type = 500, "internal-error"
                log.exception("a shadow request failed", extra={"request_id": trail.request_id})
            finally:
                self.running[route.name] -= 1
                if quota is not None:
                    tokens_used = None
                    if trail.usage is not None:
                        tokens_used = trail.usage.prompt_tokens + trail.usage.completion_tokens
                    try:
                        runtime.limits.settle(quota, tokens_used, None)
                    except Exception:
                        log.exception("settling a shadow request's backend quota failed")
                status = "cancelled" if trail.error_type == "cancelled" else trail.status()
                self._count(route.name, target.backend.name, status)
                _annotate(shadow_span, trail, status)
                self.audit.record(trail)

    def _count(self, model: str, target: str, outcome: str) -> None:
        telemetry = self.telemetry
        if telemetry is not None and telemetry.metrics_on:
            telemetry.metrics.shadow_requests.labels(model, target, outcome).inc()

    async def close(self) -> None:
        """Cancel the copies still running (shutdown) and wait for them to record themselves."""
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def _annotate(shadow_span: object, trail: RequestTrail, status: str) -> None:
    attributes = {
        "status": status,
        "http.response.status_code": trail.http_status,
        "error_type": trail.error_type,
        "latency_ms": round((time.monotonic() - trail.started) * 1000, 3),
        "gateway.cost_usd": trail.cost_usd,
    }
    if trail.usage is not None:
        attributes["gen_ai.usage.input_tokens"] = trail.usage.prompt_tokens
        attributes["gen_ai.usage.output_tokens"] = trail.usage.completion_tokens
    shadow_span.set_attributes({k: v for k, v in attributes.items() if v is not None})  # type: ignore[attr-defined]
