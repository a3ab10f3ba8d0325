"""A `vertex` backend through the real gateway, with the official OpenAI and Anthropic SDKs as
clients: a Gemini model and a Claude model on Vertex AI (chat whole and streamed, a tool call, token
counting), embeddings from a text embedding model, and failover from a Vertex 429 (RESOURCE_EXHAUSTED)
to the next target.

The gateway authenticates as a service account the fake made (GOOGLE_APPLICATION_CREDENTIALS): the
real JWT-bearer exchange runs against the fake's token endpoint, over loopback only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import openai
import pytest

from gateway.testing import Behaviour, FakeOpenAI, FakeVertex
from tests.e2e.upstreams import WEATHER_ARGS, WEATHER_SCHEMA, count_tokens, expected_reply

PROMPT = "Tell me about the weather in Lisbon today"
MESSAGES = [{"role": "user", "content": PROMPT}]
REPLY = expected_reply(PROMPT)
GEMINI = "gemini-2.5-flash"
CLAUDE = "claude-sonnet-4-5@20250929"
PREFIX = "/v1/projects/test-project/locations/europe-west4/publishers"


@pytest.fixture(scope="module")
def vertex() -> Iterator[FakeVertex]:
    with FakeVertex.in_thread() as fake:
        yield fake


@pytest.fixture(scope="module")
def fallback() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.in_thread() as fake:
        yield fake


@pytest.fixture(autouse=True)
def healthy(vertex: FakeVertex, fallback: FakeOpenAI) -> None:
    for fake in (vertex, fallback):
        fake.behaviour = Behaviour()
        fake.reset_stats()


@pytest.fixture(scope="module")
def gateway(gateway_server_module, vertex: FakeVertex, fallback: FakeOpenAI, tmp_path_factory):
    home = tmp_path_factory.mktemp("google")
    env = {
        "GOOGLE_APPLICATION_CREDENTIALS": str(vertex.service_account(home / "service-account.json")),
        # Nothing else of Google's: no gcloud login, no metadata server (no network beyond loopback).
        "CLOUDSDK_CONFIG": str(home / "gcloud"),
        "NO_GCE_CHECK": "True",
    }
    config = f"""
backends:
  vx: {{type: vertex, project: test-project, region: europe-west4, base_url: "{vertex.base_url}"}}
  oa: {{type: openai_compatible, base_url: "{fallback.base_url}"}}
models:
  gemini: {{chain: [{{backend: vx, model: {GEMINI}}}]}}
  claude: {{chain: [{{backend: vx, model: "{CLAUDE}"}}]}}
  embed: {{chain: [{{backend: vx, model: text-embedding-005}}]}}
  resilient:
    chain:
      - {{backend: vx, model: {GEMINI}}}
      - {{backend: oa, model: gpt-fallback}}
failover:
  circuit_breaker: {{failure_threshold: 1000}}
