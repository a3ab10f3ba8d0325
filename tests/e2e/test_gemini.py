"""The official OpenAI SDK as the client of the real gateway in front of a `type: gemini` backend (the
fake Gemini API): chat whole and streamed, tool calls, a refused image URL, the cost of cached input,
and failover from a rate-limited Gemini to the chain's next target."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal

import openai
import pytest

from gateway.testing import Behaviour, FakeGemini, FakeOpenAI
from tests.e2e.upstreams import (
    FAKE_KEY,
    GATEWAY_ENV,
    TOOL_TOKENS,
    WEATHER_ARGS,
    WEATHER_SCHEMA,
    count_tokens,
    expected_reply,
    tool_result_reply,
)

PROMPT = "Tell me about the weather in Lisbon today"
SYSTEM = "You answer in one short paragraph."
MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]
PROMPT_TOKENS = count_tokens(SYSTEM) + count_tokens(PROMPT)
REPLY = expected_reply(PROMPT)
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini.in_thread(Behaviour(api_key=FAKE_KEY)) as fake:
        yield fake


@pytest.fixture(scope="module")
def fallback() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.in_thread(Behaviour(api_key=FAKE_KEY)) as fake:
        yield fake


@pytest.fixture(autouse=True)
def healthy(gemini: FakeGemini, fallback: FakeOpenAI) -> None:
    for fake in (gemini, fallback):
        fake.behaviour = Behaviour(api_key=FAKE_KEY)
        fake.reset_stats()


@pytest.fixture(scope="module")
def client(gateway_server_module, gemini: FakeGemini, fallback: FakeOpenAI) -> openai.OpenAI:
    config = f"""
backends:
  gem:
    type: gemini
    base_url: "{gemini.base_url}"
    api_key: "${{FAKE_KEY}}"
    prices: {{gemini-2.5-flash: {{input: 1.5, cached_input: 0.25, output: 4}}}}
  oa: {{type: openai_compatible, base_url: "{fallback.base_url}", api_key: "${{FAKE_KEY}}"}}
models:
  flash:
    chain: [{{backend: gem, model: gemini-2.5-flash}}]
  resilient:
    chain:
      - {{backend: gem, model: gemini-2.5-flash}}
      - {{backend: oa, model: small}}
failover:
  circuit_breaker: {{failure_threshold: 1000}}
"""
    gateway = gateway_server_module(config, env=GATEWAY_ENV)
    return openai.OpenAI(base_url=gateway.url("/v1"), api_key="unused", max_retries=0)


def generate_calls(fake: FakeGemini) -> int:
    return sum(
        n for path, n in fake.stats.requests.items() if "GenerateContent" in path or "generateContent" in path
    )


def test_chat_is_answered_by_gemini(client: openai.OpenAI, gemini: FakeGemini) -> None:
    raw = client.chat.completions.with_raw_response.create(model="flash", messages=MESSAGES)
    completion = raw.parse()
    assert raw.headers["x-gateway-backend"] == "gem"
    assert completion.model == "gemini-2.5-flash"  # the upstream model, as for every backend
    assert completion.choices[0].message.content == REPLY.text
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (
        PROMPT_TOKENS,
        REPLY.tokens,
    )
    assert gemini.stats.requests == {"/v1beta/models/gemini-2.5-flash:generateContent": 1}


def test_a_streamed_chat_is_translated_chunk_by_chunk(client: openai.OpenAI, gemini: FakeGemini) -> None:
    stream = client.chat.completions.create(
        model="flash", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    usage = chunks[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (
        PROMPT_TOKENS,
        REPLY.tokens,
    )
    assert gemini.stats.requests == {"/v1beta/models/gemini-2.5-flash:streamGenerateContent": 1}


def test_a_tool_call_and_its_result(client: openai.OpenAI) -> None:
    asked = client.chat.completions.create(model="flash", messages=MESSAGES, tools=[TOOL])
    message = asked.choices[0].message
    assert asked.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls is not None
    (call,) = message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", WEATHER_ARGS)
    assert asked.usage is not None and asked.usage.prompt_tokens == PROMPT_TOKENS + TOOL_TOKENS

    history = [
        *MESSAGES,
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    answered = client.chat.completions.create(model="flash", messages=history, tools=[TOOL])
    assert answered.choices[0].message.content == tool_result_reply(
        json.dumps({"output": "sunny"}, separators=(",", ":"))
    )


def test_an_image_by_url_is_a_400_naming_the_part(client: openai.OpenAI, gemini: FakeGemini) -> None:
    content = [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="flash", messages=[{"role": "user", "content": content}])
    assert "messages[0].content[1]" in error.value.response.json()["detail"]
    assert gemini.stats.total == 0


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_rate_limited_gemini_fails_over_to_the_next_target(
    client: openai.OpenAI, gemini: FakeGemini, fallback: FakeOpenAI, stream: bool
) -> None:
    gemini.behaviour = Behaviour(api_key=FAKE_KEY, status=429)
    raw = client.chat.completions.with_raw_response.create(
        model="resilient", messages=MESSAGES, stream=stream
    )
    assert raw.headers["x-gateway-backend"] == "oa"
    assert raw.headers["x-gateway-attempts"] == "2"
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    else:
        text = raw.parse().choices[0].message.content
    assert text == REPLY.text
    assert generate_calls(gemini) == 1
    assert fallback.stats.requests == {"/v1/chat/completions": 1}


def test_the_cost_prices_cached_content_at_the_cached_rate(client: openai.OpenAI, gemini: FakeGemini) -> None:
    gemini.behaviour = Behaviour(api_key=FAKE_KEY, cached_tokens=4)
    raw = client.chat.completions.with_raw_response.create(model="flash", messages=MESSAGES)
    usage = raw.parse().usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 4
    fresh = PROMPT_TOKENS - 4
    expected = (Decimal(fresh) * Decimal("1.5") + 4 * Decimal("0.25") + REPLY.tokens * 4) / 1_000_000
    assert Decimal(raw.headers["x-gateway-cost-usd"]) == expected
