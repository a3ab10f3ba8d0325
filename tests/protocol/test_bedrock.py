"""Canonical form ⇄ Bedrock Converse: the body a `bedrock` backend sends (checked against the API
model botocore ships, as the service checks it), what cannot be expressed refused naming the field,
the answer and the stream read back, and usage with the prompt cache."""

from __future__ import annotations

import struct
from typing import Any

import orjson
import pytest

from gateway.protocol import anthropic as anthropic_protocol
from gateway.protocol import openai as openai_protocol
from gateway.protocol.bedrock import (
    Untranslatable,
    converse_request_to_body,
    count_tokens_request_to_body,
    parse_converse_response,
    parse_count_tokens_response,
    stop_sequence_of,
)
from gateway.protocol.bedrock_embeddings import parse_titan_response, titan_request_bodies
from gateway.protocol.bedrock_stream import BedrockStreamDecoder
from gateway.protocol.canonical import (
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
from gateway.protocol.openai_legacy import parse_embedding_request
from gateway.protocol.usage import bedrock_usage
from gateway.testing.aws_shapes import ShapeError, check_input

PNG = "iVBORw0KGgo="
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def from_openai(**body: Any) -> dict[str, Any]:
    request = openai_protocol.parse_chat_request({"model": "m", **body})
    converse = converse_request_to_body(request)
    check_input("bedrock-runtime", "Converse", converse)  # what the service would accept
    return converse


def from_anthropic(**body: Any) -> dict[str, Any]:
    request = anthropic_protocol.parse_messages_request({"model": "m", "max_tokens": 64, **body})
    converse = converse_request_to_body(request)
    check_input("bedrock-runtime", "ConverseStream", converse)
    return converse


def test_an_openai_conversation_with_tools_maps_to_converse() -> None:
    body = from_openai(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call:1/x",
                        "type": "function",
                        "function": {"name": "w", "arguments": '{"city":"Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call:1/x", "content": "cold"},
            {"role": "user", "content": "And tomorrow?"},
        ],
        tools=[
            {"type": "function", "function": {"name": "w", "description": "Weather", "parameters": WEATHER}}
        ],
        tool_choice={"type": "function", "function": {"name": "w"}},
        max_tokens=50,
        temperature=1.5,
        top_p=0.9,
        stop=["END"],
        user="alice@example.com",
    )
    assert body["system"] == [{"text": "Be brief."}]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][1]["content"] == [
        {"toolUse": {"toolUseId": "call:1_x", "name": "w", "input": {"city": "Oslo"}}}
    ]
    # The tool result and the next user turn are one user message, as the roles must alternate.
    assert body["messages"][2]["content"] == [
        {"toolResult": {"toolUseId": "call:1_x", "content": [{"text": "cold"}]}},
        {"text": "And tomorrow?"},
    ]
    assert body["inferenceConfig"] == {
        "maxTokens": 50,
        "temperature": 1.0,
        "topP": 0.9,
        "stopSequences": ["END"],
    }
    assert body["toolConfig"] == {
        "tools": [{"toolSpec": {"name": "w", "inputSchema": {"json": WEATHER}, "description": "Weather"}}],
        "toolChoice": {"tool": {"name": "w"}},
    }
    assert body["requestMetadata"] == {"user": "alice@example.com"}


def test_anthropic_cache_control_becomes_cache_points_and_images_go_inline() -> None:
    ephemeral = {"type": "ephemeral"}
    body = from_anthropic(
        system=[{"type": "text", "text": "Long rules.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                    {"type": "text", "text": "What is it?", "cache_control": ephemeral},
                ],
            }
        ],
        tools=[{"name": "w", "input_schema": WEATHER, "cache_control": ephemeral}],
        tool_choice={"type": "any"},
    )
    assert body["system"] == [{"text": "Long rules."}, {"cachePoint": {"type": "default", "ttl": "1h"}}]
    assert body["messages"][0]["content"] == [
        {"image": {"format": "png", "source": {"bytes": PNG}}},
        {"text": "What is it?"},
        {"cachePoint": {"type": "default"}},
    ]
    assert body["toolConfig"]["tools"][1] == {"cachePoint": {"type": "default"}}
    assert body["toolConfig"]["toolChoice"] == {"any": {}}


def test_an_error_tool_result_with_an_image_keeps_both() -> None:
    body = from_anthropic(
        messages=[
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "w", "input": {}}]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "is_error": True,
                        "content": [
                            {"type": "text", "text": "failed"},
                            {
                                "type": "image",
                                "source": {"type": "base64", "media_type": "image/jpeg", "data": PNG},
                            },
                        ],
                    }
                ],
            },
        ],
        tools=[{"name": "w", "input_schema": WEATHER}],
    )
    assert body["messages"][2]["content"][0]["toolResult"] == {
        "toolUseId": "t1",
        "content": [{"text": "failed"}, {"image": {"format": "jpeg", "source": {"bytes": PNG}}}],
        "status": "error",
    }


