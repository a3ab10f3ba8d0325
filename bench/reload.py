"""Reload scenario: time from a config edit to the new config serving, with requests flowing.

    gateway bench reload [--reloads 50] [--clients 4] [--quick] [--json results.json]

Clients call `GET /v1/models` in a loop; each edit renames the public models, and the edit counts
as live when a client first sees the new names. Failed requests must be zero.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests
from gateway.bench.harness.progress import Progress
from gateway.bench.harness.results import markdown_table
from gateway.bench.harness.runner import scenario_main

from gateway.testing.process import start_gateway

DEBOUNCE_MS = 50


def _config(tag: str) -> str:
    return f"""backends:
  up: {{type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}}
models:
  {tag}-a: {{chain: [{{backend: up}}]}}
  {tag}-b: {{chain: [{{backend: up}}]}}
reload: {{watch: true, debounce_ms: {DEBOUNCE_MS}}}
"""


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def run(reloads: int, clients: int, progress: Progress | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "gateway.yaml"
        path.write_text(_config("v0"))
        gateway = start_gateway(path)
        current = {"tag": "v0"}
        seen_at: dict[str, float] = {}
        failed = 0
        served = 0
        lock = threading.Lock()
        stop = threading.Event()

        def client() -> None:
            nonlocal failed, served
            with requests.Session() as session:
                while not stop.is_set():
                    try:
                        response = session.get(gateway.url("/v1/models"), timeout=5)
                        ok = response.status_code == 200
                        tag = response.json()["data"][0]["id"].split("-")[0] if ok else None
                    except (requests.RequestException, ValueError, KeyError, IndexError):
                        ok, tag = False, None
                    with lock:
                        served += 1
                        if not ok:
                            failed += 1
                        elif tag not in seen_at:
                            seen_at[tag] = time.perf_counter()

        threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
        for thread in threads:
            thread.start()
        latencies: list[float] = []
        if progress:
            progress.add(reloads - 1)
        try:
            time.sleep(0.5)
            for i in range(1, reloads + 1):
                tag = f"v{i}"
                current["tag"] = tag
                with progress.step(f"edit {i} of {reloads}") if progress else contextlib.nullcontext():
                    written = time.perf_counter()
                    path.write_text(_config(tag))
                    deadline = written + 10
                    while tag not in seen_at and time.perf_counter() < deadline:
                        time.sleep(0.001)
                if tag not in seen_at:
                    raise RuntimeError(f"edit {tag} was not live after 10 s")
                latencies.append((seen_at[tag] - written) * 1000)
        finally:
            stop.set()
            for thread in threads:
                thread.join(5)
            gateway.stop()
    return {
        "reloads": reloads,
        "clients": clients,
        "requests": served,
        "failed_requests": failed,
        "edit_to_live_ms": {
            "p50": round(statistics.median(latencies), 1),
            "p99": round(_percentile(latencies, 99), 1),
            "max": round(max(latencies), 1),
        },
        "debounce_ms": DEBOUNCE_MS,
        "edit_to_live_ms_each": [round(v, 2) for v in latencies],
    }


def table(result: dict[str, Any]) -> str:
    latency = result["edit_to_live_ms"]
    headers = ("reloads", "clients", "requests", "failed", "edit → live p50", "p99", "max")
    row = [
        result["reloads"],
        result["clients"],
        f"{result['requests']:,}",
        result["failed_requests"],
        f"{latency['p50']} ms",
        f"{latency['p99']} ms",
        f"{latency['max']} ms",
    ]
    return f"reload.debounce_ms = {result['debounce_ms']}\n\n" + markdown_table(
        headers, [row], numeric_from=0
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reloads", type=int, default=50, help="config edits (50)")
    parser.add_argument("--clients", type=int, default=4, help="clients calling GET /v1/models meanwhile (4)")


def run_scenario(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    reloads, clients = (5, 2) if args.quick else (args.reloads, args.clients)
    return run(reloads, clients, progress)


def main(argv: list[str] | None = None) -> int:
    """`python -m gateway.bench.reload ...` is `gateway bench reload ...`."""
    return scenario_main("reload", sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
