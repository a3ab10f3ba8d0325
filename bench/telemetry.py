"""Per-request cost of telemetry: what `ModelAPI` adds for one request's trail, metrics, log line and
spans, with tracing off (no exporter: the default) and on (spans to a do-nothing exporter).

    python -m gateway.bench.telemetry [--number 20000]

Micro-benchmark (timeit, best of 5) of the exact code the request path runs, without the network:
one line per measurement, then the results as one JSON object on the last line (what
`gateway bench telemetry`, `telemetry_cost.py`, reads from each of its child processes).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import timeit
from collections.abc import Callable
from typing import Any

from gateway import tracing
from gateway.protocol.canonical import Usage
from gateway.routing.failover import ATTEMPT_SPAN, Attempt
from gateway.routing.trail import RequestTrail
from gateway.telemetry.logging import JSONFormatter
from gateway.telemetry.metrics import GatewayMetrics
from gateway.telemetry.requests import RequestTelemetry, access_log

ROUTES = {"chat": object()}


def _finished_trail(telemetry: RequestTelemetry) -> RequestTrail:
    """One request's trail as `ModelAPI` fills it: begin, one attempt span and one HTTP span, end."""
    trail = RequestTrail("openai", "chat", "req_0123456789abcdef01234567")
    observation = telemetry.begin(trail)
    trail.config_version, trail.client_key, trail.model, trail.stream = (
        "0123456789abcdef",
        "team",
        "chat",
        False,
    )
    with tracing.span(
        ATTEMPT_SPAN, backend="oa", backend_type="openai", upstream_model="gpt", attempt=1
    ) as s:
        with tracing.span("POST /v1/chat/completions", **{"http.request.method": "POST"}) as http:
            http.set_attribute("http.response.status_code", 200)
        s.set_attribute("outcome", "ok")
    trail.attempts.append(Attempt("oa", "gpt", "ok", 200, 1.0))
    trail.backend, trail.backend_type, trail.upstream_model = "oa", "openai", "gpt"
    trail.http_status, trail.usage = 200, Usage(12, 34)
    telemetry.end(trail, observation, ROUTES)
    return trail


def _measure(label: str, work: Callable[[], Any], number: int) -> float:
    best = min(timeit.repeat(work, number=number, repeat=5)) / number * 1e6
    print(f"{label:<58} {best:8.2f} µs")
    return best


def run(number: int) -> dict[str, float]:
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(JSONFormatter())
    logging.getLogger().handlers[:] = [handler]
    logging.getLogger().setLevel(logging.INFO)

    results: dict[str, float] = {}
    metrics = GatewayMetrics(multiprocess_dir=None)
    telemetry = RequestTelemetry(metrics)

    def trail_only() -> None:
        RequestTrail("openai", "chat", "req_0123456789abcdef01234567")

    def log_buffer_reset() -> None:
        stream = handler.stream
        stream.seek(0)
        stream.truncate()

    def request() -> None:
        _finished_trail(telemetry)

    results["trail"] = _measure("RequestTrail() alone (built today when audit is on)", trail_only, number)
    results["span_noop"] = _measure(
        "tracing.span() when off (per backend attempt)",
        lambda: tracing.span(ATTEMPT_SPAN, backend="oa").__enter__(),
        number,
    )
    access_log.setLevel(logging.WARNING)
    results["metrics_only"] = _measure("trail + metrics (log level warning, tracing off)", request, number)
    access_log.setLevel(logging.NOTSET)
    results["metrics_log"] = _measure(
        "trail + metrics + JSON log line (tracing off: default)", request, number
    )
    log_buffer_reset()
    telemetry.metrics_on = False
    access_log.setLevel(logging.WARNING)
    results["nothing"] = _measure("trail, metrics off, no log line, tracing off", request, number)
    telemetry.metrics_on = True
    access_log.setLevel(logging.NOTSET)

    import logfire
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    instance = logfire.configure(
        local=True,
        send_to_logfire=False,
        console=False,
        metrics=False,
        inspect_arguments=False,
        scrubbing=False,
        additional_span_processors=[BatchSpanProcessor(Discard(), max_queue_size=1_000_000)],
    )
    tracing.install(instance, owned=True)
    try:
        results["traced"] = _measure(
            "trail + metrics + log + 3 spans (tracing on)", request, max(1, number // 10)
        )
    finally:
        tracing.uninstall(instance)
    log_buffer_reset()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--number", type=int, default=20000)
    args = parser.parse_args()
    asyncio.run(asyncio.sleep(0))
    print(json.dumps(run(args.number)), flush=True)


if __name__ == "__main__":
    main()
