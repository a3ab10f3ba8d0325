"""Build the backend object for a `BackendConfig`, by type."""

from __future__ import annotations

from gateway.backends.anthropic import AnthropicBackend
from gateway.backends.base import Backend
from gateway.backends.mlx.backend import LocalModelBackend
from gateway.backends.mlx.store import LocalModelStore
from gateway.backends.openai import OpenAIBackend
from gateway.config.model import BackendConfig

__all__ = ["build_backend"]


def build_backend(config: BackendConfig, local_models: LocalModelStore) -> Backend:
    if config.type == "mlx":
        return LocalModelBackend(config, local_models)
    if config.type == "anthropic":
        return AnthropicBackend(config)
    return OpenAIBackend(config)
