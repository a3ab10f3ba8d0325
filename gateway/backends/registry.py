"""The backend class of each backend `type`: the extension point beside the settings classes of
`gateway.config.backends`. A new type registers its backend class here, its settings class there."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from gateway.backends.anthropic import AnthropicBackend
from gateway.backends.azure_openai import AzureOpenAIBackend
from gateway.backends.base import Backend, SharedResources
from gateway.backends.bedrock import BedrockBackend
from gateway.backends.gemini import GeminiBackend
from gateway.backends.mlx.backend import LocalModelBackend
from gateway.backends.openai import OpenAIBackend, OpenAICompatibleBackend
from gateway.backends.vertex import VertexBackend
from gateway.config.backends import BackendSettings

__all__ = ["BACKEND_CLASSES", "build_backend"]

#: Each backend class is built as `cls(settings, shared)` from the settings class its type names.
BACKEND_CLASSES: Mapping[str, Callable[..., Backend]] = MappingProxyType(
    {
        "mlx": LocalModelBackend,
        "openai": OpenAIBackend,
        "openai_compatible": OpenAICompatibleBackend,
        "anthropic": AnthropicBackend,
        "gemini": GeminiBackend,
        "azure_openai": AzureOpenAIBackend,
        "bedrock": BedrockBackend,
        "vertex": VertexBackend,
    }
)


def build_backend(settings: BackendSettings, shared: SharedResources) -> Backend:
    return BACKEND_CLASSES[settings.type](settings, shared)
