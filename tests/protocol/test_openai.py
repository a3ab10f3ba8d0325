"""OpenAI protocol: request validation and parsing, backend bodies, responses, and the stream decoder and
encoder against transcripts in OpenAI's own wire format."""

# Provider transcripts are kept verbatim, one event per line, however long.
# ruff: noqa: E501

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import openai.types
import orjson
import pytest

from gateway.errors import FieldError
from gateway.protocol import (
    ChatResponse,
    EmbeddingResponse,
    ImagePart,
    Message,
    RawPart,
    StreamEnd,
    StreamError,
    StreamStart,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallPart,
    ToolCallStart,
    ToolChoice,
    ToolResultPart,
    UpstreamProtocolError,
    Usage,
    UsageEvent,
)
from gateway.protocol.openai import (
    EMBEDDINGS,
    OpenAIStreamDecoder,
    OpenAIStreamEncoder,
    chat_request_to_body,
    completion_request_to_body,
    embedding_request_to_body,
    encode_chat_response,
    parse_chat_request,
    parse_chat_response,
    parse_completion_request,
    parse_embedding_request,
)
from gateway.protocol.openai_legacy import MAX_EMBEDDING_INPUTS
from gateway.protocol.usage import openai_usage


def chat(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}
    body.update(overrides)
    return body


def sse_payloads(stream: bytes) -> list[str]:
    assert stream.endswith(b"\n\n")
    out = []
    for block in stream.decode().split("\n\n")[:-1]:
        assert block.startswith("data: "), block
        out.append(block[6:])
    return out


# --- request validation ---------------------------------------------------------------------------------

