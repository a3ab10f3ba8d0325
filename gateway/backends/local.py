"""The `mlx` backend: a local model served in-process.

Only its lifecycle exists so far (the config plane carries it across reloads); loading weights and
the engine thread with continuous batching are the local-inference work that builds on this.
"""

from __future__ import annotations

from gateway.backends.upstream import AttemptLimits, Reply, Stream, UpstreamCall, UpstreamFailure
from gateway.config.model import BackendConfig
from gateway.routing.breaker import CircuitBreaker

__all__ = ["LocalModelBackend"]


class LocalModelBackend:
    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.loaded = False
        self.breaker = CircuitBreaker()

    @property
    def name(self) -> str:
        return self.config.name

    async def start(self) -> None:
        """Weights load here once the engine exists; until then there is nothing to open."""

    async def send(self, call: UpstreamCall, model: str, limits: AttemptLimits) -> Reply | Stream:
        # Not a backend fault: the chain moves on to its next target with this reason.
        raise UpstreamFailure("unsupported", "local inference (type: mlx) is not available in this build yet")

    async def close(self) -> None:
        self.loaded = False

    def __repr__(self) -> str:
        return f"<LocalModelBackend {self.config.name} {self.config.path or self.config.hf_repo}>"
