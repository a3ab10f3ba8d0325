"""The reasoning mapping (gateway/protocol/reasoning.py) and how each protocol reads and writes it:
effort ⇄ budget, token caps, usage's reasoning tokens, thinking shown to OpenAI clients."""

from __future__ import annotations

import orjson
import pytest

from gateway.protocol import ReasoningBlock, ReasoningDelta, ReasoningPart, StreamEnd, StreamStart, TextDelta
from gateway.protocol.anthropic import (
    messages_request_to_body,
    parse_messages_request,
    parse_messages_response,
)
from gateway.protocol.anthropic_body import NoThinkingBudget
from gateway.protocol.canonical import ChatResponse, Reasoning, TextPart, Usage
from gateway.protocol.openai import (
    OpenAIStreamEncoder,
    chat_request_to_body,
    encode_chat_response,
    parse_chat_request,
)
from gateway.protocol.reasoning import EFFORT_BUDGETS, anthropic_thinking, effort_for_budget, openai_effort
from gateway.protocol.usage import anthropic_usage, openai_usage, usage_to_openai

BLOCK = {"type": "thinking", "thinking": "Let me see", "signature": "EqQBsig"}
REDACTED = {"type": "redacted_thinking", "data": "EmwKAhgB"}
USER = [{"role": "user", "content": "hi"}]


def test_the_table_both_ways() -> None:
    assert dict(EFFORT_BUDGETS) == {"low": 1024, "medium": 2048, "high": 4096}
    for effort, budget in EFFORT_BUDGETS.items():
        assert effort_for_budget(budget) == effort  # a round trip is exact
    assert [effort_for_budget(b) for b in (1024, 2047, 2048, 4095, 4096, 32000)] == [
        "low", "low", "medium", "medium", "high", "high",
    ]  # fmt: skip


def test_the_budget_fits_under_the_client_s_cap() -> None:
    assert anthropic_thinking(Reasoning(effort="high"), None, 4096) == (
        {"type": "enabled", "budget_tokens": 4096},
        8192,
    )
    assert anthropic_thinking(Reasoning(effort="high"), 3000, 4096) == (
        {"type": "enabled", "budget_tokens": 2999},
        3000,
    )
    assert anthropic_thinking(Reasoning(effort="low"), 1024, 4096) is None
    assert anthropic_thinking(Reasoning(budget_tokens=5000), 8000, 4096) == (
        {"type": "enabled", "budget_tokens": 5000},
        8000,
    )


def test_an_openai_request_becomes_an_anthropic_body_and_back() -> None:
    req = parse_chat_request({"model": "m", "messages": USER, "reasoning_effort": "medium"})
    assert req.reasoning == Reasoning(effort="medium")
    body = messages_request_to_body(req, "claude")
    assert (
        body["thinking"] == {"type": "enabled", "budget_tokens": 2048} and body["max_tokens"] == 2048 + 4096
    )
    assert "reasoning_effort" not in body
    capped = parse_chat_request(
        {"model": "m", "messages": USER, "reasoning_effort": "low", "max_tokens": 900}
    )
    with pytest.raises(NoThinkingBudget):
        messages_request_to_body(capped, "claude")
    same = chat_request_to_body(req, "o4-mini")
    assert same["reasoning_effort"] == "medium"  # the client's own field, as sent
    none = parse_chat_request({"model": "m", "messages": USER, "reasoning_effort": "none"})
    assert none.reasoning is None and "thinking" not in messages_request_to_body(none, "claude")


def test_an_anthropic_request_becomes_an_openai_body() -> None:
    thinking = {"type": "enabled", "budget_tokens": 3000}
    req = parse_messages_request({"model": "m", "max_tokens": 5000, "messages": USER, "thinking": thinking})
    assert req.reasoning == Reasoning(budget_tokens=3000) and openai_effort(req.reasoning) == "medium"
    body = chat_request_to_body(req, "o4-mini")
    assert body["reasoning_effort"] == "medium" and body["max_completion_tokens"] == 5000
    assert "max_tokens" not in body and "thinking" not in body


def test_thinking_blocks_on_an_assistant_message_are_read_back() -> None:
    assistant = {
        "role": "assistant",
        "content": "x",
        "thinking_blocks": [BLOCK, REDACTED],
        "reasoning_content": "?",
    }
    req = parse_chat_request({"model": "m", "messages": [*USER, assistant, *USER]})
    assert req.messages[1].content[:2] == (ReasoningPart("Let me see", BLOCK), ReasoningPart("", REDACTED))
    body = messages_request_to_body(req, "claude")
    assert body["messages"][1]["content"][:2] == [BLOCK, REDACTED]  # first, verbatim
    with pytest.raises(Exception, match="thinking_blocks"):
        parse_chat_request(
            {"model": "m", "messages": [*USER, {**assistant, "thinking_blocks": [{"type": "x"}]}]}
        )


def test_an_anthropic_answer_s_thinking_is_shown_to_an_openai_client() -> None:
    body = {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "c",
        "content": [BLOCK, REDACTED, {"type": "text", "text": "42"}],
        "stop_reason": "end_turn", "usage": {"input_tokens": 3, "output_tokens": 9},
    }  # fmt: skip
    answer = parse_messages_response(body)
    assert answer.content[0] == ReasoningPart("Let me see", BLOCK) and answer.text == "42"
    message = encode_chat_response(answer, "claude")["choices"][0]["message"]
    assert message["content"] == "42" and message["reasoning_content"] == "Let me see"
    assert message["thinking_blocks"] == [BLOCK, REDACTED]
    plain = encode_chat_response(ChatResponse("r", "m", (TextPart("hi"),), "stop"), "m")
    assert "reasoning_content" not in plain["choices"][0]["message"]


def test_the_openai_stream_encoder_writes_reasoning_chunks() -> None:
    encoder = OpenAIStreamEncoder("claude", id="c1", created=1)
    events = [StreamStart("m1", "c"), ReasoningDelta("Let "), ReasoningDelta("me see"), ReasoningBlock(BLOCK)]
    events += [TextDelta("42"), StreamEnd("stop")]
    chunks = [
        orjson.loads(line[6:])
        for line in encoder.encode_all(events).split(b"\n\n")
        if line[6:] not in (b"", b"[DONE]")
    ]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "Let me see"
    assert [b for d in deltas for b in d.get("thinking_blocks", [])] == [BLOCK]
    assert "".join(d.get("content") or "" for d in deltas) == "42"


def test_reasoning_tokens_in_usage() -> None:
    reported = {
        "prompt_tokens": 5,
        "completion_tokens": 40,
        "completion_tokens_details": {"reasoning_tokens": 32},
    }
    usage = openai_usage(reported)
    assert usage == Usage(5, 40, reasoning_tokens=32)
    assert usage_to_openai(usage)["completion_tokens_details"] == {"reasoning_tokens": 32}
    assert "completion_tokens_details" not in usage_to_openai(Usage(5, 8))
    assert openai_usage(
        {"prompt_tokens": 5, "completion_tokens": 8, "completion_tokens_details": None}
    ) == Usage(5, 8)
    # Anthropic counts thinking in output_tokens only.
    assert anthropic_usage({"input_tokens": 3, "output_tokens": 9}) == Usage(3, 9)
