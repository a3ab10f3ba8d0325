"""The Backend protocol: what the routing layer needs from any backend, local or remote.

A backend object is built from its settings (one class per backend type, `gateway.config.backends`)
and lives as long as they are unchanged: reloads that leave them alone carry the same object (its
connection pool or loaded weights, its circuit breaker and concurrency count) into the new Runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from gateway.backends.breaker import CircuitBreaker
from gateway.backends.concurrency import ConcurrencyLimit
from gateway.backends.mlx.store import LocalModelStore
from gateway.backends.upstream import AttemptLimits, Reply, Stream, UpstreamCall
from gateway.config.backends import BackendSettings

__all__ = ["Backend", "SharedResources"]


@dataclass(frozen=True, slots=True)
class SharedResources:
    """What the backends of one process share; every backend class is built as `cls(settings, shared)`."""

    #: The loaded local models, under one memory budget.
    local_models: LocalModelStore


@runtime_checkable
class Backend(Protocol):
    config: BackendSettings
    #: Live with the backend object, so their state survives reloads that keep the backend.
    breaker: CircuitBreaker
    #: `max_concurrency`; None when unlimited. Failover sends through it (`ConcurrencyLimit.send`).
    concurrency: ConcurrencyLimit | None

    @property
    def name(self) -> str: ...

    async def start(self) -> None:
        """Open what the backend needs (connection pool, model weights). Called once, before first use."""

    async def send(self, call: UpstreamCall, model: str, limits: AttemptLimits) -> Reply | Stream:
        """Make one attempt. Returns a whole Reply, or a Stream whose first event has arrived (within
        `limits.first_byte`); raises UpstreamFailure for a failure before that point.

        Pass-through forms (bytes in the client's protocol) only when the backend speaks it; otherwise the
        canonical forms (`ChatResponse`, `TokenCount`, `EmbeddingResponse`, an `EventStream`), never
        another protocol's bytes."""

    def describe(self) -> dict[str, Any]:
        """What this type of backend adds to `GET /admin/api/backends` and the metrics, e.g. a local
        model's engine load under `local`; {} when nothing."""

    async def close(self) -> None:
        """Release everything `start` opened. Called once, after the last request using it has finished."""
