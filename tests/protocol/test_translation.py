"""Cross-protocol translation: request round trips through the other protocol, the mapping rules, and
streams from one provider's wire format re-encoded for the other provider's clients."""

# Provider transcripts are kept verbatim, one event per line, however long.
# ruff: noqa: E501

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from gateway.protocol import StreamStart, ToolCallStart, iter_sse_events
from gateway.protocol.anthropic import (
    AnthropicStreamDecoder,
    AnthropicStreamEncoder,
    encode_messages_response,
    messages_request_to_body,
    parse_messages_request,
    parse_messages_response,
)
from gateway.protocol.openai import (
    OpenAIStreamDecoder,
    OpenAIStreamEncoder,
    chat_request_to_body,
    encode_chat_response,
    parse_chat_request,
    parse_chat_response,
)

TOOLS_OPENAI = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
    },
]

OPENAI_REQUEST: dict[str, Any] = {
    "model": "smart",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Weather and time in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C, cloudy"},
        {"role": "tool", "tool_call_id": "call_2", "content": "14:05"},
        {"role": "user", "content": "And tomorrow?"},
        {"role": "assistant", "content": "Checking tomorrow."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Also this map:"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        },
    ],
    "max_tokens": 256,
    "temperature": 0.7,
    "top_p": 0.9,
    "stop": ["###", "END"],
    "tools": TOOLS_OPENAI,
    "tool_choice": "required",
    "parallel_tool_calls": False,
    "user": "user-42",
}


def test_openai_request_round_trips_through_anthropic() -> None:
    req = parse_chat_request(copy.deepcopy(OPENAI_REQUEST))
    anthropic_body = messages_request_to_body(req, "claude-sonnet-4-5")
    assert anthropic_body == {
        "model": "claude-sonnet-4-5",
        "system": "You are terse.",
        "messages": [
            {"role": "user", "content": "Weather and time in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18C, cloudy"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": "14:05"},
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
            {"role": "assistant", "content": "Checking tomorrow."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Also this map:"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                    },
                ],
            },
        ],
        "tools": [
            {
                "name": "get_weather",
                "description": "Current weather for a city",
                "input_schema": TOOLS_OPENAI[0]["function"]["parameters"],
            },
            {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "max_tokens": 256,
        "temperature": 0.7,
        "top_p": 0.9,
        "stop_sequences": ["###", "END"],
        "metadata": {"user_id": "user-42"},
    }
    back = chat_request_to_body(parse_messages_request(anthropic_body), "gpt-4o")
    assert back == dict(OPENAI_REQUEST, model="gpt-4o")


ANTHROPIC_REQUEST: dict[str, Any] = {
    "model": "claude",
    "max_tokens": 512,
    "system": "Answer in French.",
    "messages": [
        {"role": "user", "content": "Look up the weather."},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Sure."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Lyon"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "text", "text": "Thanks. And this?"},
                {"type": "image", "source": {"type": "url", "url": "https://x.test/p.jpg"}},
            ],
        },
    ],
    "stop_sequences": ["\n\nHuman:"],
    "temperature": 0.3,
    "tools": [
        {
            "name": "get_weather",
            "description": "Weather",
            "input_schema": {"type": "object", "properties": {}},
        }
    ],
    "tool_choice": {"type": "tool", "name": "get_weather"},
    "metadata": {"user_id": "u"},
}


def test_anthropic_request_round_trips_through_openai() -> None:
    req = parse_messages_request(copy.deepcopy(dict(ANTHROPIC_REQUEST, top_k=5)))
    openai_body = chat_request_to_body(req, "gpt-4o")
    assert openai_body["messages"] == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Look up the weather."},
        {
            "role": "assistant",
            "content": "Sure.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Lyon"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Thanks. And this?"},
                {"type": "image_url", "image_url": {"url": "https://x.test/p.jpg"}},
            ],
        },
    ]
    assert openai_body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert openai_body["stop"] == ["\n\nHuman:"] and openai_body["max_tokens"] == 512
    # Top_k as vLLM takes it: routing sends it only to targets claiming the `top_k` capability (OpenAI
    # backends do not, unless the config says so); no other Anthropic-only extra reaches them.
    assert openai_body["top_k"] == 5
    unknown = parse_messages_request(copy.deepcopy(dict(ANTHROPIC_REQUEST, speed="fast")))
    assert "speed" not in chat_request_to_body(unknown, "gpt-4o")
    del openai_body["top_k"]
    back = messages_request_to_body(parse_chat_request(openai_body), "claude")
    assert back == ANTHROPIC_REQUEST


