"""Every top-level request field of the client protocols, and what the gateway does with it.

A request field is honoured or refused, never silently dropped. Each field has one class:

* `canonical`: parsed into the canonical form, which every backend type honours;
* `capability:<name>`: honoured only by targets with that capability (`gateway.config.capabilities`);
  a request using it skips the others;
* `native`: meaningful only to a backend speaking the client's protocol, which gets it as sent; any
  other backend is skipped (a field not in the table is native too);
* `ignored`: has no effect on the answer whichever backend serves it, so no backend is refused for it
  (the reason says why); a backend speaking the client's protocol still gets it as sent.

Content parts the canonical form does not model (`RawPart`) and provider built-in tools are native as
well. Plain data; `gateway.protocol.requirements` reads it, docs/fields.md is written from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

__all__ = [
    "ANTHROPIC_BLOCKS",
    "ANTHROPIC_COUNT_TOKENS",
    "ANTHROPIC_MESSAGES",
    "FIELD_TABLES",
    "INERT_VALUES",
    "OPENAI_CHAT",
    "OPENAI_COMPLETIONS",
    "OPENAI_EMBEDDINGS",
    "OPENAI_PARTS",
    "RESPONSES",
    "RESPONSES_ITEMS",
    "FieldRule",
    "markdown_tables",
]

Kind = Literal["canonical", "capability", "native", "ignored"]


@dataclass(frozen=True, slots=True)
class FieldRule:
    kind: Kind
    #: For `capability`: the capability's name.
    capability: str | None = None
    #: What the gateway does with the field, in words (for `ignored`: why it may be ignored).
    note: str = ""

    @property
    def label(self) -> str:
        """`canonical`, `capability:<name>`, `native` or `ignored`."""
        return f"capability:{self.capability}" if self.kind == "capability" else self.kind


def _canonical(note: str = "") -> FieldRule:
    return FieldRule("canonical", note=note)


def _capability(name: str, note: str = "") -> FieldRule:
    return FieldRule("capability", name, note)


def _native(note: str = "") -> FieldRule:
    return FieldRule("native", note=note)


def _ignored(reason: str) -> FieldRule:
    return FieldRule("ignored", note=reason)


_SEED = _ignored(
    "best-effort determinism by OpenAI's own definition; OpenAI-protocol and local backends take it, "
    "the Anthropic API has no seed and answers without it"
)
_USER = _canonical("end-user id; Anthropic backends get it as metadata.user_id")
_STREAM_OPTIONS = _canonical(
    "include_usage is honoured everywhere; other members only by backends speaking OpenAI"
)

#: `/v1/chat/completions` (openai.types.chat.completion_create_params).
OPENAI_CHAT: Mapping[str, FieldRule] = MappingProxyType(
    {
        "model": _canonical("the public model name; each target gets its own upstream model"),
        "messages": _canonical("text, images, tool calls and results; other part types are native"),
        "max_completion_tokens": _canonical(),
        "max_tokens": _canonical(),
        "temperature": _canonical(
            "Anthropic and Bedrock backends take at most 1, so higher values are sent as 1"
        ),
        "top_p": _canonical(),
        "stop": _canonical(),
        "stream": _canonical(),
        "stream_options": _STREAM_OPTIONS,
        "tools": _capability("tools", "function tools; built-in (non-function) tools are native"),
        "tool_choice": _canonical("auto, required, none or one function; allowed_tools/custom are native"),
        "parallel_tool_calls": _canonical("Anthropic backends get disable_parallel_tool_use"),
        "seed": _SEED,
        "user": _USER,
        "n": _capability("n", "more than one choice (n > 1)"),
        "logprobs": _capability("logprobs", "when true"),
        "top_logprobs": _capability("logprobs", "when above 0"),
        "logit_bias": _capability("logit_bias", "when not empty"),
        "presence_penalty": _capability("penalties", "when not 0"),
        "frequency_penalty": _capability("penalties", "when not 0"),
        "response_format": _capability(
            "json_object", "type json_object needs json_object, json_schema needs json_schema; text is plain"
        ),
        "store": _native("store: true asks OpenAI to keep the completion; false is plain"),
        "metadata": _ignored(
            "tags for OpenAI's stored completions (store: true, which is native); no effect on the answer"
        ),
        "service_tier": _native(),
        "prediction": _native(),
        "audio": _native(),
        "modalities": _native('["text"] is plain'),
        "reasoning_effort": _capability(
            "reasoning",
            "low, medium and high map to an Anthropic thinking budget (docs/reasoning.md); none is plain; "
            "other values (minimal, xhigh...) are native",
        ),
        "web_search_options": _native(),
        "verbosity": _native(),
        "prompt_cache_key": _native(),
        "prompt_cache_retention": _native(),
        "prompt_cache_options": _native(),
        "safety_identifier": _native(),
        "moderation": _native(),
        "function_call": _native("deprecated functions API"),
        "functions": _native("deprecated functions API"),
    }
)

#: `/v1/completions` (openai.types.completion_create_params). Only OpenAI-protocol and local backends
#: have the `completions` capability.
OPENAI_COMPLETIONS: Mapping[str, FieldRule] = MappingProxyType(
    {
        "model": _canonical(),
        "prompt": _canonical("local models take one prompt per request"),
        "max_tokens": _canonical(),
        "temperature": _canonical(),
        "top_p": _canonical(),
        "stop": _canonical(),
        "stream": _canonical(),
        "stream_options": _STREAM_OPTIONS,
        "seed": _SEED,
        "user": _USER,
        "n": _capability("n", "more than one choice (n > 1)"),
        "logprobs": _capability("logprobs", "an integer here: set and not null"),
        "logit_bias": _capability("logit_bias", "when not empty"),
        "presence_penalty": _capability("penalties", "when not 0"),
        "frequency_penalty": _capability("penalties", "when not 0"),
        "best_of": _native("best_of above 1; 1 is plain"),
        "echo": _native("echo: true; false is plain"),
        "suffix": _native(),
    }
)

#: `/v1/embeddings` (openai.types.embedding_create_params).
OPENAI_EMBEDDINGS: Mapping[str, FieldRule] = MappingProxyType(
    {
        "model": _canonical(),
        "input": _canonical(),
        "dimensions": _canonical("a local model refuses any size but its own (400)"),
        "encoding_format": _canonical(),
        "user": _canonical(),
    }
)

_CACHE_CONTROL = _ignored(
    "a hint for Anthropic's prompt cache; other backends cache prompts automatically or not at all, "
    "and the answer is the same"
)

#: `/v1/messages` (anthropic.types.message_create_params, and the beta parameters).
ANTHROPIC_MESSAGES: Mapping[str, FieldRule] = MappingProxyType(
    {
        "model": _canonical("the public model name; each target gets its own upstream model"),
        "messages": _canonical("text, images, tool use and results; other block types are native"),
        "system": _canonical(),
        "max_tokens": _canonical(),
        "temperature": _canonical(),
        "top_p": _canonical(),
        "stop_sequences": _canonical(),
        "stream": _canonical(),
        "tools": _capability("tools", "custom tools; server tools (web_search...) are native"),
        "tool_choice": _canonical("disable_parallel_tool_use becomes OpenAI's parallel_tool_calls"),
        "metadata": _canonical("metadata.user_id is the end-user id (OpenAI's user)"),
        "top_k": _capability("top_k"),
        "cache_control": _CACHE_CONTROL,
        "thinking": _capability(
            "reasoning",
            "type enabled maps to an OpenAI reasoning_effort (docs/reasoning.md); disabled is plain; "
            "adaptive is native",
        ),
        "container": _native(),
        "mcp_servers": _native(),
        "service_tier": _native(),
        "context_management": _native(),
        "output_config": _native("structured output and effort, Anthropic's form"),
        "output_format": _native("structured output, Anthropic's form"),
        "inference_geo": _native(),
        "speed": _native(),
        "diagnostics": _native(),
        "user_profile_id": _native(),
        "workspace_id": _native(),
        "billing_policy": _native(),
        "compaction": _native(),
        "fallback_credit_token": _native(),
        "fallbacks": _native(),
        "thread": _native(),
    }
)

_COUNT_FIELDS = (
    "model",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "cache_control",
    "thinking",
    "mcp_servers",
    "context_management",
    "output_config",
    "output_format",
    "speed",
    "user_profile_id",
    "workspace_id",
    "billing_policy",
    "compaction",
)

#: `/v1/messages/count_tokens` (anthropic.types.message_count_tokens_params): counts as a chat request.
ANTHROPIC_COUNT_TOKENS: Mapping[str, FieldRule] = MappingProxyType(
    {name: ANTHROPIC_MESSAGES[name] for name in _COUNT_FIELDS}
)

#: `/v1/responses` (openai.types.responses.response_create_params).
RESPONSES: Mapping[str, FieldRule] = MappingProxyType(
    {
        "model": _canonical("the public model name; each target gets its own upstream model"),
        "input": _canonical(
            "a string or items: messages, function_call, function_call_output; others native"
        ),
        "instructions": _canonical("the system prompt"),
        "max_output_tokens": _canonical(),
        "temperature": _canonical(
            "Anthropic and Bedrock backends take at most 1, so higher values are sent as 1"
        ),
        "top_p": _canonical(),
        "stream": _canonical(),
        "stream_options": _ignored("include_obfuscation only pads the stream's events"),
        "tools": _capability(
            "tools", "function tools; built-in tools (web_search, file_search...) are native"
        ),
        "tool_choice": _canonical("auto, required, none or one function; other forms are native"),
        "parallel_tool_calls": _canonical("Anthropic backends get disable_parallel_tool_use"),
        "text": _capability(
            "json_schema",
            "format json_schema needs json_schema, json_object needs json_object, text is plain; "
            "verbosity is native",
        ),
        "user": _USER,
        "metadata": _ignored("tags kept with a stored response; echoed back, no effect on the answer"),
        "store": _native("false is plain (the gateway stores nothing); true: OpenAI keeps the response"),
        "previous_response_id": _native("state kept by OpenAI"),
        "conversation": _native("state kept by OpenAI"),
        "reasoning": _capability(
            "reasoning",
            "effort low, medium and high map to an Anthropic thinking budget (docs/reasoning.md); none "
            "is plain; summary is accepted; other values are native",
        ),
        "include": _native("[] is plain"),
        "background": _native("false is plain"),
        "prompt": _native("a prompt template stored at OpenAI"),
        "truncation": _native('"disabled" is plain'),
        "service_tier": _native(),
        "top_logprobs": _native(),
        "max_tool_calls": _native(),
        "safety_identifier": _ignored("an end-user id for OpenAI's abuse checks; no effect on the answer"),
        "prompt_cache_key": _ignored("a hint for OpenAI's prompt cache; no effect on the answer"),
        "prompt_cache_retention": _native(),
        "prompt_cache_options": _native(),
        "context_management": _native(),
        "background_options": _native(),
        "access_programs": _native(),
        "image": _native(),
        "moderation": _native(),
    }
)

#: Responses API input item types (`input[].type`); any other type is native.
RESPONSES_ITEMS: Mapping[str, FieldRule] = MappingProxyType(
    {
        "message": _canonical(
            "input_text/output_text parts; input_image by URL or data URL (capability images)"
        ),
        "function_call": _capability("tools"),
        "function_call_output": _capability("tools", "a string or input_text parts"),
        "reasoning": _native(
            "one the gateway wrote (encrypted_content gw1:...) carries an Anthropic thinking block back "
            "to an Anthropic backend (docs/reasoning.md)"
        ),
        "item_reference": _native(),
    }
)

#: OpenAI user/assistant content part types; any other type is native.
OPENAI_PARTS: Mapping[str, FieldRule] = MappingProxyType(
    {
        "text": _canonical(),
        "image_url": _capability("images"),
        "input_audio": _native(),
        "file": _native(),
        "refusal": _native("an assistant's refusal part"),
    }
)

#: Anthropic content block types; any other type is native.
ANTHROPIC_BLOCKS: Mapping[str, FieldRule] = MappingProxyType(
    {
        "text": _canonical(),
        "image": _capability("images", "base64 or url sources; a Files API source is native"),
        "tool_use": _capability("tools"),
        "tool_result": _capability("tools"),
        "document": _native(),
        "search_result": _native(),
        "thinking": _native(
            "an assistant's thinking, sent back verbatim (signature intact); OpenAI clients send it as "
            "the message's thinking_blocks"
        ),
        "redacted_thinking": _native("as thinking"),
        "server_tool_use": _native(),
        "web_search_tool_result": _native(),
        "web_fetch_tool_result": _native(),
        "code_execution_tool_result": _native(),
        "bash_code_execution_tool_result": _native(),
        "text_editor_code_execution_tool_result": _native(),
        "tool_search_tool_result": _native(),
        "container_upload": _native(),
        "mcp_tool_use": _native(),
        "mcp_tool_result": _native(),
    }
)

#: The request tables by (client protocol, endpoint).
FIELD_TABLES: Mapping[tuple[str, str], Mapping[str, FieldRule]] = MappingProxyType(
    {
        ("openai", "chat"): OPENAI_CHAT,
        ("openai", "completions"): OPENAI_COMPLETIONS,
        ("openai", "embeddings"): OPENAI_EMBEDDINGS,
        ("anthropic", "chat"): ANTHROPIC_MESSAGES,
        ("responses", "chat"): RESPONSES,
        ("anthropic", "count_tokens"): ANTHROPIC_COUNT_TOKENS,
    }
)

#: Values of native fields that ask for nothing beyond the plain request (so no backend is refused).
INERT_VALUES: Mapping[str, tuple[Any, ...]] = MappingProxyType(
    {"store": (False,), "modalities": (["text"],), "best_of": (1,), "echo": (False,)}
)


_TITLES = (
    ("OpenAI chat completions: `POST /v1/chat/completions`", OPENAI_CHAT),
    ("OpenAI completions (legacy): `POST /v1/completions`", OPENAI_COMPLETIONS),
    ("OpenAI embeddings: `POST /v1/embeddings`", OPENAI_EMBEDDINGS),
    ("OpenAI Responses API: `POST /v1/responses`", RESPONSES),
    ("Anthropic messages: `POST /v1/messages`", ANTHROPIC_MESSAGES),
    ("Anthropic token counting: `POST /v1/messages/count_tokens`", ANTHROPIC_COUNT_TOKENS),
    ("OpenAI content part types (`messages[].content[].type`)", OPENAI_PARTS),
    ("Anthropic content block types (`messages[].content[].type`)", ANTHROPIC_BLOCKS),
    ("OpenAI Responses API input item types (`input[].type`)", RESPONSES_ITEMS),
)


def markdown_tables() -> str:
    """The tables of docs/fields.md (a test keeps the file and this module in step)."""
    out: list[str] = []
    for title, table in _TITLES:
        out += [f"### {title}", "", "| Field | Class | Notes |", "|---|---|---|"]
        out += [f"| `{name}` | {rule.label} | {rule.note} |" for name, rule in table.items()]
        out.append("")
    return "\n".join(out)
