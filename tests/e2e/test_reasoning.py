"""Reasoning through the real gateway (docs/reasoning.md), with the official SDKs as clients.

Anthropic extended thinking on an Anthropic backend is relayed untouched: thinking blocks and their
signatures byte-identical, streamed and not, and a two-turn tool use that sends the thinking block back
works (the fake checks the signature as the API does). OpenAI `reasoning_effort` passes through to an
OpenAI backend, its reasoning tokens reported in usage. Across protocols the effort maps to a thinking
budget and back, an Anthropic backend's thinking reaches an OpenAI client as `reasoning_content` and
`thinking_blocks` (which it sends back for tool use), and what has no mapping is a 400 naming the field.
A Responses API client gets the thinking as reasoning items, which it sends back for tool use.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
import requests

from tests.e2e.upstreams import (
    FAKE_KEY,
    GATEWAY_ENV,
    WEATHER_SCHEMA,
    Upstreams,
    assert_problem,
    backends_yaml,
    expected_reply,
    fake_upstreams,
    tool_result_reply,
)

PROMPT = "Tell me about the weather in Lisbon today"
MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": PROMPT}]
THINKING = {"type": "enabled", "budget_tokens": 1024}
ANTHROPIC_TOOLS = [{"name": "get_weather", "description": "Forecast", "input_schema": WEATHER_SCHEMA}]
OPENAI_TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}]
RESPONSES_TOOLS: list[Any] = [{"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA}]


@pytest.fixture(scope="module")
def up() -> Iterator[Upstreams]:
    with fake_upstreams() as upstreams:
        yield upstreams


@pytest.fixture(scope="module")
def gateway(gateway_server_module, up: Upstreams):
    config = f"""
backends:
{backends_yaml(up)}
models:
  claude: {{chain: [{{backend: an, model: claude-sonnet-test}}]}}
  gpt: {{chain: [{{backend: oa-official, model: o4-mini}}]}}
  claude-plain: {{chain: [{{backend: an, model: claude-haiku-test, capabilities: {{reasoning: false}}}}]}}
