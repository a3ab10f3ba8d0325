"""How the OpenAI-compatible vendors differ from OpenAI's API, as `FakeOpenAI(vendor=...)` plays them:
the path their API lives under, whether they want a key, and the request fields they refuse (a 400 in
OpenAI's error shape, as the vendor answers it) or silently ignore.

The fake's own account of each vendor, written from the vendors' documentation (the sources
`gateway.config.providers` cites), not read from the gateway's presets: a test of a preset then checks
the gateway against the vendor, not against itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["VENDORS", "Vendor"]

#: A refusal: (field, check of the body) -> the vendor's message when the check says refused.
Refusal = Callable[[dict[str, Any]], str | None]


def _present(name: str, message: str) -> Refusal:
    return lambda body: message if body.get(name) not in (None, False) else None


def _n_above_one(message: str) -> Refusal:
    return lambda body: message if isinstance(body.get("n"), int) and body["n"] > 1 else None


def _json_schema(message: str) -> Refusal:
    def check(body: dict[str, Any]) -> str | None:
        fmt = body.get("response_format")
        return message if isinstance(fmt, dict) and fmt.get("type") == "json_schema" else None

    return check


@dataclass(frozen=True, slots=True)
class Vendor:
    """One vendor's OpenAI-compatible API."""

    #: The path the API is served under (the vendor's base URL's path).
    prefix: str = "/v1"
    #: False: a local server that takes requests without a key (and is sent none).
    needs_key: bool = True
    #: Field -> the check that refuses it with a 400 naming it.
    refuses: Mapping[str, Refusal] = field(default_factory=dict)
    #: Fields the server accepts and ignores (recorded in `FakeOpenAI.ignored`).
    ignores: frozenset[str] = frozenset()
    #: Endpoints the vendor does not have ("completions", "embeddings"): 404.
    lacks: frozenset[str] = frozenset()


VENDORS: Mapping[str, Vendor] = MappingProxyType(
    {
        # https://console.groq.com/docs/openai
        "groq": Vendor(
            prefix="/openai/v1",
            refuses={
                "n": _n_above_one("'n' : number must be at most 1"),
                "logprobs": _present("logprobs", "'logprobs' : not supported"),
                "top_logprobs": _present("top_logprobs", "'top_logprobs' : not supported"),
                "logit_bias": _present("logit_bias", "'logit_bias' : not supported"),
            },
            lacks=frozenset({"completions"}),
        ),
        "mistral": Vendor(),
        # https://api-docs.deepseek.com/api/create-chat-completion
        "deepseek": Vendor(
            refuses={"response_format": _json_schema("This response_format type is unavailable now")},
            lacks=frozenset({"embeddings"}),
        ),
        "xai": Vendor(),
        "openrouter": Vendor(prefix="/api/v1"),
        "together": Vendor(),
        "fireworks": Vendor(prefix="/inference/v1"),
        # https://docs.ollama.com/api/openai-compatibility: fields it does not list are ignored.
        "ollama": Vendor(needs_key=False, ignores=frozenset({"n", "logit_bias"})),
        "vllm": Vendor(needs_key=False),  # takes top_k besides OpenAI's fields
        "lmstudio": Vendor(needs_key=False),
    }
)
