"""The size tiers: their numbers, their sources, parameter counts and bytes."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.modelgen.plan import plan_model
from gateway.modelgen.presets import (
    PRESETS,
    get_preset,
    parameter_count,
    stored_bytes,
    tensor_shapes,
    weight_bytes,
)

# (hidden, layers, heads, kv heads, intermediate, vocab, tied, published parameters)
REAL = {
    "3b": (3072, 28, 24, 8, 8192, 128256, True, 3.21e9),  # Llama 3.2 3B
    "7b": (4096, 32, 32, 32, 11008, 32000, False, 6.74e9),  # Llama 2 7B
    "14b": (5120, 48, 40, 8, 13824, 152064, False, 14.7e9),  # Qwen2.5-14B's shapes
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_tiers_copy_the_real_shapes_and_counts(name: str) -> None:
    p = get_preset(name)
    hidden, layers, heads, kv, inter, vocab, tied, published = REAL[name]
    assert (p.hidden_size, p.num_hidden_layers, p.num_attention_heads, p.num_key_value_heads) == (
        hidden,
        layers,
        heads,
        kv,
    )
    assert (p.intermediate_size, p.vocab_size, p.tie_word_embeddings) == (inter, vocab, tied)
    assert p.head_dim == 128
    assert parameter_count(p) == pytest.approx(published, rel=0.01)
    assert p.published_parameters == published


def test_tiny_is_a_small_gqa_llama() -> None:
    p = get_preset("tiny")
    assert p.num_hidden_layers > 1 and p.num_key_value_heads < p.num_attention_heads
    assert p.intermediate_size % 64 == 0 and p.hidden_size % 64 == 0  # every layer quantizes
    assert parameter_count(p) == 4_000_000


def test_presets_are_frozen_and_hashable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["tiny"].hidden_size = 1  # type: ignore[misc]
    assert len({hash(p) for p in PRESETS.values()}) == len(PRESETS)
    assert dict(PRESETS["3b"].rope_scaling or ())["rope_type"] == "llama3"


@pytest.mark.parametrize("name", list(PRESETS))
def test_bytes_per_dtype_and_quantization(name: str) -> None:
    params = parameter_count(name)
    assert weight_bytes(name, "float32") == 4 * params
    assert weight_bytes(name, "bfloat16") == weight_bytes(name, "float16") == 2 * params
    q4 = weight_bytes(name, "bfloat16", 4)
    # 4 bits per weight plus a bf16 scale and bias per 64 weights, norms in bf16: 4.5 bits per weight.
    assert q4 == pytest.approx(params * 4.5 / 8, rel=0.01)
    plan = plan_model(name, dtype="bfloat16", quantize=4)
    assert sum(t.nbytes for t in plan.tensors) == q4 == plan.weight_bytes
    assert sum(stored_bytes(t, "bfloat16", 4) for t in tensor_shapes(name)) == q4


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown preset '70b'"):
        get_preset("70b")
    with pytest.raises(ValueError, match="unknown dtype"):
        weight_bytes("tiny", "int8")
    with pytest.raises(ValueError, match="quantize"):
        weight_bytes("tiny", "float32", 3)