"""
    return gateway_server_module(config, env=GATEWAY_ENV)


@pytest.fixture(scope="module")
def claude(gateway) -> Iterator[anthropic.Anthropic]:
    sdk = anthropic.Anthropic(base_url=gateway.base_url, api_key="sk-e2e", max_retries=0, timeout=30)
    yield sdk
    sdk.close()


@pytest.fixture(scope="module")
def gpt(gateway) -> Iterator[openai.OpenAI]:
    sdk = openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key="sk-e2e", max_retries=0, timeout=30)
    yield sdk
    sdk.close()


def direct(up: Upstreams, body: dict[str, Any]) -> requests.Response:
    """The fake Anthropic's own answer to `body` (deterministic: ids aside, the gateway's must match)."""
    headers = {"x-api-key": FAKE_KEY, "anthropic-version": "2023-06-01"}
    return requests.post(f"{up.anthropic.base_url}/v1/messages", json=body, headers=headers, timeout=30)


def block_frames(raw: bytes) -> list[bytes]:
    """The content-block SSE frames of an Anthropic stream, as bytes."""
    return [f for f in raw.split(b"\n\n") if f.startswith(b"event: content_block_")]


# ------------------------------------------------------------------ Anthropic thinking, pass-through


def test_thinking_blocks_and_signatures_are_byte_identical(
    claude: anthropic.Anthropic, up: Upstreams
) -> None:
    raw = claude.messages.with_raw_response.create(
        model="claude", max_tokens=2048, thinking=THINKING, messages=MESSAGES
    )
    message = raw.parse()
    thinking, text = message.content
    assert thinking.type == "thinking" and thinking.signature and text.text == expected_reply(PROMPT).text
    assert up.anthropic.last_body is not None and up.anthropic.last_body["thinking"] == THINKING
    own = direct(
        up, {"model": "claude-sonnet-test", "max_tokens": 2048, "thinking": THINKING, "messages": MESSAGES}
    )
    [block] = [b for b in own.json()["content"] if b["type"] == "thinking"]
    assert thinking.model_dump() == block
    assert json.dumps(block, separators=(",", ":")).encode() in raw.http_response.content


def test_streamed_thinking_is_byte_identical(claude: anthropic.Anthropic, up: Upstreams) -> None:
    body = {"model": "claude", "max_tokens": 2048, "thinking": THINKING, "messages": MESSAGES, "stream": True}
    with claude.messages.with_streaming_response.create(**body) as response:
        through = response.read()
    own = direct(up, {**body, "model": "claude-sonnet-test"}).content
    frames = block_frames(through)
    assert frames == block_frames(own)
    assert b'"type":"thinking_delta"' in through and b'"type":"signature_delta"' in through
    with claude.messages.stream(
        model="claude", max_tokens=2048, thinking=THINKING, messages=MESSAGES
    ) as stream:
        final = stream.get_final_message()
    whole = claude.messages.create(model="claude", max_tokens=2048, thinking=THINKING, messages=MESSAGES)
    assert [b.model_dump() for b in final.content] == [b.model_dump() for b in whole.content]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_two_turn_tool_use_sends_the_thinking_block_back(claude: anthropic.Anthropic, stream: bool) -> None:
    ask = {"model": "claude", "max_tokens": 2048, "thinking": THINKING, "tools": ANTHROPIC_TOOLS}
    if stream:
        with claude.messages.stream(**ask, messages=MESSAGES) as events:
            first = events.get_final_message()
    else:
        first = claude.messages.create(**ask, messages=MESSAGES)
    thinking, call = first.content
    assert (thinking.type, call.type, first.stop_reason) == ("thinking", "tool_use", "tool_use")
    result = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}],
    }
    turn = [*MESSAGES, {"role": "assistant", "content": [b.model_dump() for b in first.content]}, result]
    second = claude.messages.create(**ask, messages=turn)
    assert second.content[-1].text == tool_result_reply("sunny")
    tampered = {**thinking.model_dump(), "signature": thinking.signature[:-4] + "AAAA"}
    turn[1] = {"role": "assistant", "content": [tampered, call.model_dump()]}
    with pytest.raises(anthropic.BadRequestError, match="Invalid `signature` in `thinking` block"):
        claude.messages.create(**ask, messages=turn)


# ------------------------------------------------------------------ OpenAI reasoning_effort


def test_reasoning_effort_passes_to_openai_with_reasoning_tokens(gpt: openai.OpenAI, up: Upstreams) -> None:
    answer = gpt.chat.completions.create(model="gpt", messages=MESSAGES, reasoning_effort="low")
    assert up.openai.last_body is not None and up.openai.last_body["reasoning_effort"] == "low"
    usage = answer.usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 16
    assert usage.completion_tokens == 16 + len(expected_reply(PROMPT).text.split())
    chunks = list(
        gpt.chat.completions.create(
            model="gpt",
            messages=MESSAGES,
            reasoning_effort="low",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    last = chunks[-1].usage
    assert last is not None and last.completion_tokens_details is not None
    assert last.completion_tokens_details.reasoning_tokens == 16


# ------------------------------------------------------------------ across protocols


@pytest.mark.parametrize(("effort", "budget"), [("low", 1024), ("medium", 2048), ("high", 4096)])
def test_an_openai_effort_becomes_an_anthropic_thinking_budget(
    gpt: openai.OpenAI, up: Upstreams, effort: str, budget: int
) -> None:
    answer = gpt.chat.completions.create(model="claude", messages=MESSAGES, reasoning_effort=effort)
    sent = up.anthropic.last_body
    assert sent is not None and sent["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert sent["max_tokens"] == budget + 4096  # no cap asked: the budget plus the default answer
    message = answer.choices[0].message
    assert message.content == expected_reply(PROMPT).text
    extra = message.model_extra or {}
    [block] = extra["thinking_blocks"]
    assert block["type"] == "thinking" and block["signature"]
    assert extra["reasoning_content"] == block["thinking"] and block["thinking"].startswith("Thinking about")
    capped = gpt.chat.completions.create(
        model="claude", messages=MESSAGES, reasoning_effort=effort, max_completion_tokens=1500
    )
    assert capped.choices[0].message.content
    assert up.anthropic.last_body["max_tokens"] == 1500
    assert up.anthropic.last_body["thinking"]["budget_tokens"] == min(budget, 1499)


def test_streamed_thinking_reaches_an_openai_client(gpt: openai.OpenAI) -> None:
    whole = gpt.chat.completions.create(model="claude", messages=MESSAGES, reasoning_effort="low")
    expected = whole.choices[0].message.model_extra or {}
    chunks = list(
        gpt.chat.completions.create(model="claude", messages=MESSAGES, reasoning_effort="low", stream=True)
    )
    deltas = [c.choices[0].delta.model_extra or {} for c in chunks if c.choices]
    reasoning = "".join(d.get("reasoning_content", "") for d in deltas)
    blocks = [b for d in deltas for b in d.get("thinking_blocks", [])]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert reasoning == expected["reasoning_content"]
    assert blocks == expected["thinking_blocks"]
    assert text == whole.choices[0].message.content


def test_an_openai_client_s_tool_loop_sends_thinking_blocks_back(gpt: openai.OpenAI) -> None:
    first = gpt.chat.completions.create(
        model="claude", messages=MESSAGES, tools=OPENAI_TOOLS, reasoning_effort="low"
    )
    message = first.choices[0].message
    [call] = message.tool_calls or []
    blocks = (message.model_extra or {})["thinking_blocks"]
    assistant = {
        "role": "assistant",
        "content": None,
        "tool_calls": [call.model_dump(exclude_none=True)],
        "thinking_blocks": blocks,
    }
    result = {"role": "tool", "tool_call_id": call.id, "content": "sunny"}
    second = gpt.chat.completions.create(
        model="claude", messages=[*MESSAGES, assistant, result], tools=OPENAI_TOOLS, reasoning_effort="low"
    )
    assert second.choices[0].message.content == tool_result_reply("sunny")
    bare = {k: v for k, v in assistant.items() if k != "thinking_blocks"}
    with pytest.raises(openai.BadRequestError, match="must start with a thinking block"):
        gpt.chat.completions.create(
            model="claude", messages=[*MESSAGES, bare, result], tools=OPENAI_TOOLS, reasoning_effort="low"
        )


def test_an_anthropic_budget_becomes_an_openai_effort(claude: anthropic.Anthropic, up: Upstreams) -> None:
    message = claude.messages.create(
        model="gpt", max_tokens=5000, thinking={"type": "enabled", "budget_tokens": 3000}, messages=MESSAGES
    )
    sent = up.openai.last_body
    assert sent is not None and sent["reasoning_effort"] == "medium"
    assert sent["max_completion_tokens"] == 5000 and "max_tokens" not in sent and "thinking" not in sent
    # OpenAI shows no reasoning: the answer is text, its thinking counted in the output tokens.
    assert [b.type for b in message.content] == ["text"]
    assert message.usage.output_tokens == 32 + len(expected_reply(PROMPT).text.split())


def test_what_has_no_mapping_is_a_400_naming_the_field(
    gpt: openai.OpenAI, claude: anthropic.Anthropic, gateway
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        gpt.chat.completions.create(model="claude", messages=MESSAGES, reasoning_effort="minimal")
    body = assert_problem(caught.value.response, 400, sdk_error=caught.value)
    assert body["field"] == "reasoning_effort"
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.create(model="gpt", max_tokens=2048, thinking={"type": "adaptive"}, messages=MESSAGES)
    assert assert_problem(refused.value.response, 400)["field"] == "thinking"
    # A cap too small for Anthropic's smallest thinking budget.
    with pytest.raises(openai.BadRequestError, match="smallest thinking budget") as caught:
        gpt.chat.completions.create(
            model="claude", messages=MESSAGES, reasoning_effort="low", max_completion_tokens=900
        )
    assert_problem(caught.value.response, 400)
    # A target without the capability: named with the field that asked for it.
    with pytest.raises(openai.BadRequestError) as caught:
        gpt.chat.completions.create(model="claude-plain", messages=MESSAGES, reasoning_effort="low")
    body = assert_problem(caught.value.response, 400)
    assert (body["capability"], body["field"]) == ("reasoning", "reasoning_effort")
    # Thinking blocks sent back go only to an Anthropic backend.
    block = {"type": "thinking", "thinking": "hmm", "signature": "c2ln"}
    history = [*MESSAGES, {"role": "assistant", "content": "x", "thinking_blocks": [block]}]
    with pytest.raises(openai.BadRequestError) as caught:
        gpt.chat.completions.create(model="gpt", messages=[*history, {"role": "user", "content": "more"}])
    assert assert_problem(caught.value.response, 400)["field"] == "thinking_blocks"


# ------------------------------------------------------------------ the Responses API


def test_a_responses_effort_gives_reasoning_items(gpt: openai.OpenAI, up: Upstreams) -> None:
    response = gpt.responses.create(
        model="claude", input=PROMPT, reasoning={"effort": "low", "summary": "auto"}
    )
    sent = up.anthropic.last_body
    assert sent is not None and sent["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert sent["max_tokens"] == 1024 + 4096
    thought, message = response.output
    assert thought.type == "reasoning" and message.type == "message"
    assert thought.summary == [] and thought.status == "completed"
    [content] = thought.content or []
    assert content.type == "reasoning_text" and content.text.startswith("Thinking about")
    assert (thought.encrypted_content or "").startswith("gw1:")
    assert response.output_text == expected_reply(PROMPT).text
    assert response.reasoning is not None and response.reasoning.effort == "low"

    events = list(
        gpt.responses.create(model="claude", input=PROMPT, reasoning={"effort": "low"}, stream=True)
    )
    kinds = [e.type for e in events]
    assert kinds[2:4] == ["response.output_item.added", "response.content_part.added"]
    assert "response.reasoning_text.done" in kinds and kinds[-1] == "response.completed"
    streamed = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    assert streamed == content.text
    final = events[-1].response
    assert [i.type for i in final.output] == ["reasoning", "message"]
    # The same block, signature included.
    assert final.output[0].encrypted_content == thought.encrypted_content
    assert final.output_text == response.output_text
    # The SDK's stream helper assembles the same response from the events.
    with gpt.responses.stream(model="claude", input=PROMPT, reasoning={"effort": "low"}) as helped:
        assembled = helped.get_final_response()
    assert [i.type for i in assembled.output] == ["reasoning", "message"]
    assert assembled.output[0].content == thought.content  # type: ignore[union-attr]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_responses_tool_loop_sends_the_reasoning_item_back(gpt: openai.OpenAI, stream: bool) -> None:
    asked: dict[str, Any] = {"model": "claude", "tools": RESPONSES_TOOLS, "reasoning": {"effort": "low"}}
    if stream:
        events = list(gpt.responses.create(input=PROMPT, stream=True, **asked))
        first = events[-1].response
    else:
        first = gpt.responses.create(input=PROMPT, **asked)
    assert [i.type for i in first.output] == ["reasoning", "function_call"]
    call = first.output[1]
    returned = [i.model_dump(exclude_none=True) for i in first.output]
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}  # type: ignore[union-attr]
    user = {"role": "user", "content": PROMPT}
    second = gpt.responses.create(input=[user, *returned, result], **asked)
    assert second.output_text == tool_result_reply("sunny")
    assert [i.type for i in second.output] == ["reasoning", "message"]
    # Without the reasoning item, Anthropic refuses the turn, as it does for its own clients.
    with pytest.raises(openai.BadRequestError, match="must start with a thinking block"):
        gpt.responses.create(input=[user, returned[1], result], **asked)


def test_responses_reasoning_without_a_mapping_is_a_400_naming_it(gpt: openai.OpenAI, up: Upstreams) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        gpt.responses.create(model="claude", input=PROMPT, reasoning={"effort": "minimal"})
    assert assert_problem(caught.value.response, 400, sdk_error=caught.value)["field"] == "reasoning"
    with pytest.raises(openai.BadRequestError) as caught:
        gpt.responses.create(model="claude-plain", input=PROMPT, reasoning={"effort": "low"})
    body = assert_problem(caught.value.response, 400)
    assert (body["capability"], body["field"]) == ("reasoning", "reasoning")
    # OpenAI's own reasoning items (no gateway marker) go to OpenAI only.
    theirs = {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA"}
    with pytest.raises(openai.BadRequestError) as caught:
        gpt.responses.create(model="claude", input=[{"role": "user", "content": PROMPT}, theirs])
    assert "reasoning" in assert_problem(caught.value.response, 400)["detail"]
    # The gateway's go to Anthropic only.
    ours = gpt.responses.create(model="claude", input=PROMPT, reasoning={"effort": "low"}).output[0]
    history = [{"role": "user", "content": PROMPT}, ours.model_dump(exclude_none=True)]
    with pytest.raises(openai.BadRequestError) as caught:
        gpt.responses.create(model="gpt", input=[*history, {"role": "user", "content": "more"}])
    assert_problem(caught.value.response, 400)
    # To OpenAI itself, `reasoning` passes untouched.
    gpt.responses.create(model="gpt", input=PROMPT, reasoning={"effort": "minimal", "summary": "auto"})
    assert up.openai.last_body is not None
    assert up.openai.last_body["reasoning"] == {"effort": "minimal", "summary": "auto"}
