"""The cache key of a request, and whether a request may be cached at all.

The key is the SHA-256 of a canonical JSON of the parsed request: everything that changes the answer
(model, system, messages with their parts, tools, tool choice, sampling parameters, max tokens, stop
sequences, the protocol's other members such as `response_format`), and nothing that does not
(`user`, `metadata`, `store`, the stream flag and its options, the spelling of `max_tokens`). The
client's protocol and endpoint are part of it: `extra` members belong to one protocol. Keys are
namespaced by client key unless `cache.shared_between_keys`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import orjson

from gateway.protocol.canonical import ChatRequest

__all__ = ["cacheable", "deterministic", "request_key"]

#: Request members that do not change the answer.
_IGNORED_EXTRA = frozenset({"metadata", "store", "stream_options", "user", "service_tier"})


def deterministic(request: ChatRequest) -> bool:
    """Whether the request's parameters ask for a reproducible answer: temperature 0, or a seed."""
    return request.temperature == 0 or request.seed is not None


def cacheable(request: ChatRequest) -> str | None:
    """None when the answer to `request` fits the stored form; else why not (several choices, logprobs,
    audio or thinking blocks have no place in the one canonical answer a cache entry holds)."""
    if request.reasoning is not None:
        return "reasoning"
    extra = request.extra
    if not extra:
        return None
    n = extra.get("n")
    if n is not None and n != 1:
        return "n"
    if extra.get("logprobs") or extra.get("top_logprobs"):
        return "logprobs"
    if "audio" in extra or "modalities" in extra:
        return "audio"
    if "thinking" in extra:
        return "thinking"
    return None


def _default(value: Any) -> Any:
    # Mappings other than dict (a MappingProxyType) and anything else orjson cannot write natively.
    if hasattr(value, "items"):
        return dict(value.items())
    raise TypeError(f"{type(value).__name__} in a cache key")


def request_key(protocol: str, endpoint: str, model: str, namespace: str, request: ChatRequest) -> str:
    """The hex SHA-256 naming this request's answer. `model` is the public model's name (aliases share
    entries); `namespace` the client key's name, or "" when keys share entries."""
    extra = request.extra
    if extra and not _IGNORED_EXTRA.isdisjoint(extra):
        extra = {k: v for k, v in extra.items() if k not in _IGNORED_EXTRA}
    canonical = dataclasses.replace(
        request,
        model="",
        stream=False,
        include_usage=False,
        user=None,
        extra=extra,
        max_tokens_field="max_tokens",
    )
    head = f"{protocol}\n{endpoint}\n{model}\n{namespace}\n".encode()
    body = orjson.dumps(canonical, default=_default, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(head + body).hexdigest()
