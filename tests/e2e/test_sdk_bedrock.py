"""A `bedrock` backend through the real gateway, with the official OpenAI and Anthropic SDKs as
clients: chat whole and streamed, a tool call, token counting, failover from a throttled Bedrock
target (an HTTP 429, or a throttling exception as the stream's first frame) to the next target, and
embeddings from a Titan model (refused on a chat model).

The fake Bedrock verifies every request's SigV4 signature; the gateway gets the fake's test keys
through the environment (the AWS chain), with instance metadata lookups switched off.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import openai
import pytest

from gateway.testing import Behaviour, FakeOpenAI
from gateway.testing.fake_bedrock import TEST_CREDENTIALS, FakeBedrock
from tests.e2e.upstreams import WEATHER_ARGS, WEATHER_SCHEMA, count_tokens, expected_reply

PROMPT = "Tell me about the weather in Lisbon today"
MESSAGES = [{"role": "user", "content": PROMPT}]
REPLY = expected_reply(PROMPT)
MODEL_ID = "anthropic.claude-3-5-haiku-20241022-v1:0"


@pytest.fixture(scope="module")
def bedrock() -> Iterator[FakeBedrock]:
    with FakeBedrock.in_thread() as fake:
        yield fake


@pytest.fixture(scope="module")
def fallback() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.in_thread() as fake:
        yield fake


@pytest.fixture(autouse=True)
def healthy(bedrock: FakeBedrock, fallback: FakeOpenAI) -> None:
    for fake in (bedrock, fallback):
        fake.behaviour = Behaviour()
        fake.reset_stats()
    bedrock.stream_exception = None


@pytest.fixture(scope="module")
def gateway(gateway_server_module, bedrock: FakeBedrock, fallback: FakeOpenAI, tmp_path_factory):
    empty = tmp_path_factory.mktemp("aws")
    env = {
        "AWS_ACCESS_KEY_ID": TEST_CREDENTIALS[0],
        "AWS_SECRET_ACCESS_KEY": TEST_CREDENTIALS[1],
        # Nothing else of AWS's: no files, no instance metadata (no network beyond loopback).
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(empty / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(empty / "credentials"),
    }
    config = f"""
backends:
  br: {{type: bedrock, base_url: "{bedrock.base_url}", region: us-east-1}}
  oa: {{type: openai_compatible, base_url: "{fallback.base_url}"}}
models:
  claude: {{chain: [{{backend: br, model: "{MODEL_ID}"}}]}}
  titan: {{chain: [{{backend: br, model: "amazon.titan-embed-text-v2:0"}}]}}
  resilient:
    chain:
      - {{backend: br, model: "{MODEL_ID}"}}
      - {{backend: oa, model: gpt-fallback}}
failover:
  circuit_breaker: {{failure_threshold: 1000}}
"""
    return gateway_server_module(config, env=env)


def openai_client(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url("/v1"), api_key="unused", max_retries=0)


def test_openai_sdk_chat_is_answered_by_bedrock(gateway, bedrock: FakeBedrock) -> None:
    raw = openai_client(gateway).chat.completions.with_raw_response.create(
        model="claude", messages=MESSAGES, max_tokens=10, stop=["zzz"]
    )
    completion = raw.parse()
    assert raw.headers["x-gateway-backend"] == "br"
    assert completion.choices[0].message.content == expected_reply(PROMPT, 10).text
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.prompt_tokens == count_tokens(PROMPT)
    assert completion.usage.completion_tokens == 10
    assert bedrock.last_body is not None
    assert bedrock.last_body["inferenceConfig"] == {"maxTokens": 10, "stopSequences": ["zzz"]}


def test_openai_sdk_stream_is_translated_from_event_stream_frames(gateway) -> None:
    chunks = list(
        openai_client(gateway).chat.completions.create(
            model="claude", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == REPLY.tokens


def test_openai_sdk_tool_call_round_trips_through_converse(gateway) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}]
    completion = openai_client(gateway).chat.completions.create(
        model="claude", messages=MESSAGES, tools=tools
    )
    [tool_call] = completion.choices[0].message.tool_calls
    assert completion.choices[0].finish_reason == "tool_calls"
    assert tool_call.function.name == "get_weather"
    assert json.loads(tool_call.function.arguments) == WEATHER_ARGS


def test_anthropic_sdk_stream_is_answered_by_bedrock(gateway) -> None:
    client = anthropic.Anthropic(base_url=gateway.base_url, api_key="unused", max_retries=0)
    with client.messages.stream(model="claude", max_tokens=100, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
    assert text == REPLY.text
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == REPLY.tokens


@pytest.mark.parametrize("stream", [False, True])
def test_a_throttled_bedrock_target_fails_over_to_the_next(
    gateway, bedrock: FakeBedrock, fallback: FakeOpenAI, stream: bool
) -> None:
    bedrock.behaviour = Behaviour(status=429)  # ThrottlingException
    client = openai_client(gateway)
    if stream:
        raw = client.chat.completions.with_raw_response.create(
            model="resilient", messages=MESSAGES, stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    else:
        raw = client.chat.completions.with_raw_response.create(model="resilient", messages=MESSAGES)
        text = raw.parse().choices[0].message.content
    assert raw.headers["x-gateway-backend"] == "oa"
    assert raw.headers["x-gateway-attempts"] == "2"
    assert text == REPLY.text
    assert bedrock.stats.injected_failures == 1


def test_a_throttling_exception_as_the_first_frame_fails_over(
    gateway, bedrock: FakeBedrock, fallback: FakeOpenAI
) -> None:
    bedrock.stream_exception = "throttlingException"
    raw = openai_client(gateway).chat.completions.with_raw_response.create(
        model="resilient", messages=MESSAGES, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert raw.headers["x-gateway-backend"] == "oa" and text == REPLY.text
    assert bedrock.stats.total == 1


def test_openai_sdk_embeddings_from_a_titan_model(gateway, bedrock: FakeBedrock) -> None:
    answer = openai_client(gateway).embeddings.create(
        model="titan", input=["hello", "hello world"], dimensions=256
    )
    assert [len(item.embedding) for item in answer.data] == [256, 256]
    assert abs(sum(v * v for v in answer.data[0].embedding) - 1) < 1e-3  # Titan's vectors are unit length
    assert answer.usage.prompt_tokens == 3
    assert bedrock.stats.requests == {"/model/amazon.titan-embed-text-v2:0/invoke": 2}


def test_titan_models_serve_embeddings_only(gateway) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        openai_client(gateway).chat.completions.create(model="titan", messages=MESSAGES)
    assert "lacks capability 'chat'" in refused.value.message


def test_embeddings_are_refused_on_a_bedrock_chat_model(gateway) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        openai_client(gateway).embeddings.create(model="claude", input="hello")
    assert refused.value.status_code == 400
    assert "embeddings" in refused.value.message


def test_anthropic_sdk_count_tokens_is_answered_by_bedrock(gateway, bedrock: FakeBedrock) -> None:
    client = anthropic.Anthropic(base_url=gateway.base_url, api_key="unused", max_retries=0)
    counted = client.messages.count_tokens(model="claude", messages=MESSAGES, system="Be brief.")
    assert counted.input_tokens == count_tokens(PROMPT) + count_tokens("Be brief.")
    assert bedrock.stats.requests == {f"/model/{MODEL_ID}/count-tokens": 1}
