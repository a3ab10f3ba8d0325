"""Gemini API translation below the backend: the canonical request as a `generateContent` body (and what
is refused), whole answers, the SSE stream of response chunks, usage, finish reasons and embeddings. The
wire shapes are the API's (camelCase members, as in its REST reference)."""

from __future__ import annotations

import struct

import orjson
import pytest

from gateway.protocol import anthropic as anthropic_protocol
from gateway.protocol import openai as openai_protocol
from gateway.protocol.canonical import (
    ChatRequest,
    EmbeddingRequest,
    ImagePart,
    Message,
    StreamEnd,
    StreamError,
    StreamStart,
    TextDelta,
    TextPart,
    TokenCount,
    ToolCallDelta,
    ToolCallPart,
    ToolCallStart,
    UpstreamProtocolError,
    Usage,
    UsageEvent,
)
from gateway.protocol.gemini import (
    GeminiRefusal,
    chat_request_to_body,
    count_tokens_body,
    embedding_request_to_body,
    model_path,
)
from gateway.protocol.gemini_response import (
    GeminiBlocked,
    GeminiStreamDecoder,
    finish_from_gemini,
    parse_count_tokens_response,
    parse_embeddings_response,
    parse_generate_response,
)
from gateway.protocol.usage import gemini_usage

USAGE = {
    "promptTokenCount": 120,
    "candidatesTokenCount": 30,
    "cachedContentTokenCount": 100,
    "thoughtsTokenCount": 12,
    "totalTokenCount": 162,
}


def openai(body: dict) -> ChatRequest:
    return openai_protocol.parse_chat_request({"model": "m", **body})


def test_messages_become_contents_with_user_and_model_roles() -> None:
    request = openai(
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "and?"},
                {"role": "system", "content": "answer in French"},
            ],
            "max_tokens": 20,
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": ["END"],
            "seed": 7,
            "user": "u-1",
        }
    )
    assert chat_request_to_body(request) == {
        "contents": [
            {"role": "user", "parts": [{"text": "hi"}]},
            {"role": "model", "parts": [{"text": "hello"}]},
            {"role": "user", "parts": [{"text": "and?"}]},
        ],
        "systemInstruction": {"parts": [{"text": "be brief"}, {"text": "answer in French"}]},
        "generationConfig": {
            "maxOutputTokens": 20,
            "temperature": 0.2,
            "topP": 0.9,
            "stopSequences": ["END"],
            "seed": 7,
        },
    }


def test_tools_calls_and_results_become_function_parts() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    request = openai(
        {
            "messages": [
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"city":"Oslo"}'},
                        },
                        {
                            "id": "c2",
                            "type": "function",
                            "function": {"name": "time", "arguments": "not json"},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
                {"role": "tool", "tool_call_id": "c2", "content": "noon"},
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "weather", "description": "d", "parameters": schema},
                }
            ],
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
        }
    )
    body = chat_request_to_body(request)
    assert body["contents"][1:] == [
        {
            "role": "model",
            "parts": [
                {"functionCall": {"id": "c1", "name": "weather", "args": {"city": "Oslo"}}},
                {"functionCall": {"id": "c2", "name": "time", "args": {"_raw_arguments": "not json"}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"id": "c1", "name": "weather", "response": {"output": "sunny"}}},
                {"functionResponse": {"id": "c2", "name": "time", "response": {"output": "noon"}}},
            ],
        },
    ]
    assert body["tools"] == [
        {"functionDeclarations": [{"name": "weather", "description": "d", "parametersJsonSchema": schema}]}
    ]
    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["weather"]}
    }


@pytest.mark.parametrize(("choice", "mode"), [("auto", "AUTO"), ("required", "ANY"), ("none", "NONE")])
def test_tool_choice_modes(choice: str, mode: str) -> None:
    tool = {"type": "function", "function": {"name": "f"}}
    body = chat_request_to_body(
        openai({"messages": [{"role": "user", "content": "x"}], "tools": [tool], "tool_choice": choice})
    )
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": mode}}
    assert body["tools"] == [{"functionDeclarations": [{"name": "f"}]}]


def test_an_anthropic_tool_error_result_is_an_error_response() -> None:
    request = anthropic_protocol.parse_messages_request(
        {
            "model": "m",
            "max_tokens": 10,
            "messages": [
                {"role": "user", "content": "go"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "run", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": "boom", "is_error": True}
                    ],
                },
            ],
            "top_k": 40,
        }
    )
    body = chat_request_to_body(request)
    assert body["contents"][2]["parts"] == [
        {"functionResponse": {"id": "t1", "name": "run", "response": {"error": "boom"}}}
    ]
    assert body["generationConfig"] == {"maxOutputTokens": 10, "topK": 40}


def test_inline_images_become_inline_data() -> None:
    data = "aGVsbG8="
    request = ChatRequest(
        "m",
        (
            Message(
                "user",
                (
                    ImagePart(data=data, media_type="image/jpeg"),
                    ImagePart(url=f"data:image/webp;base64,{data}"),
                ),
            ),
        ),
    )
    assert chat_request_to_body(request)["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "image/jpeg", "data": data}},
        {"inlineData": {"mimeType": "image/webp", "data": data}},
    ]


