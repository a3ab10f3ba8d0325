"""Token usage: one parser and one writer per protocol, used on every path (pass-through and translated,
streamed and whole), so the audit log, metrics and cost read the same numbers whatever the route.

Canonical `Usage.prompt_tokens` counts every input token; `cached_tokens` (read from the prompt cache)
and `cache_creation_tokens` (written to it) are subsets of it.

* OpenAI: `prompt_tokens` already counts every input token; cache reads are
  `prompt_tokens_details.cached_tokens`. OpenAI reports no cache writes. Reasoning tokens are
  `completion_tokens_details.reasoning_tokens`, counted in `completion_tokens`.
* OpenAI Responses API: `input_tokens` counts every input token; cache reads are
  `input_tokens_details.cached_tokens`, writes `input_tokens_details.cache_write_tokens`; reasoning
  tokens are `output_tokens_details.reasoning_tokens` (part of `output_tokens`). A stream reports usage
  once, in its final `response.completed` (or `response.incomplete` / `response.failed`) event.
* Anthropic: thinking is counted in `output_tokens`, with no member of its own (reasoning_tokens 0).
  `input_tokens` counts only the tokens neither read from nor written to the cache, so
  prompt = `input_tokens` + `cache_read_input_tokens` + `cache_creation_input_tokens`. A stream reports
  the input counts in `message_start` and the output count in `message_delta` (which newer API versions
  also give updated input counts): each report is merged over the previous one, member by member.
* Gemini (`usageMetadata`): `promptTokenCount` already counts every input token (the cached content
  included), cache reads are `cachedContentTokenCount`; tokens the model spent thinking
  (`thoughtsTokenCount`) are billed as output, so output = `candidatesTokenCount` + `thoughtsTokenCount`;
  input a built-in tool's prompt added (`toolUsePromptTokenCount`) is billed as input. The thoughts are
  the reasoning tokens. Gemini reports no
  cache writes. A stream repeats the cumulative counts in every chunk: the last one wins.
* Bedrock (Converse): as Anthropic's, `inputTokens` counts only the tokens neither read from nor
  written to the cache (`totalTokens` = input + output + `cacheReadInputTokens` +
  `cacheWriteInputTokens`), so prompt = the three input counts summed. A stream reports usage once,
  in its `metadata` event.
"""

from __future__ import annotations

from typing import Any

from gateway.protocol.canonical import Usage

__all__ = [
    "anthropic_usage",
    "bedrock_usage",
    "embedding_usage_to_openai",
    "gemini_usage",
    "openai_usage",
    "responses_usage",
    "usage_to_anthropic",
    "usage_to_openai",
    "usage_to_responses",
]


def _int(value: Any) -> int:
    return value if type(value) is int else 0


def openai_usage(usage: Any) -> Usage | None:
    """An OpenAI `usage` object as canonical Usage; None when it is absent (`null` in a stream chunk)."""
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    details = usage.get("completion_tokens_details")
    reasoning = _int(details.get("reasoning_tokens")) if isinstance(details, dict) else 0
    return Usage(
        _int(usage.get("prompt_tokens")),
        _int(usage.get("completion_tokens")),
        cached,
        reasoning_tokens=reasoning,
    )


def responses_usage(usage: Any) -> Usage | None:
    """An OpenAI Responses API `usage` object as canonical Usage; None when it is absent."""
    if not isinstance(usage, dict):
        return None
    details = usage.get("input_tokens_details")
    if not isinstance(details, dict):
        details = {}
    output = usage.get("output_tokens_details")
    return Usage(
        _int(usage.get("input_tokens")),
        _int(usage.get("output_tokens")),
        _int(details.get("cached_tokens")),
        _int(details.get("cache_write_tokens")),
        reasoning_tokens=_int(output.get("reasoning_tokens")) if isinstance(output, dict) else 0,
    )


def anthropic_usage(usage: Any, previous: Usage | None = None) -> Usage | None:
    """An Anthropic `usage` object as canonical Usage. In a stream, pass the Usage read so far as
    `previous`: members this report lacks keep their earlier value. Returns `previous` when `usage` is
    not an object."""
    if not isinstance(usage, dict):
        return previous
    if previous is None:
        plain = read = written = output = 0
    else:
        read, written, output = (
            previous.cached_tokens,
            previous.cache_creation_tokens,
            previous.completion_tokens,
        )
        plain = previous.prompt_tokens - read - written
    value = usage.get("input_tokens")
    if type(value) is int:
        plain = value
    value = usage.get("cache_read_input_tokens")
    if type(value) is int:
        read = value
    value = usage.get("cache_creation_input_tokens")
    if type(value) is int:
        written = value
    value = usage.get("output_tokens")
    if type(value) is int:
        output = value
    reasoning = previous.reasoning_tokens if previous is not None else 0
    return Usage(plain + read + written, output, read, written, reasoning)


def gemini_usage(usage: Any) -> Usage | None:
    """A Gemini `usageMetadata` object as canonical Usage; None when it is absent."""
    if not isinstance(usage, dict):
        return None
    prompt = _int(usage.get("promptTokenCount")) + _int(usage.get("toolUsePromptTokenCount"))
    thoughts = _int(usage.get("thoughtsTokenCount"))
    output = _int(usage.get("candidatesTokenCount")) + thoughts
    return Usage(prompt, output, _int(usage.get("cachedContentTokenCount")), reasoning_tokens=thoughts)


def bedrock_usage(usage: Any) -> Usage | None:
    """A Bedrock `usage` (TokenUsage) object as canonical Usage; None when it is absent."""
    if not isinstance(usage, dict):
        return None
    read = _int(usage.get("cacheReadInputTokens"))
    written = _int(usage.get("cacheWriteInputTokens"))
    prompt = _int(usage.get("inputTokens")) + read + written
    return Usage(prompt, _int(usage.get("outputTokens")), read, written)


def usage_to_openai(usage: Usage) -> dict[str, Any]:
    """The `usage` object for an OpenAI client. Cache writes have no OpenAI member; they stay counted in
    `prompt_tokens`, as every input token does."""
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }
    if usage.cached_tokens:
        out["prompt_tokens_details"] = {"cached_tokens": usage.cached_tokens}
    if usage.reasoning_tokens:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return out


def usage_to_responses(usage: Usage) -> dict[str, Any]:
    """The `usage` object for a Responses API client, every member present as OpenAI writes it.
    Reasoning tokens: those the canonical usage counts, when it counts them (else 0)."""
    reasoning = getattr(usage, "reasoning_tokens", 0) or 0
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_creation_tokens,
        },
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def embedding_usage_to_openai(usage: Usage) -> dict[str, Any]:
    """The `usage` object of an OpenAI embeddings answer: input tokens only, as OpenAI writes it (no
    `completion_tokens`); `openai_usage` reads it back as the same Usage."""
    return {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens}


def usage_to_anthropic(usage: Usage) -> dict[str, Any]:
    """The `usage` object for an Anthropic client: `input_tokens` is what was neither read from nor written
    to the cache."""
    out: dict[str, Any] = {
        "input_tokens": max(usage.prompt_tokens - usage.cached_tokens - usage.cache_creation_tokens, 0),
        "output_tokens": usage.completion_tokens,
    }
    if usage.cache_creation_tokens:
        out["cache_creation_input_tokens"] = usage.cache_creation_tokens
    if usage.cached_tokens:
        out["cache_read_input_tokens"] = usage.cached_tokens
    return out
