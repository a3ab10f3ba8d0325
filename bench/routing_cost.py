"""Balanced group cost (`gateway bench routing`): what picking a member costs per request, in process
(no network), and the split each strategy gives. For each strategy, a group of two members weighted
3:1 (the weights matter to `weighted` only) compiled from a config as the gateway does:
`RouteGroup.order` for a request without and with a sticky key (rendezvous hashing over the members).
CPU µs per pick, best of 5 runs of `--number` picks. The split: the first member of each of
`--number` picks (least_busy's and latency's as they fall with no request in flight and equal
latencies; their real split follows the load, which this does not simulate).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path
from typing import Any

from gateway.bench.harness.progress import Progress, say
from gateway.bench.harness.results import markdown_table

from gateway.config.load import parse_config
from gateway.config.model import CircuitBreakerPolicy
from gateway.routing.groups import RouteGroup
from gateway.runtime.compile import compile_runtime

STRATEGIES = ("weighted", "least_busy", "latency")
POLICY = CircuitBreakerPolicy(enabled=True, failure_threshold=5, cooldown_seconds=30)
CONFIG = """
backends:
  a: {type: openai_compatible, base_url: "http://127.0.0.1:1/v1"}
  b: {type: openai_compatible, base_url: "http://127.0.0.1:2/v1"}
models:
  chat:
    chain:
      - group:
          strategy: STRATEGY
          targets: [{backend: a, weight: 3}, {backend: b, weight: 1}]
          sticky: {by: header, header: x-session}
"""


def _group(strategy: str) -> RouteGroup:
    config = parse_config(CONFIG.replace("STRATEGY", strategy).encode(), Path("bench.yaml"))
    runtime, _ = compile_runtime(config, None, "bench")
    step = runtime.routes["chat"].steps[0]
    assert isinstance(step, RouteGroup)
    return step


def _pick_us(group: RouteGroup, number: int, sticky: bool) -> float:
    policy = POLICY
    affinity = (lambda _: "session-0123456789") if sticky else None
    order = group.order
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(number):
            order(affinity, policy)
        best = min(best, (time.process_time() - started) / number * 1e6)
    return best


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--number", type=int, default=100_000, help="picks timed per run (100000)")


def run_scenario(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    number = 2_000 if args.quick else args.number
    progress.add(len(STRATEGIES))
    rows = []
    for strategy in STRATEGIES:
        with progress.step(strategy):
            split = _group(strategy)
            firsts = Counter(split.order(None, POLICY)[0][0] for _ in range(number))
            row = {
                "strategy": strategy,
                "us_per_pick": round(_pick_us(_group(strategy), number, sticky=False), 2),
                "us_per_sticky_pick": round(_pick_us(_group(strategy), number, sticky=True), 2),
                "share_first": round(firsts[0] / number, 4),
            }
            say(f"  {strategy}: {row['us_per_pick']} µs, sticky {row['us_per_sticky_pick']} µs")
            rows.append(row)
    return {"number": number, "strategies": rows, "failed_requests": 0}


def table(result: dict[str, Any]) -> str:
    rows = [
        [
            r["strategy"],
            f"{r['us_per_pick']:.2f}",
            f"{r['us_per_sticky_pick']:.2f}",
            f"{r['share_first']:.2%}",
        ]
        for r in result["strategies"]
    ]
    headers = ["strategy (2 members, 3:1)", "CPU µs per pick", "µs per sticky pick", "first member's share"]
    return f"RouteGroup.order, best of 5 × {result['number']} picks\n\n" + markdown_table(headers, rows)
