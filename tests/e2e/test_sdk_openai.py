"""The official OpenAI SDK as the client of the real gateway: chat completions (plain, streamed, with
usage, max_tokens, stop sequences, tools), legacy completions, embeddings and the models list, against
an OpenAI-speaking backend (pass-through) and an Anthropic backend (translated both ways).

The fakes answer deterministically (`gateway.testing.behaviour`), so every test knows the exact text,
token counts and finish reason to expect.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import requests

from gateway.testing.behaviour import split_fragments
from gateway.testing.fake_openai import embedding
from tests.e2e.upstreams import (
    GATEWAY_ENV,
    TOKEN_DELAY_MS,
    TOOL_TOKENS,
    WEATHER_ARGS,
    WEATHER_SCHEMA,
    Upstreams,
    backends_yaml,
    config_version,
    count_tokens,
    expected_reply,
    fake_upstreams,
    tool_result_reply,
)

SYSTEM = "You answer in one short paragraph."
PROMPT = "Tell me about the weather in Lisbon today"
MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": PROMPT},
]
PROMPT_TOKENS = count_tokens(SYSTEM) + count_tokens(PROMPT)
REPLY = expected_reply(PROMPT)

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The forecast for a city",
            "parameters": WEATHER_SCHEMA,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "The time in a time zone",
            "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
        },
    },
]
WEATHER_JSON = json.dumps(WEATHER_ARGS, separators=(",", ":"))
TOOL_RESULT = "sunny ☀ 21°C — Lisboa"

# (public model, backend that serves it): pass-through to both OpenAI backend types, and translation.
CHAT_MODELS = pytest.mark.parametrize(
    ("model", "backend"),
    [("gpt", "oa"), ("gpt-official", "oa-official"), ("claude", "an")],
    ids=["openai-compatible", "openai", "anthropic-backend"],
)
# The tool tests: pass-through and the Anthropic backend.
TOOL_MODELS = pytest.mark.parametrize("model", ["gpt", "claude"], ids=["passthrough", "anthropic-backend"])


def config(up: Upstreams) -> str:
    return f"""
backends:
{backends_yaml(up)}
  switched-off: {{type: openai, api_key: "${{GATEWAY_E2E_UNSET_KEY:-}}"}}
models:
  gpt:
    aliases: [gpt-latest]
    chain: [{{backend: oa, model: gpt-4o}}]
  gpt-official: {{chain: [{{backend: oa-official, model: gpt-4o-mini}}]}}
  claude: {{chain: [{{backend: an, model: claude-sonnet-test}}]}}
  gpt-slow: {{chain: [{{backend: oa-slow, model: gpt-4o}}]}}
  claude-slow: {{chain: [{{backend: an-slow, model: claude-sonnet-test}}]}}
  embed: {{chain: [{{backend: oa, model: text-embedding-3-small}}]}}
  behind-disabled: {{chain: [{{backend: switched-off, model: gpt-4o}}, {{backend: oa, model: gpt-4o}}]}}
  ghost: {{chain: [{{backend: switched-off, model: gpt-4o}}]}}
