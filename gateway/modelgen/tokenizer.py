"""The tokenizer of a generated model, and its files beside `tokenizer.json`.

A byte-level BPE (Llama 3's pre-tokenizer regex, GPT-2 byte alphabet) trained with the
`tokenizers` library on the source files of Python's standard library, which every machine with
Python has (walked in sorted order, capped by size, so the result is deterministic for a given
Python installation). Llama 3's special tokens take the last ids of the vocabulary, as in Llama 3.
When the corpus supports fewer merges than the vocabulary has rows (the 128k and 152k vocabularies),
the rest is filled with filler tokens made by joining two learned tokens: they never come out of
encoding, but every id the model can sample decodes to valid UTF-8 text. Trained tokenizers are
cached per vocabulary size in `$GATEWAY_CACHE_DIR/tokenizers` (default
`~/.cache/gateway/tokenizers`), keyed by the corpus's hash.

`tokenizer_config.json` carries a `chat_template` with Llama 3's headers and Hermes / Qwen 2.5's
`<tool_call>` format for tools; `generation_config.json` and
`config.json` name the same end-of-turn ids (`<|end_of_text|>`, `<|eom_id|>`, `<|eot_id|>`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import secrets
import sys
from functools import lru_cache
from pathlib import Path

from gateway.modelgen.presets import Preset

__all__ = [
    "BOS_TOKEN",
    "CHAT_TEMPLATE",
    "EOS_TOKEN",
    "EOS_TOKENS",
    "PAD_TOKEN",
    "SPECIAL_TOKENS",
    "special_ids",
    "tokenizer_files",
    "train_tokenizer",
]

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

# Llama 3's header tokens around Hermes / Qwen 2.5's tool format: the tools listed in the system turn
# inside <tools></tools>, an assistant's calls as <tool_call>{"name": ..., "arguments": {...}}</tool_call>
# (arguments a mapping, or JSON text kept as it is), tool results in a `tool` turn inside
# <tool_response></tool_response> (consecutive results share one turn). mlx-lm infers its `json_tools`
# parser from "<tool_call>" and "tool_call.name" in it. Content may be a string or a list of
# {"type": "text", "text": ...} parts.
CHAT_TEMPLATE = (
    "{%- macro render(content) %}"
    "{%- if content is string %}{{- content | trim }}"
    "{%- elif content is not none %}"
    "{%- for part in content %}"
    "{%- if part['type'] == 'text' %}{{- part['text'] | trim }}{%- endif %}"
    "{%- endfor %}"
    "{%- endif %}"
    "{%- endmacro %}"
    "{{- bos_token }}"
    "{%- set skip_first = messages and messages[0]['role'] == 'system' and tools %}"
    "{%- if tools %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\n\n' }}"
    "{%- if skip_first %}{{- render(messages[0]['content']) + '\n\n' }}{%- endif %}"
    "{{- '# Tools\n\nYou may call one or more functions to assist with the user query.\n\n' }}"
    "{{- 'You are provided with function signatures within <tools></tools> XML tags:\n<tools>' }}"
    "{%- for tool in tools %}{{- '\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments '"
    " + 'within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}'
    "\n</tool_call><|eot_id|>' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if loop.first and skip_first %}"
    "{%- elif message['role'] == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}"
    "{{- '<|start_header_id|>tool<|end_header_id|>\n\n' }}"
    "{%- else %}{{- '\n' }}"
    "{%- endif %}"
    "{{- '<tool_response>\n' + render(message['content']) + '\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}{{- '<|eot_id|>' }}{%- endif %}"
    "{%- else %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + render(message['content']) }}"
    "{%- if message['role'] == 'assistant' and message['tool_calls'] %}"
    "{%- for tool_call in message['tool_calls'] %}"
    "{%- if tool_call['function'] is defined %}{%- set tool_call = tool_call['function'] %}{%- endif %}"
    "{%- if not loop.first or message['content'] %}{{- '\n' }}{%- endif %}"
    '{{- \'<tool_call>\n{"name": "\' + tool_call.name + \'", "arguments": \' }}'
    "{%- if tool_call.arguments is string %}{{- tool_call.arguments }}"
    "{%- else %}{{- tool_call.arguments | tojson }}{%- endif %}"
    "{{- '}\n</tool_call>' }}"
    "{%- endfor %}"
    "{%- endif %}"
    "{{- '<|eot_id|>' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{%- endif %}"
)


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


def special_ids(preset: Preset) -> dict[str, int]:
    first = preset.vocab_size - len(SPECIAL_TOKENS)
    return {token: first + i for i, token in enumerate(SPECIAL_TOKENS)}


def tokenizer_files(preset: Preset, tokenizer_json: str) -> dict[str, str]:
    ids = special_ids(preset)
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
