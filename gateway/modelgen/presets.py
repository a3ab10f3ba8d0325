"""Size tiers for generated models: the exact shapes of real Llama-style models.

A generated model has random weights, so its text is gibberish, but every tier copies the
architecture of a real model, so the compute and memory per token are those of that model:

- `tiny`: no real model; the smallest real multi-layer GQA transformer that still exercises every
  code path (4 layers, 8 query heads sharing 4 KV heads, tied embeddings). About 4.0M parameters:
  created in about a second, generates hundreds of tokens per second on a 2-core CPU. For tests and
  the default config.
- `3b`: Llama 3.2 3B (meta-llama/Llama-3.2-3B, config.json): hidden 3072, 28 layers, 24 heads,
  8 KV heads (head_dim 128), intermediate 8192, vocab 128256, tied embeddings, rope_theta 500000
  with the "llama3" rope scaling (factor 32, original context 8192), context 131072,
  rms_norm_eps 1e-5. 3.21B parameters.
- `7b`: Llama 2 7B (meta-llama/Llama-2-7b-hf, config.json): hidden 4096, 32 layers, 32 heads,
  32 KV heads (no GQA), intermediate 11008, vocab 32000, untied embeddings, rope_theta 10000,
  context 4096, rms_norm_eps 1e-5. 6.74B parameters.
- `14b`: the shapes of Qwen2.5-14B (Qwen/Qwen2.5-14B, config.json) as a Llama: hidden 5120,
  48 layers, 40 heads, 8 KV heads (head_dim 128), intermediate 13824, vocab 152064, untied
  embeddings, rope_theta 1000000, context 131072, rms_norm_eps 1e-5 (the base model's; the
  instruct model uses 1e-6). Qwen2 adds biases to the q/k/v projections (about 1.6M parameters,
  0.01%); a Llama has none, so this tier has none: 14.77B parameters vs Qwen's published 14.7B.

Parameter counts follow from the shapes (`parameter_count`); `weight_bytes` is the size of the
tensors on disk and in memory for a dtype, or for mlx's 4-bit affine quantization with group size
64 (packed uint32 weights plus one scale and one bias per group, in the dtype), which is what
`mlx_lm.convert -q` produces: embeddings and every linear layer are quantized, norms are not.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DTYPES",
    "GROUP_SIZE",
    "PRESETS",
    "Preset",
    "TensorShape",
    "get_preset",
    "parameter_count",
    "tensor_shapes",
    "weight_bytes",
]

DTYPES = {"float32": 4, "bfloat16": 2, "float16": 2}
GROUP_SIZE = 64
QUANTIZE_BITS = (4,)


@dataclass(frozen=True)
class Preset:
    """A Llama-architecture (`model_type: llama`) shape, as in a Hugging Face config.json."""

    name: str
    source: str  # the real model whose shapes this copies
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    rope_theta: float
    rms_norm_eps: float
    tie_word_embeddings: bool
    # Only Llama 3.x has one; as (key, value) pairs so the preset stays hashable.
    rope_scaling: tuple[tuple[str, float | int | str], ...] | None = None
    published_parameters: float | None = None  # as the model card states it, for comparison

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def config(self) -> dict[str, object]:
        """The architecture part of config.json."""
        config: dict[str, object] = {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.intermediate_size,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "attention_bias": False,
            "mlp_bias": False,
            "initializer_range": 0.02,
        }
        if self.rope_scaling is not None:
            config["rope_scaling"] = dict(self.rope_scaling)
        return config


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        source="no real model: a small Llama 3-style GQA transformer for tests",
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        intermediate_size=704,  # ≈ 8/3 × hidden, a multiple of 64 so 4-bit quantization covers it
        vocab_size=4096,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
    ),
    "3b": Preset(
        name="3b",
        source="meta-llama/Llama-3.2-3B",
        hidden_size=3072,
        num_hidden_layers=28,
        num_attention_heads=24,
        num_key_value_heads=8,
        intermediate_size=8192,
        vocab_size=128256,
        max_position_embeddings=131072,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        rope_scaling=(
            ("rope_type", "llama3"),
            ("factor", 32.0),
            ("low_freq_factor", 1.0),
            ("high_freq_factor", 4.0),
            ("original_max_position_embeddings", 8192),
        ),
        published_parameters=3.21e9,
    ),
    "7b": Preset(
        name="7b",
        source="meta-llama/Llama-2-7b-hf",
        hidden_size=4096,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        intermediate_size=11008,
        vocab_size=32000,
        max_position_embeddings=4096,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        published_parameters=6.74e9,
    ),
    "14b": Preset(
        name="14b",
        source="Qwen/Qwen2.5-14B (shapes only, as a Llama: no q/k/v biases)",
        hidden_size=5120,
        num_hidden_layers=48,
        num_attention_heads=40,
        num_key_value_heads=8,
        intermediate_size=13824,
        vocab_size=152064,
        max_position_embeddings=131072,
        rope_theta=1000000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        published_parameters=14.7e9,
    ),
}


def get_preset(preset: str | Preset) -> Preset:
    if isinstance(preset, Preset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r} (presets: {', '.join(PRESETS)})") from None


@dataclass(frozen=True)
class TensorShape:
    """One logical (unquantized) weight. `quantizable`: an embedding or linear layer whose input
    dimension is a multiple of the group size, which `mlx_lm.convert -q` would quantize."""

    name: str
    shape: tuple[int, ...]
    kind: str  # "embedding", "linear" or "norm"

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def quantizable(self) -> bool:
        return self.kind != "norm" and self.shape[-1] % GROUP_SIZE == 0


def tensor_shapes(preset: str | Preset) -> list[TensorShape]:
    """Every weight of the model, in the Hugging Face Llama names mlx-lm loads, in model order."""
    p = get_preset(preset)
    h, hd = p.hidden_size, p.head_dim
    q, kv = p.num_attention_heads * hd, p.num_key_value_heads * hd
    shapes = [TensorShape("model.embed_tokens.weight", (p.vocab_size, h), "embedding")]
    for i in range(p.num_hidden_layers):
        layer = f"model.layers.{i}"
        shapes += [
            TensorShape(f"{layer}.input_layernorm.weight", (h,), "norm"),
            TensorShape(f"{layer}.self_attn.q_proj.weight", (q, h), "linear"),
            TensorShape(f"{layer}.self_attn.k_proj.weight", (kv, h), "linear"),
            TensorShape(f"{layer}.self_attn.v_proj.weight", (kv, h), "linear"),
            TensorShape(f"{layer}.self_attn.o_proj.weight", (h, q), "linear"),
            TensorShape(f"{layer}.post_attention_layernorm.weight", (h,), "norm"),
            TensorShape(f"{layer}.mlp.gate_proj.weight", (p.intermediate_size, h), "linear"),
            TensorShape(f"{layer}.mlp.up_proj.weight", (p.intermediate_size, h), "linear"),
            TensorShape(f"{layer}.mlp.down_proj.weight", (h, p.intermediate_size), "linear"),
        ]
    shapes.append(TensorShape("model.norm.weight", (h,), "norm"))
    if not p.tie_word_embeddings:
        shapes.append(TensorShape("lm_head.weight", (p.vocab_size, h), "linear"))
    return shapes


def parameter_count(preset: str | Preset) -> int:
    """Parameters of the unquantized model (tied embeddings counted once)."""
    return sum(t.size for t in tensor_shapes(preset))


def stored_bytes(tensor: TensorShape, dtype: str = "float32", quantize: int | None = None) -> int:
    """Bytes of one weight as stored: quantized (packed weight + scales + biases) or in `dtype`."""
    item = _dtype_size(dtype)
    if quantize and tensor.quantizable:
        rows, cols = tensor.size // tensor.shape[-1], tensor.shape[-1]
        return rows * cols * quantize // 8 + 2 * rows * (cols // GROUP_SIZE) * item
    return tensor.size * item


def weight_bytes(preset: str | Preset, dtype: str = "float32", quantize: int | None = None) -> int:
    """Bytes of all the weights (what the safetensors files hold, less their small headers, and what
    loading the model takes in memory)."""
    _check_quantize(quantize)
    return sum(stored_bytes(t, dtype, quantize) for t in tensor_shapes(preset))


def _dtype_size(dtype: str) -> int:
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r} (dtypes: {', '.join(DTYPES)})") from None


def _check_quantize(quantize: int | None) -> None:
    if quantize is not None and quantize not in QUANTIZE_BITS:
        raise ValueError(f"quantize must be one of {QUANTIZE_BITS} or None, not {quantize!r}")
