"""The `servers` part of `gateway bench local`: the gateway's `mlx` backend against `mlx_lm.server`
and a bare `BatchGenerator` loop, on the same generated model and machine, at several numbers of
concurrent streaming clients.

The model is generated once into `$GATEWAY_CACHE_DIR/bench-models/<preset>` (default
`~/.cache/gateway/bench-models/<preset>`) with `create_model`. The systems, started one at a time
(the previous one stopped and its memory returned first):

- `gateway`: `gateway serve --workers 1` with one `mlx` backend, `batching: true`,
  `max_batch_size` = `--batch-size` (16).
- `gateway_no_batching`: the same with `batching: false` (one request at a time).
- `mlx_lm_server`: `python -m mlx_lm.server --model PATH --host 127.0.0.1 --port N
  --decode-concurrency 16 --prompt-concurrency 8 --temp 0`, its batching flags set to the gateway's
  batch sizes (decode 16 = `max_batch_size`, prefill 8 = what the engine uses). It is started with
  `LD_PRELOAD` = the OpenBLAS the gateway loads (`ensure_fast_blas`); without it, it would run on the
  reference BLAS bundled with `mlx[cpu]`. Its default prompt cache stays on; every request's prompt
  is distinct (below), so it can reuse only the chat template's first tokens (`cached_tokens` is
  reported).
- `bare`: mlx-lm's `BatchGenerator` driven by a plain loop in a subprocess (`ensure_fast_blas()`
  first, as the engine does), with the same batch sizes, prompts and max tokens: the ceiling, with no
  HTTP, no detokenizing and no threads around it.

The workload, identical for every system: `streams` clients each send `rounds` chat requests one
after another (a closed loop), streaming, greedy (`temperature: 0`), `max_tokens` = `--tokens`.
Every request has its own prompt (a hash of the phase and request number, then a fixed sentence), put
through the model's chat template by each system (the gateway and the bare loop with the
tokenizer's `apply_chat_template`, mlx_lm.server likewise; prompt token counts are compared). Before
each measured phase, a warm-up round at the same concurrency with a few tokens and other prompts.
`--repeat K` cycles K times through all the systems (so a drift of the machine is spread over all
of them) and reports each phase's median run, with the range of the K runs.

The sentence matters with random weights: greedy decoding soon repeats one token, and when that
token is a lone space, mlx-lm's streaming detokenizer (used by the gateway and mlx_lm.server alike)
holds every one of them back until a non-space token comes, so a stream can show no text until its
end. "Write a poem about the moon." was checked on the tiny and 3b models not to do that to any first
token; `chunks_per_request` in the result shows it if it happens (chunks well under tokens).

Equal work: the gateway gets `"ignore_eos": true` (vLLM's extension) and the bare loop stops on no
token, so both generate exactly `max_tokens`. mlx_lm.server has no equivalent (its request fields
have no `ignore_eos`; `logit_bias` against the end-of-sequence ids would do it, but any logits
processor switches its batch to a per-sequence Python loop, which would slow it down for our
convenience), so it runs greedy and the benchmark checks, from the usage it reports, that every
stream ran to `max_tokens`. Tokens are always counted from each response's usage
(`stream_options.include_usage`), never assumed, and throughput is divided by the tokens actually
generated, so an early end-of-sequence could not flatter anyone; the tables say if one happened.

Metrics per phase: aggregate generated tokens/s (every completion token of the phase over the time
from the first request sent to the last stream done), time to first token p50/p99 (request sent to
the first chunk with text), per-stream tokens/s (each request's `(tokens - 1) / (last chunk - first
chunk)`: the decode speed one client sees; p50 over the requests), the CPU the system used (cores),
the load generator's own CPU share, and CPU used by processes not ours ("foreign", a busy machine;
a phase disturbed past `FOREIGN_LIMIT` cores is run again, up to `--retries` times).

Placement (the machine this was written for has 2 cores): nothing is pinned. A system under test
gets both cores (mlx's CPU stream and Python threads, and OpenBLAS's threads: `--blas-threads`, the
same count for every system, the gateway through `local_models.blas_threads` and the others through
`OPENBLAS_NUM_THREADS`; 1 for the tiny model, which decodes faster on one thread even in the bare
loop, one per core for 3b); the load generator (`harness/streams.py`: one process on uvloop where installed,
aiohttp, bytes matched with regexes, JSON parsed only for the usage chunk) shares them and reports
its CPU share, so its cost is visible. The bare loop runs with no load generator at all: that
difference is part of what it measures.

`--profile DIR` samples the gateway with py-spy (all threads, idle included) during one more
max-streams phase and splits the engine thread's time into `BatchGenerator.next_generated` and the
rest (detokenizing, stop checks, posting events), and the event loop's into encoding, HTTP, asyncio.
The exit status is 1 if any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.bench.harness.options import int_list, name_list
from gateway.bench.harness.proc import mapped_blas, rss_bytes, wait_for_memory
from gateway.bench.harness.progress import Progress, say
from gateway.bench.harness.results import machine
from gateway.bench.harness.servers import JsonWorker
from gateway.bench.harness.streams import (
    FOREIGN_LIMIT,
    REQUEST_LOG_FIELDS,
    StreamBench,
    client_command,
    fastest_event_loop,
)
from gateway.bench.harness.systems import ensure_bench_model, start_system, weight_bytes

__all__ = ["SYSTEMS", "add_arguments", "run", "run_part", "servers_table"]

SYSTEMS = ("bare", "gateway", "gateway_no_batching", "mlx_lm_server")
LABELS = {
    "bare": "bare BatchGenerator loop",
    "gateway": "gateway, batching on",
    "gateway_no_batching": "gateway, batching off",
    "mlx_lm_server": "mlx_lm.server",
}
#: Per preset: max tokens, requests per stream, warm-up tokens (a 3b step takes about a second here).
PRESET_DEFAULTS = {"tiny": (256, 3, 16), "3b": (16, 1, 2)}
#: OpenBLAS threads per preset, the same for every system (0: one per core). Measured on the 2-core
#: machine, bare loop at 16 streams: the tiny model decodes faster on 1 thread than on 2 (the idle
#: worker spins in sched_yield, and its steps are mostly dispatch), the 3b one about 30% faster on 2.
BLAS_THREADS = {"tiny": 1, "3b": 0}
QUICK = {"preset": "tiny", "streams": [1, 4], "tokens": 16, "rounds": 2, "warmup_tokens": 4}
GOAL_VS_BARE = 0.9


# ---------------------------------------------------------------- the table


def _rate(value: float) -> str:
    return f"{value:,.2f}" if value < 10 else f"{value:,.1f}"


def servers_table(result: dict[str, Any]) -> str:
    """The `servers` part as a Markdown table (pasted as is into PERFORMANCE.md)."""
    phases = result["phases"]
    bare = {p["streams"]: p["aggregate_tokens_per_s"] for p in phases if p["system"] == "bare"}
    lines = [
        "| system | streams | tokens / stream | aggregate tok/s | runs | vs bare loop | TTFT p50 (ms) "
        "| TTFT p99 (ms) | per-stream tok/s p50 | system CPU (cores) | load generator CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for streams in result["streams"]:
        for name in SYSTEMS:
            phase = next((p for p in phases if p["system"] == name and p["streams"] == streams), None)
            if phase is None:
                continue
            tokens = phase["tokens"]
            count = (
                str(tokens["per_request_min"])
                if tokens["per_request_min"] == tokens["per_request_max"]
                else f"{tokens['per_request_min']}–{tokens['per_request_max']}"
            )
            if not tokens["all_ran_to_max_tokens"]:
                count += " (!)"
            ratio = (
                f"{phase['aggregate_tokens_per_s'] / bare[streams] * 100:.0f}%" if bare.get(streams) else "–"
            )
            loadgen = (
                "–" if phase["loadgen_cpu_share"] is None else f"{phase['loadgen_cpu_share'] * 100:.0f}%"
            )
            repeats = phase.get("repeats") or [phase["aggregate_tokens_per_s"]]
            spread = f"{min(repeats):,.0f}–{max(repeats):,.0f}" if len(repeats) > 1 else "1 run"
            lines.append(
                f"| {LABELS[name]} | {streams} | {count} | {_rate(phase['aggregate_tokens_per_s'])} "
                f"| {spread} | {ratio} "
                f"| {phase['ttft_ms']['p50']:,.0f} | {phase['ttft_ms']['p99']:,.0f} "
                f"| {_rate(phase['per_stream_tokens_per_s']['p50'])} | {phase['system_cpu_cores']:.2f} "
                f"| {loadgen} |"
            )
    lines.append("")
    for phase in phases:
        if phase["failed"]:
            lines.append(f"- FAILED: {phase['system']} at {phase['streams']} streams: {phase['errors']}")
        if phase["foreign_cpu_cores"] > FOREIGN_LIMIT:
            lines.append(
                f"- disturbed: {phase['system']} at {phase['streams']} streams ran while other processes "
                f"used {phase['foreign_cpu_cores']:.2f} cores (after {phase['runs']} runs)"
            )
        if phase["completed"] and not phase["tokens"]["all_ran_to_max_tokens"]:
            lines.append(
                f"- (!) {phase['system']} at {phase['streams']} streams: some streams ended before "
                f"max_tokens ({phase['tokens']['finish_reasons']}); its tok/s counts the tokens generated"
            )
    for name, goal in result["goals"].items():
        state = "met" if goal["met"] else ("NOT met" if goal["met"] is False else "not measured")
        lines.append(f"- goal {name}: {goal['target']}: {goal['value']} ({state})")
    return "\n".join(lines)


def _goals(phases: list[dict[str, Any]], streams: int) -> dict[str, Any]:
    def agg(name: str) -> float | None:
        phase = next((p for p in phases if p["system"] == name and p["streams"] == streams), None)
        return None if phase is None else phase["aggregate_tokens_per_s"]

    ours, server, bare = agg("gateway"), agg("mlx_lm_server"), agg("bare")
    return {
        f"gateway_vs_mlx_lm_server_at_{streams}": {
            "target": f"gateway (batching) aggregate tok/s >= mlx_lm.server's at {streams} streams",
            "value": None if ours is None or server is None else round(ours / server, 3),
            "met": None if ours is None or server is None else ours >= server,
        },
        f"gateway_vs_bare_at_{streams}": {
            "target": (
                f"gateway (batching) aggregate tok/s >= {GOAL_VS_BARE:.0%} of the bare loop's "
                f"at {streams} streams"
            ),
            "value": None if ours is None or bare is None else round(ours / bare, 3),
            "met": None if ours is None or bare is None else ours >= GOAL_VS_BARE * bare,
        },
    }


# ---------------------------------------------------------------- running


def run(
    *,
    preset: str,
    streams: list[int],
    max_tokens: int,
    rounds: int,
    warmup_tokens: int,
    systems: list[str],
    batch_size: int,
    retries: int,
    quiet_wait: float,
    repeat: int = 1,
    profile: Path | None = None,
    server_args: tuple[str, ...] = (),
    progress: Progress | None = None,
    blas_threads: int = 0,
) -> dict[str, Any]:
    """The `servers` part: every system at every stream count, `repeat` cycles."""
    from gateway.blas import ensure_fast_blas

    if progress:
        progress.add(repeat * len(systems) * len(streams) + (1 if profile else 0) - 1)

    model = ensure_bench_model(preset)
    blas = ensure_fast_blas()  # here only to find the library for mlx_lm.server's LD_PRELOAD
    weights = weight_bytes(model)
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    system_info: dict[str, Any] = {}
    profiles: list[dict[str, Any]] = []
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-local-") as directory:
        workdir = Path(directory)
        client = JsonWorker(client_command(), workdir / "client.log")
        try:
            bench = StreamBench(
                client, workdir, max_tokens, rounds, warmup_tokens, retries, quiet_wait, progress
            )
            # Cycles through every system, so a slow drift of the machine spreads over all of them.
            for cycle in range(repeat):
                for name in systems:
                    available = wait_for_memory(int(weights * 1.1) + (1 << 30))
                    say(
                        f"{name}: starting ({available / 2**30:.1f} GiB available, "
                        f"cycle {cycle + 1} of {repeat})"
                    )
                    t = time.perf_counter()
                    with start_system(
                        name, model, batch_size, workdir, max_tokens, blas.library, server_args, blas_threads
                    ) as system:
                        load_s = time.perf_counter() - t
                        for n in streams:
                            runs.setdefault((name, n), []).append(bench.measure(system, n, LABELS[name]))
                        system_info.setdefault(
                            name,
                            {
                                "start_s": round(load_s, 1),
                                "blas_mapped": system.blas or mapped_blas(system.pid),
                                "blas": system.blas_described
                                or (f"OPENBLAS_NUM_THREADS={blas_threads}" if blas_threads else None),
                                "rss_gib": round(rss_bytes(system.pid) / 2**30, 2),
                            },
                        )
                        if profile is not None and name == "gateway" and not profiles:
                            from gateway.bench.harness.profiling import print_local_profile, profile_local

                            profiles.append(profile_local(bench, system, max(streams), profile))
                            print_local_profile(profiles[-1])
        finally:
            client.close()
    phases = [_median_run(found) for found in runs.values()]
    result = {
        "preset": preset,
        "model": {"path": str(model), "weight_bytes": weights},
        "streams": streams,
        "max_tokens": max_tokens,
        "rounds": rounds,
        "warmup_tokens": warmup_tokens,
        "batch_size": batch_size,
        "mlx_lm_server_extra_args": list(server_args),
        "sampling": (
            "greedy (temperature 0); the gateway and the bare loop ignore EOS, "
            "mlx_lm.server is checked by its usage"
        ),
        "blas": blas.with_threads(blas_threads),
        "blas_threads": blas_threads,
        "systems": system_info,
        "machine": machine(),
        "placement": "nothing pinned: each system alone on both cores; the load generator shares them",
        "load_generator_loop": "uvloop" if fastest_event_loop() is not asyncio.run else "asyncio",
        "request_log_fields": REQUEST_LOG_FIELDS,
        "phases": phases,
        "repeat": repeat,
        "failed_requests": sum(p["failed"] + p["warmup_failed"] for found in runs.values() for p in found),
        "goals": _goals(phases, max(streams)),
        "duration_s": round(time.time() - started, 1),
    }
    if profiles:
        result["profiles"] = profiles
    return result


def _median_run(found: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median aggregate tok/s (the lower middle one of an even count), with the
    spread of all runs beside it."""
    ordered = sorted(found, key=lambda p: p["aggregate_tokens_per_s"])
    phase = dict(ordered[(len(ordered) - 1) // 2])
    phase["repeats"] = [p["aggregate_tokens_per_s"] for p in found]
    phase["failed_in_repeats"] = sum(p["failed"] + p["warmup_failed"] for p in found)
    return phase


def add_arguments(servers: argparse._ArgumentGroup) -> None:
    """The options of the `servers` part (`--batch-size` is the other parts' too)."""
    servers.add_argument("--preset", choices=sorted(PRESET_DEFAULTS), default="tiny")
    servers.add_argument("--streams", type=int_list, help="concurrent streaming clients (default 1,4,16)")
    servers.add_argument("--tokens", type=int, help="max_tokens of every request (default: 256 tiny, 16 3b)")
    servers.add_argument(
        "--rounds", type=int, help="requests per stream, one after another (default: 3 tiny, 1 3b)"
    )
    servers.add_argument("--warmup-tokens", type=int, help="max_tokens of the warm-up requests")
    servers.add_argument(
        "--systems", type=name_list(SYSTEMS, "systems"), default=list(SYSTEMS), help=", ".join(SYSTEMS)
    )
    servers.add_argument("--batch-size", type=int, default=16, help="max_batch_size / --decode-concurrency")
    servers.add_argument(
        "--repeat", type=int, help="cycles through all systems; the median run is reported (3 tiny, 1 3b)"
    )
    servers.add_argument("--retries", type=int, help="re-runs of a phase disturbed by other processes")
    servers.add_argument(
        "--quiet-wait", type=float, help="seconds to wait for a quiet machine before a phase"
    )
    servers.add_argument(
        "--server-args", default="", help="more mlx_lm.server options, e.g. '--prompt-cache-size 0'"
    )
    servers.add_argument("--profile", type=Path, help="py-spy the gateway at the most streams; files go here")
    servers.add_argument(
        "--blas-threads",
        type=int,
        help="OpenBLAS threads for every system, 0 = one per core (default: 1 tiny, 0 3b)",
    )


def run_part(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    preset = QUICK["preset"] if args.quick else args.preset
    tokens, rounds, warmup = PRESET_DEFAULTS[preset]
    if args.quick:
        tokens, rounds, warmup = QUICK["tokens"], QUICK["rounds"], QUICK["warmup_tokens"]
    streams = args.streams or (QUICK["streams"] if args.quick else [1, 4, 16])
    return run(
        preset=preset,
        streams=streams,
        max_tokens=args.tokens or tokens,
        rounds=args.rounds or rounds,
        warmup_tokens=args.warmup_tokens or min(warmup, args.tokens or tokens),
        systems=args.systems,
        batch_size=args.batch_size,
        retries=args.retries if args.retries is not None else (0 if args.quick else 1),
        quiet_wait=args.quiet_wait if args.quiet_wait is not None else (0.0 if args.quick else 60.0),
        repeat=args.repeat or (1 if args.quick or preset != "tiny" else 3),
        profile=args.profile,
        server_args=tuple(shlex.split(args.server_args)),
        progress=progress,
        blas_threads=args.blas_threads if args.blas_threads is not None else BLAS_THREADS[preset],
    )
