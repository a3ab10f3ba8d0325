"""Value mappings shared by the non-streaming and streaming halves of each protocol: finish reasons and
error type names. Usage counts are in `gateway.protocol.usage`."""

from __future__ import annotations

import uuid
from typing import Any

from gateway.protocol.canonical import FinishReason

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

_FROM_BEDROCK: dict[Any, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
    "malformed_model_output": "error",
    "malformed_tool_use": "error",
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


def finish_from_bedrock(value: Any) -> FinishReason:
    """A Converse `stopReason` (an unknown one reads as a plain stop, as for the other protocols)."""
    return _FROM_BEDROCK.get(value, "stop")


def finish_to_anthropic(value: FinishReason | None, stop_sequence: str | None) -> str:
    if value == "stop" or value is None or value == "error":
        return "stop_sequence" if stop_sequence else "end_turn"
    return _TO_ANTHROPIC[value]


def error_type_to_openai(error_type: str) -> str:
    return _OPENAI_ERROR_TYPES.get(error_type, error_type)


def error_type_to_anthropic(error_type: str) -> str:
    return _ANTHROPIC_ERROR_TYPES.get(error_type, error_type)


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]
