"""What one model-API request did, gathered as it goes; its audit record, metrics, span and log line
are built from it at the end (`gateway.audit`, `gateway.telemetry`).

Metadata only: the trail never holds the request body, the answer, or anything else a user wrote.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.limits import Admission
from gateway.pricing.cost import PICODOLLARS_PER_USD, TokenPrice
from gateway.protocol.canonical import Usage
from gateway.routing.failover import Attempt

__all__ = ["RequestTrail"]

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
    #: The client's IP address: the peer's, or the one a trusted proxy forwarded.
    client_address: str | None = None
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
    #: USD: the served usage at its target's price plus billed failed attempts; None when unknown.
    cost_usd: float | None = None
    #: The gateway limit that refused the request (see `AuditEntry.limit_name`).
    limit_name: str | None = None
    #: What the limits let through (the key's admission, the serving backend's quota), settled at the end.
    admissions: list[Admission] | None = None
    trace_id: str | None = None
    #: What the response cache did: hit, miss, bypass or off; None for endpoints it does not serve.
    cache: str | None = None
    #: A semantic cache hit's cosine similarity (None: no hit, or an exact one).
    cache_similarity: float | None = None
    #: On a hit: the stored answer's tokens (input + output) and their cost at its target's price.
    saved_tokens: int | None = None
    saved_usd: float | None = None
    #: A shadow copy's record: the request id of the client request it copied (None: a client request).
    shadow_of: str | None = None

    def settle(self, usage: Usage | None, price: TokenPrice | None) -> None:
        """The served answer's usage, and the request's cost: that usage at its target's `price`, plus
        the failed attempts the upstream billed. None when the usage or any price is unknown."""
        self.usage = usage
        if usage is None or price is None:
            self.cost_usd = None
            return
        cost = price.picodollars(usage)
        for attempt in self.attempts:
            if attempt.usage is not None:  # rare: an attempt billed, then failed over from
                if attempt.price is None:
                    self.cost_usd = None
                    return
                cost += attempt.price.picodollars(attempt.usage)
        self.cost_usd = cost / PICODOLLARS_PER_USD

    def settle_failed(self) -> None:
        """The cost of a request no backend served: the failed attempts the upstream billed (None when
        none was billed, or one's price is unknown)."""
        cost: int | None = None
        for attempt in self.attempts:
            if attempt.usage is not None:
                if attempt.price is None:
                    self.cost_usd = None
                    return
                cost = (cost or 0) + attempt.price.picodollars(attempt.usage)
        self.cost_usd = None if cost is None else cost / PICODOLLARS_PER_USD

    def skipped_as_incapable(self) -> list[str]:
        """Why targets were skipped as unable to serve the request ("local: lacks capability 'images'")."""
        return [f"{a.backend}: {a.detail}" for a in self.attempts if a.outcome == "incapable"]

    def tried(self) -> int:
        """How many backends were actually asked (skipped steps of the chain do not count)."""
        return sum(1 for a in self.attempts if a.tried)

    def status(self) -> str:
        """success / error / timeout / rejected (refused by the gateway before any backend was asked)."""
        if self.timed_out or self.http_status == _GATEWAY_TIMEOUT:
            return "timeout"
        if self.error_type is None and 200 <= self.http_status < 300:
            return "success"
        if not self.attempts and self.http_status < 500 and self.error_type != "client-disconnected":
            return "rejected"
        return "error"
