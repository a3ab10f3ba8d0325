"""The official OpenAI SDK's Responses API (`client.responses.create`) against the real gateway: passed
through to an `openai` backend (the fake's `/v1/responses`), translated for an OpenAI-compatible chat
server and an Anthropic backend. Text, streams (events in order, the same text, usage), a function call
round trip, images, json_schema output, errors as the SDK's exceptions, and the Responses-only fields
(`store: true`, `previous_response_id`, `reasoning`, built-in tools) refused off OpenAI.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tests.e2e.upstreams import (
    GATEWAY_ENV,
    TOOL_TOKENS,
    WEATHER_ARGS,
    WEATHER_SCHEMA,
    Upstreams,
    backends_yaml,
    count_tokens,
    expected_reply,
    fake_upstreams,
    tool_result_reply,
)

INSTRUCTIONS = "You answer in one short paragraph."
PROMPT = "Tell me about the weather in Lisbon today"
PROMPT_TOKENS = count_tokens(INSTRUCTIONS) + count_tokens(PROMPT)
REPLY = expected_reply(PROMPT)
TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The forecast for a city",
        "parameters": WEATHER_SCHEMA,
    }
]
# A 1x1 PNG.
PIXEL = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)

# (public model, backend): pass-through to OpenAI, translation to a chat server and to Anthropic.
MODELS = pytest.mark.parametrize(
    ("model", "backend"),
    [("gpt-official", "oa-official"), ("gpt", "oa"), ("claude", "an")],
    ids=["openai-passthrough", "openai-compatible", "anthropic"],
)
STREAM_ORDER_TEXT = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    *["response.output_text.delta"] * 16,
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


DROP = """headers: {x-fake-behaviour: '{"drop_after_chunks": 6}'}"""


def config(up: Upstreams) -> str:
    key = '"${FAKE_KEY}"'
    oa, an = up.openai.base_url, up.anthropic.base_url
    return f"""
backends:
{backends_yaml(up)}
  oa-drop: {{type: openai_compatible, base_url: "{oa}", api_key: {key}, {DROP}}}
  oa-official-drop: {{type: openai, base_url: "{oa}", api_key: {key}, {DROP}}}
  an-drop: {{type: anthropic, base_url: "{an}", api_key: {key}, {DROP}}}
models:
  gpt-drop: {{chain: [{{backend: oa-drop, model: gpt-4o}}]}}
  gpt-official-drop: {{chain: [{{backend: oa-official-drop, model: gpt-4o}}]}}
  claude-drop: {{chain: [{{backend: an-drop, model: claude-sonnet-test}}]}}
  gpt: {{chain: [{{backend: oa, model: gpt-4o}}]}}
  gpt-official: {{chain: [{{backend: oa-official, model: gpt-4o-mini}}]}}
  claude: {{chain: [{{backend: an, model: claude-sonnet-test}}]}}
