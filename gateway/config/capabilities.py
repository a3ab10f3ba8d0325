"""Capabilities: what a backend can do beyond plain chat, by name, with each backend type's defaults.

A request that needs a capability (tools, images, `n` > 1, ...) is routed only to chain targets that
have it (`gateway.routing.capabilities`); the others are skipped, never sent a request they would
drop part of. Here is the data: the names, the defaults per backend `type`, and how overrides
(`backends.<name>.capabilities`, `models.<m>.chain[i].capabilities`) resolve. Plain data, no imports
above `gateway.config`, so the loader checks configs with it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from gateway.config.providers import preset

__all__ = [
    "CAPABILITIES",
    "DEFAULTS_BY_TYPE",
    "EXTRA_FIELDS_BY_TYPE",
    "capability_list",
    "default_capabilities",
    "resolve_capabilities",
]

#: Every capability name, in documentation order (the schema's enum lists the same).
CAPABILITIES: tuple[str, ...] = (
    "chat",
    "completions",
    "embeddings",
    "tools",
    "images",
    "json_object",
    "json_schema",
    "n",
    "logprobs",
    "logit_bias",
    "penalties",
    "top_k",
    "reasoning",
)

_ALL = frozenset(CAPABILITIES)

#: What each backend type can do when the config says nothing. A capability is claimed only where the
#: type's whole code path honours it: OpenAI-protocol backends take OpenAI fields as sent (pass-through)
#: but have no `top_k` (OpenAI has none; a server that takes it, like vLLM, is given it by an override,
#: and the Anthropic -> OpenAI translation then carries it); the Anthropic translation
#: carries no `response_format`, `n`, `logprobs`, `logit_bias` or penalties, and the Anthropic API has no
#: completions or embeddings; local models read no images and report no logprobs; the Gemini translation
#: (`gateway.protocol.gemini`) asks for one candidate, no logprobs and no logit bias, and the API has no
#: completions endpoint. `reasoning` (OpenAI `reasoning_effort`, Anthropic `thinking`, mapped between
#: the two by `gateway.protocol.reasoning`) is claimed by the OpenAI-protocol and Anthropic types (and
#: Vertex's Claude models), whose upstream decides whether the model reasons; the Gemini, Bedrock and
#: local translations carry none.
DEFAULTS_BY_TYPE: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "openai": _ALL - {"top_k"},
        "openai_compatible": _ALL - {"top_k"},
        "azure_openai": _ALL - {"top_k"},
        "anthropic": frozenset({"chat", "tools", "images", "top_k", "reasoning"}),
        "mlx": _ALL - {"images", "logprobs", "reasoning"},
        "gemini": frozenset(
            {"chat", "embeddings", "tools", "images", "json_object", "json_schema", "penalties", "top_k"}
        ),
        # Converse: chat (embeddings from Titan models only, by name below), no completions API, no
        # response_format, n, logprobs, logit_bias, penalties or top_k in its common request.
        "bedrock": frozenset({"chat", "tools", "images"}),
        # Vertex AI: Gemini models as `gemini`, less embeddings, which Google's embedding models serve
        # (by name, below, through `:predict`); Claude models (by name) as `anthropic`.
        "vertex": frozenset({"chat", "tools", "images", "json_object", "json_schema", "penalties", "top_k"}),
    }
)

#: Request fields outside the canonical form that a backend type honours although it does not speak the
#: client's protocol: vLLM's `ignore_eos` (benchmarks use it) and vLLM-style `top_k` from OpenAI clients,
#: which local models take.
EXTRA_FIELDS_BY_TYPE: Mapping[str, frozenset[str]] = MappingProxyType(
    {"mlx": frozenset({"ignore_eos", "top_k"})}
)

#: Upstream models whose names say what they serve, by backend type and name prefix: OpenAI's
#: embedding models answer nothing else; Bedrock's Titan text embedding models are served through
#: InvokeModel (embeddings only), where the type's other models serve chat through Converse; on Vertex
#: AI, Claude models serve what the Anthropic API does, Google's embedding models embeddings only.
_MODEL_DEFAULTS: Mapping[str, tuple[tuple[str, frozenset[str]], ...]] = MappingProxyType(
    {
        "openai": (("text-embedding-", frozenset({"embeddings"})),),
        "bedrock": (("amazon.titan-embed-text-", frozenset({"embeddings"})),),
        "vertex": (
            ("claude-", frozenset({"chat", "tools", "images", "top_k", "reasoning"})),
            ("text-embedding-", frozenset({"embeddings"})),
            ("text-multilingual-embedding-", frozenset({"embeddings"})),
            ("gemini-embedding-", frozenset({"embeddings"})),
        ),
    }
)


def default_capabilities(
    backend_type: str, upstream_model: str | None = None, provider: str | None = None
) -> frozenset[str]:
    """The built-in capabilities of a backend type, narrowed for an upstream model whose name says
    what it serves (`text-embedding-*` on `openai`, `amazon.titan-embed-text-*` on `bedrock`), and for
    an `openai_compatible` backend's `provider` preset (`gateway.config.providers`: what the vendor
    refuses or adds)."""
    base = DEFAULTS_BY_TYPE.get(backend_type, frozenset())
    vendor = preset(provider) if backend_type == "openai_compatible" else None
    if vendor is not None:
        base = (base | vendor.adds) - vendor.refuses.keys()
    if upstream_model is not None:
        for prefix, only in _MODEL_DEFAULTS.get(backend_type, ()):
            if upstream_model.startswith(prefix):
                return only
    return base


def resolve_capabilities(base: frozenset[str], overrides: Mapping[str, bool] | None) -> frozenset[str]:
    """`base` with each named capability switched on (true) or off (false) as `overrides` says."""
    if not overrides:
        return base
    on = {name for name, value in overrides.items() if value}
    off = {name for name, value in overrides.items() if not value}
    return frozenset((base | on) - off)


def capability_list(capabilities: frozenset[str]) -> list[str]:
    """`capabilities` in documentation order, for JSON answers."""
    return [name for name in CAPABILITIES if name in capabilities]
