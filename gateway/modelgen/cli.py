"""`gateway model create PATH`: the command line of the model generator (options, exit codes, what
it prints, `--dry-run`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gateway.modelgen.create import create_model
from gateway.modelgen.plan import ModelPlan, format_bytes, format_count, plan_model
from gateway.modelgen.presets import DTYPES, GROUP_SIZE, PRESETS
from gateway.modelgen.resources import ModelTooLarge, resource_problem

__all__ = ["add_create_arguments", "run_create"]


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
    print(f"  parameters  {format_count(created.parameters)} ({created.parameters:,})")
    weights, on_disk = format_bytes(created.weight_bytes), format_bytes(created.disk_bytes)
    print(f"  bytes       {weights} of weights in {shards} shard(s), {on_disk} on disk")
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
    print(f"parameters {format_count(plan.parameters)} ({plan.parameters:,})")
    print(
        f"weights {plan.dtype}{quantized}: {format_bytes(plan.weight_bytes)} in {len(plan.shards)} shard(s)"
    )
    layers = p.num_hidden_layers
    width = max(len(t.name) for t in plan.tensors) + len(str(layers)) + 4
    for tensor in plan.tensors:
        name = tensor.name
        if name.startswith("model.layers."):
            if not name.startswith("model.layers.0."):
                continue
            name = name.replace("model.layers.0.", f"model.layers.{{0..{layers - 1}}}.", 1)
        shape = "[" + ", ".join(str(d) for d in tensor.shape) + "]"
        print(f"  {name:<{width}} {shape:<16} {tensor.dtype:<5} {format_bytes(tensor.nbytes)}")
    print(f"would be refused: {problem}" if problem else "fits: yes (disk and memory)")
