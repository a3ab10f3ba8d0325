"""`gateway model create`: exit codes, what it prints, dry runs, and refusing what would not fit."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.modelgen import resources
from gateway.modelgen.presets import PRESETS, parameter_count, weight_bytes


def gateway(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command in a subprocess (GATEWAY_CACHE_DIR points at the session's tokenizer cache)."""
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )


def test_create_prints_what_it_wrote_and_exits_0(tmp_path: Path, tokenizer_cache: Path) -> None:
    path = tmp_path / "tiny"
    done = gateway("model", "create", str(path), "--preset", "tiny", "--seed", "3")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"created {path}" in out
    assert "parameters  4.0M (4,000,000)" in out
    assert "16.0 MB of weights in 1 shard(s)" in out
    assert "seconds" in out
    assert (path / "config.json").exists() and (path / "model-00001-of-00001.safetensors").exists()
    assert json.loads((path / "config.json").read_text())["generated_by"]["seed"] == 3

    again = gateway("model", "create", str(path))
    assert again.returncode == 1
    assert "already exists; pass --overwrite to replace it" in again.stderr

    replaced = gateway("model", "create", str(path), "--overwrite", "--json")
    assert replaced.returncode == 0, replaced.stderr
    result = json.loads(replaced.stdout)
    assert result["seed"] == 0 and result["parameters"] == 4_000_000 and result["tokenizer_cached"]


@pytest.mark.parametrize("name", ["3b", "7b", "14b"])
def test_dry_run_shapes_match_the_preset(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / name
    assert main(["model", "create", str(path), "--preset", name, "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert not path.exists()
    p = PRESETS[name]
    config = plan["config"]
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads"):
        assert config[key] == getattr(p, key)
    assert config["intermediate_size"] == p.intermediate_size and config["vocab_size"] == p.vocab_size
    assert config["model_type"] == "llama"
    shapes = {t["name"]: tuple(t["shape"]) for t in plan["tensors"]}
    h, hd, layers = p.hidden_size, p.head_dim, p.num_hidden_layers
    assert shapes["model.embed_tokens.weight"] == (p.vocab_size, h)
    last = f"model.layers.{layers - 1}"
    assert shapes[f"{last}.self_attn.q_proj.weight"] == (p.num_attention_heads * hd, h)
    assert shapes[f"{last}.self_attn.k_proj.weight"] == (p.num_key_value_heads * hd, h)
    assert shapes[f"{last}.mlp.down_proj.weight"] == (h, p.intermediate_size)
    assert f"model.layers.{layers}.input_layernorm.weight" not in shapes
    assert ("lm_head.weight" in shapes) == (not p.tie_word_embeddings)
    assert len(shapes) == 1 + 9 * layers + 1 + (0 if p.tie_word_embeddings else 1)
    parameters = sum(math.prod(shape) for shape in shapes.values())
    assert parameters == plan["parameters"] == parameter_count(name)
    assert plan["parameters"] == pytest.approx({"3b": 3.21e9, "7b": 6.74e9, "14b": 14.7e9}[name], rel=0.01)
    assert plan["weight_bytes"] == weight_bytes(name, "float32")


def test_dry_run_text_lists_shapes_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["model", "create", str(tmp_path / "m"), "--preset", "7b", "--dry-run", "--quantize", "4"]) == 0
    )
    out = capsys.readouterr().out
    assert "dry run: would create" in out and "preset 7b (meta-llama/Llama-2-7b-hf)" in out
    assert "parameters 6.74B (6,738,415,616)" in out
    assert "model.layers.{0..31}.self_attn.q_proj.weight" in out and "[4096, 512]" in out
    assert "lm_head.scales" in out
    assert not (tmp_path / "m").exists()


def test_refuses_what_would_not_fit_in_memory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resources, "available_memory_bytes", lambda: 8_000_000_000)
    monkeypatch.setattr(resources, "_free_disk_bytes", lambda _path: 10**15)  # memory, not this disk, decides
    path = tmp_path / "big"
    assert main(["model", "create", str(path), "--preset", "3b"]) == 1
    err = capsys.readouterr().err
    assert "refusing to create 3b (float32): its weights take 12.85 GB" in err
    assert "8.00 GB available" in err
    assert "--dtype bfloat16 (6.43 GB)" in err and "--quantize 4 (2.01 GB)" in err
    assert not path.exists() and list(tmp_path.iterdir()) == []

    assert main(["model", "create", str(path), "--preset", "14b", "--dry-run"]) == 0  # dry runs say so
    assert "would be refused: refusing to create 14b" in capsys.readouterr().out
    assert main(["model", "create", str(path), "--preset", "3b", "--dry-run", "--force"]) == 0
    assert "fits: yes" in capsys.readouterr().out


def test_refuses_what_would_not_fit_on_disk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resources, "_free_disk_bytes", lambda _path: 10_000_000)
    assert main(["model", "create", str(tmp_path / "m"), "--force"]) == 1  # --force skips memory only
    assert (
        "not enough disk space to create tiny (float32): its weights take 16.0 MB" in capsys.readouterr().err
    )


def test_bad_arguments_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for bad in (["--preset", "70b"], ["--quantize", "3"], ["--dtype", "int8"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["model", "create", str(tmp_path / "m"), *bad])
        assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="reads Linux's /proc/meminfo")
def test_memory_probe_reports_what_this_process_could_use() -> None:
    """MemAvailable, or less when a cgroup limit leaves less (the smaller of the two): never None on
    Linux, never more than the kernel says is available."""
    mem_available = next(
        int(line.split()[1]) * 1024
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemAvailable:")
    )
    available = resources.available_memory_bytes()
    assert isinstance(available, int)
    # MemAvailable moves between the two reads: allow it 5% more, not the total or a sum.
    assert 0 < available <= mem_available * 1.05