def test_json_modes_set_the_response_mime_type_and_schema() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    plain = openai(
        {"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}}
    )
    assert chat_request_to_body(plain)["generationConfig"] == {"responseMimeType": "application/json"}
    typed = openai(
        {
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
            "presence_penalty": 0.5,
            "frequency_penalty": -0.5,
        }
    )
    assert chat_request_to_body(typed)["generationConfig"] == {
        "presencePenalty": 0.5,
        "frequencyPenalty": -0.5,
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
    }


@pytest.mark.parametrize(
    ("request_", "field", "words"),
    [
        (
            ChatRequest("m", (Message("user", (ImagePart(url="https://example.com/a.png"),)),)),
            "messages[0].content[0]",
            "inline",
        ),
        (
            openai(
                {
                    "messages": [{"role": "tool", "tool_call_id": "nowhere", "content": "r"}],
                }
            ),
            "messages[0].content[0]",
            "no matching tool call",
        ),
        (
            openai(
                {
                    "messages": [{"role": "user", "content": "x"}],
                    "tools": [{"type": "function", "function": {"name": "f"}}],
                    "parallel_tool_calls": False,
                }
            ),
            "parallel_tool_calls",
            "one tool call at a time",
        ),
    ],
    ids=["image-url", "orphan-result", "serial-tools"],
)
def test_what_cannot_be_mapped_is_refused_naming_the_field(
    request_: ChatRequest, field: str, words: str
) -> None:
    with pytest.raises(GeminiRefusal) as refusal:
        chat_request_to_body(request_)
    assert refusal.value.field == field
    assert words in str(refusal.value)


def test_model_path() -> None:
    assert model_path("gemini-2.5-flash") == "models/gemini-2.5-flash"
    assert model_path("tunedModels/my-model") == "tunedModels/my-model"


# --- answers ---------------------------------------------------------------------------------------


def test_a_whole_answer_is_read() -> None:
    body = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "thinking...", "thought": True},
                        {"text": "Hello"},
                        {"text": " there"},
                    ],
                },
                "finishReason": "STOP",
                "index": 0,
                "safetyRatings": [],
            }
        ],
        "usageMetadata": USAGE,
        "modelVersion": "gemini-2.5-flash",
        "responseId": "abc",
    }
    reply = parse_generate_response(body)
    assert (reply.id, reply.model, reply.text, reply.finish_reason) == (
        "abc",
        "gemini-2.5-flash",
        "Hello there",
        "stop",
    )
    assert reply.usage == Usage(120, 42, cached_tokens=100, reasoning_tokens=12)


def test_a_function_call_answer_is_a_tool_call() -> None:
    body = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"functionCall": {"name": "weather", "args": {"city": "Oslo"}}}],
                },
                "finishReason": "STOP",
            }
        ]
    }
    reply = parse_generate_response(body)
    (call,) = reply.content
    assert isinstance(call, ToolCallPart)
    assert (call.name, orjson.loads(call.arguments), call.id.startswith("call_")) == (
        "weather",
        {"city": "Oslo"},
        True,
    )
    assert reply.finish_reason == "tool_calls"
    assert reply.usage is None


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "error"),
        ("OTHER", "stop"),
    ],
)
def test_finish_reasons(reason: str, finish: str) -> None:
    assert finish_from_gemini(reason) == finish
    body = {"candidates": [{"finishReason": reason}]}  # a filtered candidate may have no content at all
    assert parse_generate_response(body).finish_reason == finish


