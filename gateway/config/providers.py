"""Presets of `openai_compatible` backends (`provider: groq`, ...): each vendor's default base URL, the
key variable that switches it on, and the differences from OpenAI's API its own documentation states.

One table, read by the settings (`gateway.config.backends`: base URL, key), the capability defaults
(`gateway.config.capabilities`: what a vendor refuses is a capability it lacks, so routing skips the
target or the client gets 400 naming the field, never a field dropped on the way) and routing (the
refusal names the vendor). A difference is listed only when the vendor's documentation states it;
where it says nothing, the preset keeps the OpenAI-compatible defaults (the comment says so).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["CAPABILITY_FIELDS", "PRESETS", "PROVIDERS", "ProviderPreset", "preset"]


@dataclass(frozen=True, slots=True)
class ProviderPreset:
    """What `provider: <name>` fills in and changes on an `openai_compatible` backend."""

    #: The vendor's name as messages show it ("Groq").
    title: str
    #: Used when the backend sets no `base_url`.
    base_url: str
    #: The vendor's usual key variable, named when the backend is off for want of a key; None: a local
    #: server that needs no key (the backend is on without one).
    key_env: str | None
    #: Capabilities the vendor refuses (`gateway.config.capabilities` names), each with why, in words.
    refuses: Mapping[str, str] = field(default_factory=dict)
    #: Capabilities the vendor has beyond the OpenAI-compatible defaults.
    adds: frozenset[str] = frozenset()
    #: Where the differences come from.
    source: str = ""


#: The request field a capability's refusal names (the OpenAI SDK shows it as the error's `param`).
CAPABILITY_FIELDS: Mapping[str, str] = MappingProxyType(
    {
        "n": "n",
        "logprobs": "logprobs",
        "logit_bias": "logit_bias",
        "json_schema": "response_format",
        "json_object": "response_format",
        "top_k": "top_k",
    }
)

#: Every preset. Usage is read from OpenAI's `usage` object, in streams from the last chunk after
#: `stream_options.include_usage` (which the gateway always sends): no difference is listed for it,
#: since none was found in the vendors' documentation, and an answer without usage is recorded as
#: such (unknown tokens and cost, never a guess).
PRESETS: Mapping[str, ProviderPreset] = MappingProxyType(
    {
        # https://console.groq.com/docs/openai: "will result in a 400 error if supplied: logprobs,
        # logit_bias, top_logprobs, messages[].name; if N is supplied, it must be equal to 1";
        # text completions are not supported.
        "groq": ProviderPreset(
            "Groq",
            "https://api.groq.com/openai/v1",
            "GROQ_API_KEY",
            refuses={
                "n": "Groq accepts only n: 1",
                "logprobs": "Groq refuses logprobs and top_logprobs",
                "logit_bias": "Groq refuses logit_bias",
                "completions": "Groq has no legacy completions endpoint",
            },
            source="https://console.groq.com/docs/openai",
        ),
        # Mistral's chat API differs in names it adds (safe_prompt, random_seed), which reach it as
        # native fields from OpenAI clients; no refusal of an OpenAI field is documented: defaults.
        "mistral": ProviderPreset("Mistral", "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
        # https://api-docs.deepseek.com (Create Chat Completion): response_format takes text or
        # json_object only; the API has no embeddings endpoint.
        "deepseek": ProviderPreset(
            "DeepSeek",
            "https://api.deepseek.com/v1",
            "DEEPSEEK_API_KEY",
            refuses={
                "json_schema": "DeepSeek's response_format takes only text or json_object",
                "embeddings": "DeepSeek has no embeddings endpoint",
            },
            source="https://api-docs.deepseek.com/api/create-chat-completion",
        ),
        # xAI's reasoning models refuse penalties and stop, its other models take them: a per-model
        # difference, so the preset keeps the defaults (override per chain target).
        "xai": ProviderPreset("xAI", "https://api.x.ai/v1", "XAI_API_KEY"),
        # OpenRouter routes to many providers; what a request may carry depends on the model it picks:
        # defaults. `app_url` / `app_title` send its attribution headers (HTTP-Referer, X-Title).
        "openrouter": ProviderPreset(
            "OpenRouter",
            "https://openrouter.ai/api/v1",
            "OPENROUTER_API_KEY",
            source="https://openrouter.ai/docs/app-attribution",
        ),
        # Together and Fireworks document OpenAI compatibility with no field they refuse: defaults.
        "together": ProviderPreset("Together AI", "https://api.together.xyz/v1", "TOGETHER_API_KEY"),
        "fireworks": ProviderPreset(
            "Fireworks AI", "https://api.fireworks.ai/inference/v1", "FIREWORKS_API_KEY"
        ),
        # https://docs.ollama.com/api/openai-compatibility lists the request fields it supports;
        # n and logit_bias are not among them (Ollama ignores what it does not support).
        "ollama": ProviderPreset(
            "Ollama",
            "http://127.0.0.1:11434/v1",
            None,
            refuses={
                "n": "Ollama's OpenAI API does not support n",
                "logit_bias": "Ollama's OpenAI API does not support logit_bias",
            },
            source="https://docs.ollama.com/api/openai-compatibility",
        ),
        # vLLM takes top_k (an extra sampling parameter of its OpenAI server) besides OpenAI's fields.
        "vllm": ProviderPreset(
            "vLLM",
            "http://127.0.0.1:8000/v1",
            None,
            adds=frozenset({"top_k"}),
            source="https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html",
        ),
        # LM Studio documents OpenAI compatibility with no field it refuses: defaults.
        "lmstudio": ProviderPreset("LM Studio", "http://127.0.0.1:1234/v1", None),
    }
)

#: The provider names, in table order (the schema's `provider` enum lists the same).
PROVIDERS: tuple[str, ...] = tuple(PRESETS)


def preset(provider: str | None) -> ProviderPreset | None:
    """The preset of `provider`, or None when none is named."""
    return PRESETS.get(provider) if provider else None
