"""Telemetry cost (`gateway bench telemetry`): what one request's reporting costs on the request path,
`bench/telemetry.py`'s micro-benchmark (timeit, best of 5, no network), in one process and as a
worker of `--workers N` (prometheus_client's multiprocess mode).

Each mode runs `python -m gateway.bench.telemetry` in a child process: it replaces the root logger's
handlers, and the multiprocess mode needs `PROMETHEUS_MULTIPROC_DIR` set before prometheus_client is
imported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

from gateway.bench.harness.progress import Progress, say
from gateway.bench.harness.results import markdown_table

MODES = ("one_process", "multiprocess")
ROWS = {
    "nothing": "nothing (metrics off, log level warning, tracing off)",
    "metrics_only": "metrics",
    "metrics_log": "metrics + JSON request log line (the default)",
    "traced": "metrics + log line + 3 spans to Logfire's pipeline (tracing on)",
    "span_noop": "`tracing.span()` alone, tracing off",
    "trail": "`RequestTrail()` alone",
}


def _run_mode(mode: str, number: int) -> dict[str, float]:
    env = dict(os.environ)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with tempfile.TemporaryDirectory(prefix="bench-telemetry-") as directory:
        if mode == "multiprocess":
            env["PROMETHEUS_MULTIPROC_DIR"] = directory
        done = subprocess.run(
            [sys.executable, "-m", "gateway.bench.telemetry", "--number", str(number)],
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
    if done.returncode != 0:
        raise RuntimeError(f"gateway.bench.telemetry failed ({mode}):\n{done.stderr[-3000:]}")
    lines = done.stdout.strip().splitlines()
    for line in lines[:-1]:
        say(f"  {mode}: {line}")
    return {key: round(value, 3) for key, value in json.loads(lines[-1]).items()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--number", type=int, default=20000, help="requests timed per measurement (20000)")


def run_scenario(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    number = 300 if args.quick else args.number
    progress.add(len(MODES) - 1)
    found: dict[str, dict[str, float]] = {}
    for mode in MODES:
        with progress.step(mode.replace("_", " ")):
            found[mode] = _run_mode(mode, number)
    return {
        "number": number,
        "method": "timeit, best of 5, per request in µs; tracing on: a tenth of the requests",
        "us_per_request": found,
        "failed_requests": 0,
    }


def table(result: dict[str, Any]) -> str:
    values = result["us_per_request"]
    rows = []
    for key, label in ROWS.items():
        cells = [f"{values[mode][key]:.2f}" if key in values[mode] else "–" for mode in MODES]
        rows.append([label, *cells])
    headers = ["what is on", "one process (µs)", "multiprocess mode (µs)"]
    return f"{result['number']:,} requests per measurement\n\n" + markdown_table(headers, rows)