INVALID: list[tuple[Any, str]] = [
    ([], "body"),
    ({"messages": [{"role": "user", "content": "x"}]}, "model"),
    (chat(model=""), "model"),
    (chat(model=7), "model"),
    (chat(messages=None), "messages"),
    (chat(messages=[]), "messages"),
    (chat(messages="hi"), "messages"),
    (chat(messages=["hi"]), "messages[0]"),
    (chat(messages=[{"content": "x"}]), "messages[0].role"),
    (chat(messages=[{"role": "robot", "content": "x"}]), "messages[0].role"),
    (chat(messages=[{"role": "user"}]), "messages[0].content"),
    (chat(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
    (chat(messages=[{"role": "user", "content": []}]), "messages[0].content"),
    (chat(messages=[{"role": "user", "content": [{"type": "text"}]}]), "messages[0].content[0].text"),
    (chat(messages=[{"role": "user", "content": [{"text": "x"}]}]), "messages[0].content[0].type"),
    (chat(messages=[{"role": "user", "content": ["x"]}]), "messages[0].content[0]"),
    (
        chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
        "messages[0].content[0].image_url.url",
    ),
    (
        chat(
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:xx"}}]}]
        ),
        "messages[0].content[0].image_url.url",
    ),
    (chat(messages=[{"role": "user", "content": "a", "name": 3}]), "messages[0].name"),
    (chat(messages=[{"role": "system", "content": [{"type": "image_url"}]}]), "messages[0].content[0].type"),
    (
        chat(messages=[{"role": "user", "content": "q"}, {"role": "assistant"}]),
        "messages[1].content",
    ),
    (
        chat(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": 1}]),
        "messages[1].content",
    ),
    (
        chat(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": {}}]),
        "messages[1].tool_calls",
    ),
    (
        chat(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [{"id": "c"}]}]),
        "messages[1].tool_calls[0].function",
    ),
    (
        chat(
            messages=[
                {"role": "user", "content": "q"},
                {"role": "assistant", "tool_calls": [{"id": "c", "function": {"arguments": "{}"}}]},
            ]
        ),
        "messages[1].tool_calls[0].function.name",
    ),
    (
        chat(
            messages=[
                {"role": "user", "content": "q"},
                {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": 3}}]},
            ]
        ),
        "messages[1].tool_calls[0].function.arguments",
    ),
    (
        chat(messages=[{"role": "user", "content": "q"}, {"role": "tool", "content": "r"}]),
        "messages[1].tool_call_id",
    ),
    (chat(max_tokens=0), "max_tokens"),
    (chat(max_tokens=-3), "max_tokens"),
    (chat(max_tokens="10"), "max_tokens"),
    (chat(max_tokens=True), "max_tokens"),
    (chat(max_tokens=1.5), "max_tokens"),
    (chat(max_completion_tokens=0), "max_completion_tokens"),
    (chat(temperature=2.5), "temperature"),
    (chat(temperature=-0.1), "temperature"),
    (chat(temperature="hot"), "temperature"),
    (chat(top_p=1.1), "top_p"),
    (chat(stop=5), "stop"),
    (chat(stop=["a", "b", "c", "d", "e"]), "stop"),
    (chat(stop=["a", 1]), "stop[1]"),
    (chat(stream="yes"), "stream"),
    (chat(stream_options=[]), "stream_options"),
    (chat(stream_options={"include_usage": "y"}), "stream_options.include_usage"),
    (chat(tools={}), "tools"),
    (chat(tools=["f"]), "tools[0]"),
    (chat(tools=[{"type": "function"}]), "tools[0].function"),
    (chat(tools=[{"type": "function", "function": {}}]), "tools[0].function.name"),
    (
        chat(tools=[{"type": "function", "function": {"name": "f", "parameters": []}}]),
        "tools[0].function.parameters",
    ),
    (chat(tools=[{"type": 1}]), "tools[0].type"),
    (chat(tool_choice="sometimes"), "tool_choice"),
    (chat(tool_choice={"type": "function"}), "tool_choice.function"),
    (chat(tool_choice={"type": "function", "function": {}}), "tool_choice.function.name"),
    (chat(tool_choice={}), "tool_choice.type"),
    (chat(parallel_tool_calls=1), "parallel_tool_calls"),
    (chat(seed="1"), "seed"),
    (chat(user=1), "user"),
]


@pytest.mark.parametrize("body,field", INVALID)
def test_invalid_chat_request_names_the_field(body: Any, field: str) -> None:
    with pytest.raises(FieldError) as info:
        parse_chat_request(body)
    assert info.value.field == field
    assert info.value.status == 400
    assert info.value.detail.startswith(f"{field}: ")


def test_parse_full_request() -> None:
    req = parse_chat_request(
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/jpeg;base64,/9j/AAA=", "detail": "low"},
                        },
                        {"type": "image_url", "image_url": {"url": "https://x.test/cat.png"}},
                        {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
                    ],
                    "name": "ann",
                },
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "look", "arguments": '{"x":1}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
                {"role": "system", "content": "Now answer in French."},
            ],
            "max_completion_tokens": 100,
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": "END",
            "stream": True,
            "stream_options": {"include_usage": True},
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "look", "description": "Look", "parameters": {"type": "object"}},
                }
            ],
            "tool_choice": {"type": "function", "function": {"name": "look"}},
            "parallel_tool_calls": False,
            "seed": 42,
            "user": "u-1",
            "frequency_penalty": 0.5,
            "logprobs": True,
        }
    )
    assert req.system == "Be brief.\n\nUse metric."
    assert [m.role for m in req.messages] == ["user", "assistant", "tool", "system"]
    user = req.messages[0]
    assert user.name == "ann"
    assert user.content == (
        TextPart("What is this?"),
        ImagePart(data="/9j/AAA=", media_type="image/jpeg", detail="low"),
        ImagePart(url="https://x.test/cat.png"),
        RawPart("openai", {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}}),
    )
    assert req.messages[1].content == (ToolCallPart("call_1", "look", '{"x":1}'),)
    assert req.messages[2].content == (ToolResultPart("call_1", "a cat"),)
    assert req.max_tokens == 100 and req.max_tokens_field == "max_completion_tokens"
    assert (req.temperature, req.top_p, req.stop, req.seed, req.user) == (0.2, 0.9, ("END",), 42, "u-1")
    assert req.stream and req.include_usage
    assert req.tools[0].name == "look" and req.tools[0].parameters == {"type": "object"}
    assert req.tool_choice == ToolChoice("tool", "look")
    assert req.parallel_tool_calls is False
    assert req.extra == {"frequency_penalty": 0.5, "logprobs": True}
    assert req.source == "openai"