"""


@pytest.fixture(scope="module")
def up() -> Iterator[Upstreams]:
    with fake_upstreams() as upstreams:
        yield upstreams


@pytest.fixture(scope="module")
def gateway(gateway_server_module, up: Upstreams):
    return gateway_server_module(config(up), env={**GATEWAY_ENV, "GATEWAY_E2E_UNSET_KEY": ""})


@pytest.fixture(scope="module")
def client(gateway) -> Iterator[openai.OpenAI]:
    sdk = openai.OpenAI(base_url=gateway.url("/v1"), api_key="sk-e2e-client", max_retries=0, timeout=30)
    yield sdk
    sdk.close()


def assert_gateway_headers(headers: Any, gateway, backend: str, attempts: str = "1") -> None:
    assert re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", headers["x-request-id"])
    assert headers["x-gateway-backend"] == backend
    assert headers["x-gateway-attempts"] == attempts
    assert headers["x-config-version"] == config_version(gateway.config_path)


def stream_text(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def finish_reasons(chunks: list[Any]) -> list[str]:
    return [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]


# ---------------------------------------------------------------------------------------- models


def test_models_list_names_public_models_and_aliases(client: openai.OpenAI, gateway) -> None:
    raw = client.models.with_raw_response.list()
    assert raw.headers["x-config-version"] == config_version(gateway.config_path)
    models = list(raw.parse())
    ids = [m.id for m in models]
    assert sorted(ids) == sorted(
        ["gpt", "gpt-latest", "gpt-official", "claude", "gpt-slow", "claude-slow", "embed", "behind-disabled"]
    ), "a model whose only target is disabled is hidden"
    assert all(m.object == "model" for m in models)
    assert len(set(ids)) == len(ids)


# ---------------------------------------------------------------------------------------- chat


@CHAT_MODELS
def test_chat_completion(client: openai.OpenAI, gateway, model: str, backend: str) -> None:
    raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
    assert_gateway_headers(raw.headers, gateway, backend)
    completion = raw.parse()
    assert completion._request_id == raw.headers["x-request-id"]
    assert completion.object == "chat.completion"
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content == REPLY.text
    assert not choice.message.tool_calls
    assert choice.finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (PROMPT_TOKENS, 16)
    assert usage.total_tokens == PROMPT_TOKENS + 16


@CHAT_MODELS
def test_streamed_chat_equals_the_plain_answer(
    client: openai.OpenAI, gateway, model: str, backend: str
) -> None:
    raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES, stream=True)
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert_gateway_headers(raw.headers, gateway, backend)
    chunks = list(raw.parse())
    assert stream_text(chunks) == REPLY.text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert finish_reasons(chunks) == ["stop"]
    assert chunks[-1].choices and chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    # No usage asked for: no usage-only chunk, no usage anywhere.
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


@CHAT_MODELS
@pytest.mark.parametrize("include_usage", [True, False])
def test_stream_usage_chunk_only_when_asked(
    client: openai.OpenAI, model: str, backend: str, include_usage: bool
) -> None:
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": include_usage},
        )
    )
    assert stream_text(chunks) == REPLY.text
    with_usage = [c for c in chunks if c.usage is not None]
    if not include_usage:
        assert with_usage == []
        assert all(c.choices for c in chunks)
        return
    assert len(with_usage) == 1
    last = chunks[-1]
    assert with_usage[0] is last, "the usage chunk comes last"
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (PROMPT_TOKENS, 16)
    assert last.usage.total_tokens == PROMPT_TOKENS + 16
    assert finish_reasons(chunks) == ["stop"]


@CHAT_MODELS
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_ends_with_finish_reason_length(
    client: openai.OpenAI, model: str, backend: str, stream: bool, field: str
) -> None:
    capped = expected_reply(PROMPT, 5)
    assert capped.finish == "length"
    kwargs: dict[str, Any] = {"model": model, "messages": MESSAGES, field: 5}
    if not stream:
        completion = client.chat.completions.create(**kwargs)
        assert completion.choices[0].message.content == capped.text
        assert completion.choices[0].finish_reason == "length"
        assert completion.usage is not None and completion.usage.completion_tokens == 5
        return
    chunks = list(
        client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
    )
    assert stream_text(chunks) == capped.text
    assert finish_reasons(chunks) == ["length"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


@CHAT_MODELS
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_stop_sequence_cuts_the_answer(client: openai.OpenAI, model: str, backend: str, stream: bool) -> None:
    stop = REPLY.text.split()[6]
    cut = expected_reply(PROMPT, None, (stop, "never-in-the-text"))
    assert cut.finish == "stop_sequence" and stop not in cut.text and cut.text
    kwargs: dict[str, Any] = {"model": model, "messages": MESSAGES, "stop": [stop, "never-in-the-text"]}
    if not stream:
        completion = client.chat.completions.create(**kwargs)
        assert completion.choices[0].message.content == cut.text
        assert completion.choices[0].finish_reason == "stop"
        assert completion.usage is not None and completion.usage.completion_tokens == cut.tokens
        return
    chunks = list(
        client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
    )
    assert stream_text(chunks) == cut.text
    assert finish_reasons(chunks) == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == cut.tokens


@pytest.mark.parametrize("model", ["gpt-slow", "claude-slow"], ids=["passthrough", "anthropic-backend"])
def test_stream_is_relayed_as_it_is_generated(client: openai.OpenAI, model: str) -> None:
    # The backend streams one token every TOKEN_DELAY_MS: the deltas must arrive spread out like that,
    # not buffered into one burst at the end.
    arrivals: list[float] = []
    text = ""
    for chunk in client.chat.completions.create(model=model, messages=MESSAGES, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
            text += chunk.choices[0].delta.content
    assert text == REPLY.text
    assert len(arrivals) == 16
    assert arrivals[-1] - arrivals[0] >= 0.5 * 15 * TOKEN_DELAY_MS / 1000


def test_multi_turn_conversation_keeps_every_message(client: openai.OpenAI) -> None:
    history = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "first question here"},
        {"role": "assistant", "content": "first answer there"},
        {"role": "user", "content": PROMPT},
    ]
    tokens = sum(count_tokens(m["content"]) for m in history)
    for model in ("gpt", "claude"):
        completion = client.chat.completions.create(model=model, messages=history)
        assert completion.choices[0].message.content == REPLY.text, model
        assert completion.usage is not None and completion.usage.prompt_tokens == tokens, model


def test_alias_and_skipped_disabled_target(client: openai.OpenAI, gateway) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gpt-latest", messages=MESSAGES)
    assert_gateway_headers(raw.headers, gateway, "oa")
    assert raw.parse().choices[0].message.content == REPLY.text
    # A disabled target is skipped without being tried: one attempt, served by the second target.
    raw = client.chat.completions.with_raw_response.create(model="behind-disabled", messages=MESSAGES)
    assert_gateway_headers(raw.headers, gateway, "oa", attempts="1")


def test_client_request_id_is_echoed(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="claude", messages=MESSAGES, extra_headers={"x-request-id": "e2e-trace:42"}
    )
    assert raw.headers["x-request-id"] == "e2e-trace:42"
    assert raw.parse()._request_id == "e2e-trace:42"
    raw = client.chat.completions.with_raw_response.create(
        model="gpt", messages=MESSAGES, stream=True, extra_headers={"x-request-id": "e2e-trace:43"}
    )
    assert raw.headers["x-request-id"] == "e2e-trace:43"
    assert stream_text(list(raw.parse())) == REPLY.text
    # An id that is not well-formed is replaced by the gateway's own.
    raw = client.chat.completions.with_raw_response.create(
        model="gpt", messages=MESSAGES, extra_headers={"x-request-id": "not a valid id"}
    )
    assert raw.headers["x-request-id"] != "not a valid id"
    assert re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", raw.headers["x-request-id"])


# ---------------------------------------------------------------------------------------- tools


@TOOL_MODELS
def test_tool_call_round_trip(client: openai.OpenAI, model: str) -> None:
    question = {"role": "user", "content": PROMPT}
    first = client.chat.completions.create(model=model, messages=[question], tools=TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call = calls[0]
    assert call.type == "function" and call.id
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == WEATHER_ARGS
    assert not choice.message.content
    assert first.usage is not None
    assert first.usage.prompt_tokens == count_tokens(PROMPT) + 2 * TOOL_TOKENS
    assert first.usage.completion_tokens == len(split_fragments(WEATHER_JSON))

    # The client runs the tool and sends its result back; the model answers with text.
    result = {"role": "tool", "tool_call_id": call.id, "content": TOOL_RESULT}
    second = client.chat.completions.create(
        model=model, messages=[question, choice.message, result], tools=TOOLS
    )
    answer = second.choices[0]
    assert answer.finish_reason == "stop"
    assert answer.message.content == tool_result_reply(TOOL_RESULT)
    assert not answer.message.tool_calls
    assert second.usage is not None
    assert second.usage.prompt_tokens == count_tokens(PROMPT) + count_tokens(TOOL_RESULT) + 2 * TOOL_TOKENS


@TOOL_MODELS
def test_tool_choice_names_the_function(client: openai.OpenAI, model: str) -> None:
    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": PROMPT}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    calls = completion.choices[0].message.tool_calls
    assert calls is not None and [c.function.name for c in calls] == ["get_time"]
    assert json.loads(calls[0].function.arguments) == {"tz": "fake"}
    assert completion.choices[0].finish_reason == "tool_calls"


@TOOL_MODELS
def test_streamed_tool_call_round_trip(client: openai.OpenAI, model: str) -> None:
    question = {"role": "user", "content": PROMPT}
    chunks = list(client.chat.completions.create(model=model, messages=[question], tools=TOOLS, stream=True))
    calls: dict[int, dict[str, Any]] = {}
    fragments = 0
    for chunk in chunks:
        for delta_call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            acc = calls.setdefault(delta_call.index, {"id": None, "name": None, "arguments": ""})
            if delta_call.id:
                assert acc["id"] is None, "the id is sent once, in the call's first delta"
                acc["id"] = delta_call.id
            fn = delta_call.function
            if fn is not None and fn.name:
                acc["name"] = fn.name
            if fn is not None and fn.arguments:
                acc["arguments"] += fn.arguments
                fragments += 1
    assert list(calls) == [0]
    call = calls[0]
    assert call["id"] and call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == WEATHER_ARGS
    assert fragments > 1, "the arguments arrive as several deltas"
    assert finish_reasons(chunks) == ["tool_calls"]
    assert stream_text(chunks) == ""

    assistant = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": call["name"], "arguments": call["arguments"]},
            }
        ],
    }
    result = {"role": "tool", "tool_call_id": call["id"], "content": TOOL_RESULT}
    chunks = list(
        client.chat.completions.create(
            model=model, messages=[question, assistant, result], tools=TOOLS, stream=True
        )
    )
    assert stream_text(chunks) == tool_result_reply(TOOL_RESULT)
    assert finish_reasons(chunks) == ["stop"]


# ---------------------------------------------------------------------------------------- legacy completions


@pytest.mark.parametrize("model", ["gpt", "gpt-official"])
def test_legacy_completion(client: openai.OpenAI, gateway, model: str) -> None:
    raw = client.completions.with_raw_response.create(model=model, prompt=PROMPT)
    assert_gateway_headers(raw.headers, gateway, "oa" if model == "gpt" else "oa-official")
    completion = raw.parse()
    assert completion.object == "text_completion"
    assert completion.choices[0].text == REPLY.text
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (count_tokens(PROMPT), 16)

    capped = client.completions.create(model=model, prompt=PROMPT, max_tokens=3)
    assert capped.choices[0].text == expected_reply(PROMPT, 3).text
    assert capped.choices[0].finish_reason == "length"

    stop = REPLY.text.split()[4]
    cut = client.completions.create(model=model, prompt=PROMPT, stop=stop)
    assert cut.choices[0].text == expected_reply(PROMPT, None, (stop,)).text
    assert cut.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("include_usage", [None, True, False])
def test_legacy_completion_stream(client: openai.OpenAI, include_usage: bool | None) -> None:
    kwargs: dict[str, Any] = {"model": "gpt", "prompt": PROMPT, "stream": True}
    if include_usage is not None:
        kwargs["stream_options"] = {"include_usage": include_usage}
    chunks = list(client.completions.create(**kwargs))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == REPLY.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    with_usage = [c for c in chunks if c.usage is not None]
    if not include_usage:
        assert with_usage == []
        return
    assert with_usage == [chunks[-1]] and chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (count_tokens(PROMPT), 16)


@pytest.mark.parametrize("model", ["gpt", "gpt-official"])
@pytest.mark.parametrize("include_usage", [False, True])
def test_legacy_completion_stream_ends_with_done(gateway, model: str, include_usage: bool) -> None:
    """The SDK stops reading at the end of the body, so it would not notice a missing `[DONE]`; clients
    that wait for it would hang. Read the raw SSE: the last event of a /v1/completions stream is
    `data: [DONE]`, exactly once, after the finish (and usage) chunks."""
    body: dict[str, Any] = {"model": model, "prompt": PROMPT, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    with requests.post(
        gateway.url("/v1/completions"),
        json=body,
        headers={"authorization": "Bearer sk-e2e-client"},
        stream=True,
        timeout=30,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        data = [line[6:] for line in response.iter_lines() if line.startswith(b"data: ")]
    assert data[-1] == b"[DONE]" and data.count(b"[DONE]") == 1
    chunks = [json.loads(line) for line in data[:-1]]
    assert all(chunk["object"] == "text_completion" for chunk in chunks)
    finishes = [c["finish_reason"] for chunk in chunks for c in chunk["choices"] if c["finish_reason"]]
    assert finishes == ["stop"]
    assert ("usage" in chunks[-1] and chunks[-1]["choices"] == []) is include_usage


def test_legacy_completion_on_an_anthropic_only_chain_is_a_clear_client_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="claude", prompt=PROMPT)
    error = caught.value
    assert "claude" in error.message and "completions" in error.message
    assert error.request_id == error.response.headers["x-request-id"]


# ---------------------------------------------------------------------------------------- embeddings


def test_embeddings_as_floats(client: openai.OpenAI, gateway) -> None:
    texts = ["hello world", "a second, longer text"]
    raw = client.embeddings.with_raw_response.create(model="embed", input=texts, encoding_format="float")
    assert_gateway_headers(raw.headers, gateway, "oa")
    result = raw.parse()
    assert [d.index for d in result.data] == [0, 1]
    for item, text in zip(result.data, texts, strict=True):
        assert item.embedding == embedding(text.encode(), 16)
    assert result.usage.prompt_tokens == sum(count_tokens(t) for t in texts)
    assert result.usage.total_tokens == result.usage.prompt_tokens


def test_embeddings_as_base64_decode_to_the_same_vectors(client: openai.OpenAI) -> None:
    result = client.embeddings.create(
        model="embed", input="hello world", encoding_format="base64", dimensions=8
    )
    value = result.data[0].embedding
    if isinstance(value, str):  # the SDK hands base64 back as sent when it was asked for explicitly
        value = list(struct.unpack("<8f", base64.b64decode(value)))
    assert value == embedding(b"hello world", 8)


def test_embeddings_default_format_and_token_ids(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model="embed", input="hello world", dimensions=4)
    assert result.data[0].embedding == embedding(b"hello world", 4)
    tokens = client.embeddings.create(model="embed", input=[[1, 2, 3], [4, 5]], encoding_format="float")
    assert len(tokens.data) == 2
    assert tokens.data[0].embedding == embedding(b"[1,2,3]", 16)
    assert tokens.usage.prompt_tokens == 5


def test_embeddings_on_an_anthropic_only_chain_is_a_clear_client_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="claude", input="hello world")
    assert "embeddings" in caught.value.message and "claude" in caught.value.message