def test_tool_choice_none_sends_no_tools_while_the_conversation_has_no_tool_calls() -> None:
    body = from_openai(
        messages=[{"role": "user", "content": "hi"}],
        tools=[{"type": "function", "function": {"name": "w", "parameters": WEATHER}}],
        tool_choice="none",
    )
    assert "toolConfig" not in body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
                    }
                ]
            },
            "messages[0]",
        ),
        ({"messages": [{"role": "user", "content": "hi"}], "user": "name with ümlaut"}, "user"),
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "c", "type": "function", "function": {"name": "w", "arguments": "{}"}}
                        ],
                    },
                    {"role": "tool", "tool_call_id": "c", "content": "x"},
                ],
                "tools": [{"type": "function", "function": {"name": "w", "parameters": WEATHER}}],
                "tool_choice": "none",
            },
            "tool_choice",
        ),
    ],
    ids=["image-url", "user-alphabet", "tool-choice-none-with-calls"],
)
def test_what_converse_cannot_express_is_refused_naming_the_field(body: dict[str, Any], field: str) -> None:
    request = openai_protocol.parse_chat_request({"model": "m", **body})
    with pytest.raises(Untranslatable) as refused:
        converse_request_to_body(request)
    assert refused.value.field == field


def test_the_api_model_check_catches_a_body_the_service_would_refuse() -> None:
    with pytest.raises(ShapeError, match=r"messages\.0\.role"):
        check_input("bedrock-runtime", "Converse", {"messages": [{"role": "system", "content": []}]})
    with pytest.raises(ShapeError, match="extraneous key"):
        check_input("bedrock-runtime", "Converse", {"messages": [], "max_tokens": 5})


def answer(content: list[dict[str, Any]], reason: str, **usage: int) -> dict[str, Any]:
    counts = {"inputTokens": 10, "outputTokens": 4, "totalTokens": 14, **usage}
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": reason,
        "usage": counts,
        "metrics": {"latencyMs": 5},
    }


def test_an_answer_reads_back_with_its_tool_calls_and_cache_usage() -> None:
    body = answer(
        [
            {"text": "Calling."},
            {"toolUse": {"toolUseId": "tooluse_1", "name": "w", "input": {"city": "Oslo"}}},
            {"toolUse": {"toolUseId": "tooluse_2", "name": "w", "input": {"city": "Rome"}}},
        ],
        "tool_use",
        cacheReadInputTokens=100,
        cacheWriteInputTokens=20,
    )
    response = parse_converse_response(body, response_id="req-1")
    assert response.id == "req-1" and response.finish_reason == "tool_calls"
    assert response.content == (
        TextPart("Calling."),
        ToolCallPart("tooluse_1", "w", '{"city":"Oslo"}'),
        ToolCallPart("tooluse_2", "w", '{"city":"Rome"}'),
    )
    # inputTokens excludes the cache: the prompt is all three input counts.
    assert response.usage == Usage(130, 4, cached_tokens=100, cache_creation_tokens=20)
    single = parse_converse_response(body, single_tool_call=True)
    assert [type(p) for p in single.content] == [TextPart, ToolCallPart]


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
        ("malformed_tool_use", "error"),
    ],
)
def test_stop_reasons_map_to_finish_reasons(reason: str, finish: str) -> None:
    assert parse_converse_response(answer([{"text": "x"}], reason)).finish_reason == finish


def test_the_stop_sequence_is_known_only_when_the_request_gave_one() -> None:
    hello = [{"role": "user", "content": "hi"}]
    one = openai_protocol.parse_chat_request({"model": "m", "messages": hello, "stop": ["END"]})
    two = openai_protocol.parse_chat_request({"model": "m", "messages": hello, "stop": ["A", "B"]})
    assert stop_sequence_of(one) == "END" and stop_sequence_of(two) is None
    body = answer([{"text": "x"}], "stop_sequence")
    assert parse_converse_response(body, stop_sequence="END").stop_sequence == "END"


def test_a_malformed_answer_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError):
        parse_converse_response({"stopReason": "end_turn", "usage": {}})


def test_usage_without_cache_members() -> None:
    assert bedrock_usage({"inputTokens": 3, "outputTokens": 2, "totalTokens": 5}) == Usage(3, 2)
    assert bedrock_usage(None) is None


