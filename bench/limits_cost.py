"""Limits cost (`gateway bench limits`): what one request's limits cost on the request path, without the
network noise of a whole gateway around them. The same path `ModelAPI` takes for a client key that has
a limit of every kind (requests and tokens per minute, concurrency, daily and monthly budgets; none is
reached): `Limiter.admit`, the `RateLimit` headers, and `Limiter.settle` with a corrected token count
and a cost.

* memory store: CPU per request (µs), timed over `--number` requests, best of 5 runs;
* Redis store on loopback (a private `redis-server`): the admission's latency, one request at a time
  (p50 / p99 over `--number` / 10 requests, the settle's script running after each as it does in the
  gateway), and the CPU the gateway process spends per request on it.

`gateway bench overhead --variants keyed,limits_memory,limits_redis` measures the same through a whole
gateway under load, where run-to-run noise is larger than what is measured here.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from gateway.bench.harness.progress import Progress, say
from gateway.bench.harness.results import markdown_table

from gateway.config.model import Budget, ClientKey, KeyLimits, LimitsConfig
from gateway.limits import Limiter, build_store
from gateway.limits.rules import key_rules
from gateway.testing.redis_server import RedisServer

#: A limit of every kind that no run reaches.
LIMITS = KeyLimits(
    requests_per_minute=10**9,
    tokens_per_minute=10**12,
    concurrent_requests=10**6,
    budget_usd=Budget(per_day=1e9, per_month=1e9),
)
TOKENS_ESTIMATE = 40
TOKENS_USED = 52
COST_USD = 0.000123


def _limiter(store_url: str) -> tuple[Limiter, Any]:
    from gateway.config.model import AuthConfig

    config = LimitsConfig(store=store_url, on_store_down="allow", store_timeout_ms=250, key_prefix="bench:")
    auth = AuthConfig(
        client_keys=(ClientKey(name="bench", key_sha256="0" * 64, models=("*",), limits=LIMITS),),
        admin_keys=(),
        allow_unauthenticated=False,
    )
    keys = key_rules(auth)
    return Limiter(build_store(config), config, keys), keys["bench"]


async def _memory(number: int) -> float:
    """Best of 5: CPU µs per admit + headers + settle."""
    limiter, rules = _limiter("memory")
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(number):
            admission = await limiter.admit(rules, TOKENS_ESTIMATE, 900.0)
            assert admission is not None
            limiter.headers(admission)
            limiter.settle(admission, TOKENS_USED, COST_USD)
        best = min(best, (time.process_time() - started) / number * 1e6)
    return best


async def _redis(number: int, url: str) -> dict[str, float]:
    limiter, rules = _limiter(url)
    latencies = []
    for _ in range(50):  # warm: connection pool, script cache
        admission = await limiter.admit(rules, TOKENS_ESTIMATE, 900.0)
        assert admission is not None
        limiter.settle(admission, TOKENS_USED, COST_USD)
    await asyncio.sleep(0.2)
    cpu_started = time.process_time()
    for _ in range(number):
        started = time.perf_counter()
        admission = await limiter.admit(rules, TOKENS_ESTIMATE, 900.0)
        latencies.append((time.perf_counter() - started) * 1000)
        if admission is None:
            raise RuntimeError("the Redis store was unreachable during the run")
        limiter.headers(admission)
        limiter.settle(admission, TOKENS_USED, COST_USD)
        await asyncio.sleep(0)  # let the settle's task start, as a request's end would
    await asyncio.sleep(0.2)  # the last settles
    cpu = (time.process_time() - cpu_started) / number * 1e6
    latencies.sort()
    await limiter.store.close()
    return {
        "admit_p50_ms": round(statistics.median(latencies), 3),
        "admit_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 3),
        "cpu_us_per_request": round(cpu, 1),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--number", type=int, default=20000, help="requests timed per memory run (20000)")


def run_scenario(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    number = 500 if args.quick else args.number
    progress.add(1)
    with progress.step("memory store"):
        memory = asyncio.run(_memory(number))
        say(f"  memory store: {memory:.2f} µs per request")
    with progress.step("Redis store on loopback"), RedisServer() as redis:
        remote = asyncio.run(_redis(max(100, number // 10), redis.url(0)))
        say(f"  Redis store: {remote}")
    return {
        "number": number,
        "limits": "requests and tokens per minute, concurrency, budget_usd per day and per month",
        "memory_cpu_us_per_request": round(memory, 2),
        "redis": remote,
        "targets": {
            "memory_cpu_us_per_request": {"target": "< 15 µs", "met": memory < 15},
            "redis_admit_p50_ms": {"target": "< 1 ms", "met": remote["admit_p50_ms"] < 1},
        },
        "failed_requests": 0,
    }


def table(result: dict[str, Any]) -> str:
    redis = result["redis"]
    rows = [
        ["memory", f"{result['memory_cpu_us_per_request']:.2f}", "–", "–"],
        ["Redis (loopback)", f"{redis['cpu_us_per_request']:.1f}", f"{redis['admit_p50_ms']:.3f}",
         f"{redis['admit_p99_ms']:.3f}"],
    ]  # fmt: skip
    headers = ["store", "CPU per request (µs)", "admission p50 (ms)", "admission p99 (ms)"]
    notes = [
        f"- target {name}: {target['target']} ({'met' if target['met'] else 'NOT met'})"
        for name, target in result["targets"].items()
    ]
    return (
        f"{result['limits']}; {result['number']:,} requests\n\n"
        + markdown_table(headers, rows)
        + "\n"
        + "\n".join(notes)
    )
