"""Generated models through real mlx-lm: load, generate, chat template, detokenize, determinism,
4-bit, sharding, and `ensure_model`'s create-once semantics."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from gateway.modelgen.create import CreatedModel, create_model, ensure_model, refresh_chat_template
from gateway.modelgen.plan import plan_model
from gateway.modelgen.presets import get_preset
from gateway.modelgen.tokenizer import (
    CHAT_TEMPLATE,
    EOS_TOKENS,
    SPECIAL_TOKENS,
    _token_text,
    _train,
    train_tokenizer,
)

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Tell me a story about the sea."},
]


def hashes(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def test_the_directory_holds_config_tokenizer_and_sharded_weights(created_tiny: CreatedModel) -> None:
    path = created_tiny.path
    assert set(created_tiny.files) == {
        "config.json",
        "generation_config.json",
        "model-00001-of-00001.safetensors",
        "model.safetensors.index.json",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "llama" and config["architectures"] == ["LlamaForCausalLM"]
    assert config["vocab_size"] == 4096 and config["num_key_value_heads"] == 4
    vocab_end = config["vocab_size"] - len(SPECIAL_TOKENS)
    assert config["eos_token_id"] == [vocab_end + SPECIAL_TOKENS.index(t) for t in EOS_TOKENS]
    assert json.loads((path / "generation_config.json").read_text())["eos_token_id"] == config["eos_token_id"]
    index = json.loads((path / "model.safetensors.index.json").read_text())
    plan = plan_model("tiny")
    assert index["metadata"] == {"total_size": plan.weight_bytes, "total_parameters": 4_000_000}
    assert sorted(index["weight_map"]) == sorted(t.name for t in plan.tensors)
    assert created_tiny.parameters == 4_000_000 and created_tiny.weight_bytes == 16_000_000


def test_weights_are_normal_with_std_002_and_norms_are_one(created_tiny: CreatedModel) -> None:
    from safetensors.numpy import load_file

    weights = load_file(created_tiny.path / "model-00001-of-00001.safetensors")
    plan = {t.name: t for t in plan_model("tiny").tensors}
    assert {k: tuple(v.shape) for k, v in weights.items()} == {k: t.shape for k, t in plan.items()}
    embed = weights["model.embed_tokens.weight"]
    assert abs(float(embed.mean())) < 1e-3 and float(embed.std()) == pytest.approx(0.02, rel=0.01)
    assert (weights["model.norm.weight"] == 1).all()
    first, second = (weights[f"model.layers.{i}.self_attn.q_proj.weight"] for i in (0, 1))
    assert not (first == second).all()


def test_mlx_lm_loads_and_generates(loaded_tiny) -> None:
    from mlx_lm import generate, stream_generate

    model, tokenizer = loaded_tiny
    text = generate(model, tokenizer, "Once upon a time", max_tokens=16, verbose=False)
    assert isinstance(text, str) and text
    responses = list(stream_generate(model, tokenizer, "def main():", max_tokens=12))
    assert 1 <= len(responses) <= 12
    assert responses[-1].finish_reason in ("length", "stop")
    assert responses[-1].generation_tokens == len(responses)
    streamed = "".join(r.text for r in responses)
    decoded = tokenizer.decode([r.token for r in responses])
    assert streamed in (decoded, decoded[1:])  # mlx-lm's detokenizer drops a leading space


def test_chat_template_is_llama_3(loaded_tiny) -> None:
    _, tokenizer = loaded_tiny
    ids = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True)
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|begin_of_text|>")
    assert tokenizer.decode(ids) == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nTell me a story about the sea.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "image_url"}]}]
    text = tokenizer.apply_chat_template(parts, add_generation_prompt=False, tokenize=False)
    assert text == "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert eot in tokenizer.eos_token_ids
    assert tokenizer.eos_token_ids == {tokenizer.convert_tokens_to_ids(t) for t in EOS_TOKENS}
    assert tokenizer.encode("héllo wörld 😀", add_special_tokens=False)
    assert tokenizer.decode(tokenizer.encode("héllo wörld 😀", add_special_tokens=False)) == "héllo wörld 😀"


def test_chat_template_lists_tools_and_mlx_lm_infers_the_json_tool_parser(loaded_tiny) -> None:
    _, tokenizer = loaded_tiny
    assert tokenizer.has_tool_calling
    assert (tokenizer.tool_call_start, tokenizer.tool_call_end) == ("<tool_call>", "</tool_call>")
    assert tokenizer.tool_parser.__module__ == "mlx_lm.tool_parsers.json_tools"
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    history = [
        *MESSAGES,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}],
        },
        {"role": "tool", "tool_call_id": "1", "content": "one"},
        {"role": "tool", "tool_call_id": "2", "content": "two"},
    ]
    text = tokenizer.apply_chat_template(history, tools=[tool], add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.\n\n# Tools\n\n"
        "You may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        '{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}\n</tools>\n\n'
        "For each function call, return a json object with function name and arguments within "
        '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
        "<args-json-object>}\n</tool_call><|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nTell me a story about the sea.<|eot_id|>"
        '<|start_header_id|>assistant<|end_header_id|>\n\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}'
        "\n</tool_call><|eot_id|><|start_header_id|>tool<|end_header_id|>\n\n<tool_response>\none\n"
        "</tool_response>\n<tool_response>\ntwo\n</tool_response><|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_every_id_detokenizes(loaded_tiny) -> None:
    _, tokenizer = loaded_tiny
    assert len(tokenizer) == 4096
    assert type(tokenizer.detokenizer).__name__ == "BPEStreamingDetokenizer"
    single = tokenizer.detokenizer
    for token in range(len(tokenizer)):
        single.reset()
        single.add_token(token)
        single.finalize()
        assert isinstance(single.text, str)
        assert isinstance(tokenizer.decode([token]), str)
    stream = tokenizer.detokenizer
    for token in range(len(tokenizer)):  # every id in a row, as a random model samples them
        stream.add_token(token)
        assert isinstance(stream.last_segment, str)
    stream.finalize()
    assert "<|eot_id|>" in stream.text


def test_fillers_pad_a_vocabulary_the_corpus_cannot_fill() -> None:
    from tokenizers import Tokenizer

    text = "def add(a, b):\n    return a + b\n" * 50
    tokenizer = Tokenizer.from_str(_train([text], 2048))
    assert tokenizer.get_vocab_size() == 2048
    model_vocab = json.loads(tokenizer.to_str())["model"]
    learned = 256 + len(model_vocab["merges"])
    fillers = range(learned, 2048 - len(SPECIAL_TOKENS))
    assert len(fillers) > 1500
    for token in fillers:
        piece = tokenizer.id_to_token(token)
        assert _token_text(piece) is not None  # valid UTF-8 on its own, no U+FFFD
        assert tokenizer.decode([token]) == _token_text(piece)
    first_special = 2048 - len(SPECIAL_TOKENS)
    specials = [tokenizer.id_to_token(first_special + i) for i in range(len(SPECIAL_TOKENS))]
    assert specials == list(SPECIAL_TOKENS)


def test_same_seed_same_files_other_seed_other_weights(
    created_tiny: CreatedModel, tmp_path: Path, tokenizer_cache: Path
) -> None:
    again = create_model(tmp_path / "again", "tiny", seed=0, cache_dir=tokenizer_cache)
    assert again.tokenizer_cached
    assert hashes(again.path) == hashes(created_tiny.path)
    other = create_model(tmp_path / "other", "tiny", seed=1, cache_dir=tokenizer_cache)
    reference = hashes(created_tiny.path)
    differ = {name for name, digest in hashes(other.path).items() if reference[name] != digest}
    assert differ == {"config.json", "model-00001-of-00001.safetensors"}  # config records the seed
    # Training is deterministic too: an empty cache gives the same tokenizer.
    retrained, cached = train_tokenizer(4096, cache_dir=tmp_path / "fresh-cache")
    assert not cached
    assert retrained == (created_tiny.path / "tokenizer.json").read_text()


def test_four_bit_tiny_loads_and_generates(
    created_tiny: CreatedModel, tmp_path: Path, tokenizer_cache: Path
) -> None:
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm import generate, load

    created = create_model(tmp_path / "q4", "tiny", quantize=4, dtype="bfloat16", cache_dir=tokenizer_cache)
    config = json.loads((created.path / "config.json").read_text())
    assert config["quantization"] == {"group_size": 64, "bits": 4, "mode": "affine"}
    assert config["quantization_config"] == config["quantization"]
    assert created.weight_bytes == plan_model("tiny", dtype="bfloat16", quantize=4).weight_bytes
    model, tokenizer = load(str(created.path))
    layer = model.model.layers[0]
    assert isinstance(layer.self_attn.q_proj, nn.QuantizedLinear) and layer.self_attn.q_proj.bits == 4
    assert isinstance(layer.mlp.down_proj, nn.QuantizedLinear)
    assert isinstance(model.model.embed_tokens, nn.QuantizedEmbedding)
    assert isinstance(generate(model, tokenizer, "Once", max_tokens=8, verbose=False), str)
    # Same seed, same values: the 4-bit weights dequantize to the float32 model's, within 4-bit error.
    q = layer.self_attn.q_proj
    restored = mx.dequantize(q.weight, q.scales, q.biases, group_size=64, bits=4).astype(mx.float32)
    full, _ = load(str(created_tiny.path))
    error = mx.abs(restored - full.model.layers[0].self_attn.q_proj.weight)
    assert float(error.max()) < 0.02


def test_shards_hold_whole_layers_and_do_not_change_the_values(
    created_tiny: CreatedModel, tmp_path: Path, tokenizer_cache: Path
) -> None:
    import mlx.core as mx

    created = create_model(tmp_path / "sharded", "tiny", max_shard_bytes=4_000_000, cache_dir=tokenizer_cache)
    shards = sorted(f for f in created.files if f.endswith(".safetensors"))
    assert len(shards) > 2 and shards[-1] == f"model-{len(shards):05d}-of-{len(shards):05d}.safetensors"
    weight_map = json.loads((created.path / "model.safetensors.index.json").read_text())["weight_map"]
    for layer in range(4):
        assert len({f for k, f in weight_map.items() if k.startswith(f"model.layers.{layer}.")}) == 1
    merged: dict[str, mx.array] = {}
    for shard in shards:
        merged.update(mx.load(str(created.path / shard)))
    single = mx.load(str(created_tiny.path / "model-00001-of-00001.safetensors"))
    assert merged.keys() == single.keys()
    assert all(mx.array_equal(merged[k], single[k]).item() for k in single)


def test_ensure_model_creates_once_even_when_racing(tmp_path: Path, tokenizer_cache: Path) -> None:
    path = tmp_path / "models" / "tiny"
    errors: list[BaseException] = []

    def run() -> None:
        try:
            assert ensure_model(path, "tiny", cache_dir=tokenizer_cache) == path
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert [p.name for p in path.parent.iterdir()] == ["tiny"]  # no temporary directories left
    before = (path / "config.json").stat().st_mtime_ns
    assert ensure_model(path, "tiny") == path
    assert (path / "config.json").stat().st_mtime_ns == before


def test_ensure_model_gives_an_older_generated_model_the_current_chat_template(
    created_tiny: CreatedModel, tmp_path: Path
) -> None:
    import shutil

    path = Path(shutil.copytree(created_tiny.path, tmp_path / "tiny"))
    config_path = path / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "chat_template": "{{ messages }}"}))
    weights = hashes(path)
    assert ensure_model(path, "tiny") == path
    assert json.loads(config_path.read_text()) == config  # only the template changed back
    assert {k: v for k, v in hashes(path).items() if k != "tokenizer_config.json"} == {
        k: v for k, v in weights.items() if k != "tokenizer_config.json"
    }
    assert not refresh_chat_template(path)  # current already: nothing written
    assert sorted(p.name for p in path.iterdir()) == sorted(weights)  # no temporary file left
    # A model that was not generated here keeps its own template.
    model_config = json.loads((path / "config.json").read_text())
    del model_config["generated_by"]
    (path / "config.json").write_text(json.dumps(model_config))
    config_path.write_text(json.dumps({**config, "chat_template": "{{ messages }}"}))
    assert not refresh_chat_template(path)
    assert json.loads(config_path.read_text())["chat_template"] == "{{ messages }}" != CHAT_TEMPLATE


def test_ensure_model_refuses_a_directory_that_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"no config\.json"):
        ensure_model(tmp_path / "junk", "tiny")
    assert (tmp_path / "junk" / "notes.txt").read_text() == "mine"


def test_create_refuses_to_overwrite_unless_asked(
    created_tiny: CreatedModel, tmp_path: Path, tokenizer_cache: Path
) -> None:
    path = tmp_path / "m"
    create_model(path, "tiny", cache_dir=tokenizer_cache)
    with pytest.raises(FileExistsError):
        create_model(path, "tiny", seed=5, cache_dir=tokenizer_cache)
    replaced = create_model(path, "tiny", seed=5, overwrite=True, cache_dir=tokenizer_cache)
    assert json.loads((replaced.path / "config.json").read_text())["generated_by"]["seed"] == 5
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_the_3b_config_matches_llama_3_2(tmp_path: Path) -> None:
    config = plan_model("3b").as_dict()["config"]
    assert config["rope_scaling"]["rope_type"] == "llama3" and config["tie_word_embeddings"] is True
    assert get_preset("3b").config()["head_dim"] == 128


def test_overwrite_never_replaces_a_directory_that_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.tex").write_text("years of work")
    with pytest.raises(FileExistsError, match="not a model directory"):
        create_model(tmp_path / "home", "tiny", overwrite=True)
    assert (tmp_path / "home" / "thesis.tex").read_text() == "years of work"


def test_ensure_model_removes_what_dead_creators_left(tmp_path: Path, tokenizer_cache: Path) -> None:
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    abandoned = tmp_path / f".tiny.creating-{int(dead.stdout)}-abcd1234"
    abandoned.mkdir()
    (abandoned / "config.json").write_text("{}")
    ensure_model(tmp_path / "tiny", "tiny", cache_dir=tokenizer_cache)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]


@pytest.mark.parametrize(("dtype", "quantize"), [("bfloat16", None), ("float16", None), ("float32", 4)])
def test_other_dtypes_load_and_generate(
    dtype: str, quantize: int | None, tmp_path: Path, tokenizer_cache: Path
) -> None:
    import mlx.core as mx
    from mlx_lm import generate, load

    created = create_model(tmp_path / "m", "tiny", dtype=dtype, quantize=quantize, cache_dir=tokenizer_cache)
    assert sum((created.path / f).stat().st_size for f in created.files if f.endswith(".safetensors")) > (
        created.weight_bytes
    )
    model, tokenizer = load(str(created.path))
    assert model.model.norm.weight.dtype == getattr(mx, dtype)
    assert float(model.model.norm.weight.astype(mx.float32).min()) == 1.0
    assert isinstance(generate(model, tokenizer, "Once", max_tokens=4, verbose=False), str)