def test_a_blocked_prompt_is_refused_with_its_reason() -> None:
    body = {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": {"promptTokenCount": 9}}
    with pytest.raises(GeminiBlocked) as blocked:
        parse_generate_response(body)
    assert blocked.value.reason == "PROHIBITED_CONTENT"
    assert "PROHIBITED_CONTENT" in str(blocked.value)
    assert blocked.value.usage == Usage(9, 0)


@pytest.mark.parametrize("body", [[], {}, {"candidates": [{"content": {"parts": [{"functionCall": {}}]}}]}])
def test_a_malformed_answer_is_a_protocol_error(body: object) -> None:
    with pytest.raises(UpstreamProtocolError):
        parse_generate_response(body)


def test_usage_counts_thoughts_as_output_and_cached_content_as_cached_input() -> None:
    assert gemini_usage(USAGE) == Usage(120, 42, cached_tokens=100, reasoning_tokens=12)
    assert gemini_usage({"promptTokenCount": 5, "toolUsePromptTokenCount": 3}) == Usage(8, 0)
    assert gemini_usage(None) is None


# --- streams ---------------------------------------------------------------------------------------


def chunk(parts: list | None = None, finish: str | None = None, usage: dict | None = None) -> bytes:
    candidate: dict = {"index": 0}
    if parts is not None:
        candidate["content"] = {"role": "model", "parts": parts}
    if finish:
        candidate["finishReason"] = finish
    body: dict = {"candidates": [candidate], "modelVersion": "gemini-2.5-flash", "responseId": "r1"}
    if usage:
        body["usageMetadata"] = usage
    return orjson.dumps(body)


def test_a_stream_of_chunks_becomes_canonical_events() -> None:
    decoder = GeminiStreamDecoder()
    events = decoder.feed_data(
        chunk([{"text": "Hel"}], usage={"promptTokenCount": 4, "candidatesTokenCount": 1})
    )
    events += decoder.feed_data(chunk([{"text": "lo"}, {"text": "hmm", "thought": True}]))
    events += decoder.feed_data(
        chunk([{"text": "!"}], "STOP", {"promptTokenCount": 4, "candidatesTokenCount": 3})
    )
    assert decoder.finish() == [StreamEnd("stop")]
    assert events == [
        StreamStart("r1", "gemini-2.5-flash"),
        TextDelta("Hel"),
        UsageEvent(Usage(4, 1)),
        TextDelta("lo"),
        TextDelta("!"),
        UsageEvent(Usage(4, 3)),
    ]


def test_streamed_function_calls_are_whole_tool_calls() -> None:
    decoder = GeminiStreamDecoder()
    events = decoder.feed_data(
        chunk(
            [{"functionCall": {"id": "f1", "name": "a", "args": {"x": 1}}}, {"functionCall": {"name": "b"}}],
            "STOP",
        )
    )
    assert events[1:3] == [ToolCallStart(0, "f1", "a"), ToolCallDelta(0, '{"x":1}')]
    assert type(events[3]) is ToolCallStart and events[3].index == 1 and events[3].name == "b"
    assert events[4] == ToolCallDelta(1, "{}")
    assert decoder.finish() == [StreamEnd("tool_calls")]


def test_a_stream_without_a_finish_reason_was_cut_short() -> None:
    decoder = GeminiStreamDecoder()
    decoder.feed_data(chunk([{"text": "Hel"}]))
    with pytest.raises(UpstreamProtocolError, match="finishReason"):
        decoder.finish()


def test_a_stream_that_never_started_is_an_error() -> None:
    with pytest.raises(UpstreamProtocolError):
        GeminiStreamDecoder().finish()


def test_a_blocked_prompt_ends_the_stream_with_an_error_naming_the_reason() -> None:
    decoder = GeminiStreamDecoder()
    body = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 6}}
    events = decoder.feed_data(orjson.dumps(body))
    assert events[1] == UsageEvent(Usage(6, 0))
    assert type(events[2]) is StreamError and "SAFETY" in events[2].message
    assert decoder.finish() == []


def test_a_safety_stop_mid_stream_is_a_content_filter_end() -> None:
    decoder = GeminiStreamDecoder()
    decoder.feed_data(chunk([{"text": "Once"}]))
    decoder.feed_data(chunk(None, "SAFETY"))
    assert decoder.finish() == [StreamEnd("content_filter")]


def test_an_error_chunk_ends_the_stream() -> None:
    decoder = GeminiStreamDecoder()
    events = decoder.feed_data(b'{"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}')
    assert events[-1] == StreamError("overloaded", "api_error")


def test_a_chunk_that_is_not_json_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError):
        GeminiStreamDecoder().feed_data(b'{"candidates": [')


# --- embeddings ------------------------------------------------------------------------------------


def test_embedding_inputs_become_batch_requests() -> None:
    body, count = embedding_request_to_body(
        EmbeddingRequest("m", ["a", "b"], dimensions=8), "text-embedding-004"
    )
    assert count == 2
    assert body == {
        "requests": [
            {
                "model": "models/text-embedding-004",
                "content": {"parts": [{"text": t}]},
                "outputDimensionality": 8,
            }
            for t in ("a", "b")
        ]
    }
    assert embedding_request_to_body(EmbeddingRequest("m", "one"), "e")[1] == 1
    with pytest.raises(GeminiRefusal) as refusal:
        embedding_request_to_body(EmbeddingRequest("m", [[1, 2]]), "e")
    assert refusal.value.field == "input"


def test_embeddings_are_read_as_float32_vectors() -> None:
    reply = parse_embeddings_response(
        {"embeddings": [{"values": [0.5, -1.0]}, {"values": [1.0, 2.0]}]}, 2, None
    )
    assert (reply.dimensions, reply.encoding_format, reply.usage) == (2, "float", Usage())
    assert reply.vectors[0] == struct.pack("<2f", 0.5, -1.0)
    with pytest.raises(UpstreamProtocolError):
        parse_embeddings_response({"embeddings": [{"values": [0.5]}]}, 2, None)
    with pytest.raises(UpstreamProtocolError):
        parse_embeddings_response({"oops": 1}, 1, None)


def test_token_counting_sends_the_whole_request_and_reads_total_tokens() -> None:
    request = ChatRequest("m", (Message("user", (TextPart("hi"),)),), system="s")
    assert count_tokens_body(request, "gemini-2.5-flash") == {
        "generateContentRequest": {
            "model": "models/gemini-2.5-flash",
            "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "systemInstruction": {"parts": [{"text": "s"}]},
        }
    }
    assert parse_count_tokens_response({"totalTokens": 31}) == TokenCount(31)
    with pytest.raises(UpstreamProtocolError):
        parse_count_tokens_response({"total": 31})
