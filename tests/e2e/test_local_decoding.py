"""Decoding controls on a local model through the real server and the official SDKs: structured output
(`response_format`, grammar-constrained), several choices (`n`), and the sampling fields (`logit_bias`,
presence and frequency penalties, `top_k`). The model is the generated tiny one: random weights, so
its free text is gibberish, which makes the constraints' effect plain to see."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anthropic
import jsonschema
import openai
import pytest
import requests

MESSAGES = [{"role": "user", "content": "Describe a ship as JSON."}]

#: Every string, array and number bounded, so a complete value always fits in `max_tokens`.
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "kind": {"enum": ["sloop", "brig", "ketch"]},
        "crew": {"type": "integer", "minimum": 1, "maximum": 40},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 3},
        "afloat": {"type": "boolean"},
    },
    "required": ["name", "kind", "crew", "tags", "afloat"],
    "additionalProperties": False,
}
SHIP_FORMAT = {"type": "json_schema", "json_schema": {"name": "ship", "schema": SCHEMA, "strict": True}}


@pytest.fixture(scope="module")
def gateway(gateway_server_module, tiny_model: Path):
    return gateway_server_module(
        f"""
backends:
  local: {{type: mlx, path: "{tiny_model}", max_batch_size: 16, max_queue: 256}}
models:
  tiny: {{chain: [{{backend: local}}]}}
  tiny-cached: {{chain: [{{backend: local}}], cache: {{mode: exact}}}}
timeouts:
  chat: {{total: 300, first_byte: 120}}