def feed(decoder: BedrockStreamDecoder, events: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    out: list[Any] = []
    for name, payload in events:
        out += decoder.feed_data(orjson.dumps({**payload, "p": "abc"}), name.encode())
    return out


STREAM = [
    ("messageStart", {"role": "assistant"}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
    ("contentBlockStop", {"contentBlockIndex": 0}),
    ("contentBlockStart", {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1", "name": "w"}}}),
    ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"city":'}}}),
    ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '"Oslo"}'}}}),
    ("contentBlockStop", {"contentBlockIndex": 1}),
    ("contentBlockStart", {"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "t2", "name": "w"}}}),
    ("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": "{}"}}}),
    ("contentBlockStop", {"contentBlockIndex": 2}),
    ("messageStop", {"stopReason": "tool_use"}),
    (
        "metadata",
        {
            "usage": {"inputTokens": 5, "outputTokens": 9, "totalTokens": 15, "cacheReadInputTokens": 1},
            "metrics": {"latencyMs": 3},
        },
    ),
]


def test_a_stream_decodes_in_canonical_order_with_usage_before_the_end() -> None:
    events = feed(BedrockStreamDecoder("req-1"), STREAM)
    assert events == [
        StreamStart("req-1", ""),
        TextDelta("Hi"),
        ToolCallStart(0, "t1", "w"),
        ToolCallDelta(0, '{"city":'),
        ToolCallDelta(0, '"Oslo"}'),
        ToolCallStart(1, "t2", "w"),
        ToolCallDelta(1, "{}"),
        UsageEvent(Usage(6, 9, cached_tokens=1)),
        StreamEnd("tool_calls"),
    ]


def test_parallel_tool_calls_false_keeps_the_first_call_of_a_stream() -> None:
    events = feed(BedrockStreamDecoder("r", single_tool_call=True), STREAM)
    assert [e for e in events if type(e) in (ToolCallStart, ToolCallDelta)] == [
        ToolCallStart(0, "t1", "w"),
        ToolCallDelta(0, '{"city":'),
        ToolCallDelta(0, '"Oslo"}'),
    ]


def test_an_exception_event_ends_the_stream_as_an_error() -> None:
    decoder = BedrockStreamDecoder("r")
    events = feed(decoder, [*STREAM[:2], ("modelStreamErrorException", {"message": "model broke"})])
    assert events[-1] == StreamError("modelStreamErrorException: model broke", "api_error")
    assert decoder.exception == "modelStreamErrorException"
    assert decoder.finish() == []


def test_a_stream_cut_before_message_stop_is_an_error_but_one_cut_before_metadata_ends() -> None:
    cut = BedrockStreamDecoder("r")
    feed(cut, STREAM[:3])
    with pytest.raises(UpstreamProtocolError, match="before messageStop"):
        cut.finish()
    no_metadata = BedrockStreamDecoder("r", stop_sequence="END")
    feed(no_metadata, [*STREAM[:2], ("messageStop", {"stopReason": "stop_sequence"})])
    assert no_metadata.finish() == [StreamEnd("stop", "END")]


def test_content_before_message_start_is_malformed() -> None:
    with pytest.raises(UpstreamProtocolError, match="before messageStart"):
        feed(BedrockStreamDecoder("r"), STREAM[1:2])


def test_a_token_count_sends_the_converse_input_only() -> None:
    request = anthropic_protocol.parse_count_tokens_request(
        {
            "model": "m",
            "system": "Rules.",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"name": "w", "input_schema": WEATHER}],
        }
    )
    body = count_tokens_request_to_body(request)
    check_input("bedrock-runtime", "CountTokens", body)
    assert set(body["input"]["converse"]) == {"messages", "system", "toolConfig"}
    assert parse_count_tokens_response({"inputTokens": 7}) == TokenCount(7)
    with pytest.raises(UpstreamProtocolError):
        parse_count_tokens_response({"inputTokens": "7"})


def test_titan_embedding_bodies_and_answers() -> None:
    request = parse_embedding_request({"model": "m", "input": "hi there", "dimensions": 512})
    assert titan_request_bodies(request) == [{"inputText": "hi there", "dimensions": 512}]
    vector, tokens = parse_titan_response({"embedding": [0.5, -0.25], "inputTextTokenCount": 2})
    assert (struct.unpack("<2f", vector), tokens) == ((0.5, -0.25), 2)
    with pytest.raises(UpstreamProtocolError):
        parse_titan_response({"embedding": [], "inputTextTokenCount": 2})
    with pytest.raises(Untranslatable):
        titan_request_bodies(parse_embedding_request({"model": "m", "input": [1, 2]}))
