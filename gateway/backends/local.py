"""The `mlx` backend: a local model served in-process.

Only its lifecycle exists so far (the config plane carries it across reloads); loading weights and
the engine thread with continuous batching are the local-inference work that builds on this.
"""

from __future__ import annotations

from gateway.config.model import BackendConfig

__all__ = ["LocalModelBackend"]


class LocalModelBackend:
    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.loaded = False

    @property
    def name(self) -> str:
        return self.config.name

    async def start(self) -> None:
        """Weights load here once the engine exists; until then there is nothing to open."""

    async def close(self) -> None:
        self.loaded = False

    def __repr__(self) -> str:
        return f"<LocalModelBackend {self.config.name} {self.config.path or self.config.hf_repo}>"
