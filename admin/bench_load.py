"""The load of one benchmark level: N workers send the same short chat request to one backend, back to
back, until the level's time is up, and the figures that come of it (requests/s, latency and TTFT
percentiles, errors, output tokens/s).

Each request is the attempt failover makes for one step of a chain: `backend.send` with an
`UpstreamCall`, through the backend's concurrency limit when it has one, so the figures are the
backend's (its connection pool, its protocol handling, the upstream), without the client-facing HTTP
path, authentication, routing, limits or the audit log.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from gateway.backends.base import Backend
from gateway.backends.upstream import (
    AttemptLimits,
    EventStream,
    PassThroughReply,
    PassThroughStream,
    UpstreamCall,
    UpstreamFailure,
)
from gateway.protocol.canonical import StreamError
from gateway.protocol.openai_request import parse_chat_request

__all__ = ["PROMPT", "LevelLoad", "bench_call", "send_one"]

#: The fixed prompt of every benchmark request: short, so the figures are about the backend's
#: overhead and first token rather than the prompt's length.
PROMPT = "Reply with one short sentence about the sea."
#: A worker whose request failed waits this long before the next one.
ERROR_PAUSE_S = 0.05


def bench_call(model: str, *, stream: bool, max_tokens: int, request_id: str) -> UpstreamCall:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return UpstreamCall("chat", "openai", body, parse_chat_request(body), stream, request_id, model)


@dataclass(slots=True)
class Sample:
    ok: bool
    latency_ms: float
    ttft_ms: float | None = None
    output_tokens: int = 0
    error: str | None = None


async def send_one(backend: Backend, call: UpstreamCall, model: str, limits: AttemptLimits) -> Sample:
    """One request, read to its end; never raises for the backend's failures (they are the sample)."""
    started = time.monotonic()
    try:
        concurrency = backend.concurrency
        if concurrency is None:
            result = await backend.send(call, model, limits)
        else:
            result = await concurrency.send(backend, call, model, limits)
    except UpstreamFailure as failure:
        return Sample(False, _ms(started), error=failure.kind)
    except TimeoutError:
        return Sample(False, _ms(started), error="timeout")
    if isinstance(result, PassThroughStream | EventStream):
        ttft = _ms(started)
        error = None
        try:
            async with asyncio.timeout(max(0.0, limits.remaining())):
                if isinstance(result, EventStream):
                    for event in result.first:
                        error = error or _stream_error(event)
                    async for event in result.rest:
                        error = error or _stream_error(event)
                else:
                    async for _chunk in result.rest:
                        pass
        except UpstreamFailure as failure:
            error = failure.kind
        except TimeoutError:
            error = "timeout"
        finally:
            await result.aclose()
        tokens = result.usage.completion_tokens if result.usage else 0
        return Sample(error is None, _ms(started), ttft, tokens, error)
    if isinstance(result, PassThroughReply) and result.status >= 400:
        return Sample(False, _ms(started), error=f"http_{result.status}")
    usage = getattr(result, "usage", None)
    return Sample(True, _ms(started), output_tokens=usage.completion_tokens if usage else 0)


def _stream_error(event: object) -> str | None:
    return "stream_error" if isinstance(event, StreamError) else None


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000


@dataclass(slots=True)
class LevelLoad:
    """The samples of one concurrency level, as they arrive (readable mid-way for progress)."""

    concurrency: int
    seconds: float
    samples: list[Sample] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None

    async def run(self, backend: Backend, model: str, make_call: Any, limits_for: Any) -> None:
        """`concurrency` workers send until `seconds` have passed (a request under way then finishes,
        within its own deadline). `make_call()` builds a call, `limits_for()` its AttemptLimits."""
        self.started = time.monotonic()
        until = self.started + self.seconds

        async def worker() -> None:
            while time.monotonic() < until:
                sample = await send_one(backend, make_call(), model, limits_for())
                self.samples.append(sample)
                if not sample.ok:  # a backend that fails at once is not hammered in a tight loop
                    await asyncio.sleep(ERROR_PAUSE_S)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(self.concurrency):
                    group.create_task(worker())
        finally:
            self.ended = time.monotonic()

    def figures(self) -> dict[str, Any]:
        """requests, errors (and their kinds), requests/s (successful), latency and TTFT p50/p95 (ms),
        output tokens/s, and the level's duration."""
        elapsed = max(1e-6, (self.ended or time.monotonic()) - self.started)
        ok = [s for s in self.samples if s.ok]
        latencies = sorted(s.latency_ms for s in ok)
        ttfts = sorted(s.ttft_ms for s in ok if s.ttft_ms is not None)
        errors = Counter(s.error or "error" for s in self.samples if not s.ok)
        return {
            "concurrency": self.concurrency,
            "duration_s": round(elapsed, 3),
            "requests": len(self.samples),
            "errors": sum(errors.values()),
            "error_kinds": dict(errors),
            "requests_per_s": round(len(ok) / elapsed, 3),
            "latency_ms": {"p50": _percentile(latencies, 50), "p95": _percentile(latencies, 95)},
            "ttft_ms": {"p50": _percentile(ttfts, 50), "p95": _percentile(ttfts, 95)} if ttfts else None,
            "output_tokens_per_s": round(sum(s.output_tokens for s in ok) / elapsed, 2),
        }


def _percentile(values: list[float], percent: float) -> float | None:
    """Nearest rank of sorted `values`; None when there are none."""
    if not values:
        return None
    rank = max(1, math.ceil(percent / 100 * len(values)))
    return round(values[rank - 1], 2)
