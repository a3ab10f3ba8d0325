"""Generate a local model directory that `mlx_lm.load(path)` loads offline: a byte-level BPE tokenizer
trained here (`tokenizer`), and random weights (`weights`) in the exact shapes of a real model
(`presets`), as planned by `plan` once `resources` says it fits.

The text it generates is gibberish; the compute and memory per token are those of the real model, so
tests get a real model without downloads (`tiny`, about a second to create) and benchmarks get real
sizes (`3b`, `7b`, `14b`).

What goes into the directory:

- `config.json`: `model_type: llama` with the preset's shapes, `eos_token_id` = the ids of
  `<|end_of_text|>`, `<|eom_id|>` and `<|eot_id|>` (as Llama 3.1+), `torch_dtype`, and for
  `quantize=4` the `quantization` / `quantization_config` entries exactly as `mlx_lm.convert -q`
  writes them (`{"group_size": 64, "bits": 4, "mode": "affine"}`); plus a `generated_by` entry
  saying what this is.
- `tokenizer.json`, `tokenizer_config.json` (with a tool-aware Llama 3 `chat_template`),
  `special_tokens_map.json`, `generation_config.json`.
- `model-0000K-of-0000N.safetensors` and `model.safetensors.index.json`: whole decoder layers per
  shard, about `max_shard_bytes` (2 GiB) each.

The directory is built under a temporary name beside `path` and renamed into place, so `path` is
either absent or complete, also when several processes race to create it (`ensure_model`).
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.modelgen.plan import DEFAULT_SHARD_BYTES, format_bytes, model_config, plan_model
from gateway.modelgen.presets import Preset
from gateway.modelgen.resources import ModelTooLarge, resource_problem
from gateway.modelgen.tokenizer import CHAT_TEMPLATE, special_ids, tokenizer_files, train_tokenizer
from gateway.modelgen.weights import WeightWriter

__all__ = ["CreatedModel", "create_model", "ensure_model", "refresh_chat_template"]


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
        ids = special_ids(plan.preset)
        files = {
            "config.json": _json(model_config(plan.preset, dtype, quantize, seed, ids)),
            **tokenizer_files(plan.preset, tokenizer_json),
        }
        for name, text in files.items():
            (building / name).write_text(text, encoding="utf-8")

        weight_map: dict[str, str] = {}
        writer = WeightWriter(seed, dtype, quantize, workers=max(1, min(4, os.cpu_count() or 1)))
        try:
            for index, shard in enumerate(plan.shards):
                name = plan.shard_name(index)
                writer.write_shard(building / name, shard)
                weight_map.update({t.name: name for t in shard})
                size = format_bytes(sum(t.nbytes for t in shard))
                say(f"wrote {name} ({size}; shard {index + 1} of {len(plan.shards)})")
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
    place; the losers discard theirs and use the winner's. A model generated earlier gets the current
    chat template (`refresh_chat_template`).
    """
    path = Path(path)
    if (path / "config.json").exists():
        refresh_chat_template(path)
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


def refresh_chat_template(path: str | Path) -> bool:
    """Give a model generated by an earlier version the current `chat_template` (e.g. the tool-aware
    one), so its users need not regenerate it; whether `tokenizer_config.json` was rewritten.

    Only a generated model (`generated_by` in its `config.json`) is touched, and only its
    tokenizer_config.json's template: one small file read when nothing changed, one atomic replace
    (a temporary file renamed over it) when it did, safe when several workers do it at once.
    """
    path = Path(path)
    try:
        if "generated_by" not in json.loads((path / "config.json").read_text(encoding="utf-8")):
            return False
        target = path / "tokenizer_config.json"
        config = json.loads(target.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if config.get("chat_template") == CHAT_TEMPLATE:
        return False
    config["chat_template"] = CHAT_TEMPLATE
    temporary = path / f".tokenizer_config.json.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        temporary.write_text(_json(config), encoding="utf-8")
        os.replace(temporary, target)
    except OSError:
        temporary.unlink(missing_ok=True)
        return False  # a read-only model directory keeps its template
    return True


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


def _json(data: object) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
