"""Anthropic protocol: request validation and parsing, backend bodies, responses, and the stream decoder and
encoder against transcripts in Anthropic's own wire format."""

# Provider transcripts are kept verbatim, one event per line, however long.
# ruff: noqa: E501

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.errors import FieldError
from gateway.protocol import (
    ChatResponse,
    ImagePart,
    RawPart,
    Reasoning,
    ReasoningBlock,
    ReasoningDelta,
    ReasoningPart,
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
from gateway.protocol.anthropic import (
    AnthropicStreamDecoder,
    AnthropicStreamEncoder,
    count_tokens_request_to_body,
    encode_messages_response,
    messages_request_to_body,
    parse_count_tokens_request,
    parse_messages_request,
    parse_messages_response,
)


def msgs(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hello"}],
    }
    body.update(overrides)
    return body


def user(*blocks: Any) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks)}


def sse_events(stream: bytes) -> list[tuple[str, dict[str, Any]]]:
    assert stream.endswith(b"\n\n")
    out = []
    for block in stream.decode().split("\n\n")[:-1]:
        name, data = block.split("\n")
        assert name.startswith("event: ") and data.startswith("data: "), block
        payload = orjson.loads(data[6:])
        assert payload["type"] == name[7:]
        out.append((name[7:], payload))
    return out


# --- request validation ---------------------------------------------------------------------------------