def test_minimal_request_defaults() -> None:
    req = parse_chat_request(chat())
    assert req.messages == (Message("user", (TextPart("Hi"),)),)
    assert req.system is None and req.max_tokens is None and req.stop == () and not req.stream
    assert req.extra == {} and req.tools == () and req.tool_choice is None


def test_same_protocol_body_keeps_everything() -> None:
    body = chat(
        messages=[
            {"role": "system", "content": "S"},
            {"role": "user", "content": "Q"},
            {
                "role": "assistant",
                "content": "Calling.",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "R"},
        ],
        max_completion_tokens=50,
        stop=["x", "y"],
        stream=True,
        stream_options={"include_usage": True, "include_obfuscation": False},
        tools=[
            {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}, "strict": True}}
        ],
        tool_choice={"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}},
        response_format={"type": "json_object"},
        n=1,
    )
    out = chat_request_to_body(parse_chat_request(body), "gpt-4o-2024-08-06")
    expected = dict(body, model="gpt-4o-2024-08-06")
    assert out == expected


def test_max_tokens_key_override_and_default() -> None:
    req = parse_chat_request(chat(max_tokens=9))
    assert chat_request_to_body(req, "m")["max_tokens"] == 9
    assert (
        chat_request_to_body(req, "m", max_tokens_key="max_completion_tokens")["max_completion_tokens"] == 9
    )


# --- responses -----------------------------------------------------------------------------------------

COMPLETION = {
    "id": "chatcmpl-abc",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Checking.",
                "refusal": None,
                "tool_calls": [
                    {
                        "id": "call_9",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {
        "prompt_tokens": 1117,
        "completion_tokens": 46,
        "total_tokens": 1163,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
    "service_tier": "default",
    "system_fingerprint": "fp_fc9f1d7035",
}


def test_parse_chat_response() -> None:
    resp = parse_chat_response(COMPLETION)
    assert resp == ChatResponse(
        id="chatcmpl-abc",
        model="gpt-4o-2024-08-06",
        content=(TextPart("Checking."), ToolCallPart("call_9", "get_weather", '{"city":"Paris"}')),
        finish_reason="tool_calls",
        usage=Usage(1117, 46, 1024),
    )


def test_parse_vllm_stop_reason() -> None:
    body = {
        "id": "x",
        "model": "m",
        "choices": [{"message": {"content": "a"}, "finish_reason": "stop", "stop_reason": "##"}],
    }
    resp = parse_chat_response(body)
    assert resp.finish_reason == "stop" and resp.stop_sequence == "##" and resp.usage is None


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"choices": []},
        {"choices": [{}]},
        {"choices": [{"message": {"content": 5}}]},
        {"choices": [{"message": {"tool_calls": [{"id": "c"}]}}]},
        {"error": {"message": "overloaded"}},
        "not json object",
    ],
)
def test_malformed_chat_response(body: Any) -> None:
    with pytest.raises(UpstreamProtocolError) as info:
        parse_chat_response(body)
    assert isinstance(info.value, ValueError) and info.value.status == 502


def test_encode_chat_response_validates_with_sdk() -> None:
    resp = ChatResponse(
        id="msg_1",
        model="claude-x",
        content=(TextPart("Hello "), TextPart("world"), ToolCallPart("toolu_1", "f", '{"a": 1}')),
        finish_reason="tool_calls",
        usage=Usage(10, 5, 4),
    )
    body = encode_chat_response(resp, "my-alias")
    assert body["model"] == "my-alias"
    assert body["choices"][0]["message"]["content"] == "Hello world"
    assert body["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 4},
    }
    import openai.types.chat as sdk

    parsed = sdk.ChatCompletion.model_validate(orjson.loads(orjson.dumps(body)))
    assert parsed.choices[0].message.tool_calls[0].function.arguments == '{"a": 1}'
    assert parsed.choices[0].finish_reason == "tool_calls"
    assert parse_chat_response(body).content == (
        TextPart("Hello world"),
        ToolCallPart("toolu_1", "f", '{"a": 1}'),
    )


# --- streams -------------------------------------------------------------------------------------------

_HEAD = '{"id":"chatcmpl-B9M","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_f","choices":'

