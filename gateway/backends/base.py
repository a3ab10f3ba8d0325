"""The Backend protocol: what the routing layer needs from any backend, local or remote.

A backend object is built from one `BackendConfig` and lives as long as that config is unchanged:
reloads that leave its settings alone carry the same object (and its connection pool or loaded
weights) into the new Runtime.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from gateway.config.model import BackendConfig

__all__ = ["Backend"]


@runtime_checkable
class Backend(Protocol):
    config: BackendConfig

    @property
    def name(self) -> str: ...

    async def start(self) -> None:
        """Open what the backend needs (connection pool, model weights). Called once, before first use."""

    async def close(self) -> None:
        """Release everything `start` opened. Called once, after the last request using it has finished."""
