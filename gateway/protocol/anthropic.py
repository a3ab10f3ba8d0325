"""Anthropic Messages API ⇄ canonical form: request parsing and validation (messages and count_tokens),
backend request bodies and non-streaming responses. Streaming is in `anthropic_stream`, re-exported here.

Mapping rules (the OpenAI half is in `gateway.protocol.openai`):

* Top-level `system` (a string or text blocks) ⇄ `ChatRequest.system`; a block list is also kept in
  `system_blocks` so its `cache_control` survives. Going out, role "system" messages found mid-conversation
  (OpenAI allows them) are appended to `system`, since Anthropic has nowhere else to put them.
* Roles are only user/assistant. `tool_use` blocks ⇄ `ToolCallPart` (`input` object ⇄ arguments JSON
  text; arguments that are not a JSON object go out as `{"_raw_arguments": text}`, as `input` must be an
  object; ids are rewritten to Anthropic's `[a-zA-Z0-9_-]` alphabet, calls and results alike).
  `tool_result` blocks ⇄ `ToolResultPart` in a user message; canonical "tool" messages become user
  messages.
* Anthropic wants alternating roles, so consecutive messages that map to the same role are merged (a run of
  OpenAI tool results becomes one user message), tool_result blocks are moved to the front of their user
  message (the API rejects text before them), and empty text blocks are dropped (the API rejects them).
* `max_tokens` is required here; a request from an OpenAI client without one gets the caller's
  `default_max_tokens`. `temperature` above Anthropic's maximum of 1 is clamped to 1.
* `stop_sequences` ⇄ `stop`; `metadata.user_id` ⇄ `user`; `tool_choice` `auto`/`any`/`none`/`tool` ⇄
  `auto`/`required`/`none`/`tool`; `disable_parallel_tool_use` ⇄ `parallel_tool_calls` negated.
* `tools[].input_schema` ⇄ `Tool.parameters`; server tools (a `type` other than "custom") are kept raw for
  Anthropic backends only. Image blocks: base64 source ⇄ inline `ImagePart`, url source ⇄ URL.
* Other block types (thinking, redacted_thinking, document, ...) ⇄ `RawPart`; unknown top-level members
  (thinking, top_k, service_tier, ...) ⇄ `extra`. Both are dropped when the backend speaks OpenAI.
* `stop_reason` `end_turn`/`stop_sequence`/`pause_turn` ⇄ `stop` (`stop_sequence` when one matched),
  `max_tokens` ⇄ `length`, `tool_use` ⇄ `tool_calls`, `refusal` ⇄ `content_filter`.
* Usage `input_tokens` + `cache_creation_input_tokens` + `cache_read_input_tokens` ⇄ `prompt_tokens`,
  `cache_read_input_tokens` ⇄ `cached_tokens`, `cache_creation_input_tokens` ⇄ `cache_creation_tokens`,
  `output_tokens` ⇄ `completion_tokens` (`gateway.protocol.usage`).

`MESSAGES` and `COUNT_TOKENS` are how the Anthropic surface writes canonical answers (`ClientEncoding`).
"""

from __future__ import annotations

from gateway.protocol.anthropic_body import count_tokens_request_to_body, messages_request_to_body
from gateway.protocol.anthropic_request import parse_count_tokens_request, parse_messages_request
from gateway.protocol.anthropic_response import (
    encode_count_tokens_response,
    encode_messages_response,
    parse_messages_response,
)
from gateway.protocol.anthropic_stream import (
    AnthropicStreamDecoder,
    AnthropicStreamEncoder,
    stream_error_event,
)
from gateway.protocol.canonical import ChatResponse, TokenCount
from gateway.protocol.encoding import ClientEncoding, whole_reply
from gateway.protocol.usage import anthropic_usage, usage_to_anthropic

__all__ = [
    "COUNT_TOKENS",
    "MESSAGES",
    "AnthropicStreamDecoder",
    "AnthropicStreamEncoder",
    "anthropic_usage",
    "count_tokens_request_to_body",
    "encode_count_tokens_response",
    "encode_messages_response",
    "messages_request_to_body",
    "parse_count_tokens_request",
    "parse_messages_request",
    "parse_messages_response",
    "stream_error_event",
    "usage_to_anthropic",
]


def _stream(model: str, include_usage: bool) -> AnthropicStreamEncoder:
    # Anthropic streams always report usage; `include_usage` is an OpenAI option.
    return AnthropicStreamEncoder(model)


MESSAGES = ClientEncoding(
    reply=whole_reply(ChatResponse, "an Anthropic message", encode_messages_response),
    stream=_stream,
    error_event=stream_error_event,
)
COUNT_TOKENS = ClientEncoding(
    reply=whole_reply(TokenCount, "an Anthropic token count", encode_count_tokens_response),
    stream=_stream,
    error_event=stream_error_event,
)
