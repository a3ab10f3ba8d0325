"""The Backend protocol: what the routing layer needs from any backend, local or remote.

A backend object is built from one `BackendConfig` and lives as long as that config is unchanged:
reloads that leave its settings alone carry the same object (and its connection pool or loaded
weights) into the new Runtime.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from gateway.backends.breaker import CircuitBreaker
from gateway.backends.upstream import AttemptLimits, Reply, Stream, UpstreamCall
from gateway.config.model import BackendConfig

__all__ = ["Backend"]


@runtime_checkable
class Backend(Protocol):
    config: BackendConfig
    #: Lives with the backend object, so its state survives reloads that keep the backend.
    breaker: CircuitBreaker

    @property
    def name(self) -> str: ...

    async def start(self) -> None:
        """Open what the backend needs (connection pool, model weights). Called once, before first use."""

    async def send(self, call: UpstreamCall, model: str, limits: AttemptLimits) -> Reply | Stream:
        """Make one attempt. Returns a whole Reply, or a Stream whose first event has arrived (within
        `limits.first_byte`); raises UpstreamFailure for a failure before that point.

        Pass-through forms (bytes in the client's protocol) only when the backend speaks it; otherwise the
        canonical forms (`ChatResponse`, `TokenCount`, an `EventStream`), never another protocol's bytes."""

    async def close(self) -> None:
        """Release everything `start` opened. Called once, after the last request using it has finished."""
