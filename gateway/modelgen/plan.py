"""What a generated model is made of, computed without writing anything: every tensor as stored
(plain, or mlx's 4-bit weight/scales/biases), the shards they go to (whole decoder layers per shard,
about `max_shard_bytes` each), the parameter count and bytes, and the `config.json` that describes
the model to mlx-lm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.modelgen.presets import (
    GROUP_SIZE,
    Preset,
    TensorShape,
    get_preset,
    parameter_count,
    stored_bytes,
    tensor_shapes,
    weight_bytes,
)
from gateway.modelgen.tokenizer import BOS_TOKEN, EOS_TOKENS, PAD_TOKEN, special_ids

__all__ = [
    "DEFAULT_SHARD_BYTES",
    "STD",
    "ModelPlan",
    "StoredTensor",
    "format_bytes",
    "format_count",
    "model_config",
    "plan_model",
]

STD = 0.02  # of every embedding and linear weight (norms are 1)
DEFAULT_SHARD_BYTES = 2 << 30


@dataclass(frozen=True)
class StoredTensor:
    """One tensor as written: `part` is "plain", or "weight" / "scales" / "biases" of a quantized layer."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # safetensors dtype: F32, BF16, F16, U32
    part: str
    source: TensorShape

    @property
    def nbytes(self) -> int:
        n = {"F32": 4, "U32": 4, "BF16": 2, "F16": 2}[self.dtype]
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class ModelPlan:
    """What `create_model` would write, computed without writing anything."""

    preset: Preset
    dtype: str
    quantize: int | None
    shards: tuple[tuple[StoredTensor, ...], ...]
    parameters: int
    weight_bytes: int

    @property
    def tensors(self) -> list[StoredTensor]:
        return [t for shard in self.shards for t in shard]

    def shard_name(self, index: int) -> str:
        return f"model-{index + 1:05d}-of-{len(self.shards):05d}.safetensors"

    def as_dict(self) -> dict[str, Any]:
        return {
            "preset": self.preset.name,
            "shapes_of": self.preset.source,
            "dtype": self.dtype,
            "quantize": self.quantize,
            "parameters": self.parameters,
            "weight_bytes": self.weight_bytes,
            "shards": len(self.shards),
            "config": model_config(self.preset, self.dtype, self.quantize, 0, special_ids(self.preset)),
            "tensors": [
                {"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "shard": i + 1}
                for i, shard in enumerate(self.shards)
                for t in shard
            ],
        }


_SAFETENSORS_DTYPE = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}


def _stored(tensor: TensorShape, dtype: str, quantize: int | None) -> list[StoredTensor]:
    kind = _SAFETENSORS_DTYPE[dtype]
    if not (quantize and tensor.quantizable):
        return [StoredTensor(tensor.name, tensor.shape, kind, "plain", tensor)]
    rows, cols = tensor.shape
    base = tensor.name.removesuffix(".weight")
    return [
        StoredTensor(f"{base}.weight", (rows, cols * quantize // 32), "U32", "weight", tensor),
        StoredTensor(f"{base}.scales", (rows, cols // GROUP_SIZE), kind, "scales", tensor),
        StoredTensor(f"{base}.biases", (rows, cols // GROUP_SIZE), kind, "biases", tensor),
    ]


def plan_model(
    preset: str | Preset = "tiny",
    *,
    dtype: str = "float32",
    quantize: int | None = None,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
) -> ModelPlan:
    """The tensors, shapes, shards, parameter count and bytes of a model, without creating it."""
    p = get_preset(preset)
    total = weight_bytes(p, dtype, quantize)  # validates dtype and quantize
    # Units that stay in one shard: the embedding, each decoder layer, the final norm with the head.
    units: list[list[TensorShape]] = []
    for tensor in tensor_shapes(p):
        if tensor.name.startswith("model.layers."):
            layer = tensor.name.split(".")[2]
            if units and units[-1][0].name.startswith(f"model.layers.{layer}."):
                units[-1].append(tensor)
                continue
        elif tensor.name == "lm_head.weight":
            units[-1].append(tensor)
            continue
        units.append([tensor])
    shards: list[list[StoredTensor]] = []
    size = 0
    for unit in units:
        unit_bytes = sum(stored_bytes(t, dtype, quantize) for t in unit)
        if not shards or (size and size + unit_bytes > max_shard_bytes):
            shards.append([])
            size = 0
        shards[-1] += [s for t in unit for s in _stored(t, dtype, quantize)]
        size += unit_bytes
    return ModelPlan(p, dtype, quantize, tuple(tuple(s) for s in shards), parameter_count(p), total)


def model_config(
    preset: Preset, dtype: str, quantize: int | None, seed: int, ids: dict[str, int]
) -> dict[str, Any]:
    config: dict[str, Any] = preset.config()
    config.update(
        bos_token_id=ids[BOS_TOKEN],
        eos_token_id=[ids[t] for t in EOS_TOKENS],
        pad_token_id=ids[PAD_TOKEN],
        torch_dtype=dtype,
        use_cache=True,
        generated_by={
            "tool": "gateway model create",
            "preset": preset.name,
            "shapes_of": preset.source,
            "seed": seed,
            "weights": f"random normal (std {STD}), norms 1: the text is gibberish, the compute is real",
        },
    )
    if quantize:
        quantization = {"group_size": GROUP_SIZE, "bits": quantize, "mode": "affine"}
        config["quantization"] = quantization
        config["quantization_config"] = dict(quantization)
    return dict(sorted(config.items()))


def format_bytes(n: float) -> str:
    if n >= 1e8:
        return f"{n / 1e9:.2f} GB"
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def format_count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"
