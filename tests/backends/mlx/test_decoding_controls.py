"""The per-sequence logits processors of local models, on the generated tiny model's tokenizer: the
grammar mask (structured output), logit bias and OpenAI's penalties, and the checks that turn a bad
value into a client error before anything is queued."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from gateway.backends.mlx.grammar import GrammarProcessor, response_format_grammar
from gateway.backends.mlx.sampling import LogitBias, Penalties, SamplingFields, sampling_fields
from gateway.backends.upstream import UpstreamFailure

VOCAB = 4096


@pytest.fixture(scope="module")
def ll_tokenizer(tiny_model: Path):
    import llguidance.hf
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(tiny_model))
    return hf, llguidance.hf.from_tokenizer(hf, eos_token=hf.eos_token_id)


def _allowed(processor: GrammarProcessor, context: list[int]) -> np.ndarray:
    logits = mx.zeros((1, VOCAB))
    out = processor(mx.array(context), logits)
    return np.flatnonzero(np.isfinite(np.array(out[0])))


def test_the_mask_follows_the_grammar_token_by_token(ll_tokenizer) -> None:
    hf, tokenizer = ll_tokenizer
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    grammar = response_format_grammar({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    processor = GrammarProcessor(tokenizer, grammar)
    prompt = [1, 2, 3]
    context = list(prompt)
    text = ""
    for _ in range(40):
        allowed = _allowed(processor, context)
        assert allowed.size > 0
        # Take the lowest allowed id each step (a deterministic walk through the grammar).
        token = int(allowed[0])
        if token == tokenizer.eos_token:
            break
        text += hf.decode([token])
        context.append(token)
    assert json.loads(text) in ({"ok": True}, {"ok": False})
    # Complete: only end-of-sequence is left.
    assert list(_allowed(processor, context)) == [tokenizer.eos_token]


def test_the_first_call_consumes_nothing(ll_tokenizer) -> None:
    hf, tokenizer = ll_tokenizer
    processor = GrammarProcessor(tokenizer, response_format_grammar({"type": "json_object"}))
    brace = hf.encode("{", add_special_tokens=False)[0]
    allowed = _allowed(processor, [5, 6, 7])  # the prompt's last token is not fed to the grammar
    assert brace in allowed
    assert hf.encode("x", add_special_tokens=False)[0] not in allowed


def test_text_format_needs_no_grammar() -> None:
    assert response_format_grammar({"type": "text"}) is None


@pytest.mark.parametrize(
    ("response_format", "param"),
    [
        (
            {"type": "json_schema", "json_schema": {"schema": {"type": "frog"}}},
            "response_format.json_schema.schema",
        ),
        (
            {"type": "json_schema", "json_schema": {"schema": {"maxItems": -1}}},
            "response_format.json_schema.schema",
        ),
        ({"type": "json_schema", "json_schema": "x"}, "response_format.json_schema"),
        ({"type": "xml"}, "response_format.type"),
        ("json", "response_format"),
    ],
)
def test_bad_response_formats_are_client_errors(response_format: object, param: str) -> None:
    with pytest.raises(UpstreamFailure) as caught:
        response_format_grammar(response_format)
    assert caught.value.kind == "client_error" and caught.value.param == param


def test_logit_bias_adds_to_the_named_tokens() -> None:
    out = LogitBias(((3, 100.0), (5, -100.0)))(mx.array([0]), mx.zeros((1, 8)))
    assert np.array(out[0]).tolist() == [0, 0, 0, 100, 0, -100, 0, 0]


def test_penalties_count_generated_tokens_only() -> None:
    penalties = Penalties(presence=0.5, frequency=1.0)
    logits = mx.zeros((1, 8))
    # First call: the context is the prompt (token 2 included), nothing generated yet.
    assert np.array(penalties(mx.array([2, 2]), logits)[0]).tolist() == [0] * 8
    penalties(mx.array([2, 2, 4]), logits)  # 4 generated once
    out = np.array(penalties(mx.array([2, 2, 4, 4]), logits)[0])  # 4 generated twice
    assert out.tolist() == [0, 0, 0, 0, -2.5, 0, 0, 0]


def test_sampling_fields_from_a_request() -> None:
    fields = sampling_fields(
        {"logit_bias": {"7": 3}, "presence_penalty": 1, "frequency_penalty": -0.5, "top_k": 40}, VOCAB
    )
    assert fields == SamplingFields(((7, 3.0),), 1.0, -0.5, 40)
    assert len(fields.processors()) == 2
    assert sampling_fields({"top_k": 0}, VOCAB).processors() == []  # the shared-sampler fast path
    assert sampling_fields({"top_k": -1}, VOCAB).top_k == 0


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"logit_bias": {"4096": 1}}, "logit_bias.4096"),
        ({"logit_bias": {"x": 1}}, "logit_bias.x"),
        ({"logit_bias": {"1": 101}}, "logit_bias"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"top_k": "many"}, "top_k"),
    ],
)
def test_bad_sampling_fields_are_client_errors(extra: dict, param: str) -> None:
    with pytest.raises(UpstreamFailure) as caught:
        sampling_fields(extra, VOCAB)
    assert caught.value.kind == "client_error" and caught.value.param == param
