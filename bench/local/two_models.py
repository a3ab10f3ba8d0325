"""Two local models at once (the `two_models` part of `gateway bench local`): one gateway with two
`type: mlx` backends (the same generated model loaded twice: two engines, two copies of the weights,
two engine threads), under load on one of them and on both together.

Three phases, each after a warm-up at its concurrency, with the harness's streaming client
(a process per model, started together):

- `one_model`, S streams: the load on model A only (model B loaded and idle);
- `one_model`, 2S streams: the same total load as the next phase, on one model (one batch);
- `two_models`, S streams on each: what serving two models at once costs against one batch.

Tokens come from each response's usage (`ignore_eos`, so every request generates `max_tokens`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.bench.harness.proc import rss_bytes, tree_cpu_seconds, wait_for_memory
from gateway.bench.harness.progress import Progress, say
from gateway.bench.harness.results import markdown_table
from gateway.bench.harness.servers import JsonWorker, stop_process, wait_http
from gateway.bench.harness.streams import WARMUP_TEXT, client_command, prompts, summarize
from gateway.bench.harness.systems import ensure_bench_model, weight_bytes

from gateway.testing.process import free_port

MODELS = ("local-a", "local-b")
FULL = {"preset": "tiny", "streams": 4, "tokens": 128, "rounds": 2, "warmup_tokens": 8}
QUICK = {"preset": "tiny", "streams": 2, "tokens": 8, "rounds": 1, "warmup_tokens": 2}


def gateway_config(path: Path, batch_size: int) -> str:
    backends = "\n".join(
        f"""  {name}:
    type: mlx
    path: "{path}"
    load: startup
    max_batch_size: {batch_size}
    max_queue: 4096"""
        for name in MODELS
    )
    models = "\n".join(f"  {name}: {{chain: [{{backend: {name}}}]}}" for name in MODELS)
    return f"""server: {{host: 127.0.0.1}}
backends:
{backends}
models:
{models}
timeouts:
  chat: {{total: 86400, first_byte: 86400}}
