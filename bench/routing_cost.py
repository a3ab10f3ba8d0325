"""Balanced group cost (`gateway bench routing`): what picking a member costs per request, in process
(no network), and the split each strategy gives. For each strategy, a group of two members weighted
3:1 (the weights matter to `weighted` only) compiled from a config as the gateway does:
`RouteGroup.order` for a request without and with a sticky key (rendezvous hashing over the members).
CPU µs per pick, best of 5 runs of `--number` picks. The split: the first member of each of
`--number` picks (least_busy's and latency's as they fall with no request in flight and equal
latencies; their real split follows the load, which this does not simulate). Then a canary at
weight 5 with both rollback rules: its share and what drawing it and recording one attempt per
request (the window, and the rules judged on the canary's attempts) cost.
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
from gateway.routing.canary import RouteCanary
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


CANARY = """
backends:
  a: {type: openai_compatible, base_url: "http://127.0.0.1:1/v1"}
  b: {type: openai_compatible, base_url: "http://127.0.0.1:2/v1"}
models:
  chat:
    chain: [{backend: a}]
    canary: {target: {backend: b}, weight: 5, rollback: {error_rate: 0.05, p95_latency_ms: 500, window: 5m}}
"""


def _canary() -> RouteCanary:
    config = parse_config(CANARY.encode(), Path("bench.yaml"))
    runtime, _ = compile_runtime(config, None, "bench")
    canary = runtime.routes["chat"].canary
    assert canary is not None
    return canary


def _canary_us(number: int) -> tuple[float, float]:
    """CPU µs per request of a canary's share (`take`) and of recording one attempt and judging the
    rules (`observe`, the canary's attempt for one request in twenty, as weight 5 gives), the best
    of 5 runs; and the canary's share."""
    best = float("inf")
    share = 0.0
    for _ in range(5):
        canary = _canary()
        take, observe = canary.take, canary.observe
        taken = 0
        started = time.process_time()
        for i in range(number):
            mine = take()
            taken += mine
            observe(mine, True, 100.0 + (i % 50))
        best = min(best, (time.process_time() - started) / number * 1e6)
        share = taken / number
    return best, share


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--number", type=int, default=100_000, help="picks timed per run (100000)")


def run_scenario(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    number = 2_000 if args.quick else args.number
    progress.add(len(STRATEGIES) + 1)
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
    with progress.step("canary"):
        us, share = _canary_us(number)
        canary = {"us_per_request": round(us, 2), "share": round(share, 4)}
        say(f"  canary: {canary['us_per_request']} µs per request, share {share:.2%}")
    return {"number": number, "strategies": rows, "canary": canary, "failed_requests": 0}


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
    canary = result.get("canary")
    text = f"RouteGroup.order, best of 5 × {result['number']} picks\n\n" + markdown_table(headers, rows)
    if canary is not None:
        text += "\n\n" + markdown_table(
            ["canary (weight 5, error and p95 rules)", "CPU µs per request", "canary's share"],
            [["take + observe", f"{canary['us_per_request']:.2f}", f"{canary['share']:.2%}"]],
        )
    return text