"""


@pytest.fixture(scope="module")
def up() -> Iterator[Upstreams]:
    with fake_upstreams() as upstreams:
        yield upstreams


@pytest.fixture(scope="module")
def gateway(gateway_server_module, up: Upstreams):
    return gateway_server_module(config(up), env=GATEWAY_ENV)


@pytest.fixture(scope="module")
def client(gateway) -> Iterator[openai.OpenAI]:
    sdk = openai.OpenAI(base_url=gateway.url("/v1"), api_key="sk-e2e-client", max_retries=0, timeout=30)
    yield sdk
    sdk.close()


@MODELS
def test_text_answer(client: openai.OpenAI, model: str, backend: str) -> None:
    raw = client.responses.with_raw_response.create(model=model, instructions=INSTRUCTIONS, input=PROMPT)
    assert raw.headers["x-gateway-backend"] == backend
    response = raw.parse()
    Response.model_validate(raw.http_response.json())  # every member the SDK's type requires
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.output_text == REPLY.text
    assert [item.type for item in response.output] == ["message"]
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (PROMPT_TOKENS, 16)
    assert response.usage.total_tokens == PROMPT_TOKENS + 16
    assert response.usage.input_tokens_details.cached_tokens == 0
    assert response.usage.output_tokens_details.reasoning_tokens == 0


@MODELS
def test_stream_events_in_order_with_the_same_text_and_usage(
    client: openai.OpenAI, model: str, backend: str
) -> None:
    events = list(client.responses.create(model=model, instructions=INSTRUCTIONS, input=PROMPT, stream=True))
    assert [e.type for e in events] == STREAM_ORDER_TEXT
    strict = TypeAdapter(ResponseStreamEvent)
    for event in events:
        strict.validate_python(event.model_dump(exclude_unset=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == REPLY.text
    done = events[-1].response
    assert done.status == "completed" and done.output_text == REPLY.text
    assert done.usage is not None
    assert (done.usage.input_tokens, done.usage.output_tokens) == (PROMPT_TOKENS, 16)
    assert events[0].response.id == done.id
    # The stream helper (which validates the event sequence) accepts it too.
    with client.responses.stream(model=model, instructions=INSTRUCTIONS, input=PROMPT) as stream:
        final = stream.get_final_response()
    assert final.output_text == REPLY.text


@MODELS
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_max_output_tokens_makes_an_incomplete_response(
    client: openai.OpenAI, model: str, backend: str, stream: bool
) -> None:
    capped = expected_reply(PROMPT, 16 if model == "gpt-official" else 5)
    kwargs: dict[str, Any] = {"model": model, "input": PROMPT, "max_output_tokens": 5}
    if model == "gpt-official":  # OpenAI's minimum is 16: the fake says so, as OpenAI does
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(**kwargs)
        assert "max_output_tokens" in str(caught.value)
        return
    if stream:
        events = list(client.responses.create(**kwargs, stream=True))
        assert events[-1].type == "response.incomplete"
        response = events[-1].response
    else:
        response = client.responses.create(**kwargs)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == capped.text
    assert response.usage is not None and response.usage.output_tokens == 5


@MODELS
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_function_call_round_trip(client: openai.OpenAI, model: str, backend: str, stream: bool) -> None:
    if stream:
        events = list(client.responses.create(model=model, input=PROMPT, tools=TOOLS, stream=True))
        kinds = [e.type for e in events]
        assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
        assert kinds[-3:] == [
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
        deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
        assert json.loads(deltas) == WEATHER_ARGS
        first = events[-1].response
    else:
        first = client.responses.create(model=model, input=PROMPT, tools=TOOLS)
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1
    call = calls[0]
    assert call.name == "get_weather" and call.call_id
    assert json.loads(call.arguments) == WEATHER_ARGS
    assert first.usage is not None
    assert first.usage.input_tokens == count_tokens(PROMPT) + TOOL_TOKENS

    result = "sunny 21C in Lisbon"
    second = client.responses.create(
        model=model,
        tools=TOOLS,
        input=[
            {"role": "user", "content": PROMPT},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": result},
        ],
    )
    assert second.status == "completed"
    assert second.output_text == tool_result_reply(result)


@pytest.mark.parametrize("model", ["claude", "gpt"])
def test_image_input(client: openai.OpenAI, up: Upstreams, model: str) -> None:
    response = client.responses.create(
        model=model,
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": PROMPT},
                    {"type": "input_image", "image_url": PIXEL, "detail": "low"},
                ],
            }
        ],
    )
    assert response.output_text == REPLY.text
    if model == "gpt":  # the chat server got the image as an image_url part
        parts = up.openai.last_body["messages"][-1]["content"]  # type: ignore[index]
        assert parts[1] == {"type": "image_url", "image_url": {"url": PIXEL, "detail": "low"}}


SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
TEXT_FORMAT = {"format": {"type": "json_schema", "name": "place", "schema": SCHEMA, "strict": True}}


def test_json_schema_output_is_asked_of_the_backend(client: openai.OpenAI, up: Upstreams) -> None:
    client.responses.create(model="gpt", input=PROMPT, text=TEXT_FORMAT)
    assert up.openai.last_body["response_format"] == {  # type: ignore[index]
        "type": "json_schema",
        "json_schema": {"name": "place", "schema": SCHEMA, "strict": True},
    }
    response = client.responses.create(model="gpt-official", input=PROMPT, text=TEXT_FORMAT)
    assert response.text.format.type == "json_schema"
    assert up.openai.last_body["text"] == TEXT_FORMAT  # type: ignore[index]


def test_json_schema_on_a_backend_without_structured_output_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="claude", input=PROMPT, text=TEXT_FORMAT)
    assert "json_schema" in str(caught.value)


@pytest.mark.parametrize(
    ("field", "extra"),
    [
        ("store", {"store": True}),
        ("previous_response_id", {"previous_response_id": "resp_0123"}),
        ("reasoning", {"reasoning": {"effort": "minimal"}}),  # low, medium, high map (docs/reasoning.md)
        ("web_search", {"tools": [{"type": "web_search"}]}),
    ],
)
@pytest.mark.parametrize("model", ["claude", "gpt"])
def test_openai_only_fields_are_refused_elsewhere(
    client: openai.OpenAI, model: str, field: str, extra: dict[str, Any]
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=model, input=PROMPT, **extra)
    problem = caught.value.response.json()
    assert problem["status"] == 400
    assert field in problem["detail"] and field in problem["field"]


def test_openai_only_fields_pass_through_to_openai(client: openai.OpenAI, up: Upstreams) -> None:
    response = client.responses.create(
        model="gpt-official",
        input=PROMPT,
        store=True,
        previous_response_id="resp_0123",
        reasoning={"effort": "low"},
        tools=[{"type": "web_search"}],
        metadata={"ticket": "42"},
    )
    assert response.output_text == REPLY.text
    sent = up.openai.last_body
    assert sent is not None
    assert sent["model"] == "gpt-4o-mini"
    assert (sent["store"], sent["previous_response_id"]) == (True, "resp_0123")
    assert sent["reasoning"] == {"effort": "low"} and sent["tools"] == [{"type": "web_search"}]


def test_store_false_and_metadata_are_fine_everywhere(client: openai.OpenAI) -> None:
    response = client.responses.create(model="claude", input=PROMPT, store=False, metadata={"ticket": "42"})
    assert response.output_text == REPLY.text
    assert response.metadata == {"ticket": "42"}
    assert response.store is False


def test_errors_are_the_sdk_exceptions(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(model="no-such-model", input=PROMPT)
    assert missing.value.request_id
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(model="claude", input=[{"role": "robot", "content": "hi"}])
    assert "input[0].role" in str(bad.value)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="claude", input=PROMPT, temperature=3)


@pytest.mark.parametrize(
    ("model", "last"),
    [
        ("gpt-official-drop", "error"),
        ("gpt-drop", "response.failed"),
        ("claude-drop", "response.failed"),
    ],
    ids=["openai-passthrough", "openai-compatible", "anthropic"],
)
def test_a_stream_that_breaks_ends_with_a_failure_event(client: openai.OpenAI, model: str, last: str) -> None:
    events = list(client.responses.create(model=model, input=PROMPT, stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created"
    assert kinds[-1] == last
    assert "response.completed" not in kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    if last == "error":
        assert "failed mid-stream" in events[-1].message
    else:
        failed = events[-1].response
        assert failed.status == "failed"
        assert failed.error is not None and "failed mid-stream" in failed.error.message
