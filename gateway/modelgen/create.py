"""Generate a local model directory that `mlx_lm.load(path)` loads offline: a byte-level BPE tokenizer
trained here, and random weights in the exact shapes of a real model (see `presets`).

The text it generates is gibberish; the compute and memory per token are those of the real model, so
tests get a real model without downloads (`tiny`, about a second to create) and benchmarks get real
sizes (`3b`, `7b`, `14b`).

What goes into the directory:

- `config.json`: `model_type: llama` with the preset's shapes, `eos_token_id` = the ids of
  `<|end_of_text|>`, `<|eom_id|>` and `<|eot_id|>` (as Llama 3.1+), `torch_dtype`, and for
  `quantize=4` the `quantization` / `quantization_config` entries exactly as `mlx_lm.convert -q`
  writes them (`{"group_size": 64, "bits": 4, "mode": "affine"}`); plus a `generated_by` entry
  saying what this is.
- `tokenizer.json`, `tokenizer_config.json` (with a Llama 3 `chat_template`), `special_tokens_map.json`,
  `generation_config.json`.
- `model-0000K-of-0000N.safetensors` and `model.safetensors.index.json`: whole decoder layers per
  shard, about `max_shard_bytes` (2 GiB) each. Tensors are generated in chunks of rows and written
  straight into the file at their offsets, so creating any tier takes a few hundred MB of memory,
  never the model's size.

The tokenizer: byte-level BPE (Llama 3's pre-tokenizer regex, GPT-2 byte alphabet) trained with the
`tokenizers` library on the source files of Python's standard library, which every machine with
Python has (walked in sorted order, capped by size, so the result is deterministic for a given
Python installation). Llama 3's special tokens take the last ids of the vocabulary, as in Llama 3.
When the corpus supports fewer merges than the vocabulary has rows (the 128k and 152k vocabularies),
the rest is filled with filler tokens made by joining two learned tokens: they never come out of
encoding, but every id the model can sample decodes to valid UTF-8 text. Trained tokenizers are
cached per vocabulary size in `$GATEWAY_CACHE_DIR/tokenizers` (default
`~/.cache/gateway/tokenizers`), keyed by the corpus's hash.

The weights: every embedding and linear weight is normal with std 0.02 (drawn by inverse-CDF lookup
of 65536 normal quantiles, seeded per tensor and chunk from `seed` and the tensor's name, so the
same seed gives byte-identical files at any dtype and any shard size); norms are 1. Special tokens
are sampled as often as any other id, so a generation ends early on an end-of-turn id with
probability about 3/vocab per token.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import os
import random
import secrets
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from gateway.modelgen.presets import (
    DTYPES,
    GROUP_SIZE,
    PRESETS,
    Preset,
    TensorShape,
    get_preset,
    parameter_count,
    stored_bytes,
    tensor_shapes,
    weight_bytes,
)

__all__ = [
    "CHAT_TEMPLATE",
    "EOS_TOKENS",
    "SPECIAL_TOKENS",
    "CreatedModel",
    "ModelPlan",
    "ModelTooLarge",
    "add_create_arguments",
    "available_memory_bytes",
    "create_model",
    "ensure_model",
    "plan_model",
    "run_create",
    "train_tokenizer",
]

STD = 0.02
DEFAULT_SHARD_BYTES = 2 << 30
MEMORY_FRACTION = 0.85  # of the available memory the weights may take; the rest is KV cache and the OS
CHUNK_VALUES = 1 << 22  # values generated per task (16 MB as fp32)
RECIPE = 1  # bump when the tokenizer recipe changes, so cached tokenizers are retrained

# Llama 3.1's first eleven special tokens, in its order; they take the last ids of the vocabulary.
SPECIAL_TOKENS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_2|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
)
BOS_TOKEN = "<|begin_of_text|>"
EOS_TOKEN = "<|eot_id|>"
PAD_TOKEN = "<|finetune_right_pad_id|>"
EOS_TOKENS = ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>")

# Llama 3's pre-tokenizer split (tokenizer.json of meta-llama/Meta-Llama-3-8B).
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Llama 3's format; content may be a string or a list of {"type": "text", "text": ...} parts.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{%- if message['content'] is string %}"
    "{{- message['content'] | trim }}"
    "{%- elif message['content'] is not none %}"
    "{%- for part in message['content'] %}"
    "{%- if part['type'] == 'text' %}{{- part['text'] | trim }}{%- endif %}"
    "{%- endfor %}"
    "{%- endif %}"
    "{{- '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{%- endif %}"
)


class ModelTooLarge(Exception):
    """The model would not fit in the available memory or disk."""


# -- planning ---------------------------------------------------------------------------------------


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
            "config": _model_config(self.preset, self.dtype, self.quantize, 0, _special_ids(self.preset)),
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


# -- resources --------------------------------------------------------------------------------------


def available_memory_bytes() -> int | None:
    """Memory this process could use: MemAvailable, bounded by a cgroup limit (containers); on macOS
    the physical memory. None if unknown."""
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit != "max" and int(limit) < 1 << 60:
                found.append(int(limit) - int(Path(usage_file).read_text().strip()))
        except (OSError, ValueError):
            continue
    if not found and sys.platform == "darwin":
        with contextlib.suppress(ValueError, OSError):
            found.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return min(found) if found else None


def _free_disk_bytes(path: Path) -> int:
    probe = path.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def _gb(n: float) -> str:
    if n >= 1e8:
        return f"{n / 1e9:.2f} GB"
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def resource_problem(path: str | Path, plan: ModelPlan, *, force: bool = False) -> str | None:
    """Why this model should not be created here (disk, or memory unless `force`), else None."""
    need = plan.weight_bytes
    name = plan.preset.name
    what = f"{name} ({plan.dtype}{', 4-bit' if plan.quantize else ''})"
    disk = _free_disk_bytes(Path(path))
    if need + (64 << 20) > disk:
        return (
            f"not enough disk space to create {what}: its weights take {_gb(need)} and "
            f"{Path(path).absolute().parent} has {_gb(disk)} free." + _suggest(plan, disk)
        )
    memory = None if force else available_memory_bytes()
    if memory is not None and need > MEMORY_FRACTION * memory:
        return (
            f"refusing to create {what}: its weights take {_gb(need)} of memory to serve, but this "
            f"machine has {_gb(memory)} available (at most {MEMORY_FRACTION:.0%} of it may go to "
            f"weights; the rest is for the KV cache and everything else)."
            + _suggest(plan, MEMORY_FRACTION * memory)
        ) + " Or force it (--force, force=True) to serve it on a bigger machine."
    return None


def _suggest(plan: ModelPlan, limit: float) -> str:
    options = []
    for flags, dtype, quantize in (
        ("--dtype bfloat16", "bfloat16", plan.quantize),
        ("--quantize 4", plan.dtype, 4),
        ("--quantize 4 --dtype bfloat16", "bfloat16", 4),
    ):
        if (dtype, quantize) == (plan.dtype, plan.quantize):
            continue
        size = weight_bytes(plan.preset, dtype, quantize)
        if size < plan.weight_bytes and size <= limit:
            options.append(f"{flags} ({_gb(size)})")
    if not options:
        return " Even 4-bit bfloat16 weights would not fit; use a smaller preset or a bigger machine."
    return " Try " + ", or ".join(options) + "."


# -- the tokenizer ----------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: each byte as a printable character."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(keep)
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(keep, chars, strict=True)}


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    return {c: b for b, c in _byte_to_unicode().items()}


def _token_text(token: str) -> str | None:
    """The text a byte-level token decodes to; None unless it is valid UTF-8 on its own (and no U+FFFD)."""
    decode = _unicode_to_byte()
    try:
        text = bytes(decode[c] for c in token).decode("utf-8")
    except (KeyError, UnicodeDecodeError):
        return None
    return None if "\ufffd" in text else text


def _corpus_limit(vocab_size: int) -> int:
    return min(24 << 20, max(2 << 20, vocab_size * 192))


def _corpus(limit: int) -> list[str]:
    """Source files of Python's standard library, in sorted order, up to `limit` characters; if the
    standard library has no sources (some minimal images), the docstrings of built-in modules."""
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    texts: list[str] = []
    total = 0
    skip = {"site-packages", "dist-packages", "__pycache__"}
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip and not d.startswith("."))
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            try:
                text = (Path(directory) / name).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue  # a few test files are deliberately not UTF-8
            texts.append(text)
            total += len(text)
            if total >= limit:
                return texts
    if total < 256 << 10:
        for module_name in sorted(sys.builtin_module_names):
            try:
                module = sys.modules.get(module_name) or __import__(module_name)
            except ImportError:
                continue
            for attr in sorted(dir(module)):
                doc = getattr(getattr(module, attr, None), "__doc__", None)
                if isinstance(doc, str):
                    texts.append(doc)
    return texts


def _fillers(vocab: dict[str, int], count: int) -> list[str]:
    """`count` new tokens, each two (or three) learned tokens joined, decoding to valid UTF-8."""
    parts = [t for t, _ in sorted(vocab.items(), key=lambda item: item[1]) if _token_text(t) is not None]
    rng = random.Random(len(vocab) * 1_000_003 + count)
    seen = set(vocab)
    found: list[str] = []
    misses = 0
    while len(found) < count:
        token = rng.choice(parts) + rng.choice(parts)
        if misses > 100:
            token += rng.choice(parts)
        if token in seen:
            misses += 1
            continue
        seen.add(token)
        found.append(token)
    return found


def _cache_dir(cache_dir: str | Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("GATEWAY_CACHE_DIR"):
        return Path(os.environ["GATEWAY_CACHE_DIR"]) / "tokenizers"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gateway" / "tokenizers"


def train_tokenizer(vocab_size: int, *, cache_dir: str | Path | None = None) -> tuple[str, bool]:
    """The tokenizer.json text of a byte-level BPE with exactly `vocab_size` ids, and whether it came
    from the cache. Deterministic for a given Python installation and `tokenizers` version."""
    import tokenizers

    if vocab_size < 512:
        raise ValueError(f"vocab_size must be at least 512, not {vocab_size}")
    texts = _corpus(_corpus_limit(vocab_size))
    digest = hashlib.sha256()
    for text in texts:
        digest.update(hashlib.sha256(text.encode("utf-8", "replace")).digest())
    key = f"bpe-r{RECIPE}-v{vocab_size}-t{tokenizers.__version__}-{digest.hexdigest()[:16]}.json"
    directory = _cache_dir(cache_dir)
    cached = directory / key
    try:
        return cached.read_text(encoding="utf-8"), True
    except OSError:
        pass
    text = _train(texts, vocab_size)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / f".{key}.{os.getpid()}.{secrets.token_hex(4)}"
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, cached)
    except OSError:
        pass  # a read-only home: no cache, still correct
    return text, False


def _train(texts: list[str], vocab_size: int) -> str:
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )

    learned_size = vocab_size - len(SPECIAL_TOKENS)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=learned_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)

    data = json.loads(tokenizer.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    missing = learned_size - len(vocab)
    for filler in _fillers(vocab, missing) if missing > 0 else []:
        vocab[filler] = len(vocab)
    tokenizer = Tokenizer.from_str(json.dumps(data))
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    bos = tokenizer.token_to_id(BOS_TOKEN)
    tokenizer.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS_TOKEN} $A",
                pair=f"{BOS_TOKEN} $A {BOS_TOKEN}:1 $B:1",
                special_tokens=[(BOS_TOKEN, bos)],
            ),
        ]
    )
    if tokenizer.get_vocab_size() != vocab_size:  # pragma: no cover - a bug, not a condition
        raise RuntimeError(f"trained {tokenizer.get_vocab_size()} ids, wanted {vocab_size}")
    return tokenizer.to_str(pretty=True)


def _special_ids(preset: Preset) -> dict[str, int]:
    first = preset.vocab_size - len(SPECIAL_TOKENS)
    return {token: first + i for i, token in enumerate(SPECIAL_TOKENS)}


def _tokenizer_files(preset: Preset, tokenizer_json: str) -> dict[str, str]:
    ids = _special_ids(preset)
    eos = [ids[t] for t in EOS_TOKENS]
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": preset.max_position_embeddings,
        "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {
            str(ids[t]): {
                "content": t,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for t in SPECIAL_TOKENS
        },
    }
    special_map = {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "pad_token": PAD_TOKEN}
    generation = {"bos_token_id": ids[BOS_TOKEN], "eos_token_id": eos, "pad_token_id": ids[PAD_TOKEN]}
    return {
        "tokenizer.json": tokenizer_json,
        "tokenizer_config.json": _json(config),
        "special_tokens_map.json": _json(special_map),
        "generation_config.json": _json(generation),
    }


def _json(data: object) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _model_config(
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


# -- the weights ------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _table(dtype: str) -> Any:
    """65536 equiprobable quantiles of N(0, STD²), as the bytes of `dtype` (uint16 bits for bfloat16)."""
    from statistics import NormalDist

    import numpy as np

    normal = NormalDist(0.0, STD)
    values = np.array([normal.inv_cdf((i + 0.5) / 65536) for i in range(65536)], dtype=np.float32)
    if dtype == "float32":
        return values
    if dtype == "float16":
        return values.astype(np.float16)
    bits = values.view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even


def _ones(dtype: str, n: int) -> bytes:
    import numpy as np

    if dtype == "bfloat16":
        return np.full(n, 0x3F80, dtype=np.uint16).tobytes()
    return np.ones(n, dtype=np.float32 if dtype == "float32" else np.float16).tobytes()


def _name_key(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def _draw(seed: int, name: str, chunk: int, count: int, dtype: str) -> Any:
    """The values of one chunk of one tensor (numpy), from indices into the quantile table."""
    import numpy as np

    rng = np.random.default_rng([seed, _name_key(name), chunk])
    return _table(dtype)[rng.integers(0, 65536, size=count, dtype=np.uint16)]


@dataclass
class _Chunk:
    tensor: TensorShape
    index: int
    row: int
    rows: int


def _chunks(tensor: TensorShape) -> Iterator[_Chunk]:
    if tensor.kind == "norm":
        yield _Chunk(tensor, 0, 0, 1)
        return
    total_rows, cols = tensor.shape
    step = max(1, CHUNK_VALUES // cols)
    for index, row in enumerate(range(0, total_rows, step)):
        yield _Chunk(tensor, index, row, min(step, total_rows - row))


class _WeightWriter:
    def __init__(self, seed: int, dtype: str, quantize: int | None, workers: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.seed = seed
        self.dtype = dtype
        self.quantize = quantize
        self.workers = workers
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="gateway-create")
        self._mx: Any = None

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def write_shard(self, path: Path, tensors: tuple[StoredTensor, ...]) -> int:
        header: dict[str, Any] = {"__metadata__": {"format": "mlx"}}
        offsets: dict[tuple[str, str], int] = {}
        position = 0
        for stored in tensors:
            header[stored.name] = {
                "dtype": stored.dtype,
                "shape": list(stored.shape),
                "data_offsets": [position, position + stored.nbytes],
            }
            offsets[(stored.source.name, stored.part)] = position
            position += stored.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        base = 8 + len(raw)
        sources: list[TensorShape] = []
        for stored in tensors:
            if stored.source not in sources:
                sources.append(stored.source)
        with open(path, "wb") as file:
            file.write(len(raw).to_bytes(8, "little") + raw)
            file.truncate(base + position)
            fd = file.fileno()
            for chunk, values in self._generate(sources):
                for part, data, row_bytes in self._encode(chunk, values):
                    start = base + offsets[(chunk.tensor.name, part)]
                    _pwrite_all(fd, data, start + chunk.row * row_bytes)
        return base + position

    def _generate(self, sources: list[TensorShape]) -> Iterator[tuple[_Chunk, Any]]:
        """Chunks with their values, generated `workers` chunks ahead on the thread pool, in order."""
        pending: deque[tuple[_Chunk, Any]] = deque()
        ahead = 2 * self.workers
        for tensor in sources:
            # Values to quantize are drawn as float32 and cast (as mlx_lm.convert casts, then quantizes).
            dtype = "float32" if self.quantize and tensor.quantizable else self.dtype
            for chunk in _chunks(tensor):
                if tensor.kind == "norm":
                    future = None
                else:
                    count = chunk.rows * tensor.shape[-1]
                    future = self.pool.submit(_draw, self.seed, tensor.name, chunk.index, count, dtype)
                pending.append((chunk, future))
                while len(pending) > ahead:
                    yield self._ready(pending.popleft())
        while pending:
            yield self._ready(pending.popleft())

    @staticmethod
    def _ready(item: tuple[_Chunk, Any]) -> tuple[_Chunk, Any]:
        chunk, future = item
        return chunk, None if future is None else future.result()

    def _encode(self, chunk: _Chunk, values: Any) -> list[tuple[str, bytes, int]]:
        """(part, bytes, bytes per row) for one chunk: plain values, or the three quantized parts."""
        tensor = chunk.tensor
        if tensor.kind == "norm":
            return [("plain", _ones(self.dtype, tensor.size), 0)]
        cols = tensor.shape[-1]
        if not (self.quantize and tensor.quantizable):
            return [("plain", values.tobytes(), cols * DTYPES[self.dtype])]
        mx = self._mlx()
        weights = mx.array(values.reshape(chunk.rows, cols)).astype(getattr(mx, self.dtype))
        packed, scales, biases = mx.quantize(weights, group_size=GROUP_SIZE, bits=self.quantize)
        mx.eval(packed, scales, biases)
        item = DTYPES[self.dtype]
        groups = cols // GROUP_SIZE
        return [
            ("weight", _mx_bytes(mx, packed), cols * self.quantize // 8),
            ("scales", _mx_bytes(mx, scales), groups * item),
            ("biases", _mx_bytes(mx, biases), groups * item),
        ]

    def _mlx(self) -> Any:
        if self._mx is None:
            from gateway.blas import ensure_fast_blas

            ensure_fast_blas()
            import mlx.core as mx

            self._mx = mx
        return self._mx


def _mx_bytes(mx: Any, array: Any) -> bytes:
    import numpy as np

    if array.dtype == mx.bfloat16:
        array = mx.view(array, mx.uint16)
    return np.asarray(array).tobytes()


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


# -- creating ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreatedModel:
    path: Path
    preset: Preset
    dtype: str
    quantize: int | None
    seed: int
    parameters: int
    weight_bytes: int  # tensor bytes (what loading takes in memory)
    disk_bytes: int  # every file written
    files: tuple[str, ...]
    seconds: float
    tokenizer_seconds: float
    tokenizer_cached: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "preset": self.preset.name,
            "shapes_of": self.preset.source,
            "dtype": self.dtype,
            "quantize": self.quantize,
            "seed": self.seed,
            "parameters": self.parameters,
            "weight_bytes": self.weight_bytes,
            "disk_bytes": self.disk_bytes,
            "files": list(self.files),
            "seconds": round(self.seconds, 3),
            "tokenizer_seconds": round(self.tokenizer_seconds, 3),
            "tokenizer_cached": self.tokenizer_cached,
        }


def create_model(
    path: str | Path,
    preset: str | Preset = "tiny",
    *,
    dtype: str = "float32",
    quantize: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    force: bool = False,
    cache_dir: str | Path | None = None,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    progress: Callable[[str], None] | None = None,
) -> CreatedModel:
    """Write a model directory at `path` (see the module docstring).

    The directory is built under a temporary name next to `path` and renamed into place, so `path`
    is either absent or complete. Raises `FileExistsError` if `path` exists and is not empty (unless
    `overwrite` and it holds a model: only a directory with a config.json is ever replaced),
    `ModelTooLarge` if the weights would not fit on the disk, or in the available memory (unless
    `force`), `ValueError` for an unknown preset, dtype or quantization. `cache_dir` is where trained
    tokenizers are kept (default `$GATEWAY_CACHE_DIR/tokenizers`, else `~/.cache/gateway/tokenizers`).
    """
    started = time.perf_counter()
    path = Path(path)
    plan = plan_model(preset, dtype=dtype, quantize=quantize, max_shard_bytes=max_shard_bytes)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        if not overwrite:
            raise FileExistsError(
                errno.EEXIST, "already exists (pass overwrite=True / --overwrite)", str(path)
            )
        if not (path / "config.json").is_file():
            message = "exists and is not a model directory (no config.json); not replacing it"
            raise FileExistsError(errno.EEXIST, message, str(path))
    problem = resource_problem(path, plan, force=force)
    if problem:
        raise ModelTooLarge(problem)
    say = progress or (lambda _message: None)

    path.parent.mkdir(parents=True, exist_ok=True)
    building = path.parent / f".{path.name}.creating-{os.getpid()}-{secrets.token_hex(4)}"
    building.mkdir()
    try:
        t = time.perf_counter()
        tokenizer_json, cached = train_tokenizer(plan.preset.vocab_size, cache_dir=cache_dir)
        tokenizer_seconds = time.perf_counter() - t
        say(f"tokenizer: {'cached' if cached else 'trained'} in {tokenizer_seconds:.1f} s")
        ids = _special_ids(plan.preset)
        files = {
            "config.json": _json(_model_config(plan.preset, dtype, quantize, seed, ids)),
            **_tokenizer_files(plan.preset, tokenizer_json),
        }
        for name, text in files.items():
            (building / name).write_text(text, encoding="utf-8")

        weight_map: dict[str, str] = {}
        writer = _WeightWriter(seed, dtype, quantize, workers=max(1, min(4, os.cpu_count() or 1)))
        try:
            for index, shard in enumerate(plan.shards):
                name = plan.shard_name(index)
                writer.write_shard(building / name, shard)
                weight_map.update({t.name: name for t in shard})
                say(f"wrote {name} ({_gb(sum(t.nbytes for t in shard))})")
        finally:
            writer.close()
        index_data = {
            "metadata": {"total_size": plan.weight_bytes, "total_parameters": plan.parameters},
            "weight_map": dict(sorted(weight_map.items())),
        }
        (building / "model.safetensors.index.json").write_text(_json(index_data), encoding="utf-8")
        _move_into_place(building, path, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    written = sorted(p.name for p in path.iterdir())
    return CreatedModel(
        path=path,
        preset=plan.preset,
        dtype=dtype,
        quantize=quantize,
        seed=seed,
        parameters=plan.parameters,
        weight_bytes=plan.weight_bytes,
        disk_bytes=sum((path / name).stat().st_size for name in written),
        files=tuple(written),
        seconds=time.perf_counter() - started,
        tokenizer_seconds=tokenizer_seconds,
        tokenizer_cached=cached,
    )


def _move_into_place(building: Path, path: Path, *, overwrite: bool) -> None:
    if overwrite and path.exists():
        old = path.parent / f".{path.name}.replaced-{os.getpid()}-{secrets.token_hex(4)}"
        os.rename(path, old)
        try:
            os.rename(building, path)
        finally:
            shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.rename(building, path)  # replaces an empty directory; fails on a non-empty one
    except OSError as error:
        # An empty mount point (a volume mounted at `path`) cannot be replaced: fill it instead.
        if error.errno not in (errno.EBUSY, errno.EXDEV) or not path.is_dir() or any(path.iterdir()):
            raise
        for item in sorted(building.iterdir()):
            shutil.move(str(item), str(path / item.name))
        building.rmdir()


def ensure_model(path: str | Path, preset: str | Preset = "tiny", **options: Any) -> Path:
    """Create the model at `path` unless one is there (a `config.json`); returns `path`.

    Safe when several processes race: each builds under its own temporary name and renames it into
    place; the losers discard theirs and use the winner's.
    """
    path = Path(path)
    if (path / "config.json").exists():
        return path
    _remove_abandoned(path)
    try:
        create_model(path, preset, **options)
    except OSError as error:
        if (path / "config.json").exists():  # another process finished first
            return path
        if isinstance(error, FileExistsError) or error.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise FileExistsError(
                errno.EEXIST,
                "exists but holds no model (no config.json); remove it or pick another path",
                str(path),
            ) from error
        raise
    return path


def _remove_abandoned(path: Path) -> None:
    """Temporary directories that processes which no longer run left next to `path`."""
    if not path.parent.is_dir():
        return
    for item in path.parent.glob(f".{path.name}.creating-*"):
        try:
            pid = int(item.name.rsplit("-", 2)[-2])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(item, ignore_errors=True)
        except (ValueError, IndexError, OSError):
            continue


# -- the command line -------------------------------------------------------------------------------


def add_create_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `gateway model create` (see `run_create`)."""
    parser.add_argument("path", type=Path, help="directory to create")
    parser.add_argument(
        "--preset", default="tiny", choices=list(PRESETS), help="size tier: real shapes (default: tiny)"
    )
    parser.add_argument(
        "--quantize",
        type=int,
        choices=[4],
        help="write mlx 4-bit weights (group size 64), as mlx_lm.convert -q",
    )
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=list(DTYPES),
        help="dtype of the weights (of the scales and norms when quantized); default float32, the fast one "
        "on Linux CPUs with OpenBLAS",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files; default 0)")
    parser.add_argument(
        "--dry-run", action="store_true", help="print shapes, parameters and bytes; write nothing"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing directory at PATH")
    parser.add_argument(
        "--force", action="store_true", help="create even if the weights exceed the available memory"
    )


def run_create(args: argparse.Namespace) -> int:
    """`gateway model create`: 0 created (or dry run), 1 refused or failed."""
    try:
        plan = plan_model(args.preset, dtype=args.dtype, quantize=args.quantize)
    except ValueError as error:
        print(f"gateway model create: {error}", file=sys.stderr)
        return 1
    if args.dry_run:
        problem = resource_problem(args.path, plan, force=args.force)
        if args.json:
            print(json.dumps({"path": str(args.path), "dry_run": True, "refusal": problem, **plan.as_dict()}))
        else:
            _print_plan(args.path, plan, problem)
        return 0

    from gateway.blas import ensure_fast_blas

    ensure_fast_blas()  # before anything imports mlx (quantization does)
    quiet = args.json or plan.weight_bytes < 1e9
    try:
        created = create_model(
            args.path,
            plan.preset,
            dtype=args.dtype,
            quantize=args.quantize,
            seed=args.seed,
            overwrite=args.overwrite,
            force=args.force,
            progress=None if quiet else lambda message: print(f"  {message}", file=sys.stderr, flush=True),
        )
    except ModelTooLarge as error:
        print(f"gateway model create: {error}", file=sys.stderr)
        return 1
    except FileExistsError as error:
        print(
            f"gateway model create: {error.filename} already exists; pass --overwrite to replace it",
            file=sys.stderr,
        )
        return 1
    except OSError as error:
        print(f"gateway model create: cannot write {args.path}: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(created.as_dict()))
        return 0
    quantized = f", 4-bit (group {GROUP_SIZE})" if created.quantize else ""
    shards = sum(1 for f in created.files if f.endswith(".safetensors"))
    print(f"created {created.path}")
    print(f"  preset      {created.preset.name} ({created.preset.source})")
    print(f"  weights     {created.dtype}{quantized}, random (seed {created.seed})")
    print(f"  parameters  {_count(created.parameters)} ({created.parameters:,})")
    on_disk = _gb(created.disk_bytes)
    print(f"  bytes       {_gb(created.weight_bytes)} of weights in {shards} shard(s), {on_disk} on disk")
    tokenizer = "cached" if created.tokenizer_cached else "trained"
    print(f"  seconds     {created.seconds:.1f} (tokenizer {tokenizer}, {created.tokenizer_seconds:.1f} s)")
    return 0


def _print_plan(path: Path, plan: ModelPlan, problem: str | None) -> None:
    p = plan.preset
    quantized = f", 4-bit (group {GROUP_SIZE})" if plan.quantize else ""
    print(f"dry run: would create {path} (nothing written)")
    print(f"preset {p.name} ({p.source}), model_type llama")
    print(
        f"  hidden {p.hidden_size}, {p.num_hidden_layers} layers, {p.num_attention_heads} heads, "
        f"{p.num_key_value_heads} KV heads (head_dim {p.head_dim}), intermediate {p.intermediate_size}, "
        f"vocab {p.vocab_size}, {'tied' if p.tie_word_embeddings else 'untied'} embeddings, "
        f"rope_theta {p.rope_theta:.0f}, context {p.max_position_embeddings}"
    )
    print(f"parameters {_count(plan.parameters)} ({plan.parameters:,})")
    print(f"weights {plan.dtype}{quantized}: {_gb(plan.weight_bytes)} in {len(plan.shards)} shard(s)")
    layers = p.num_hidden_layers
    width = max(len(t.name) for t in plan.tensors) + len(str(layers)) + 4
    for tensor in plan.tensors:
        name = tensor.name
        if name.startswith("model.layers."):
            if not name.startswith("model.layers.0."):
                continue
            name = name.replace("model.layers.0.", f"model.layers.{{0..{layers - 1}}}.", 1)
        shape = "[" + ", ".join(str(d) for d in tensor.shape) + "]"
        print(f"  {name:<{width}} {shape:<16} {tensor.dtype:<5} {_gb(tensor.nbytes)}")
    print(f"would be refused: {problem}" if problem else "fits: yes (disk and memory)")