def test_mapping_rules_toward_anthropic() -> None:
    req = parse_chat_request(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "one"},
                {"role": "user", "content": "two"},
                {"role": "assistant", "content": ""},
                {"role": "system", "content": "Late rule."},
                {
                    "role": "user",
                    "content": [{"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}],
                },
                {"role": "user", "content": "three"},
            ],
            "temperature": 1.6,
            "seed": 3,
            "frequency_penalty": 1.0,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"properties": {}}}}],
            "tool_choice": "none",
        }
    )
    body = messages_request_to_body(req, "claude", default_max_tokens=1000)
    assert body == {
        "model": "claude",
        "system": "Late rule.",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": t} for t in ("one", "two", "three")]}
        ],
        "tools": [{"name": "f", "input_schema": {"type": "object", "properties": {}}}],
        "tool_choice": {"type": "none"},
        "max_tokens": 1000,
        "temperature": 1.0,
    }


@pytest.mark.parametrize(
    "openai_choice,parallel,anthropic_choice,back_choice",
    [
        ("auto", None, {"type": "auto"}, "auto"),
        ("required", None, {"type": "any"}, "required"),
        ("none", None, {"type": "none"}, "none"),
        ({"type": "function", "function": {"name": "f"}}, None, {"type": "tool", "name": "f"}, None),
        # Anthropic can only say "no parallel calls" inside a tool_choice, which then reads back as "auto".
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}, "auto"),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}, "required"),
    ],
)
def test_tool_choice_mapping(
    openai_choice: Any, parallel: bool | None, anthropic_choice: dict[str, Any], back_choice: Any
) -> None:
    body: dict[str, Any] = {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "tools": [{"type": "function", "function": {"name": "f"}}],
    }
    if openai_choice is not None:
        body["tool_choice"] = openai_choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    anthropic_body = messages_request_to_body(parse_chat_request(body), "c")
    assert anthropic_body["tool_choice"] == anthropic_choice
    back = chat_request_to_body(parse_messages_request(anthropic_body), "m")
    assert back.get("tool_choice") == (back_choice or openai_choice)
    assert back.get("parallel_tool_calls") == parallel


def test_tool_results_come_first_in_merged_user_turn() -> None:
    req = parse_chat_request(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}],
                },
                {"role": "user", "content": "by the way"},
                {"role": "tool", "tool_call_id": "c", "content": "done"},
            ],
        }
    )
    last = messages_request_to_body(req, "c")["messages"][-1]
    assert [b["type"] for b in last["content"]] == ["tool_result", "text"]


def test_responses_cross_protocol() -> None:
    openai_completion = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hi!"}, "finish_reason": "length"}
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
    }
    anthropic = encode_messages_response(parse_chat_response(openai_completion), "alias")
    assert anthropic["content"] == [{"type": "text", "text": "Hi!"}]
    assert anthropic["stop_reason"] == "max_tokens" and anthropic["usage"] == {
        "input_tokens": 7,
        "output_tokens": 2,
    }
    openai = encode_chat_response(parse_messages_response(anthropic), "alias")
    assert (
        openai["choices"][0]["message"]["content"] == "Hi!"
        and openai["choices"][0]["finish_reason"] == "length"
    )
    assert openai["usage"] == openai_completion["usage"]


# --- streams across protocols --------------------------------------------------------------------------

_HEAD = '{"id":"chatcmpl-7","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini","choices":'
OPENAI_UPSTREAM = (
    "".join(
        f"data: {line}\n\n"
        for line in (
            _HEAD
            + '[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}',
            _HEAD
            + '[{"index":0,"delta":{"content":"Let me look."},"logprobs":null,"finish_reason":null}],"usage":null}',
            _HEAD
            + '[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_A","type":"function","function":{"name":"get_weather","arguments":""}}]},"logprobs":null,"finish_reason":null}],"usage":null}',
            _HEAD
            + '[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"city\\":"}}]},"logprobs":null,"finish_reason":null}],"usage":null}',
            _HEAD
            + '[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\\"Paris\\"}"}}]},"logprobs":null,"finish_reason":null}],"usage":null}',
            _HEAD + '[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}],"usage":null}',
            _HEAD
            + '[],"usage":{"prompt_tokens":80,"completion_tokens":17,"total_tokens":97,"prompt_tokens_details":{"cached_tokens":64}}}',
            "[DONE]",
        )
    )
).encode()

ANTHROPIC_UPSTREAM = b"""event: message_start
data: {"type":"message_start","message":{"id":"msg_01A","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_read_input_tokens":0,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Checking"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"city\\": \\"Pa"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"ris\\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: content_block_start
data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_2","name":"get_time","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":2}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":60}}

event: message_stop
data: {"type":"message_stop"}

"""


