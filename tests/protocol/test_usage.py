"""Token usage below the end-to-end level: the one parser and writer per protocol, and every encoder and
decoder carrying prompt-cache reads and writes in the member its protocol uses."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import anthropic.types
import openai.types
import orjson
import pytest

from gateway.protocol import anthropic as anthropic_protocol
from gateway.protocol import openai as openai_protocol
from gateway.protocol.canonical import (
    ChatResponse,
    StreamEnd,
    StreamStart,
    TextDelta,
    TextPart,
    TokenCount,
    Usage,
    UsageEvent,
)
from gateway.protocol.encoding import ClientEncoding
from gateway.protocol.usage import anthropic_usage, openai_usage, usage_to_anthropic, usage_to_openai

#: 20 prompt tokens: 5 read from the cache, 3 written to it, 12 neither.
CACHED = Usage(prompt_tokens=20, completion_tokens=7, cached_tokens=5, cache_creation_tokens=3)

# What the real APIs send (shapes from their documentation).
OPENAI_USAGE = {
    "prompt_tokens": 2006,
    "completion_tokens": 300,
    "total_tokens": 2306,
    "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
ANTHROPIC_USAGE = {
    "input_tokens": 12,
    "cache_creation_input_tokens": 3,
    "cache_read_input_tokens": 5,
    "cache_creation": {"ephemeral_5m_input_tokens": 3, "ephemeral_1h_input_tokens": 0},
    "output_tokens": 7,
    "service_tier": "standard",
}


def test_openai_usage_reads_cached_tokens_as_part_of_the_prompt() -> None:
    assert openai_usage(OPENAI_USAGE) == Usage(2006, 300, cached_tokens=1920)
    assert openai_usage({"prompt_tokens": 3, "completion_tokens": 4}) == Usage(3, 4)
    assert openai_usage({"prompt_tokens": 3, "prompt_tokens_details": None}) == Usage(3, 0)
    assert openai_usage(None) is None  # `"usage": null` on every stream chunk but the last
    assert openai_usage({"prompt_tokens": "3", "completion_tokens": True}) == Usage(0, 0)


def test_anthropic_usage_sums_the_three_input_counts() -> None:
    assert anthropic_usage(ANTHROPIC_USAGE) == CACHED
    assert anthropic_usage({"input_tokens": 9, "output_tokens": 2}) == Usage(9, 2)
    assert anthropic_usage(None) is None
    assert anthropic_usage("nonsense", CACHED) is CACHED


def test_anthropic_stream_usage_merges_message_start_and_message_delta() -> None:
    # message_start: the input counts, and a placeholder output count.
    start = anthropic_usage({**ANTHROPIC_USAGE, "output_tokens": 1})
    assert start == replace(CACHED, completion_tokens=1)
    # message_delta, classic form: only the output count; the input counts stay.
    assert anthropic_usage({"output_tokens": 7}, start) == CACHED
    # message_delta, newer form: updated input counts replace the earlier ones, member by member.
    updated = anthropic_usage({"input_tokens": 30, "cache_read_input_tokens": 0, "output_tokens": 9}, start)
    assert updated == Usage(30 + 0 + 3, 9, cached_tokens=0, cache_creation_tokens=3)
    assert anthropic_usage({"output_tokens": None, "input_tokens": None}, start) == start


def test_writers_put_each_count_in_its_protocols_member() -> None:
    assert usage_to_anthropic(CACHED) == {
        "input_tokens": 12,
        "output_tokens": 7,
        "cache_creation_input_tokens": 3,
        "cache_read_input_tokens": 5,
    }
    assert usage_to_openai(CACHED) == {
        "prompt_tokens": 20,
        "completion_tokens": 7,
        "total_tokens": 27,
        "prompt_tokens_details": {"cached_tokens": 5},
    }
    assert usage_to_anthropic(Usage(4, 1)) == {"input_tokens": 4, "output_tokens": 1}
    assert usage_to_openai(Usage(4, 1)) == {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5}
    # The SDKs read them.
    sdk = anthropic.types.Usage.model_validate(usage_to_anthropic(CACHED))
    assert (sdk.input_tokens, sdk.cache_read_input_tokens, sdk.cache_creation_input_tokens) == (12, 5, 3)
    assert openai.types.CompletionUsage.model_validate(usage_to_openai(CACHED)).prompt_tokens_details


@pytest.mark.parametrize(
    "usage", [CACHED, Usage(4, 1), Usage(10, 0, cached_tokens=10), Usage(9, 2, cache_creation_tokens=9)]
)
def test_write_then_read_gives_the_same_usage(usage: Usage) -> None:
    assert anthropic_usage(usage_to_anthropic(usage)) == usage
    # OpenAI has no member for cache writes: they stay counted among the prompt tokens.
    assert openai_usage(usage_to_openai(usage)) == replace(usage, cache_creation_tokens=0)


RESPONSE = ChatResponse(id="", model="m", content=(TextPart("Hi."),), finish_reason="stop", usage=CACHED)


def test_whole_replies_carry_the_usage_in_each_client_protocol() -> None:
    chat = orjson.loads(openai_protocol.CHAT.reply(RESPONSE, "m"))
    assert chat["usage"] == usage_to_openai(CACHED) and chat["id"].startswith("chatcmpl-")
    completion = orjson.loads(openai_protocol.COMPLETIONS.reply(RESPONSE, "m"))
    assert completion["usage"] == usage_to_openai(CACHED) and completion["id"].startswith("cmpl-")
    assert completion["choices"][0] == {"index": 0, "text": "Hi.", "logprobs": None, "finish_reason": "stop"}
    message = orjson.loads(anthropic_protocol.MESSAGES.reply(RESPONSE, "m"))
    assert message["usage"] == usage_to_anthropic(CACHED) and message["id"].startswith("msg_")
    assert anthropic_protocol.parse_messages_response(message).usage == CACHED
    assert orjson.loads(anthropic_protocol.COUNT_TOKENS.reply(TokenCount(42), "m")) == {"input_tokens": 42}


@pytest.mark.parametrize(
    "encoding", [openai_protocol.CHAT, openai_protocol.COMPLETIONS, anthropic_protocol.MESSAGES]
)
def test_a_reply_of_the_wrong_kind_is_refused(encoding: ClientEncoding) -> None:
    with pytest.raises(TypeError):
        encoding.reply(TokenCount(1), "m")


EVENTS = [StreamStart("", "m"), TextDelta("Hi."), UsageEvent(CACHED), StreamEnd("stop")]


def _sse(stream: bytes) -> list[tuple[str | None, Any]]:
    events = []
    for block in stream.decode().split("\n\n")[:-1]:
        name, data = None, ""
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            elif field == "data":
                data = value
        events.append((name, data if data == "[DONE]" else orjson.loads(data)))
    return events


def _stream(encoding: ClientEncoding, include_usage: bool) -> list[tuple[str | None, Any]]:
    encoder = encoding.stream("m", include_usage)
    return _sse(b"".join(encoder.encode(event) for event in EVENTS))


def test_streams_carry_the_usage_in_each_client_protocol() -> None:
    chat = _stream(openai_protocol.CHAT, True)
    assert chat[-1] == (None, "[DONE]") and chat[-2][1]["usage"] == usage_to_openai(CACHED)
    completion = _stream(openai_protocol.COMPLETIONS, True)
    assert completion[-1] == (None, "[DONE]") and completion[-2][1]["usage"] == usage_to_openai(CACHED)
    assert completion[0][1]["id"].startswith("cmpl-")
    unasked = _stream(openai_protocol.CHAT, False)
    assert unasked[-1] == (None, "[DONE]") and all("usage" not in data for _, data in unasked[:-1])
    messages = _stream(anthropic_protocol.MESSAGES, False)
    assert messages[-2][0] == "message_delta" and messages[-2][1]["usage"] == usage_to_anthropic(CACHED)
    assert messages[-1] == ("message_stop", {"type": "message_stop"})


def test_decoders_read_cache_counts_from_real_shaped_streams() -> None:
    decoder = anthropic_protocol.AnthropicStreamDecoder()
    start = {
        "type": "message_start",
        "message": {"id": "msg_1", "model": "c", "usage": {**ANTHROPIC_USAGE, "output_tokens": 1}},
    }
    events = decoder.feed(start)
    events += decoder.feed(
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}}
    )
    events += decoder.feed({"type": "message_stop"})
    assert [e.usage for e in events if type(e) is UsageEvent][-1] == CACHED

    decoder = openai_protocol.OpenAIStreamDecoder()
    events = decoder.feed_data(
        b'{"id":"c","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}]}'
    )
    events += decoder.feed_data(orjson.dumps({"id": "c", "choices": [], "usage": OPENAI_USAGE}))
    events += decoder.feed_data(b"[DONE]")
    assert [e.usage for e in events if type(e) is UsageEvent] == [Usage(2006, 300, cached_tokens=1920)]
    assert type(events[-1]) is StreamEnd


@pytest.mark.parametrize(
    ("encoding", "error_type", "expected"),
    [
        (
            openai_protocol.CHAT,
            "timeout",
            ("data", {"message": "late", "type": "timeout", "param": None, "code": None}),
        ),
        (
            openai_protocol.COMPLETIONS,
            "api_error",
            ("data", {"message": "late", "type": "server_error", "param": None, "code": None}),
        ),
        (anthropic_protocol.MESSAGES, "timeout", ("error", {"type": "timeout_error", "message": "late"})),
        (anthropic_protocol.MESSAGES, "server_error", ("error", {"type": "api_error", "message": "late"})),
    ],
)
def test_in_stream_errors_come_from_the_protocol(
    encoding: ClientEncoding, error_type: str, expected: tuple[str, dict[str, Any]]
) -> None:
    """One error event per protocol, with the error type translated to a name its SDK knows; the stream
    encoders end a stream with the same bytes."""
    event = encoding.error_event("late", error_type)
    [(name, payload)] = _sse(event)
    if expected[0] == "data":
        assert name is None and payload == {"error": expected[1]}
    else:
        assert name == "error" and payload == {"type": "error", "error": expected[1]}
    encoder = encoding.stream("m", False)
    assert encoder.error("late", error_type) == event
    assert encoder.encode(TextDelta("more")) == b""  # nothing after the error