TEXT_STREAM = [
    _HEAD
    + '[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}',
    _HEAD + '[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}',
    _HEAD + '[{"index":0,"delta":{"content":"! How"},"logprobs":null,"finish_reason":null}],"usage":null}',
    _HEAD + '[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}',
    _HEAD
    + '[],"usage":{"prompt_tokens":19,"completion_tokens":3,"total_tokens":22,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}',
    "[DONE]",
]

TOOL_STREAM = [
    _HEAD
    + '[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_Dd","type":"function","function":{"name":"get_weather","arguments":""}}],"refusal":null},"logprobs":null,"finish_reason":null}]}',
    _HEAD
    + '[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"lo"}}]},"logprobs":null,"finish_reason":null}]}',
    _HEAD
    + '[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"cation\\": \\"Paris\\"}"}}]},"logprobs":null,"finish_reason":null}]}',
    _HEAD
    + '[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_Xy","type":"function","function":{"name":"get_time","arguments":""}}]},"logprobs":null,"finish_reason":null}]}',
    _HEAD
    + '[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{\\"tz\\":\\"CET\\"}"}}]},"logprobs":null,"finish_reason":null}]}',
    _HEAD + '[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}]}',
    "[DONE]",
]


def decode(payloads: list[str]) -> list[Any]:
    decoder = OpenAIStreamDecoder()
    events = [e for p in payloads for e in decoder.feed_data(p)]
    return events + decoder.finish()


def test_decode_text_stream_with_usage() -> None:
    assert decode(TEXT_STREAM) == [
        StreamStart("chatcmpl-B9M", "gpt-4o-2024-08-06"),
        TextDelta("Hello"),
        TextDelta("! How"),
        UsageEvent(Usage(19, 3, 0)),
        StreamEnd("stop"),
    ]


def test_decode_parallel_tool_call_stream() -> None:
    assert decode(TOOL_STREAM) == [
        StreamStart("chatcmpl-B9M", "gpt-4o-2024-08-06"),
        ToolCallStart(0, "call_Dd", "get_weather"),
        ToolCallDelta(0, '{"lo'),
        ToolCallDelta(0, 'cation": "Paris"}'),
        ToolCallStart(1, "call_Xy", "get_time"),
        ToolCallDelta(1, '{"tz":"CET"}'),
        StreamEnd("tool_calls"),
    ]


