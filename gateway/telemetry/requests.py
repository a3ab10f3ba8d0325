"""What the gateway reports about each model-API request: its span, its metrics and its log line.

`begin` runs when the request arrives (the span must be open for the backend attempts to nest under
it); everything else happens once, in `end`, from the request's `RequestTrail`, at the same place
the audit record is made. Metadata only: never the body, the prompt, the answer or a key.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from gateway import tracing
from gateway.config.model import TelemetryConfig
from gateway.routing.trail import RequestTrail
from gateway.telemetry.logging import json_line, json_line_writer
from gateway.telemetry.metrics import GatewayMetrics

__all__ = ["REQUEST_SPAN", "Observation", "RequestTelemetry"]

log = logging.getLogger("gateway.telemetry")
#: One line per model-API request.
access_log = logging.getLogger("gateway.access")

#: The name of the span of one model-API request (its children: `ATTEMPT_SPAN` in failover.py).
REQUEST_SPAN = "model request"
_INFO = logging.INFO
#: This process (kept current across a fork).
_PID = os.getpid()


def _forked() -> None:
    global _PID
    _PID = os.getpid()


os.register_at_fork(after_in_child=_forked)


class Observation:
    """What `begin` started for one request: its span (if tracing) and whether metrics count it."""

    __slots__ = ("metrics", "span")

    def __init__(self, span: Any, metrics: GatewayMetrics | None) -> None:
        self.span = span
        self.metrics = metrics


class RequestTelemetry:
    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics
        #: `telemetry.prometheus.enabled` of the live config (set at startup and on each reload).
        self.metrics_on = True

    def apply(self, config: TelemetryConfig) -> None:
        self.metrics_on = config.prometheus.enabled

    @property
    def active(self) -> bool:
        """Whether anything wants request trails: metrics, spans or the per-request log line."""
        return self.metrics_on or tracing.enabled() or access_log.isEnabledFor(_INFO)

    def begin(self, trail: RequestTrail) -> Observation:
        metrics = self.metrics if self.metrics_on else None
        if metrics is not None:
            metrics.in_flight.inc()
        request_span = None
        if tracing.enabled():
            request_span = tracing.span(
                REQUEST_SPAN,
                request_id=trail.request_id,
                surface=trail.surface,
                endpoint=trail.endpoint,
            )
            request_span.__enter__()
            trail.trace_id = tracing.trace_id_of(request_span)
        return Observation(request_span, metrics)

    def end(self, trail: RequestTrail, observation: Observation, routes: Mapping[str, Any]) -> None:
        """Report the finished request. Never raises: a reporting fault must not fail a request."""
        try:
            latency = time.monotonic() - trail.started
            status = trail.status()
            metrics = observation.metrics
            if metrics is not None:
                metrics.in_flight.dec()
                metrics.observe(trail, status, latency, routes)
            request_span = observation.span
            if request_span is not None:
                _finish_span(request_span, trail, status)
            if access_log.isEnabledFor(_INFO):
                _log_request(trail, status, latency)
        except Exception:
            log.exception("reporting a finished request failed", extra={"request_id": trail.request_id})


def _finish_span(request_span: Any, trail: RequestTrail, status: str) -> None:
    attributes: dict[str, Any] = {
        "model": trail.model,
        "stream": trail.stream,
        "backend": trail.backend,
        "backend_type": trail.backend_type,
        "upstream_model": trail.upstream_model,
        "status": status,
        "http.response.status_code": trail.http_status,
        "error_type": trail.error_type,
        "attempts": trail.tried(),
        "failover_path": [f"{a.backend}:{a.outcome}" for a in trail.attempts],
        "client": trail.client_key,
        "config_version": trail.config_version,
    }
    served = trail.attempts[-1] if trail.attempts and trail.attempts[-1].outcome == "ok" else None
    if served is not None and served.pick is not None:
        # The member of a balanced group that served, and why it was tried.
        if served.pick.group is not None:
            attributes["group"] = served.pick.group
        attributes["group.strategy"] = served.pick.strategy
        attributes["group.reason"] = served.pick.reason
    incapable = trail.skipped_as_incapable()
    if incapable:
        attributes["skipped_incapable"] = incapable
    if trail.first_byte_at is not None:
        attributes["ttft_ms"] = round((trail.first_byte_at - trail.started) * 1000, 3)
    usage = trail.usage
    if usage is not None:
        attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
        attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens
        if usage.reasoning_tokens:  # the part of the output spent reasoning (a count, never the text)
            attributes["gen_ai.usage.reasoning_tokens"] = usage.reasoning_tokens
    if trail.cost_usd is not None:
        attributes["gateway.cost_usd"] = trail.cost_usd
    if trail.cache is not None:
        attributes["gateway.cache"] = trail.cache
        attributes["gateway.cache.similarity"] = trail.cache_similarity
    request_span.set_attributes({k: v for k, v in attributes.items() if v is not None})
    if status in ("error", "timeout"):
        request_span.set_level("error")
    request_span.__exit__(None, None, None)


def _log_request(trail: RequestTrail, status: str, latency: float) -> None:
    usage = trail.usage
    latency_ms = round(latency * 1000, 2)
    message = (
        f"{trail.surface} {trail.endpoint} model={trail.model} backend={trail.backend} {status} "
        f"{trail.http_status} {latency_ms:.1f} ms"
    )
    fields = {
        "event": "request",
        "request_id": trail.request_id,
        "trace_id": trail.trace_id,
        "surface": trail.surface,
        "endpoint": trail.endpoint,
        "model": trail.model,
        "stream": trail.stream,
        "backend": trail.backend,
        "status": status,
        "http_status": trail.http_status,
        "error_type": trail.error_type,
        "attempts": trail.tried(),
        "latency_ms": latency_ms,
        "ttft_ms": round((trail.first_byte_at - trail.started) * 1000, 2) if trail.first_byte_at else None,
        "prompt_tokens": usage.prompt_tokens if usage else None,
        "completion_tokens": usage.completion_tokens if usage else None,
        "cost_usd": trail.cost_usd,
        "cache": trail.cache,
        "client": trail.client_key,
        "client_address": trail.client_address,
        "config_version": trail.config_version,
    }
    served = trail.attempts[-1] if trail.attempts and trail.attempts[-1].outcome == "ok" else None
    if served is not None and served.pick is not None:
        # The member of a balanced group that served, and why it was tried.
        if served.pick.group is not None:
            fields["group"] = served.pick.group
        fields["group_strategy"] = served.pick.strategy
        fields["group_reason"] = served.pick.reason
    incapable = trail.skipped_as_incapable()
    if incapable:  # targets that could not serve the request (a capability, a field)
        fields["skipped_incapable"] = incapable
    if usage is not None and usage.reasoning_tokens:  # of completion_tokens, spent reasoning
        fields["reasoning_tokens"] = usage.reasoning_tokens
    if trail.cache_similarity is not None:  # a semantic hit
        fields["cache_similarity"] = round(trail.cache_similarity, 4)
    writer = json_line_writer(access_log)
    if writer is None:  # someone else's handlers (or text lines): through the logging machinery
        access_log.info("%s", message, extra=fields)
        return
    # The same line JSONFormatter would write, without a LogRecord: at a few thousand requests a
    # second the generic path (record, caller lookup, formatter) costs a tenth of a core.
    now = time.time()
    line = {
        "time": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
        "level": "info",
        "logger": access_log.name,
        "pid": _PID,
        "message": message,
        **fields,
    }
    writer.write_line(json_line(line))
