"""The Responses API on a local model (the generated tiny model, served by the mlx backend): text, a
stream with the same text, json_schema output through the grammar, the response cache, and the
OpenAI-only fields refused."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from tests.e2e.test_local_decoding import SCHEMA

PROMPT = "Tell me a story about the sea."


@pytest.fixture(scope="module")
def gateway(gateway_server_module, tiny_model: Path):
    return gateway_server_module(
        f"""
backends:
  local: {{type: mlx, path: "{tiny_model}", max_batch_size: 8, max_queue: 64}}
models:
  tiny: {{chain: [{{backend: local}}]}}
  tiny-cached: {{chain: [{{backend: local}}], cache: {{mode: exact}}}}
timeouts:
  chat: {{total: 300, first_byte: 120}}
"""
    )


@pytest.fixture(scope="module")
def client(gateway):
    sdk = openai.OpenAI(base_url=gateway.url("/v1"), api_key="x", max_retries=0, timeout=120)
    yield sdk
    sdk.close()


def test_text_and_stream_agree(client: openai.OpenAI) -> None:
    args = {"model": "tiny", "input": PROMPT, "max_output_tokens": 16, "temperature": 0}
    whole = client.responses.create(**args)
    assert whole.status in ("completed", "incomplete")
    assert whole.usage is not None and whole.usage.input_tokens > 5
    events = list(client.responses.create(**args, stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response." + (
        "completed" if whole.status == "completed" else "incomplete"
    )
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == whole.output_text
    assert events[-1].response.usage.output_tokens == whole.usage.output_tokens


def test_json_schema_output_follows_the_schema(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="tiny",
        input=PROMPT,
        max_output_tokens=400,
        text={"format": {"type": "json_schema", "name": "ship", "schema": SCHEMA, "strict": True}},
    )
    ship = json.loads(response.output_text)
    assert set(ship) == set(SCHEMA["required"])
    assert ship["kind"] in ("sloop", "brig", "ketch")


def test_a_repeated_request_is_a_cache_hit(client: openai.OpenAI) -> None:
    args = {"model": "tiny-cached", "input": PROMPT, "max_output_tokens": 8, "temperature": 0}
    first = client.responses.with_raw_response.create(**args)
    again = client.responses.with_raw_response.create(**args)
    assert first.headers["x-gateway-cache"] == "miss"
    assert again.headers["x-gateway-cache"] == "hit"
    assert again.parse().output_text == first.parse().output_text
    events = list(client.responses.create(**args, stream=True))
    assert events[-1].type in ("response.completed", "response.incomplete")
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == first.parse().output_text


@pytest.mark.parametrize(
    ("field", "extra"), [("store", {"store": True}), ("previous_response_id", {"previous_response_id": "r"})]
)
def test_openai_state_is_refused(client: openai.OpenAI, field: str, extra: dict) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="tiny", input=PROMPT, **extra)
    assert caught.value.response.json()["field"] == field