def test_decode_whole_tool_call_in_one_delta_and_finish_without_done() -> None:
    # Ollama / vLLM style: the complete call in one chunk, usage beside finish_reason, no [DONE].
    decoder = OpenAIStreamDecoder()
    chunk = {
        "id": "x",
        "model": "llama",
        "choices": [
            {
                "index": 0,
                "delta": {"tool_calls": [{"id": "c", "function": {"name": "f", "arguments": '{"a":1}'}}]},
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7},
    }
    assert decoder.feed(chunk) == [
        StreamStart("x", "llama"),
        ToolCallStart(0, "c", "f"),
        ToolCallDelta(0, '{"a":1}'),
        UsageEvent(Usage(5, 7)),
    ]
    assert decoder.finish() == [StreamEnd("tool_calls")]
    assert decoder.finish() == []


def test_decode_error_chunk_and_truncation() -> None:
    decoder = OpenAIStreamDecoder()
    decoder.feed_data(TEXT_STREAM[0])
    assert decoder.feed_data('{"error":{"message":"boom","type":"server_error"}}') == [
        StreamError("boom", "server_error")
    ]
    assert decoder.finish() == []

    truncated = OpenAIStreamDecoder()
    truncated.feed_data(TEXT_STREAM[1])
    with pytest.raises(UpstreamProtocolError):
        truncated.finish()
    with pytest.raises(UpstreamProtocolError):
        OpenAIStreamDecoder().feed_data("{not json")
    with pytest.raises(UpstreamProtocolError):
        OpenAIStreamDecoder().feed({"choices": [{"delta": "oops"}]})


def test_encode_stream_exact_bytes() -> None:
    encoder = OpenAIStreamEncoder("alias", include_usage=True, id="chatcmpl-1", created=7)
    out = encoder.encode_all(
        [
            StreamStart("msg_1", "claude"),
            TextDelta("Hi"),
            ToolCallStart(0, "toolu_1", "f"),
            ToolCallDelta(0, '{"a":'),
            ToolCallDelta(0, "1}"),
            UsageEvent(Usage(3, 2)),
            StreamEnd("tool_calls"),
        ]
    )
    head = '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":7,"model":"alias","choices":[{"index":0,"delta":'
    tail = ',"logprobs":null,"finish_reason":null}],"usage":null}'
    assert sse_payloads(out) == [
        head + '{"role":"assistant","content":""}' + tail,
        head + '{"content":"Hi"}' + tail,
        head
        + '{"tool_calls":[{"index":0,"id":"toolu_1","type":"function","function":{"name":"f","arguments":""}}]}'
        + tail,
        head + '{"tool_calls":[{"index":0,"function":{"arguments":"{\\"a\\":"}}]}' + tail,
        head + '{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]}' + tail,
        head + '{},"logprobs":null,"finish_reason":"tool_calls"}],"usage":null}',
        '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":7,"model":"alias","choices":[],'
        '"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}',
        "[DONE]",
    ]
    assert encoder.encode(TextDelta("late")) == b""


def test_encode_without_usage_and_error() -> None:
    encoder = OpenAIStreamEncoder("m", id="c", created=1)
    out = encoder.encode_all(
        [StreamStart("u", "m"), TextDelta("x"), UsageEvent(Usage(1, 1)), StreamEnd("length")]
    )
    payloads = sse_payloads(out)
    assert '"usage"' not in out.decode()
    assert payloads[-2].endswith('"finish_reason":"length"}]}') and payloads[-1] == "[DONE]"

    failing = OpenAIStreamEncoder("m")
    started = failing.encode(StreamStart("u", "m"))
    err = failing.encode(StreamError("Overloaded", "overloaded_error"))
    assert started.startswith(b"data: {")
    assert (
        err == b'data: {"error":{"message":"Overloaded","type":"server_error","param":null,"code":null}}\n\n'
    )
    assert failing.encode(StreamEnd("stop")) == b""
    assert OpenAIStreamEncoder("m").error("bad", "invalid_request_error").count(b"[DONE]") == 0


def test_encoded_stream_accumulates_in_sdk() -> None:
    import openai.lib.streaming.chat as streaming
    import openai.types.chat as chunk_module

    encoder = OpenAIStreamEncoder("alias", include_usage=True)
    events = [*decode(TOOL_STREAM)[:-1], TextDelta("done"), UsageEvent(Usage(9, 4)), StreamEnd("tool_calls")]
    state = streaming.ChatCompletionStreamState()
    for payload in sse_payloads(encoder.encode_all(events)):
        if payload != "[DONE]":
            state.handle_chunk(chunk_module.ChatCompletionChunk.model_validate_json(payload))
    final = state.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [
        ("call_Dd", "get_weather", '{"location": "Paris"}'),
        ("call_Xy", "get_time", '{"tz":"CET"}'),
    ]
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage is not None and final.usage.total_tokens == 13


# --- legacy completions and embeddings -----------------------------------------------------------------


def test_completion_request_round_trip() -> None:
    body = {
        "model": "gpt-3.5-turbo-instruct",
        "prompt": ["Say this", "Say that"],
        "max_tokens": 0,
        "echo": True,
        "logprobs": 1,
        "stop": "\n",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    req = parse_completion_request(body)
    assert req.prompt is body["prompt"] and req.max_tokens == 0 and req.stop == ("\n",) and req.include_usage
    assert req.extra == {"echo": True, "logprobs": 1}
    assert completion_request_to_body(req, "instruct-v2") == dict(body, model="instruct-v2", stop=["\n"])


@pytest.mark.parametrize(
    "body,field",
    [
        ({"model": "m"}, "prompt"),
        ({"model": "m", "prompt": []}, "prompt"),
        ({"model": "m", "prompt": 3}, "prompt"),
        ({"model": "m", "prompt": ["a", 1]}, "prompt[1]"),
        ({"model": "m", "prompt": [1, 2, "x"]}, "prompt[2]"),
        ({"model": "m", "prompt": [1, True]}, "prompt[1]"),
        ({"model": "m", "prompt": [[1], []]}, "prompt[1]"),
        ({"model": "m", "prompt": [[1], [2, "x"]]}, "prompt[1][1]"),
        ({"model": "m", "prompt": [{}]}, "prompt[0]"),
        ({"model": "m", "prompt": "x", "max_tokens": -1}, "max_tokens"),
        ({"model": "m", "prompt": "x", "stop": [1]}, "stop[0]"),
        ({"prompt": "x"}, "model"),
    ],
)
def test_invalid_completion_request(body: dict[str, Any], field: str) -> None:
    with pytest.raises(FieldError) as info:
        parse_completion_request(body)
    assert info.value.field == field


def test_embedding_request() -> None:
    body = {
        "model": "text-embedding-3-small",
        "input": [[1, 2], [3]],
        "dimensions": 256,
        "encoding_format": "base64",
    }
    req = parse_embedding_request(body)
    assert req.input is body["input"] and req.dimensions == 256 and req.encoding_format == "base64"
    assert embedding_request_to_body(req, "e3") == dict(body, model="e3")
    assert parse_embedding_request({"model": "m", "input": "hello", "user": "u"}).user == "u"


@pytest.mark.parametrize(
    "body,field",
    [
        ({"model": "m"}, "input"),
        ({"model": "m", "input": ""}, "input"),
        ({"model": "m", "input": ["a", None]}, "input[1]"),
        ({"model": "m", "input": ["a", "b", ""]}, "input[2]"),
        ({"model": "m", "input": ["a"] * (MAX_EMBEDDING_INPUTS + 1)}, "input"),
        ({"model": "m", "input": [[1]] * (MAX_EMBEDDING_INPUTS + 1)}, "input"),
        ({"model": "m", "input": []}, "input"),
        ({"model": "m", "input": "a", "dimensions": 0}, "dimensions"),
        ({"model": "m", "input": "a", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "", "input": "a"}, "model"),
    ],
)
def test_invalid_embedding_request(body: dict[str, Any], field: str) -> None:
    with pytest.raises(FieldError) as info:
        parse_embedding_request(body)
    assert info.value.field == field


def test_embedding_input_bounds_leave_one_long_token_array_alone() -> None:
    assert len(parse_embedding_request({"model": "m", "input": ["a"] * MAX_EMBEDDING_INPUTS}).input) == 2048
    # One input given as token ids: its length is a number of tokens, for the model to bound.
    assert len(parse_embedding_request({"model": "m", "input": [1] * 5000}).input) == 5000


VECTORS = np.array([[0.1, -1 / 3, 2.5e-8], [1.0, 0.0, -0.0]], dtype=np.float32)


def embedding_response(encoding_format: Any) -> EmbeddingResponse:
    return EmbeddingResponse(
        tuple(v.astype("<f4").tobytes() for v in VECTORS), 3, Usage(prompt_tokens=9), encoding_format
    )


@pytest.mark.parametrize("encoding_format", ["float", "base64"])
def test_embeddings_are_written_in_openai_shape(encoding_format: str) -> None:
    body = orjson.loads(EMBEDDINGS.reply(embedding_response(encoding_format), "tiny"))
    assert (body["object"], body["model"], [d["index"] for d in body["data"]]) == ("list", "tiny", [0, 1])
    if encoding_format == "float":  # the SDK's type (its base64 strings are decoded after parsing)
        openai.types.CreateEmbeddingResponse.model_validate(body)
    assert body["usage"] == {"prompt_tokens": 9, "total_tokens": 9}
    assert openai_usage(body["usage"]) == Usage(prompt_tokens=9)
    for row, item in zip(VECTORS, body["data"], strict=True):
        assert item["object"] == "embedding"
        if encoding_format == "base64":
            decoded = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
        else:
            decoded = np.array(item["embedding"], dtype=np.float32)  # shortest float32 form reads back
        assert decoded.tobytes() == row.tobytes()


def test_embeddings_as_floats_are_float32_short() -> None:
    raw = EMBEDDINGS.reply(embedding_response("float"), "tiny")
    assert b"0.1," in raw and b"-0.33333334," in raw and b"2.5e-8" in raw


def test_the_embeddings_encoding_takes_only_embeddings() -> None:
    with pytest.raises(TypeError):
        EMBEDDINGS.reply(ChatResponse(id="", model="m", content=(), finish_reason="stop"), "m")
    with pytest.raises(TypeError):
        EMBEDDINGS.stream("m", False)