async def _chunked(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def relay(upstream: bytes, decoder: Any, encoder: Any, *, size: int = 37) -> bytes:
    """What a surface does for a cross-protocol stream: SSE parse, decode, encode."""
    out = bytearray()
    async for name, data in iter_sse_events(_chunked(upstream, size)):
        for event in decoder.feed_data(data, name):
            out += encoder.encode(event)
    for event in decoder.finish():
        out += encoder.encode(event)
    return bytes(out)


async def _events(stream: bytes) -> list[tuple[str | None, str]]:
    return [e async for e in iter_sse_events(_chunked(stream, 1 << 20))]


@pytest.mark.parametrize("size", [1, 7, 37, 4096])
async def test_openai_upstream_to_anthropic_client(size: int) -> None:
    out = await relay(
        OPENAI_UPSTREAM,
        OpenAIStreamDecoder(),
        AnthropicStreamEncoder("alias"),
        size=size,
    )
    events = [(name, orjson.loads(data)) for name, data in await _events(out)]
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0][1]["message"]["id"] == "chatcmpl-7" and events[0][1]["message"]["model"] == "alias"
    assert events[4][1]["content_block"] == {
        "type": "tool_use",
        "id": "call_A",
        "name": "get_weather",
        "input": {},
    }
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"input_tokens": 16, "output_tokens": 17, "cache_read_input_tokens": 64},
    }

    import anthropic.lib.streaming._messages as streaming
    import anthropic.types as types
    import pydantic as pydantic

    adapter = pydantic.TypeAdapter(types.RawMessageStreamEvent)
    snapshot, json_bufs = None, {}
    for _, payload in events:
        snapshot = streaming.accumulate_event(
            event=adapter.validate_python(payload), current_snapshot=snapshot, json_bufs=json_bufs
        )
    assert snapshot is not None
    assert snapshot.content[0].text == "Let me look."
    assert snapshot.content[1].input == {"city": "Paris"}
    assert snapshot.stop_reason == "tool_use"
    assert (snapshot.usage.input_tokens, snapshot.usage.output_tokens) == (16, 17)
    assert snapshot.usage.cache_read_input_tokens == 64


@pytest.mark.parametrize("size", [1, 13, 4096])
async def test_anthropic_upstream_to_openai_client(size: int) -> None:
    encoder = OpenAIStreamEncoder("alias", include_usage=True)
    out = await relay(ANTHROPIC_UPSTREAM, AnthropicStreamDecoder(), encoder, size=size)
    payloads = [data for _, data in await _events(out)]
    assert payloads[-1] == "[DONE]"
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {
        "prompt_tokens": 25,
        "completion_tokens": 60,
        "total_tokens": 85,
    }

    import openai.lib.streaming.chat as streaming
    import openai.types.chat as chat_types

    state = streaming.ChatCompletionStreamState()
    for payload in payloads[:-1]:
        state.handle_chunk(chat_types.ChatCompletionChunk.model_validate_json(payload))
    final = state.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Checking"
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("toolu_1", "get_weather", '{"city": "Paris"}'),
        ("toolu_2", "get_time", "{}"),
    ]
    assert final.usage is not None and final.usage.prompt_tokens == 25


async def test_upstream_error_mid_stream_reaches_client_without_terminator() -> None:
    upstream = ANTHROPIC_UPSTREAM.split(b"event: content_block_stop")[0] + (
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )
    out = await relay(upstream, AnthropicStreamDecoder(), OpenAIStreamEncoder("m"))
    payloads = [data for _, data in await _events(out)]
    assert orjson.loads(payloads[-1]) == {
        "error": {"message": "Overloaded", "type": "server_error", "param": None, "code": None}
    }
    assert "[DONE]" not in payloads

    upstream = OPENAI_UPSTREAM.split(b"data: [DONE]")[0].rsplit(b"data: ", 3)[0]  # cut before finish_reason
    decoder, encoder = OpenAIStreamDecoder(), AnthropicStreamEncoder("m")
    with pytest.raises(Exception) as info:
        await relay(upstream, decoder, encoder)
    assert "finish_reason" in str(info.value)
    closing = encoder.error(str(info.value), "api_error")
    assert closing.startswith(b"event: error\n") and b"message_stop" not in closing


def test_tool_ids_are_rewritten_for_anthropic_consistently() -> None:
    req = parse_chat_request(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "functions.f:0", "function": {"name": "f", "arguments": ""}}],
                },
                {"role": "tool", "tool_call_id": "functions.f:0", "content": "ok"},
            ],
        }
    )
    messages = messages_request_to_body(req, "c")["messages"]
    assert messages[1]["content"] == [{"type": "tool_use", "id": "functions_f_0", "name": "f", "input": {}}]
    assert messages[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "functions_f_0", "content": "ok"}
    ]
    encoder = AnthropicStreamEncoder("m")
    encoder.encode(StreamStart("x", "m"))
    start = encoder.encode(ToolCallStart(0, "functions.f:0", "f"))
    assert b'"id":"functions_f_0"' in start
