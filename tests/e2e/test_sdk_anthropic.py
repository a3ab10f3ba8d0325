"""The official Anthropic SDK as the client of the real gateway: messages (plain, streamed with the SDK's
`messages.stream()` helper and as raw events, max_tokens, stop sequences, tools) and count_tokens,
against an Anthropic backend (pass-through) and OpenAI-speaking backends (translated both ways).

The fakes answer deterministically (`gateway.testing.behaviour`), so every test knows the exact text,
token counts and stop reason to expect.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from gateway.testing.behaviour import split_fragments
from tests.e2e.upstreams import (
    GATEWAY_ENV,
    TOKEN_DELAY_MS,
    TOOL_TOKENS,
    WEATHER_ARGS,
    WEATHER_SCHEMA,
    Upstreams,
    assert_problem,
    backends_yaml,
    config_version,
    count_tokens,
    expected_reply,
    fake_upstreams,
    tool_result_reply,
)

SYSTEM = "You answer in one short paragraph."
PROMPT = "Tell me about the weather in Lisbon today"
MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": PROMPT}]
PROMPT_TOKENS = count_tokens(SYSTEM) + count_tokens(PROMPT)
REPLY = expected_reply(PROMPT)

TOOLS: list[dict[str, Any]] = [
    {"name": "get_weather", "description": "The forecast for a city", "input_schema": WEATHER_SCHEMA},
    {
        "name": "get_time",
        "description": "The time in a time zone",
        "input_schema": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
    },
]
WEATHER_JSON = json.dumps(WEATHER_ARGS, separators=(",", ":"))
TOOL_RESULT = "sunny ☀ 21°C — Lisboa"
ANTHROPIC_ID = re.compile(r"[a-zA-Z0-9_-]+")

# (public model, backend that serves it): pass-through, and translation to both OpenAI backend types.
CHAT_MODELS = pytest.mark.parametrize(
    ("model", "backend"),
    [("claude", "an"), ("gpt", "oa"), ("gpt-official", "oa-official")],
    ids=["passthrough", "openai-compatible-backend", "openai-backend"],
)
TOOL_MODELS = pytest.mark.parametrize("model", ["claude", "gpt"], ids=["passthrough", "openai-backend"])


def config(up: Upstreams) -> str:
    return f"""
backends:
{backends_yaml(up)}
models:
  claude:
    aliases: [claude-latest]
    chain: [{{backend: an, model: claude-sonnet-test}}]
  gpt: {{chain: [{{backend: oa, model: gpt-4o}}]}}
  claude-slow: {{chain: [{{backend: an-slow, model: claude-sonnet-test}}]}}
  gpt-slow: {{chain: [{{backend: oa-slow, model: gpt-4o}}]}}
  gpt-official: {{chain: [{{backend: oa-official, model: gpt-4o-mini}}]}}
