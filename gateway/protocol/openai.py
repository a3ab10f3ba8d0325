"""OpenAI Chat Completions ⇄ canonical form: request parsing and validation, backend request bodies and
non-streaming responses. Streaming is in `openai_stream`, legacy completions and embeddings in
`openai_legacy`; all of it is re-exported here.

Mapping rules (the Anthropic half is in `gateway.protocol.anthropic`):

* Leading `system`/`developer` messages become `ChatRequest.system` (joined by a blank line); later ones stay
  in place as role "system" messages (an Anthropic backend hoists them into its top-level `system`).
  Going out, `system` becomes one leading `system` message.
* `max_tokens` / `max_completion_tokens` ⇄ `max_tokens`; the spelling is remembered so OpenAI pass-through
  keeps it (reasoning models take only `max_completion_tokens`); other requests go out as `max_tokens`
  unless the caller passes `max_tokens_key`.
* `stop` (a string or ≤4 strings) ⇄ `stop`; `user`, `seed`, `parallel_tool_calls` map one to one;
  `stream_options.include_usage` ⇄ `include_usage`, other `stream_options` members ride in `extra`.
* `tool_choice`: "auto" / "required" / "none" ⇄ the same modes; `{"type": "function", "function":
  {"name"}}` ⇄ mode "tool". Other forms (allowed_tools, custom) are kept in `extra` for OpenAI only.
* An assistant message's `tool_calls` ⇄ `ToolCallPart`s (arguments stay JSON text); a `role: tool` message
  ⇄ a "tool" message holding one `ToolResultPart`. Going out, tool results inside a user message (the
  Anthropic form) become `tool` messages placed before that message's other content. `is_error` and
  images inside a tool result have no OpenAI form and are dropped (the result's text is kept).
* `image_url` parts: `data:...;base64,` URLs ⇄ inline `ImagePart(data, media_type)`; other URLs stay URLs.
* Unknown content part types (input_audio, file, refusal) ⇄ `RawPart`; unknown top-level members ⇄
  `extra`. Both are dropped when the backend speaks Anthropic.
* Finish reasons: `function_call` reads as `tool_calls`, an unknown or missing one as `stop`; canonical
  `error` is written as `stop` (the error itself travels separately). vLLM's `choices[].stop_reason`
  string is read as the matched stop sequence.
* Usage: `prompt_tokens` (every input token), `completion_tokens`, `prompt_tokens_details.cached_tokens` ⇄
  canonical `prompt_tokens`, `completion_tokens`, `cached_tokens` (`gateway.protocol.usage`); cache writes
  have no OpenAI member.

`CHAT`, `COMPLETIONS` and `EMBEDDINGS` are how the OpenAI surface writes canonical answers
(`ClientEncoding`).
"""

from __future__ import annotations

import orjson

from gateway.protocol.canonical import ChatResponse, EmbeddingResponse
from gateway.protocol.encoding import ClientEncoding, not_streamed, whole_reply
from gateway.protocol.openai_legacy import (
    CompletionStreamEncoder,
    completion_request_to_body,
    embedding_request_to_body,
    encode_completion_response,
    encode_embedding_response,
    parse_completion_request,
    parse_embedding_request,
)
from gateway.protocol.openai_request import chat_request_to_body, parse_chat_request
from gateway.protocol.openai_response import encode_chat_response, parse_chat_response
from gateway.protocol.openai_stream import OpenAIStreamDecoder, OpenAIStreamEncoder, stream_error_event
from gateway.protocol.usage import openai_usage, usage_to_openai

__all__ = [
    "CHAT",
    "COMPLETIONS",
    "EMBEDDINGS",
    "CompletionStreamEncoder",
    "OpenAIStreamDecoder",
    "OpenAIStreamEncoder",
    "chat_request_to_body",
    "completion_request_to_body",
    "embedding_request_to_body",
    "encode_chat_response",
    "encode_completion_response",
    "encode_embedding_response",
    "openai_usage",
    "parse_chat_request",
    "parse_chat_response",
    "parse_completion_request",
    "parse_embedding_request",
    "stream_error_event",
    "usage_to_openai",
]


CHAT = ClientEncoding(
    reply=whole_reply(ChatResponse, "an OpenAI chat completion", encode_chat_response),
    stream=lambda model, include_usage: OpenAIStreamEncoder(model, include_usage=include_usage),
    error_event=stream_error_event,
)
COMPLETIONS = ClientEncoding(
    reply=whole_reply(ChatResponse, "an OpenAI text completion", encode_completion_response),
    stream=lambda model, include_usage: CompletionStreamEncoder(model, include_usage=include_usage),
    error_event=stream_error_event,
)
EMBEDDINGS = ClientEncoding(
    reply=whole_reply(
        EmbeddingResponse,
        "an OpenAI embeddings list",
        encode_embedding_response,
        orjson.OPT_SERIALIZE_NUMPY,
    ),
    stream=not_streamed("an OpenAI embeddings list"),
    error_event=stream_error_event,
)