INVALID: list[tuple[Any, str]] = [
    ("text", "body"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "model"),
    (msgs(max_tokens=None), "max_tokens"),
    ({"model": "c", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    (msgs(max_tokens=0), "max_tokens"),
    (msgs(max_tokens="many"), "max_tokens"),
    (msgs(messages=[]), "messages"),
    (msgs(messages={}), "messages"),
    (msgs(messages=[{"role": "system", "content": "x"}]), "messages[0].role"),
    (msgs(messages=[{"role": "tool", "content": "x"}]), "messages[0].role"),
    (msgs(messages=[{"content": "x"}]), "messages[0].role"),
    (msgs(messages=[{"role": "user"}]), "messages[0].content"),
    (msgs(messages=[{"role": "user", "content": 1}]), "messages[0].content"),
    (msgs(messages=[user({"text": "x"})]), "messages[0].content[0].type"),
    (msgs(messages=[user({"type": "text"})]), "messages[0].content[0].text"),
    (
        msgs(messages=[user({"type": "text", "text": "x", "cache_control": "yes"})]),
        "messages[0].content[0].cache_control",
    ),
    (msgs(messages=[user({"type": "image"})]), "messages[0].content[0].source"),
    (
        msgs(messages=[user({"type": "image", "source": {"type": "base64", "data": "AA=="}})]),
        "messages[0].content[0].source.media_type",
    ),
    (
        msgs(messages=[user({"type": "image", "source": {"type": "url"}})]),
        "messages[0].content[0].source.url",
    ),
    (
        msgs(messages=[user({"type": "tool_use", "id": "t", "name": "f", "input": {}})]),
        "messages[0].content[0].type",
    ),
    (
        msgs(
            messages=[
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "x"}]}
            ]
        ),
        "messages[0].content[0].input",
    ),
    (
        msgs(messages=[{"role": "assistant", "content": [{"type": "tool_use", "name": "f", "input": {}}]}]),
        "messages[0].content[0].id",
    ),
    (
        msgs(messages=[{"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "t"}]}]),
        "messages[0].content[0].type",
    ),
    (msgs(messages=[user({"type": "tool_result"})]), "messages[0].content[0].tool_use_id"),
    (
        msgs(messages=[user({"type": "tool_result", "tool_use_id": "t", "content": 3})]),
        "messages[0].content[0].content",
    ),
    (
        msgs(messages=[user({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text"}]})]),
        "messages[0].content[0].content[0].text",
    ),
    (
        msgs(messages=[user({"type": "tool_result", "tool_use_id": "t", "is_error": "no"})]),
        "messages[0].content[0].is_error",
    ),
    (msgs(system=5), "system"),
    (msgs(system=[{"type": "image"}]), "system[0].type"),
    (msgs(system=[{"type": "text"}]), "system[0].text"),
    (msgs(temperature=1.5), "temperature"),
    (msgs(top_p=-1), "top_p"),
    (msgs(stop_sequences="END"), "stop_sequences"),
    (msgs(stop_sequences=["a", 2]), "stop_sequences[1]"),
    (msgs(stream=1), "stream"),
    (msgs(tools={}), "tools"),
    (msgs(tools=[{"name": "f"}]), "tools[0].input_schema"),
    (msgs(tools=[{"input_schema": {}}]), "tools[0].name"),
    (msgs(tools=[{"name": "f", "input_schema": "x"}]), "tools[0].input_schema"),
    (msgs(tools=[{"type": "web_search_20250305"}]), "tools[0].name"),
    (msgs(tool_choice="auto"), "tool_choice"),
    (msgs(tool_choice={"type": "required"}), "tool_choice.type"),
    (msgs(tool_choice={"type": "tool"}), "tool_choice.name"),
    (
        msgs(tool_choice={"type": "auto", "disable_parallel_tool_use": "y"}),
        "tool_choice.disable_parallel_tool_use",
    ),
    (msgs(metadata=[]), "metadata"),
    (msgs(metadata={"user_id": 5}), "metadata.user_id"),
]


@pytest.mark.parametrize("body,field", INVALID)
def test_invalid_messages_request_names_the_field(body: Any, field: str) -> None:
    with pytest.raises(FieldError) as info:
        parse_messages_request(body)
    assert info.value.field == field
    assert info.value.detail.startswith(f"{field}: ")


def test_parse_full_request() -> None:
    body = msgs(
        system=[
            {"type": "text", "text": "You are Claude Code."},
            {"type": "text", "text": "Project rules.", "cache_control": {"type": "ephemeral"}},
        ],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look:"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
                    {
                        "type": "document",
                        "source": {"type": "text", "media_type": "text/plain", "data": "doc"},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"path": "a.py"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "print(1)"},
                    {"type": "text", "text": "Go on."},
                ],
            },
        ],
        stop_sequences=["\n\nHuman:"],
        temperature=0.5,
        top_p=0.8,
        top_k=40,
        stream=True,
        tools=[
            {"name": "read", "description": "Read a file", "input_schema": {"type": "object"}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 2},
        ],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        metadata={"user_id": "u-7"},
        thinking={"type": "enabled", "budget_tokens": 2000},
    )
    req = parse_messages_request(body)
    assert req.system == "You are Claude Code.\n\nProject rules."
    assert req.system_blocks == (
        TextPart("You are Claude Code."),
        TextPart("Project rules.", {"type": "ephemeral"}),
    )
    first, second, third = req.messages
    assert first.content[:3] == (
        TextPart("Look:"),
        ImagePart(data="iVBO", media_type="image/png"),
        ImagePart(url="https://x.test/a.jpg"),
    )
    assert type(first.content[3]) is RawPart
    thinking = {"type": "thinking", "thinking": "hmm", "signature": "sig"}
    assert second.content[0] == ReasoningPart("hmm", thinking)
    assert second.content[2] == ToolCallPart("toolu_1", "read", '{"path":"a.py"}')
    assert third.content == (ToolResultPart("toolu_1", "print(1)"), TextPart("Go on."))
    assert (req.max_tokens, req.temperature, req.top_p, req.stop) == (1024, 0.5, 0.8, ("\n\nHuman:",))
    assert req.stream and req.include_usage and req.user == "u-7" and req.source == "anthropic"
    assert req.tool_choice == ToolChoice("required") and req.parallel_tool_calls is False
    assert req.tools[0].parameters == {"type": "object"} and req.tools[1].raw is not None
    assert req.extra == {"top_k": 40, "thinking": {"type": "enabled", "budget_tokens": 2000}}
    assert req.reasoning == Reasoning(budget_tokens=2000)

    # Same-protocol re-encoding loses nothing (the only rewrite is the model name).
    assert messages_request_to_body(req, "claude-sonnet-4-5-20250929") == dict(
        body, model="claude-sonnet-4-5-20250929"
    )


def test_tool_result_blocks_and_cache_control_survive() -> None:
    body = msgs(
        messages=[
            {"role": "user", "content": "shot"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "screen", "input": {}}],
            },
            user(
                {
                    "type": "tool_result",
                    "tool_use_id": "t1",
                    "content": [
                        {"type": "text", "text": "here"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "AA"},
                        },
                    ],
                    "is_error": True,
                    "cache_control": {"type": "ephemeral"},
                }
            ),
        ],
        tools=[
            {"name": "screen", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}
        ],
        tool_choice={"type": "tool", "name": "screen"},
    )
    req = parse_messages_request(body)
    result = req.messages[2].content[0]
    assert isinstance(result, ToolResultPart) and result.content == "here" and result.is_error
    assert messages_request_to_body(req, "c") == dict(body, model="c")