"""


@pytest.fixture(scope="module")
def up() -> Iterator[Upstreams]:
    with fake_upstreams() as upstreams:
        yield upstreams


@pytest.fixture(scope="module")
def gateway(gateway_server_module, up: Upstreams):
    return gateway_server_module(config(up), env=GATEWAY_ENV)


@pytest.fixture(scope="module")
def client(gateway) -> Iterator[anthropic.Anthropic]:
    sdk = anthropic.Anthropic(base_url=gateway.base_url, api_key="sk-e2e-client", max_retries=0, timeout=30)
    yield sdk
    sdk.close()


def assert_gateway_headers(headers: Any, gateway, backend: str) -> None:
    rid = headers["x-request-id"]
    assert re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", rid)
    assert headers["request-id"] == rid, "the Anthropic SDK reads the id from request-id"
    assert headers["x-gateway-backend"] == backend
    assert headers["x-gateway-attempts"] == "1"
    assert headers["x-config-version"] == config_version(gateway.config_path)


def text_of(message: Any) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def check_event_grammar(events: list[Any]) -> None:
    """message_start, then per block start / deltas / stop with indexes 0, 1, ..., then message_delta
    and message_stop; pings may come anywhere after message_start."""
    kinds = [e.type for e in events if e.type != "ping"]
    assert kinds[0] == "message_start" and events[0].type == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("message_start") == kinds.count("message_delta") == kinds.count("message_stop") == 1
    open_block: int | None = None
    next_index = 0
    for event in events[1:-2]:
        if event.type == "ping":
            continue
        if event.type == "content_block_start":
            assert open_block is None, "a block starts while another is open"
            assert event.index == next_index
            open_block, next_index = event.index, next_index + 1
        elif event.type == "content_block_delta":
            assert event.index == open_block
        elif event.type == "content_block_stop":
            assert event.index == open_block
            open_block = None
        else:
            pytest.fail(f"unexpected event {event.type} inside the message")
    assert open_block is None and next_index >= 1


# ---------------------------------------------------------------------------------------- messages


@CHAT_MODELS
def test_message(client: anthropic.Anthropic, gateway, model: str, backend: str) -> None:
    raw = client.messages.with_raw_response.create(
        model=model, max_tokens=256, system=SYSTEM, messages=MESSAGES
    )
    assert_gateway_headers(raw.headers, gateway, backend)
    message = raw.parse()
    assert message._request_id == raw.headers["request-id"]
    assert message.type == "message" and message.role == "assistant"
    assert message.id
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == REPLY.text
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert (message.usage.input_tokens, message.usage.output_tokens) == (PROMPT_TOKENS, 16)


@CHAT_MODELS
def test_stream_helper_matches_the_plain_message(
    client: anthropic.Anthropic, gateway, model: str, backend: str
) -> None:
    with client.messages.stream(model=model, max_tokens=256, system=SYSTEM, messages=MESSAGES) as stream:
        assert stream.response.headers["x-gateway-backend"] == backend
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == REPLY.text
    assert text_of(final) == REPLY.text
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (PROMPT_TOKENS, 16)


@pytest.mark.parametrize("model", ["claude-slow", "gpt-slow"], ids=["passthrough", "openai-backend"])
def test_stream_is_relayed_as_it_is_generated(client: anthropic.Anthropic, model: str) -> None:
    # The backend streams one token every TOKEN_DELAY_MS: the deltas must arrive spread out like that,
    # not buffered into one burst at the end.
    arrivals: list[float] = []
    with client.messages.stream(model=model, max_tokens=256, messages=MESSAGES) as stream:
        for _ in stream.text_stream:
            arrivals.append(time.monotonic())
        final = stream.get_final_message()
    assert text_of(final) == REPLY.text
    assert len(arrivals) == 16
    assert arrivals[-1] - arrivals[0] >= 0.5 * 15 * TOKEN_DELAY_MS / 1000


@CHAT_MODELS
def test_raw_stream_events_are_well_formed(client: anthropic.Anthropic, model: str, backend: str) -> None:
    events = list(
        client.messages.create(model=model, max_tokens=256, system=SYSTEM, messages=MESSAGES, stream=True)
    )
    check_event_grammar(events)
    start = events[0]
    assert start.message.role == "assistant" and start.message.content == []
    assert start.message.stop_reason is None
    blocks = [e for e in events if e.type == "content_block_start"]
    assert [b.content_block.type for b in blocks] == ["text"]
    deltas = [e.delta for e in events if e.type == "content_block_delta"]
    assert all(d.type == "text_delta" for d in deltas)
    assert "".join(d.text for d in deltas) == REPLY.text
    delta = next(e for e in events if e.type == "message_delta")
    assert delta.delta.stop_reason == "end_turn"
    assert delta.usage.output_tokens == 16


@CHAT_MODELS
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_max_tokens_stop_reason(client: anthropic.Anthropic, model: str, backend: str, stream: bool) -> None:
    capped = expected_reply(PROMPT, 5)
    assert capped.finish == "length"
    if stream:
        with client.messages.stream(model=model, max_tokens=5, messages=MESSAGES) as events:
            assert "".join(events.text_stream) == capped.text
            message = events.get_final_message()
    else:
        message = client.messages.create(model=model, max_tokens=5, messages=MESSAGES)
    assert text_of(message) == capped.text
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 5


@CHAT_MODELS
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_stop_sequence(client: anthropic.Anthropic, model: str, backend: str, stream: bool) -> None:
    stop = REPLY.text.split()[6]
    stops = ["never-in-the-text", stop]
    cut = expected_reply(PROMPT, None, tuple(stops))
    assert cut.finish == "stop_sequence" and cut.text
    if stream:
        with client.messages.stream(
            model=model, max_tokens=256, messages=MESSAGES, stop_sequences=stops
        ) as s:
            assert "".join(s.text_stream) == cut.text
            message = s.get_final_message()
    else:
        message = client.messages.create(model=model, max_tokens=256, messages=MESSAGES, stop_sequences=stops)
    assert text_of(message) == cut.text
    assert message.usage.output_tokens == cut.tokens
    if backend == "an":
        assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", stop)
    else:
        # OpenAI reports finish_reason "stop" for a stop sequence and for a natural end alike, without
        # naming the sequence, so a translated answer may say end_turn; it must never be inconsistent.
        assert message.stop_reason in ("end_turn", "stop_sequence")
        assert message.stop_sequence == (stop if message.stop_reason == "stop_sequence" else None)


def test_multi_turn_conversation_keeps_every_message(client: anthropic.Anthropic) -> None:
    history = [
        {"role": "user", "content": "first question here"},
        {"role": "assistant", "content": [{"type": "text", "text": "first answer there"}]},
        {"role": "user", "content": [{"type": "text", "text": PROMPT}]},
    ]
    tokens = (
        count_tokens(SYSTEM) + count_tokens("first question here first answer there") + count_tokens(PROMPT)
    )
    for model in ("claude", "gpt"):
        message = client.messages.create(model=model, max_tokens=256, system=SYSTEM, messages=history)
        assert text_of(message) == REPLY.text, model
        assert message.usage.input_tokens == tokens, model


def test_alias_and_client_request_id(client: anthropic.Anthropic, gateway) -> None:
    raw = client.messages.with_raw_response.create(
        model="claude-latest",
        max_tokens=64,
        messages=MESSAGES,
        extra_headers={"x-request-id": "e2e-anthropic:7"},
    )
    assert raw.headers["x-request-id"] == raw.headers["request-id"] == "e2e-anthropic:7"
    assert raw.headers["x-gateway-backend"] == "an"
    assert raw.parse()._request_id == "e2e-anthropic:7"


def test_models_list(client: anthropic.Anthropic) -> None:
    # The gateway's list is OpenAI-shaped; the Anthropic SDK still pages through it and reads the ids.
    ids = sorted(model.id for model in client.models.list())
    assert ids == ["claude", "claude-latest", "claude-slow", "gpt", "gpt-official", "gpt-slow"]


# ---------------------------------------------------------------------------------------- tools


@TOOL_MODELS
def test_tool_use_round_trip(client: anthropic.Anthropic, model: str) -> None:
    first = client.messages.create(model=model, max_tokens=256, messages=MESSAGES, tools=TOOLS)
    assert first.stop_reason == "tool_use"
    uses = [block for block in first.content if block.type == "tool_use"]
    assert len(uses) == 1
    use = uses[0]
    assert use.name == "get_weather"
    assert use.input == WEATHER_ARGS
    assert ANTHROPIC_ID.fullmatch(use.id)
    assert first.usage.input_tokens == count_tokens(PROMPT) + 2 * TOOL_TOKENS
    assert first.usage.output_tokens == len(split_fragments(WEATHER_JSON))

    # The client runs the tool and sends a tool_result back; the model answers with text.
    result = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": use.id, "content": TOOL_RESULT}],
    }
    second = client.messages.create(
        model=model,
        max_tokens=256,
        messages=[*MESSAGES, {"role": "assistant", "content": first.content}, result],
        tools=TOOLS,
    )
    assert second.stop_reason == "end_turn"
    assert [block.type for block in second.content] == ["text"]
    assert text_of(second) == tool_result_reply(TOOL_RESULT)
    assert second.usage.input_tokens == count_tokens(PROMPT) + count_tokens(TOOL_RESULT) + 2 * TOOL_TOKENS


@TOOL_MODELS
def test_tool_choice_names_the_tool(client: anthropic.Anthropic, model: str) -> None:
    message = client.messages.create(
        model=model,
        max_tokens=256,
        messages=MESSAGES,
        tools=TOOLS,
        tool_choice={"type": "tool", "name": "get_time"},
    )
    uses = [block for block in message.content if block.type == "tool_use"]
    assert [(u.name, u.input) for u in uses] == [("get_time", {"tz": "fake"})]
    assert message.stop_reason == "tool_use"


@TOOL_MODELS
def test_streamed_tool_use_round_trip(client: anthropic.Anthropic, model: str) -> None:
    partials: list[str] = []
    with client.messages.stream(model=model, max_tokens=256, messages=MESSAGES, tools=TOOLS) as stream:
        for event in stream:
            if event.type == "input_json":
                partials.append(event.partial_json)
        first = stream.get_final_message()
    assert len(partials) > 1, "the input arrives as several deltas"
    assert json.loads("".join(partials)) == WEATHER_ARGS
    assert first.stop_reason == "tool_use"
    uses = [block for block in first.content if block.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather" and uses[0].input == WEATHER_ARGS
    assert ANTHROPIC_ID.fullmatch(uses[0].id)

    result = {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": uses[0].id,
                "content": [{"type": "text", "text": TOOL_RESULT}],
            }
        ],
    }
    with client.messages.stream(
        model=model,
        max_tokens=256,
        messages=[*MESSAGES, {"role": "assistant", "content": first.content}, result],
        tools=TOOLS,
    ) as stream:
        assert stream.get_final_text() == tool_result_reply(TOOL_RESULT)
        assert stream.get_final_message().stop_reason == "end_turn"


def test_raw_tool_stream_events_are_well_formed(client: anthropic.Anthropic) -> None:
    events = list(
        client.messages.create(model="gpt", max_tokens=256, messages=MESSAGES, tools=TOOLS, stream=True)
    )
    check_event_grammar(events)
    start = next(e for e in events if e.type == "content_block_start")
    assert start.content_block.type == "tool_use" and start.content_block.input == {}
    deltas = [e.delta for e in events if e.type == "content_block_delta"]
    assert all(d.type == "input_json_delta" for d in deltas)
    assert json.loads("".join(d.partial_json for d in deltas)) == WEATHER_ARGS
    assert next(e for e in events if e.type == "message_delta").delta.stop_reason == "tool_use"


# ---------------------------------------------------------------------------------------- count_tokens


def test_count_tokens_on_an_anthropic_backend(client: anthropic.Anthropic, gateway) -> None:
    raw = client.messages.with_raw_response.count_tokens(
        model="claude", system=SYSTEM, messages=MESSAGES, tools=TOOLS
    )
    assert_gateway_headers(raw.headers, gateway, "an")
    assert raw.parse().input_tokens == PROMPT_TOKENS + 2 * TOOL_TOKENS
    assert client.messages.count_tokens(
        model="claude-latest", messages=MESSAGES
    ).input_tokens == count_tokens(PROMPT)


@pytest.mark.parametrize("model", ["gpt", "gpt-official"])
def test_count_tokens_on_an_openai_only_chain_is_a_clear_client_error(
    client: anthropic.Anthropic, model: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.count_tokens(model=model, messages=MESSAGES)
    error = caught.value
    body = assert_problem(error.response, 400, sdk_error=error)
    assert body["instance"] == "/v1/messages/count_tokens"
    assert "count_tokens" in body["detail"] and model in body["detail"]
    assert error.type == "invalid_request_error"
