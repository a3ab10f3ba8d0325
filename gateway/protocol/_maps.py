"""Value mappings shared by the non-streaming and streaming halves of each protocol: finish reasons, usage
counts and error type names."""

from __future__ import annotations

import uuid
from typing import Any

from gateway.protocol.canonical import FinishReason, Usage

_FROM_OPENAI: dict[Any, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "error": "error",
}

_FROM_ANTHROPIC: dict[Any, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    # A server-tool loop paused; the turn is over from the client's point of view.
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

_TO_ANTHROPIC = {"length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}

# Error type names each SDK knows; a foreign name is translated to the nearest one.
_OPENAI_ERROR_TYPES = {
    "overloaded_error": "server_error",
    "api_error": "server_error",
    "authentication_error": "invalid_request_error",
    "permission_error": "invalid_request_error",
    "not_found_error": "invalid_request_error",
    "request_too_large": "invalid_request_error",
    "timeout_error": "timeout",
}
_ANTHROPIC_ERROR_TYPES = {
    "server_error": "api_error",
    "timeout": "timeout_error",
    "insufficient_quota": "rate_limit_error",
}


def finish_from_openai(value: Any) -> FinishReason:
    return _FROM_OPENAI.get(value, "stop")


def finish_to_openai(value: FinishReason | None) -> str:
    # OpenAI has no "error" finish reason; the error itself is reported separately.
    return "stop" if value is None or value == "error" else value


def finish_from_anthropic(value: Any) -> FinishReason:
    return _FROM_ANTHROPIC.get(value, "stop")


def finish_to_anthropic(value: FinishReason | None, stop_sequence: str | None) -> str:
    if value == "stop" or value is None or value == "error":
        return "stop_sequence" if stop_sequence else "end_turn"
    return _TO_ANTHROPIC[value]


def _int(value: Any) -> int:
    return value if type(value) is int else 0


def usage_from_openai(usage: Any) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return Usage(_int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens")), cached)


def usage_to_openai(usage: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }
    if usage.cached_tokens:
        out["prompt_tokens_details"] = {"cached_tokens": usage.cached_tokens}
    return out


def usage_from_anthropic(usage: Any) -> Usage | None:
    """Anthropic counts cache reads and writes apart from `input_tokens`; `prompt_tokens` sums all three."""
    if not isinstance(usage, dict):
        return None
    read = _int(usage.get("cache_read_input_tokens"))
    prompt = _int(usage.get("input_tokens")) + _int(usage.get("cache_creation_input_tokens")) + read
    return Usage(prompt, _int(usage.get("output_tokens")), read)


def usage_to_anthropic(usage: Usage) -> dict[str, Any]:
    # Cache writes are not kept apart canonically, so they come back counted in input_tokens.
    out: dict[str, Any] = {
        "input_tokens": max(usage.prompt_tokens - usage.cached_tokens, 0),
        "output_tokens": usage.completion_tokens,
    }
    if usage.cached_tokens:
        out["cache_read_input_tokens"] = usage.cached_tokens
    return out


def error_type_to_openai(error_type: str) -> str:
    return _OPENAI_ERROR_TYPES.get(error_type, error_type)


def error_type_to_anthropic(error_type: str) -> str:
    return _ANTHROPIC_ERROR_TYPES.get(error_type, error_type)


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]
