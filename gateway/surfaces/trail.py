"""What one model-API request did, gathered as it goes, and turned into its audit record at the end.

Metadata only: the trail never holds the request body, the answer, or anything else a user wrote.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.audit.record import AuditEntry, default_instance
from gateway.protocol.canonical import Usage
from gateway.routing.failover import Attempt

__all__ = ["INSTANCE", "RequestTrail"]

#: This process, as audit records name it (several gateway processes may share one database).
INSTANCE = default_instance()

_GATEWAY_TIMEOUT = 504


@dataclass(slots=True)
class RequestTrail:
    surface: str
    endpoint: str
    request_id: str
    started: float = field(default_factory=time.monotonic)
    ts: datetime = field(default_factory=lambda: datetime.now(UTC))
    model: str | None = None
    client_key: str | None = None
    stream: bool = False
    config_version: str | None = None
    #: The chain's steps; empty when no backend was considered (the request was refused before).
    attempts: list[Attempt] = field(default_factory=list)
    backend: str | None = None
    backend_type: str | None = None
    upstream_model: str | None = None
    http_status: int = 0
    #: A problem slug ("upstream-error"), or for failures after the first byte "stream-failed",
    #: "timeout"; "client-disconnected" when the client left first.
    error_type: str | None = None
    timed_out: bool = False
    first_byte_at: float | None = None
    usage: Usage | None = None
    trace_id: str | None = None

    def status(self) -> str:
        """success / error / timeout / rejected (refused by the gateway before any backend was asked)."""
        if self.timed_out or self.http_status == _GATEWAY_TIMEOUT:
            return "timeout"
        if self.error_type is None and 200 <= self.http_status < 300:
            return "success"
        if not self.attempts and self.http_status < 500 and self.error_type != "client-disconnected":
            return "rejected"
        return "error"

    def entry(self) -> AuditEntry:
        ended = time.monotonic()
        usage = self.usage
        return AuditEntry(
            uid=os.urandom(16).hex(),
            ts=self.ts,
            request_id=self.request_id,
            trace_id=self.trace_id,
            instance=INSTANCE,
            client_key=self.client_key,
            surface=self.surface,
            endpoint=self.endpoint,
            model=self.model,
            backend=self.backend,
            backend_type=self.backend_type,
            upstream_model=self.upstream_model,
            stream=self.stream,
            status=self.status(),
            http_status=self.http_status,
            error_type=self.error_type,
            attempts=sum(1 for a in self.attempts if a.tried),
            failover_path=[
                {
                    "backend": a.backend,
                    "model": a.model,
                    "outcome": a.outcome,
                    "status": a.status,
                    "duration_ms": round(a.duration_ms, 2),
                }
                for a in self.attempts
            ],
            latency_ms=round((ended - self.started) * 1000, 2),
            ttft_ms=round((self.first_byte_at - self.started) * 1000, 2) if self.first_byte_at else None,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            config_version=self.config_version,
        )