def test_count_tokens_request() -> None:
    body = {
        "model": "claude-sonnet-4-5",
        "system": "S",
        "messages": [{"role": "user", "content": "Hi"}],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    req = parse_count_tokens_request(body)
    assert req.max_tokens is None and req.extra == {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    assert count_tokens_request_to_body(req, "c") == dict(body, model="c")
    with pytest.raises(FieldError) as info:
        parse_count_tokens_request({"model": "c", "messages": [{"role": "system", "content": "x"}]})
    assert info.value.field == "messages[0].role"


# --- responses -----------------------------------------------------------------------------------------

MESSAGE = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "text", "text": "I'll check."},
        {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"location": "SF"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 100,
        "cache_creation_input_tokens": 20,
        "cache_read_input_tokens": 300,
        "output_tokens": 50,
        "service_tier": "standard",
    },
}


def test_parse_messages_response() -> None:
    assert parse_messages_response(MESSAGE) == ChatResponse(
        id="msg_01XFDUDYJgAACzvnptvVoYEL",
        model="claude-sonnet-4-5-20250929",
        content=(TextPart("I'll check."), ToolCallPart("toolu_01A", "get_weather", '{"location":"SF"}')),
        finish_reason="tool_calls",
        # Every input token, with the cache reads and writes among them.
        usage=Usage(420, 50, 300, 20),
    )
    stopped = dict(MESSAGE, stop_reason="stop_sequence", stop_sequence="###", content=[])
    resp = parse_messages_response(stopped)
    assert resp.finish_reason == "stop" and resp.stop_sequence == "###"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"id": "m", "content": [{"text": "no type"}]},
        {"id": "m", "content": [{"type": "tool_use", "id": "t"}]},
        {"id": "m", "content": 5},
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        None,
    ],
)
def test_malformed_messages_response(body: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        parse_messages_response(body)


def test_encode_messages_response_validates_with_sdk() -> None:
    resp = ChatResponse(
        id="chatcmpl-1",
        model="gpt-4o",
        content=(
            TextPart("Sure."),
            ToolCallPart("call_1", "f", '{"q": "x"}'),
            ToolCallPart("call_2", "g", "not json"),
        ),
        finish_reason="tool_calls",
        usage=Usage(1200, 30, 1024),
    )
    body = encode_messages_response(resp, "my-alias")
    assert body["content"][1]["input"] == {"q": "x"}
    assert body["content"][2]["input"] == {"_raw_arguments": "not json"}
    assert body["usage"] == {"input_tokens": 176, "output_tokens": 30, "cache_read_input_tokens": 1024}
    assert body["stop_reason"] == "tool_use" and body["model"] == "my-alias"
    import anthropic.types as types

    parsed = types.Message.model_validate(orjson.loads(orjson.dumps(body)))
    assert parsed.stop_reason == "tool_use" and parsed.content[0].text == "Sure."
    assert parse_messages_response(body).usage == Usage(1200, 30, 1024)


@pytest.mark.parametrize(
    "finish,stop,expected",
    [
        ("stop", None, "end_turn"),
        ("stop", "##", "stop_sequence"),
        ("length", None, "max_tokens"),
        ("tool_calls", None, "tool_use"),
        ("content_filter", None, "refusal"),
        ("error", None, "end_turn"),
    ],
)
def test_finish_reason_to_anthropic(finish: Any, stop: str | None, expected: str) -> None:
    body = encode_messages_response(ChatResponse("i", "m", (), finish, stop_sequence=stop), "m")
    assert body["stop_reason"] == expected
    assert body["stop_sequence"] == (stop if expected == "stop_sequence" else None)


# --- streams -------------------------------------------------------------------------------------------

TOOL_STREAM = b"""event: message_start
data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","stop_sequence":null,"usage":{"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":100,"output_tokens":2},"content":[],"stop_reason":null}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":", checking."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"location\\":"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \\"San Francisco, CA\\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

"""

THINKING_STREAM = b"""event: message_start
data: {"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me think"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQB"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"42"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"stop_sequence","stop_sequence":"END"},"usage":{"input_tokens":12,"output_tokens":30}}

event: message_stop
data: {"type":"message_stop"}

"""


def decode(stream: bytes) -> list[Any]:
    decoder = AnthropicStreamDecoder()
    events = [
        e
        for name, payload in sse_events(stream)
        for e in decoder.feed_data(orjson.dumps(payload).decode(), name)
    ]
    return events + decoder.finish()


def test_decode_tool_stream_with_usage() -> None:
    assert decode(TOOL_STREAM) == [
        StreamStart("msg_014p7gG3wDgGV9EUtLvnow3U", "claude-sonnet-4-5-20250929"),
        UsageEvent(Usage(572, 2, 100)),
        TextDelta("Okay"),
        TextDelta(", checking."),
        ToolCallStart(0, "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather"),
        ToolCallDelta(0, '{"location":'),
        ToolCallDelta(0, ' "San Francisco, CA"}'),
        UsageEvent(Usage(572, 89, 100)),
        StreamEnd("tool_calls"),
    ]


def test_decode_thinking_and_stop_sequence() -> None:
    thinking = {"type": "thinking", "thinking": "Let me think", "signature": "EqQB"}
    assert decode(THINKING_STREAM) == [
        StreamStart("msg_01", "claude-sonnet-4-5"),
        UsageEvent(Usage(12, 1)),
        ReasoningDelta("Let me think"),
        ReasoningBlock(thinking),
        TextDelta("42"),
        UsageEvent(Usage(12, 30)),
        StreamEnd("stop", "END"),
    ]


def test_decode_error_event_and_truncation() -> None:
    decoder = AnthropicStreamDecoder()
    decoder.feed(sse_events(TOOL_STREAM)[0][1])
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert decoder.feed(error) == [StreamError("Overloaded", "overloaded_error")]
    assert decoder.finish() == []

    truncated = AnthropicStreamDecoder()
    for _, payload in sse_events(TOOL_STREAM)[:5]:
        truncated.feed(payload)
    with pytest.raises(UpstreamProtocolError):
        truncated.finish()
    with pytest.raises(UpstreamProtocolError):
        AnthropicStreamDecoder().feed({"type": "content_block_delta", "index": 0})
    with pytest.raises(UpstreamProtocolError):
        AnthropicStreamDecoder().feed({"type": "message_delta", "delta": {}})  # before message_start
    with pytest.raises(UpstreamProtocolError):
        AnthropicStreamDecoder().feed_data("{", "message_start")


def test_encoder_writes_thinking_as_anthropic_does() -> None:
    """Decoded and encoded again, a thinking stream's blocks are the upstream's, signature included."""
    out = AnthropicStreamEncoder("claude-sonnet-4-5").encode_all(decode(THINKING_STREAM))
    blocks = [(n, p) for n, p in sse_events(out) if n.startswith("content_block")]
    assert blocks == [(n, p) for n, p in sse_events(THINKING_STREAM) if n.startswith("content_block")]
    redacted = {"type": "redacted_thinking", "data": "EmwKAhgB"}
    again = AnthropicStreamEncoder("m").encode_all([StreamStart("m1", "m"), ReasoningBlock(redacted)])
    starts = [p["content_block"] for n, p in sse_events(again) if n == "content_block_start"]
    assert starts == [redacted]


def test_encoder_reproduces_anthropic_transcript() -> None:
    encoder = AnthropicStreamEncoder("claude-sonnet-4-5-20250929")
    out = encoder.encode_all(decode(TOOL_STREAM))
    expected = [(name, p) for name, p in sse_events(TOOL_STREAM) if name != "ping"]
    # Empty fragments are not forwarded; the final usage carries the input counts too (newer API form).
    expected = [e for e in expected if e[1].get("delta", {}).get("partial_json") != ""]
    expected[0][1]["message"]["usage"] = {
        "input_tokens": 472,
        "output_tokens": 2,
        "cache_read_input_tokens": 100,
    }
    expected[-2][1]["usage"] = {"input_tokens": 472, "output_tokens": 89, "cache_read_input_tokens": 100}
    assert sse_events(out) == expected


def test_encoder_text_then_tools_and_error() -> None:
    encoder = AnthropicStreamEncoder("alias", id="msg_x")
    out = encoder.encode_all(
        [
            StreamStart("chatcmpl-1", "gpt-4o"),
            TextDelta(""),
            ToolCallStart(0, "call_a", "f"),
            ToolCallDelta(0, "{}"),
            ToolCallStart(1, "call_b", "g"),
            TextDelta("after"),
            StreamEnd("tool_calls"),
        ]
    )
    events = sse_events(out)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0][1]["message"]["id"] == "msg_x" and events[0][1]["message"]["model"] == "alias"
    assert [p["index"] for n, p in events if n == "content_block_start"] == [0, 1, 2]
    assert events[-2][1]["usage"] == {"output_tokens": 0}

    failing = AnthropicStreamEncoder("alias")
    failing.encode(StreamStart("x", "y"))
    failing.encode(TextDelta("partial"))
    err = failing.encode(StreamError("Rate limited", "rate_limit_error"))
    assert sse_events(err) == [
        ("error", {"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limited"}})
    ]
    assert failing.encode(StreamEnd("stop")) == b""
    assert b"message_stop" not in AnthropicStreamEncoder("m").error("x", "server_error")


def test_encoded_stream_accumulates_in_sdk() -> None:
    import anthropic.lib.streaming._messages as streaming
    import anthropic.types as types
    import pydantic as pydantic

    adapter = pydantic.TypeAdapter(types.RawMessageStreamEvent)
    out = AnthropicStreamEncoder("alias").encode_all(decode(TOOL_STREAM))
    snapshot, json_bufs = None, {}
    for _, payload in sse_events(out):
        event = adapter.validate_python(payload)
        snapshot = streaming.accumulate_event(event=event, current_snapshot=snapshot, json_bufs=json_bufs)
    assert snapshot is not None
    assert snapshot.content[0].text == "Okay, checking."
    assert snapshot.content[1].input == {"location": "San Francisco, CA"}
    assert snapshot.stop_reason == "tool_use"
    assert (snapshot.usage.input_tokens, snapshot.usage.output_tokens) == (472, 89)