"""
    return gateway_server_module(config, env=env)


def openai_client(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url("/v1"), api_key="unused", max_retries=0)


def anthropic_client(gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.base_url, api_key="unused", max_retries=0)


@pytest.mark.parametrize("model", ["gemini", "claude"])
def test_openai_sdk_chat_is_answered_by_vertex(gateway, vertex: FakeVertex, model: str) -> None:
    raw = openai_client(gateway).chat.completions.with_raw_response.create(
        model=model, messages=MESSAGES, max_tokens=10
    )
    completion = raw.parse()
    assert raw.headers["x-gateway-backend"] == "vx"
    assert completion.choices[0].message.content == expected_reply(PROMPT, 10).text
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.prompt_tokens == count_tokens(PROMPT)
    publisher, upstream, method = (
        ("google", GEMINI, "generateContent") if model == "gemini" else ("anthropic", CLAUDE, "rawPredict")
    )
    assert vertex.stats.requests == {f"{PREFIX}/{publisher}/models/{upstream}:{method}": 1}


@pytest.mark.parametrize("model", ["gemini", "claude"])
def test_openai_sdk_stream_from_vertex(gateway, model: str) -> None:
    chunks = list(
        openai_client(gateway).chat.completions.create(
            model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == REPLY.tokens


@pytest.mark.parametrize("model", ["gemini", "claude"])
def test_openai_sdk_tool_call_through_vertex(gateway, model: str) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}]
    completion = openai_client(gateway).chat.completions.create(model=model, messages=MESSAGES, tools=tools)
    [tool_call] = completion.choices[0].message.tool_calls
    assert completion.choices[0].finish_reason == "tool_calls"
    assert tool_call.function.name == "get_weather"
    assert json.loads(tool_call.function.arguments) == WEATHER_ARGS


@pytest.mark.parametrize("model", ["gemini", "claude"])
def test_anthropic_sdk_stream_is_answered_by_vertex(gateway, model: str) -> None:
    with anthropic_client(gateway).messages.stream(model=model, max_tokens=100, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
    assert text == REPLY.text
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == REPLY.tokens


def test_anthropic_sdk_reaches_claude_on_vertex(gateway, vertex: FakeVertex) -> None:
    message = anthropic_client(gateway).messages.create(
        model="claude", max_tokens=100, messages=MESSAGES, extra_body={"top_k": 5}
    )
    assert message.content[0].text == REPLY.text
    assert vertex.stats.requests == {f"{PREFIX}/anthropic/models/{CLAUDE}:rawPredict": 1}


@pytest.mark.parametrize(
    ("model", "path"),
    [
        ("gemini", f"{PREFIX}/google/models/{GEMINI}:countTokens"),
        ("claude", f"{PREFIX}/anthropic/models/count-tokens:rawPredict"),
    ],
)
def test_anthropic_sdk_count_tokens_through_vertex(
    gateway, vertex: FakeVertex, model: str, path: str
) -> None:
    counted = anthropic_client(gateway).messages.count_tokens(
        model=model, messages=MESSAGES, system="Be brief."
    )
    assert counted.input_tokens == count_tokens(PROMPT) + count_tokens("Be brief.")
    assert vertex.stats.requests == {path: 1}


@pytest.mark.parametrize("stream", [False, True])
def test_a_vertex_429_fails_over_to_the_next_target(
    gateway, vertex: FakeVertex, fallback: FakeOpenAI, stream: bool
) -> None:
    vertex.behaviour = Behaviour(status=429)  # RESOURCE_EXHAUSTED
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
    assert vertex.stats.injected_failures == 1


def test_openai_sdk_embeddings_from_a_vertex_embedding_model(gateway, vertex: FakeVertex) -> None:
    answer = openai_client(gateway).embeddings.create(
        model="embed", input=["hello", "hello world"], dimensions=64
    )
    assert [len(item.embedding) for item in answer.data] == [64, 64]
    assert answer.usage.prompt_tokens == 3
    assert vertex.stats.requests == {f"{PREFIX}/google/models/text-embedding-005:predict": 1}


def test_embeddings_are_refused_on_a_vertex_chat_model(gateway) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        openai_client(gateway).embeddings.create(model="gemini", input="hello")
    assert "embeddings" in refused.value.message


def test_an_anthropic_only_field_reaches_claude_but_not_gemini(gateway, vertex: FakeVertex) -> None:
    """A Claude target speaks Anthropic's protocol (the request goes as sent), a Gemini one does not."""
    native = {"service_tier": "auto"}
    client = anthropic_client(gateway)
    message = client.messages.create(model="claude", max_tokens=100, messages=MESSAGES, extra_body=native)
    assert message.content[0].text == REPLY.text
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model="gemini", max_tokens=100, messages=MESSAGES, extra_body=native)
    assert "service_tier" in refused.value.message
    assert vertex.stats.requests == {f"{PREFIX}/anthropic/models/{CLAUDE}:rawPredict": 1}