reload: {{watch: false}}
"""


@contextlib.contextmanager
def _gateway(model: Path, workdir: Path, batch_size: int) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    config = workdir / "two-models.yaml"
    config.write_text(gateway_config(model, batch_size))
    log = workdir / "two-models.log"
    port = free_port()
    command = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port", str(port)]
    command += ["--workers", "1"]
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, env=dict(os.environ), cwd=workdir
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", process, log, 120 + 2 * weight_bytes(model) / 50e6)
        yield process, f"http://127.0.0.1:{port}/v1/chat/completions"
    finally:
        stop_process(process)


def _spec(
    url: str, model: str, label: str, streams: int, tokens: int, rounds: int, text: str | None = None
) -> dict:
    body = {
        "model": model,
        "ignore_eos": True,
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    rows = prompts(label, streams, rounds) if text is None else prompts(label, streams, rounds, text)
    return {"prompts": rows, "max_tokens": tokens, "url": url, "body": body}


def run(
    *,
    preset: str,
    streams: int,
    max_tokens: int,
    rounds: int,
    warmup_tokens: int,
    batch_size: int,
    progress: Progress | None = None,
) -> dict[str, Any]:
    model = ensure_bench_model(preset)
    weights = weight_bytes(model)
    if progress:
        progress.add(3)
    phases: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-two-models-") as directory:
        workdir = Path(directory)
        wait_for_memory(int(2 * weights * 1.1) + (1 << 30))
        clients = [JsonWorker(client_command(), workdir / f"client-{i}.log") for i in range(2)]
        try:
            say(f"two models: loading the {preset} model twice ...")
            started = time.perf_counter()
            with _gateway(model, workdir, batch_size) as (process, url):
                load_s = time.perf_counter() - started
                rss = rss_bytes(process.pid)
                plan = [("one_model", streams, 1), ("one_model", 2 * streams, 1), ("two_models", streams, 2)]
                for name, n, models in plan:
                    label = f"two models: {name.replace('_', ' ')}, {n} streams" + (
                        " each" if models == 2 else ""
                    )
                    with progress.step(label) if progress else contextlib.nullcontext():
                        phases.append(
                            _phase(
                                clients[:models], url, name, n, max_tokens, rounds, warmup_tokens, process.pid
                            )
                        )
        finally:
            for client in clients:
                client.close()
    return {
        "preset": preset,
        "model": {"path": str(model), "weight_bytes": weights, "copies_loaded": 2},
        "streams": streams,
        "max_tokens": max_tokens,
        "rounds": rounds,
        "batch_size": batch_size,
        "load_s": round(load_s, 1),
        "rss_gib_two_loaded": round(rss / 2**30, 2),
        "phases": phases,
        "requests": sum(p["requests"] for p in phases),
        "failed_requests": sum(p["failed"] for p in phases),
    }


def _phase(
    clients: list[JsonWorker],
    url: str,
    name: str,
    streams: int,
    max_tokens: int,
    rounds: int,
    warmup_tokens: int,
    pid: int,
) -> dict[str, Any]:
    def run_all(label: str, tokens: int, rounds_: int, text: str | None) -> list[dict[str, Any]]:
        for client, model in zip(clients, MODELS, strict=False):
            client.send(_spec(url, model, f"{label} {model}", streams, tokens, rounds_, text))
        return [client.read() for client in clients]

    warm = run_all(f"two-models warm-up {name} {streams}", warmup_tokens, 1, WARMUP_TEXT)
    warm_failed = sum(1 for w in warm for r in w["records"] if r["error"])
    cpu_before, started = tree_cpu_seconds(pid), time.perf_counter()
    found = run_all(f"two-models {name} {streams}", max_tokens, rounds, None)
    elapsed = time.perf_counter() - started
    cpu = (tree_cpu_seconds(pid) - cpu_before) / elapsed
    per_model = {
        model: summarize(result["records"], result["makespan_s"], max_tokens)
        for model, result in zip(MODELS, found, strict=False)
    }
    makespan = max(result["makespan_s"] for result in found)
    records = [r for result in found for r in result["records"]]
    combined = summarize(records, makespan, max_tokens)
    phase = {
        "name": name,
        "models_loaded": len(MODELS),
        "models_under_load": len(clients),
        "streams_per_model": streams,
        **combined,
        "gateway_cpu_cores": round(cpu, 3),
        "warmup_failed": warm_failed,
    }
    phase["failed"] += warm_failed
    if len(clients) > 1:
        phase["per_model"] = per_model
    say(
        f"  {name:<10} {streams:>3} streams{' each' if len(clients) > 1 else ''}: "
        f"{phase['aggregate_tokens_per_s']:.1f} tok/s, TTFT p50 {phase['ttft_ms']['p50']:.0f} ms"
        + (f"  FAILED {phase['failed']}" if phase["failed"] else "")
    )
    return phase


def table(result: dict[str, Any]) -> str:
    rows = []
    for phase in result["phases"]:
        n = phase["streams_per_model"]
        load = "one model" if phase["name"] == "one_model" else "two models at once"
        streams = str(n) if phase["name"] == "one_model" else f"{n} + {n}"
        rows.append(_row(load, streams, phase))
        for model, found in (phase.get("per_model") or {}).items():
            rows.append(_row(f"– of which {model}", str(n), found | {"gateway_cpu_cores": None}))
    headers = [
        "load",
        "streams",
        "aggregate tok/s",
        "TTFT p50 (ms)",
        "TTFT p99 (ms)",
        "per-stream tok/s p50",
        "gateway CPU (cores)",
    ]
    head = (
        f"two models: {result['preset']} model loaded twice (two engines), {result['max_tokens']} tokens "
        f"per request, {result['rounds']} per stream; {result['rss_gib_two_loaded']} GiB resident with both "
        "loaded"
    )
    return head + "\n\n" + markdown_table(headers, rows, numeric_from=2)


def _row(load: str, streams: str, phase: dict[str, Any]) -> list[str]:
    cpu = phase.get("gateway_cpu_cores")
    return [
        load,
        streams,
        f"{phase['aggregate_tokens_per_s']:,.1f}",
        f"{phase['ttft_ms']['p50']:,.0f}",
        f"{phase['ttft_ms']['p99']:,.0f}",
        f"{phase['per_stream_tokens_per_s']['p50']:,.1f}",
        "" if cpu is None else f"{cpu:.2f}",
    ]


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--two-model-preset", choices=["tiny", "3b"], help="model loaded twice (tiny)")
    group.add_argument("--two-model-streams", type=int, help=f"streams per model ({FULL['streams']})")
    group.add_argument("--two-model-tokens", type=int, help=f"max_tokens per request ({FULL['tokens']})")
    group.add_argument("--two-model-rounds", type=int, help=f"requests per stream ({FULL['rounds']})")


def run_part(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    settings = dict(QUICK if args.quick else FULL)
    for key in ("preset", "streams", "tokens", "rounds"):
        value = getattr(args, f"two_model_{key}", None)
        if value is not None:
            settings[key] = value
    return run(
        preset=settings["preset"],
        streams=settings["streams"],
        max_tokens=settings["tokens"],
        rounds=settings["rounds"],
        warmup_tokens=min(settings["warmup_tokens"], settings["tokens"]),
        batch_size=args.batch_size,
        progress=progress,
    )
