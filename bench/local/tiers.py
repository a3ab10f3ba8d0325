"""Size tiers (the `tiers` part of `gateway bench local`): the gateway (one `type: mlx` backend,
batching on) serving generated 4-bit models with the exact shapes of each tier: tiny, 3b (Llama 3.2
3B), 7b (Llama 2 7B), 14b (Qwen2.5 14B as a Llama). Random weights: the text is gibberish, the
compute and memory per token are the real model's.

Each model is created once (`gateway model create PATH --preset TIER --quantize 4`, here through
`create_model`) in `$GATEWAY_CACHE_DIR/bench-models/<tier>-q4`. Before a tier is created or loaded,
its weight bytes are compared with the memory available (MemAvailable, or the cgroup's limit): a
tier whose weights would take more than 85% of it is not loaded, and the result says so with both
figures. Tiers run one after another, each gateway stopped (its memory returned) before the next.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.bench.harness.options import int_list, name_list
from gateway.bench.harness.proc import rss_bytes, wait_for_memory
from gateway.bench.harness.progress import Progress, say
from gateway.bench.harness.results import markdown_table
from gateway.bench.harness.servers import JsonWorker
from gateway.bench.harness.streams import StreamBench, client_command
from gateway.bench.harness.systems import model_dir, start_system, weight_bytes

TIERS = ("tiny", "3b", "7b", "14b")
QUANTIZE = 4
FULL = {"tiers": list(TIERS), "streams": [1], "tokens": 16, "rounds": 1, "warmup_tokens": 2}
QUICK = {"tiers": ["tiny"], "streams": [1], "tokens": 8, "rounds": 1, "warmup_tokens": 2}


def tier_dir(tier: str) -> Path:
    return model_dir(f"{tier}-q{QUANTIZE}")


def memory_check(tier: str) -> dict[str, Any]:
    """The tier's 4-bit weight bytes against the memory available now: fits, and why not if not."""
    from gateway.modelgen.plan import plan_model
    from gateway.modelgen.resources import MEMORY_FRACTION, available_memory_bytes

    plan = plan_model(tier, quantize=QUANTIZE)
    available = available_memory_bytes()
    fits = available is None or plan.weight_bytes <= MEMORY_FRACTION * available
    check = {
        "parameters": plan.parameters,
        "shapes_of": plan.preset.source,
        "weight_bytes": plan.weight_bytes,
        "available_memory_bytes": available,
        "memory_fraction_for_weights": MEMORY_FRACTION,
        "fits": fits,
    }
    if not fits:
        assert available is not None
        check["reason"] = (
            f"its 4-bit weights take {plan.weight_bytes / 1e9:.1f} GB; {available / 1e9:.1f} GB of memory is "
            f"available and at most {MEMORY_FRACTION:.0%} of it may hold weights (the rest is the KV cache "
            f"and everything else)"
        )
    return check


def ensure_tier_model(tier: str) -> tuple[Path, float]:
    """The tier's model, created if missing; and the seconds creating it took (0 when it was there)."""
    from gateway.modelgen.create import ensure_model

    path = tier_dir(tier)
    if (path / "config.json").exists():
        return path, 0.0
    say(f"creating the {tier} model (4-bit) in {path} ...")
    started = time.perf_counter()
    ensure_model(path, tier, quantize=QUANTIZE, progress=lambda m: say("  " + m))
    return path, time.perf_counter() - started