"""
    )


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model))


def oai(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url("/v1"), api_key="x", max_retries=0, timeout=300)


# --- structured output ---------------------------------------------------------------------------------


def test_json_schema_output_validates_in_100_sampled_runs(gateway) -> None:
    client = oai(gateway)

    def ten(seed: int) -> list[tuple[str, str]]:
        reply = client.chat.completions.create(
            model="tiny",
            messages=MESSAGES,
            response_format=SHIP_FORMAT,
            temperature=1.0,
            seed=seed,
            n=10,
            max_tokens=400,
        )
        assert [c.index for c in reply.choices] == list(range(10))
        return [(c.finish_reason, c.message.content) for c in reply.choices]

    with ThreadPoolExecutor(4) as pool:
        runs = [run for batch in pool.map(ten, range(0, 1000, 100)) for run in batch]
    assert len(runs) == 100
    for finish_reason, content in runs:
        assert finish_reason == "stop", content
        jsonschema.validate(json.loads(content), SCHEMA)
    assert len({content for _, content in runs}) > 50  # sampled, not one answer repeated


def test_json_object_output_parses_as_an_object(gateway) -> None:
    reply = oai(gateway).chat.completions.create(
        model="tiny",
        messages=MESSAGES,
        response_format={"type": "json_object"},
        temperature=0.7,
        seed=3,
        n=4,
        max_tokens=2000,
    )
    assert any(choice.finish_reason == "stop" for choice in reply.choices)
    for choice in reply.choices:
        if choice.finish_reason == "stop":
            assert isinstance(json.loads(choice.message.content), dict)
        else:  # out of tokens first (an object's size is not bounded): a cut-off prefix, as OpenAI's
            assert choice.finish_reason == "length" and choice.message.content.startswith("{")


def test_structured_output_streams_the_same_json(gateway) -> None:
    client = oai(gateway)
    args = {"model": "tiny", "messages": MESSAGES, "response_format": SHIP_FORMAT, "max_tokens": 400}
    whole = client.chat.completions.create(**args, temperature=0)
    chunks = list(client.chat.completions.create(**args, temperature=0, stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content
    jsonschema.validate(json.loads(streamed), SCHEMA)


def test_out_of_tokens_finishes_with_length(gateway) -> None:
    reply = oai(gateway).chat.completions.create(
        model="tiny", messages=MESSAGES, response_format=SHIP_FORMAT, temperature=0, max_tokens=3
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 3


@pytest.mark.parametrize(
    ("response_format", "field"),
    [
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "frog"}}}, "schema"),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"minLength": "two"}}}, "schema"),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": []}}, "schema"),
        ({"type": "json_schema"}, "json_schema"),
        # An unknown type is a field of OpenAI's protocol no local model takes (the field table).
        ({"type": "yaml"}, "response_format"),
    ],
)
def test_invalid_response_format_is_a_problem_naming_it(gateway, response_format: dict, field: str) -> None:
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 5, "response_format": response_format}
    response = requests.post(gateway.url("/v1/chat/completions"), json=body, timeout=60)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["error"]["param"].startswith("response_format")
    assert problem["error"]["param"].endswith(field)
    assert problem["request_id"] == response.headers["x-request-id"]


# --- n -------------------------------------------------------------------------------------------------


def test_n_gives_n_choices_with_summed_usage(gateway) -> None:
    client = oai(gateway)
    one = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12, temperature=0)
    three = client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=12, temperature=1.0, seed=11, n=3
    )
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert three.usage.prompt_tokens == one.usage.prompt_tokens  # the prompt counted once
    assert three.usage.completion_tokens == 3 * 12
    assert three.usage.total_tokens == three.usage.prompt_tokens + 36
    # Choice i is sampled with seed + i: choice 0 is the request's own seed alone, and they differ.
    alone = client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=12, temperature=1.0, seed=11
    )
    assert three.choices[0].message.content == alone.choices[0].message.content
    assert len({c.message.content for c in three.choices}) == 3


def test_n_streams_every_choice_with_its_index(gateway) -> None:
    client = oai(gateway)
    args = {"model": "tiny", "messages": MESSAGES, "max_tokens": 12, "temperature": 1.0, "seed": 5, "n": 3}
    whole = client.chat.completions.create(**args)
    chunks = list(client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True}))
    texts = ["", "", ""]
    finishes: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                assert choice.index not in finishes
                finishes[choice.index] = choice.finish_reason
    assert texts == [c.message.content for c in whole.choices]
    assert finishes == {c.index: c.finish_reason for c in whole.choices}
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_the_response_cache_serves_one_choice_and_passes_several_through(gateway) -> None:
    client = oai(gateway)
    args = {"model": "tiny-cached", "messages": MESSAGES, "max_tokens": 8, "seed": 4, "temperature": 1.0}
    # One choice: stored, then served with the same content.
    first = client.chat.completions.with_raw_response.create(**args, response_format=SHIP_FORMAT)
    again = client.chat.completions.with_raw_response.create(**args, response_format=SHIP_FORMAT)
    assert again.headers["x-gateway-cache"] == "hit"
    assert again.parse().choices[0].message.content == first.parse().choices[0].message.content
    # Several: one stored answer cannot hold them, so each request reaches the model.
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(**args, n=2)
        assert raw.headers["x-gateway-cache"] == "off"
        assert [c.index for c in raw.parse().choices] == [0, 1]


def test_n_on_legacy_completions(gateway) -> None:
    client = oai(gateway)
    reply = client.completions.create(
        model="tiny", prompt="Once upon a time", max_tokens=6, temperature=1.0, seed=1, n=2
    )
    assert [c.index for c in reply.choices] == [0, 1]
    assert reply.usage.completion_tokens == 12
    streamed = ["", ""]
    for chunk in client.completions.create(
        model="tiny", prompt="Once upon a time", max_tokens=6, temperature=1.0, seed=1, n=2, stream=True
    ):
        for choice in chunk.choices:
            streamed[choice.index] += choice.text
    assert streamed == [c.text for c in reply.choices]


# --- sampling fields -----------------------------------------------------------------------------------


def test_logit_bias_plus_100_makes_every_token_that_one(gateway, tokenizer) -> None:
    token = tokenizer.encode(" if", add_special_tokens=False)[0]
    reply = oai(gateway).chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=8, temperature=0, logit_bias={str(token): 100}
    )
    assert reply.usage.completion_tokens == 8
    # (The detokenizer drops the answer's leading space.)
    assert reply.choices[0].message.content == tokenizer.decode([token] * 8).lstrip()


def test_logit_bias_minus_100_excludes_a_token(gateway, tokenizer) -> None:
    client = oai(gateway)
    plain = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=1, temperature=0)
    first = plain.choices[0].message.content
    same = [i for i in range(len(tokenizer)) if tokenizer.decode([i]) == first]
    assert same  # the greedy first token
    banned = client.chat.completions.create(
        model="tiny",
        messages=MESSAGES,
        max_tokens=1,
        temperature=0,
        logit_bias={str(i): -100 for i in same},
    )
    assert banned.choices[0].message.content != first


def test_logit_bias_outside_the_vocabulary_is_refused(gateway, tokenizer) -> None:
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 2, "logit_bias": {"99999": 5}}
    response = requests.post(gateway.url("/v1/chat/completions"), json=body, timeout=60)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "logit_bias.99999"


def test_top_k_1_equals_greedy(gateway) -> None:
    client = oai(gateway)
    greedy = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=16, temperature=0)
    top1 = client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=16, temperature=1.0, seed=9, extra_body={"top_k": 1}
    )
    assert top1.choices[0].message.content == greedy.choices[0].message.content
    claude = anthropic.Anthropic(base_url=gateway.base_url, api_key="x", max_retries=0)
    message = claude.messages.create(
        model="tiny", max_tokens=16, messages=MESSAGES, extra_body={"temperature": 1.0, "top_k": 1}
    )
    assert message.content[0].text == greedy.choices[0].message.content


@pytest.mark.parametrize("penalty", ["presence_penalty", "frequency_penalty"])
def test_penalties_make_a_repeated_token_rarer(gateway, tokenizer, penalty: str) -> None:
    client = oai(gateway)
    args = {"model": "tiny", "messages": MESSAGES, "max_tokens": 32, "temperature": 0}
    plain = client.chat.completions.create(**args).choices[0].message.content
    ids = tokenizer.encode(plain, add_special_tokens=False)
    repeated = max(set(ids), key=ids.count)
    assert ids.count(repeated) >= 4  # greedy decoding of random weights loops
    penalised = client.chat.completions.create(**args, extra_body={penalty: 2.0}).choices[0].message.content
    again = tokenizer.encode(penalised, add_special_tokens=False)
    assert again.count(repeated) < ids.count(repeated)
