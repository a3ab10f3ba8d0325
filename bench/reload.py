"""Reload scenario: time from a config edit to the new config serving, with requests flowing.

    python -m bench.reload [--reloads 50] [--clients 4] [--quick] [--json results.json]

Clients call `GET /v1/models` in a loop; each edit renames the public models, and the edit counts
as live when a client first sees the new names. Failed requests must be zero.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from gateway.testing.process import start_gateway


def _config(tag: str) -> str:
    return f"""backends:
  up: {{type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}}
models:
  {tag}-a: {{chain: [{{backend: up}}]}}
  {tag}-b: {{chain: [{{backend: up}}]}}
reload: {{watch: true, debounce_ms: 50}}
"""


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def run(reloads: int, clients: int) -> dict:
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
        try:
            time.sleep(0.5)
            for i in range(1, reloads + 1):
                tag = f"v{i}"
                current["tag"] = tag
                written = time.perf_counter()
                path.write_text(_config(tag))
                deadline = written + 10
                while tag not in seen_at and time.perf_counter() < deadline:
                    time.sleep(0.001)
                if tag not in seen_at:
                    raise RuntimeError(f"edit {tag} was not live after 10 s")
                latencies.append((seen_at[tag] - written) * 1000)
                print(f"\rreloads {i}/{reloads}", end="", file=sys.stderr, flush=True)
            print(file=sys.stderr)
        finally:
            stop.set()
            for thread in threads:
                thread.join(5)
            gateway.stop()
    return {
        "scenario": "reload",
        "reloads": reloads,
        "clients": clients,
        "requests": served,
        "failed_requests": failed,
        "edit_to_live_ms": {
            "p50": round(statistics.median(latencies), 1),
            "p99": round(_percentile(latencies, 99), 1),
            "max": round(max(latencies), 1),
        },
        "debounce_ms": 50,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reload", description=__doc__.splitlines()[0])
    parser.add_argument("--reloads", type=int, default=50)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="5 reloads, 2 clients (smoke run)")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args(argv)
    reloads, clients = (5, 2) if args.quick else (args.reloads, args.clients)
    result = run(reloads, clients)
    latency = result["edit_to_live_ms"]
    header = ("reloads", "clients", "requests", "failed", "p50 ms", "p99 ms", "max ms")
    print(" ".join(f"{h:>8}" for h in header))
    print(
        f"{reloads:>8} {clients:>8} {result['requests']:>8} {result['failed_requests']:>8} "
        f"{latency['p50']:>8} {latency['p99']:>8} {latency['max']:>8}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 1 if result["failed_requests"] else 0


if __name__ == "__main__":
    sys.exit(main())