def run(
    *,
    tiers: list[str],
    streams: list[int],
    max_tokens: int,
    rounds: int,
    warmup_tokens: int,
    batch_size: int,
    progress: Progress | None = None,
) -> dict[str, Any]:
    from gateway.blas import ensure_fast_blas
    from gateway.modelgen.resources import ModelTooLarge

    blas = ensure_fast_blas()
    if progress:
        progress.add(len(tiers) * len(streams) - 1)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-tiers-") as directory:
        workdir = Path(directory)
        client = JsonWorker(client_command(), workdir / "client.log")
        try:
            bench = StreamBench(client, workdir, max_tokens, rounds, warmup_tokens, 0, 0.0, progress)
            for tier in tiers:
                entry: dict[str, Any] = {
                    "tier": tier,
                    "quantize": QUANTIZE,
                    **memory_check(tier),
                    "phases": [],
                }
                results.append(entry)
                if not entry["fits"]:
                    entry["status"] = "skipped"
                    say(f"{tier}: skipped: {entry['reason']}")
                    if progress:
                        progress.add(-len(streams))
                    continue
                try:
                    path, create_s = ensure_tier_model(tier)
                except ModelTooLarge as error:
                    entry |= {"status": "skipped", "reason": str(error)}
                    say(f"{tier}: skipped: {error}")
                    if progress:
                        progress.add(-len(streams))
                    continue
                entry |= {"model_path": str(path), "create_s": round(create_s, 1)}
                wait_for_memory(int(weight_bytes(path) * 1.1) + (1 << 30))
                say(f"{tier}: loading ({_size(weight_bytes(path))} of 4-bit weights)")
                started = time.perf_counter()
                with start_system("gateway", path, batch_size, workdir, max_tokens, blas.library) as system:
                    entry["load_s"] = round(time.perf_counter() - started, 1)
                    entry["rss_gib"] = round(rss_bytes(system.pid) / 2**30, 2)
                    for n in streams:
                        phase = bench.measure(system, n, f"tier {tier}")
                        phase.pop("request_log", None)
                        entry["phases"].append(phase | {"tier": tier})
                entry["status"] = "measured"
        finally:
            client.close()
    return {
        "quantize": QUANTIZE,
        "streams": streams,
        "max_tokens": max_tokens,
        "rounds": rounds,
        "warmup_tokens": warmup_tokens,
        "batch_size": batch_size,
        "blas": blas.description,
        "system": "gateway serve --workers 1, one mlx backend, batching on",
        "tiers": results,
        "requests": sum(p["requests"] for t in results for p in t["phases"]),
        "failed_requests": sum(p["failed"] + p["warmup_failed"] for t in results for p in t["phases"]),
    }


def table(result: dict[str, Any]) -> str:
    rows = []
    for tier in result["tiers"]:
        params = tier["parameters"]
        count = f"{params / 1e9:.2f}B" if params >= 1e9 else f"{params / 1e6:.1f}M"
        head = [tier["tier"], count, _size(tier["weight_bytes"])]
        if tier["status"] != "measured":
            rows.append(
                [*head, "–", "–", "–", f"not loaded: {tier.get('reason', tier['status'])}", "", "", ""]
            )
            continue
        for phase in tier["phases"]:
            rows.append(
                [
                    *head,
                    f"{tier['load_s']:.0f}",
                    f"{tier['rss_gib']:.2f}",
                    phase["streams"],
                    f"{phase['aggregate_tokens_per_s']:,.2f}",
                    f"{phase['ttft_ms']['p50']:,.0f}",
                    f"{phase['ttft_ms']['p99']:,.0f}",
                    f"{phase['per_stream_tokens_per_s']['p50']:,.2f}",
                ]
            )
    headers = [
        "tier",
        "parameters",
        "4-bit weights",
        "load (s)",
        "resident (GiB)",
        "streams",
        "aggregate tok/s",
        "TTFT p50 (ms)",
        "TTFT p99 (ms)",
        "per-stream tok/s p50",
    ]
    head = (
        f"tiers: the gateway (batching on) on 4-bit models, {result['max_tokens']} tokens per request, "
        f"{result['rounds']} per stream; {result['blas']}"
    )
    return head + "\n\n" + markdown_table(headers, rows)


def _size(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--tiers", type=name_list(TIERS, "tiers"), help="size tiers, smallest first (tiny,3b,7b,14b)"
    )
    group.add_argument("--tier-streams", type=int_list, help="concurrent streams per tier (1)")
    group.add_argument("--tier-tokens", type=int, help=f"max_tokens per request ({FULL['tokens']})")


def run_part(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    settings = dict(QUICK if args.quick else FULL)
    for key, option in (("tiers", "tiers"), ("streams", "tier_streams"), ("tokens", "tier_tokens")):
        value = getattr(args, option, None)
        if value is not None:
            settings[key] = value
    return run(
        tiers=settings["tiers"],
        streams=settings["streams"],
        max_tokens=settings["tokens"],
        rounds=settings["rounds"],
        warmup_tokens=min(settings["warmup_tokens"], settings["tokens"]),
        batch_size=args.batch_size,
        progress=progress,
    )
