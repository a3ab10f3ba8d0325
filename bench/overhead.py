"""Gateway overhead: the same small chat completion sent to a fake OpenAI server directly and through
the gateway, so the difference is what the gateway adds.

    gateway bench overhead [--quick] [--json FILE] [--clients 1,8,32]
                           [--variants audit_off,2_workers,keyed,limits_memory,limits_redis,cache_memory,...]
                           [--duration S] [--warmup S] [--profile DIR] [--retries N] [--wait-quiet S]
                           [--no-baselines]

Layout (the machine this was written for has 2 cores):

    core 0: the gateway, one worker (`gateway serve --workers 1`, taskset)
            Hypercorn alone, a trivial ASGI app with a fixed JSON answer (baseline, idle otherwise)
            a minimal proxy: Hypercorn + one aiohttp session, no gateway logic (baseline, idle otherwise)
    core 1: the fake OpenAI server (`python -m gateway.testing openai`), and the load generator
            (`bench/harness/loadgen.py`: a bare asyncio protocol, closed loop over keep-alive connections)

Scenarios, each measured directly against the fake and then through the gateway, after a warm-up:
non-streaming latency and streaming time to first token (16 tokens, no token delay) at 1, 8 and 32
clients; the most non-streaming requests/s (the best of a few client counts). The same load against
the fake directly is the load generator's ceiling (fake and load generator share core 1), printed
beside every result; the CPU each server spent per request is read from /proc (with its worker
processes).

Variants of the gateway, each started on its own after the default one and measured the same way:
`audit_off` (`audit: {enabled: false}`; the default writes the SQLite audit log) and `2_workers`
(`--workers 2`, not pinned: on a 2-core machine the workers share the cores with the fake and the
load generator, so the ceiling is what bounds them there); on request, `keyed` (requests carry a
client key), `limits_memory` and `limits_redis` (that key with a limit of every kind, none reached,
counted in memory or in a private redis-server on loopback): the limits' cost is theirs minus
`keyed`'s; `cache_memory` and `cache_redis` (the model's answers cached, exact, any temperature:
after the first request every one is a hit served with no upstream call); `shadow` (every request
also copied, `models.<m>.shadow` with sample_rate 1, to a second backend on the same fake, which so
answers twice the requests: the client's latency with shadowing on, against the default's, off).

The machine may be shared: each phase waits (up to `--wait-quiet` s) for other processes to leave
the cores, records the CPU they used meanwhile (`foreign_cpu_cores`), and runs again (`--retries`)
when that was more than a tenth of a core; the table lists the phases that stayed disturbed.

`--profile DIR` then runs py-spy against the gateway under the 32-client load and prints where its
samples fall (`bench/harness/profiling.py`). The exit status is 1 if any request failed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.bench.harness.loadgen import LoadGenerator
from gateway.bench.harness.options import int_list
from gateway.bench.harness.phases import (
    BODY,
    FOREIGN_LIMIT,
    REPLY_TOKENS,
    LoadBench,
    best_phase,
    check_answers,
    find_phase,
    start_gateway_server,
)
from gateway.bench.harness.progress import Progress
from gateway.bench.harness.results import markdown_table, ms
from gateway.bench.harness.runner import scenario_main
from gateway.bench.harness.servers import Server, pinned, start_fake, start_listening, usable_cpus

from gateway.testing.redis_server import RedisServer

TARGETS = {
    "added_p50_ms_at_1_client": 1.0,  # at most
    "gateway_rps_one_worker": 1500.0,  # at least
}


@dataclass(frozen=True)
class Variant:
    """One way to run the gateway under the same load. `keyed`: requests carry a client key;
    `limits`: that key has limits of every kind, counted in this store (`memory` or `redis`)."""

    label: str
    workers: int
    audit: bool
    keyed: bool = False
    limits: str | None = None
    #: The model's answers cached in this store (`memory` or `redis`): every request after the first
    #: is an exact hit, answered with no upstream call.
    cache: str | None = None
    #: Every request also copied to a second backend on the same fake (`models.<m>.shadow`, rate 1).
    shadow: bool = False


#: The gateway variants by target name. "gateway" is the default one.
VARIANTS: dict[str, Variant] = {
    "gateway": Variant("1 worker, audit log on (default)", 1, True),
    "gateway_audit_off": Variant("1 worker, audit log off", 1, False),
    "gateway_2_workers": Variant("2 workers, audit log on", 2, True),
    "gateway_keyed": Variant("1 worker, audit on, a client key without limits", 1, True, keyed=True),
    "gateway_limits_memory": Variant(
        "1 worker, audit on, a key with every limit, memory store", 1, True, keyed=True, limits="memory"
    ),
    "gateway_limits_redis": Variant(
        "1 worker, audit on, a key with every limit, Redis store", 1, True, keyed=True, limits="redis"
    ),
    "gateway_cache_memory": Variant(
        "1 worker, audit on, every answer an exact cache hit, memory", 1, True, cache="memory"
    ),
    "gateway_cache_redis": Variant(
        "1 worker, audit on, every answer an exact cache hit, Redis", 1, True, cache="redis"
    ),
    "gateway_shadow": Variant(
        "1 worker, audit on, every request shadowed (sample_rate 1) to the same fake", 1, True, shadow=True
    ),
}
VARIANT_OPTIONS = {
    "audit_off": "gateway_audit_off",
    "2_workers": "gateway_2_workers",
    "keyed": "gateway_keyed",
    "limits_memory": "gateway_limits_memory",
    "limits_redis": "gateway_limits_redis",
    "cache_memory": "gateway_cache_memory",
    "cache_redis": "gateway_cache_redis",
    "shadow": "gateway_shadow",
}
#: What `--variants` runs unless told: the limits variants are asked for by name.
DEFAULT_VARIANTS = ("audit_off", "2_workers")
#: The client key of the keyed variants.
BENCH_KEY = "bench-client-key-0123456789"
QUICK = {"duration": 0.2, "warmup": 0.1, "rps_clients": []}


def start_baseline(kind: str, cpu: int | None, upstream: str, log: Path) -> Server:
    command = [sys.executable, "-m", "gateway.bench.baselines", kind, "--upstream", upstream]
    return start_listening(kind, pinned(command, cpu), log, proxies=kind == "proxy")


# ---------------------------------------------------------------- measuring


def compare_rows(phases: list[dict[str, Any]], target: str, clients: list[int]) -> list[dict[str, Any]]:
    """`target` against direct, per mode and client count: percentiles, added ms, req/s, ceiling."""
    ceiling = {mode: (best_phase(phases, "direct", mode) or {"rps": 0.0})["rps"] for mode in _MODES}
    rows = []
    for mode, metric in (("non_streaming", "latency_ms"), ("streaming", "ttft_ms")):
        for n in clients:
            direct, measured = find_phase(phases, "direct", mode, n), find_phase(phases, target, mode, n)
            if direct is None or measured is None:
                continue
            rows.append(
                {
                    "scenario": "latency" if mode == "non_streaming" else "time_to_first_token",
                    "mode": mode,
                    "clients": n,
                    "metric": metric,
                    "direct": {k: direct[metric][k] for k in ("p50", "p99")} | {"rps": direct["rps"]},
                    "gateway": {k: measured[metric][k] for k in ("p50", "p99")} | {"rps": measured["rps"]},
                    "added_ms": {
                        k: round(measured[metric][k] - direct[metric][k], 3) for k in ("p50", "p99")
                    },
                    "ceiling_rps": ceiling[mode],
                    "gateway_cpu_us_per_request": measured["cpu"]["server"]["us_per_request"],
                }
            )
    return rows


_MODES = ("non_streaming", "streaming")


def _summary(
    phases: list[dict[str, Any]], clients: list[int], baselines: bool, variants: list[str]
) -> dict[str, Any]:
    ceiling = {mode: (best_phase(phases, "direct", mode) or {"rps": 0.0})["rps"] for mode in _MODES}
    rows = compare_rows(phases, "gateway", clients)
    top_gateway, top_direct = (
        best_phase(phases, "gateway", "non_streaming"),
        best_phase(phases, "direct", "non_streaming"),
    )
    assert top_gateway is not None and top_direct is not None
    throughput: dict[str, Any] = {
        "gateway_rps": top_gateway["rps"],
        "gateway_clients": top_gateway["clients"],
        "gateway_core_busy": top_gateway["cpu"]["server"]["busy"],
        "gateway_cpu_us_per_request": top_gateway["cpu"]["server"]["us_per_request"],
        "upstream_core_busy": round(
            top_gateway["cpu"]["upstream"]["busy"] + top_gateway.get("loadgen_cpu_share", 0.0), 3
        ),
        "direct_rps": top_direct["rps"],
        "direct_clients": top_direct["clients"],
        "ceiling_rps": ceiling["non_streaming"],
    }
    if baselines:
        for target in ("hypercorn_trivial", "minimal_proxy"):
            top = best_phase(phases, target, "non_streaming")
            assert top is not None
            throughput[f"{target}_rps"] = top["rps"]
            throughput[f"{target}_cpu_us_per_request"] = top["cpu"]["server"]["us_per_request"]
    added_p50 = rows[0]["added_ms"]["p50"] if rows and rows[0]["clients"] == 1 else None
    targets = {
        "added_p50_ms_at_1_client": {
            "target": f"< {TARGETS['added_p50_ms_at_1_client']} ms",
            "value": added_p50,
            "met": added_p50 is not None and added_p50 < TARGETS["added_p50_ms_at_1_client"],
        },
        "gateway_rps_one_worker": {
            "target": f">= {TARGETS['gateway_rps_one_worker']:.0f} req/s",
            "value": top_gateway["rps"],
            "met": top_gateway["rps"] >= TARGETS["gateway_rps_one_worker"],
        },
    }
    variant_summaries = []
    for name in ["gateway", *variants]:
        variant = VARIANTS[name]
        top = best_phase(phases, name, "non_streaming")
        variant_summaries.append(
            {
                "variant": name,
                "label": variant.label,
                "workers": variant.workers,
                "audit": variant.audit,
                "keyed": variant.keyed,
                "limits": variant.limits,
                "rows": compare_rows(phases, name, clients),
                "max_rps": top["rps"] if top else None,
                "max_rps_clients": top["clients"] if top else None,
                "cpu_us_per_request_at_max": top["cpu"]["server"]["us_per_request"] if top else None,
            }
        )
    return {
        "ceiling_rps": ceiling,
        "rows": rows,
        "throughput": throughput,
        "targets": targets,
        "variants": variant_summaries,
    }


# ---------------------------------------------------------------- the tables


def table(result: dict[str, Any]) -> str:
    """The results as Markdown tables (pasted as is into PERFORMANCE.md)."""
    summary = result["summary"]
    rows = []
    for row in summary["rows"]:
        name = "non-streaming latency (ms)" if row["mode"] == "non_streaming" else "streaming TTFT (ms)"
        direct, gateway, added = row["direct"], row["gateway"], row["added_ms"]
        rows.append(
            [
                name,
                row["clients"],
                ms(direct["p50"]),
                ms(direct["p99"]),
                ms(gateway["p50"]),
                ms(gateway["p99"]),
                f"{added['p50']:+.2f}",
                f"{added['p99']:+.2f}",
                f"{direct['rps']:,.0f}",
                f"{gateway['rps']:,.0f}",
                f"{row['ceiling_rps']:,.0f}",
            ]
        )
    throughput = summary["throughput"]
    rows.append(
        [
            "max non-streaming req/s",
            f"{throughput['direct_clients']} / {throughput['gateway_clients']}",
            *[""] * 6,
            f"{throughput['direct_rps']:,.0f}",
            f"**{throughput['gateway_rps']:,.0f}**",
            f"{throughput['ceiling_rps']:,.0f}",
        ]
    )
    headers = [
        "scenario",
        "clients",
        "direct p50",
        "direct p99",
        "gateway p50",
        "gateway p99",
        "added p50",
        "added p99",
        "direct req/s",
        "gateway req/s",
        "ceiling req/s",
    ]
    parts = [
        "Default gateway (1 worker pinned to one core, audit log on):",
        "",
        markdown_table(headers, rows),
    ]
    if len(summary["variants"]) > 1:
        parts += [
            "",
            "Variants (added = the variant's percentile minus direct's):",
            "",
            _variants_table(summary),
        ]
    parts += ["", _servers_table(result)]
    notes = []
    disturbed = [p for p in result["phases"] if p["foreign_cpu_cores"] > FOREIGN_LIMIT]
    for p in disturbed:
        notes.append(
            f"- disturbed: {p['target']} {p['mode']} {p['clients']} clients ran while other processes "
            f"used {p['foreign_cpu_cores']:.2f} cores (after {p['runs']} runs)"
        )
    for name, target in summary["targets"].items():
        state = "met" if target["met"] else "NOT met"
        notes.append(f"- target {name} {target['target']}: {target['value']} ({state})")
    return "\n".join([*parts, "", *notes])


def _variants_table(summary: dict[str, Any]) -> str:
    rows = []
    for variant in summary["variants"]:
        for row in variant["rows"]:
            rows.append(
                [
                    variant["label"],
                    "non-streaming" if row["mode"] == "non_streaming" else "streaming TTFT",
                    row["clients"],
                    ms(row["gateway"]["p50"]),
                    ms(row["gateway"]["p99"]),
                    f"{row['added_ms']['p50']:+.2f}",
                    f"{row['added_ms']['p99']:+.2f}",
                    f"{row['gateway']['rps']:,.0f}",
                    f"{row['gateway_cpu_us_per_request']:.0f}",
                    f"{row['ceiling_rps']:,.0f}",
                ]
            )
        if variant["max_rps"] is not None:
            rows.append(
                [
                    variant["label"],
                    "max non-streaming req/s",
                    variant["max_rps_clients"],
                    "",
                    "",
                    "",
                    "",
                    f"**{variant['max_rps']:,.0f}**",
                    f"{variant['cpu_us_per_request_at_max']:.0f}",
                    f"{summary['ceiling_rps']['non_streaming']:,.0f}",
                ]
            )
    headers = [
        "gateway",
        "mode",
        "clients",
        "p50 (ms)",
        "p99 (ms)",
        "added p50",
        "added p99",
        "req/s",
        "CPU µs / request",
        "ceiling req/s",
    ]
    return markdown_table(headers, rows, numeric_from=2)


def _servers_table(result: dict[str, Any]) -> str:
    names = {
        "direct": "fake OpenAI server (aiohttp), direct",
        "hypercorn_trivial": "Hypercorn alone, fixed JSON answer",
        "minimal_proxy": "minimal proxy: Hypercorn + aiohttp",
        "gateway": "the gateway",
    }
    rows = []
    for target, label in names.items():
        phases = [p for p in result["phases"] if p["target"] == target and p["mode"] == "non_streaming"]
        if not phases:
            continue
        top = max(phases, key=lambda p: p["rps"])
        single = next((p for p in phases if p["clients"] == 1), None)
        cpu = top["cpu"]["server"]
        rows.append(
            [
                label,
                f"{top['rps']:,.0f}",
                top["clients"],
                ms(single["latency_ms"]["p50"]) if single else "–",
                f"{cpu['us_per_request']:.0f}",
                f"{cpu['busy'] * 100:.0f}%",
                f"{top['loadgen_us_per_request']:.0f}",
            ]
        )
    headers = [
        "server (one process, one core)",
        "best req/s",
        "clients",
        "p50 at 1 client (ms)",
        "server CPU per request (µs)",
        "its core busy",
        "load generator CPU per request (µs)",
    ]
    return markdown_table(headers, rows)


# ---------------------------------------------------------------- running


@contextlib.contextmanager
def _core_servers(workdir: Path, cpus: dict[str, int | None], baselines: bool) -> Iterator[dict[str, Server]]:
    """The fake, the default gateway and the baselines, stopped afterwards."""
    servers: dict[str, Server] = {}
    try:
        fake = servers["fake"] = start_fake("openai", workdir / "fake.log", cpu=cpus["upstream"])
        servers["gateway"] = start_gateway_server(
            "gateway", workdir, fake.port, workers=1, audit=True, cpu=cpus["gateway"]
        )
        if baselines:
            upstream = f"http://127.0.0.1:{fake.port}"
            for kind, name in (("trivial", "hypercorn_trivial"), ("proxy", "minimal_proxy")):
                servers[name] = start_baseline(kind, cpus["gateway"], upstream, workdir / f"{name}.log")
                servers[name].name = name
        yield servers
    finally:
        for server in reversed(servers.values()):
            server.stop()


def run(
    *,
    duration: float,
    warmup: float,
    clients: list[int],
    rps_clients: list[int],
    baselines: bool,
    cpus: dict[str, int | None],
    variants: list[str] | None = None,
    profile: Path | None = None,
    retries: int = 2,
    wait_quiet: float = 0.0,
    pairs: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    variants = list(variants or [])
    extra = [n for n in rps_clients if n not in clients]
    if progress:
        per_target = 2 * len(clients) + len(extra)
        baseline_phases = 2 * len(sorted({1, *rps_clients, max(clients)})) if baselines else 0
        progress.add(per_target * (2 + len(variants)) + baseline_phases + 2 * pairs - 1)
    with (
        tempfile.TemporaryDirectory(prefix="bench-overhead-") as directory,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(directory)
        redis: list[RedisServer] = []
        with _core_servers(workdir, cpus, baselines) as servers, LoadGenerator(cpus["loadgen"]) as loadgen:
            check_answers(servers)
            bench = LoadBench(loadgen, servers, warmup, duration, retries, wait_quiet, progress=progress)
            for target in ("direct", "gateway"):
                _measure_target(bench, target, clients, extra)
            for name in variants:
                variant = VARIANTS[name]
                cpu = cpus["gateway"] if variant.workers == 1 else None
                store = _redis(stack, redis).url(0) if variant.limits == "redis" else variant.limits
                cache = _redis(stack, redis).url(1) if variant.cache == "redis" else variant.cache
                servers[name] = start_gateway_server(
                    name,
                    workdir,
                    servers["fake"].port,
                    workers=variant.workers,
                    audit=variant.audit,
                    cpu=cpu,
                    client_key=BENCH_KEY if variant.keyed else None,
                    limits_store=store,
                    cache_store=cache,
                    shadow=variant.shadow,
                )
                headers = {"authorization": f"Bearer {BENCH_KEY}"} if variant.keyed else {}
                bench.target_headers[name] = headers
                try:
                    check_answers(servers, (name,), headers=headers)
                    _measure_target(bench, name, clients, extra)
                finally:
                    servers.pop(name).stop()
            top = max(rps_clients or clients)
            paired = _pairs(bench, servers, workdir, cpus, top, pairs) if pairs else None
            if baselines:
                for target in ("hypercorn_trivial", "minimal_proxy"):
                    for n in sorted({1, *rps_clients, max(clients)}):
                        bench.measure(target, False, n)
            if profile:
                from gateway.bench.harness.profiling import profile_gateway

                profiles = profile_gateway(bench, profile, max(2 * duration, 5))
            else:
                profiles = None
    result: dict[str, Any] = {
        "settings": {
            "duration_s": duration,
            "warmup_s": warmup,
            "clients": clients,
            "rps_clients": rps_clients,
            "variants": {name: dataclasses.asdict(VARIANTS[name]) for name in ["gateway", *variants]},
            "reply_tokens": REPLY_TOKENS,
            "request": BODY,
            "cpus": cpus | {"gateway_2_workers": None},
            "retries": retries,
            "wait_quiet_s": wait_quiet,
            "foreign_cpu_limit_cores": FOREIGN_LIMIT,
        },
        "phases": bench.phases,
        "summary": _summary(bench.phases, clients, baselines, variants),
        "requests": sum(p["requests"] for p in bench.phases),
        "failed_requests": sum(p["failed"] for p in bench.phases),
    }
    if profiles:
        result["profile"] = profiles
    if paired:
        result["summary"]["audit_pairs"] = paired
    return result


def _pairs(
    bench: LoadBench,
    servers: dict[str, Any],
    workdir: Path,
    cpus: dict[str, int | None],
    clients: int,
    count: int,
) -> dict[str, Any]:
    """The audit log's cost as paired phases: the default gateway (audit log on) and one with it off,
    both running, measured one right after the other `count` times at `clients` non-streaming clients.
    Each pair's two phases are seconds apart, so a drift of the machine's speed (minutes long on a
    shared virtual machine) moves both; the medians over the pairs are the figures."""
    name = "gateway_audit_off_paired"
    servers[name] = start_gateway_server(
        name, workdir, servers["fake"].port, workers=1, audit=False, cpu=cpus["gateway"]
    )
    bench.target_headers[name] = {}
    rows = []
    try:
        check_answers(servers, (name,))
        for _ in range(count):
            on = bench.measure("gateway", False, clients, record=False)
            off = bench.measure(name, False, clients, record=False)
            rows.append(
                {
                    "on_rps": on["rps"],
                    "off_rps": off["rps"],
                    "on_cpu_us_per_request": on["cpu"]["server"]["us_per_request"],
                    "off_cpu_us_per_request": off["cpu"]["server"]["us_per_request"],
                    "ratio": round(on["rps"] / off["rps"], 4) if off["rps"] else None,
                    "audit_us_per_request": round(
                        on["cpu"]["server"]["us_per_request"] - off["cpu"]["server"]["us_per_request"], 1
                    ),
                }
            )
    finally:
        servers.pop(name).stop()
    return {
        "clients": clients,
        "pairs": rows,
        "median_on_rps": statistics.median(r["on_rps"] for r in rows),
        "median_off_rps": statistics.median(r["off_rps"] for r in rows),
        "median_ratio": statistics.median(r["ratio"] or 0.0 for r in rows),
        "median_audit_us_per_request": statistics.median(r["audit_us_per_request"] for r in rows),
    }


def _redis(stack: contextlib.ExitStack, started: list[RedisServer]) -> RedisServer:
    """The run's private redis-server for the Redis variants (started by the first that needs it)."""
    if not started:
        started.append(stack.enter_context(RedisServer()))
    return started[0]


def _measure_target(bench: LoadBench, target: str, clients: list[int], extra: list[int]) -> None:
    for stream in (False, True):
        for n in clients:
            bench.measure(target, stream, n)
    for n in extra:
        bench.measure(target, False, n)


# ---------------------------------------------------------------- the command line


def _variant_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip() and v.strip() != "none"]
    unknown = sorted(set(names) - set(VARIANT_OPTIONS))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown variants {unknown} (choose from {', '.join(VARIANT_OPTIONS)})"
        )
    return [VARIANT_OPTIONS[n] for n in names]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per phase (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per phase (2)")
    parser.add_argument("--clients", type=int_list, default=[1, 8, 32], help="client counts (1,8,32)")
    parser.add_argument(
        "--rps-clients",
        type=int_list,
        default=[8, 32, 64],
        help="client counts tried for max req/s (8,32,64)",
    )
    parser.add_argument(
        "--variants",
        type=_variant_list,
        default=[VARIANT_OPTIONS[n] for n in DEFAULT_VARIANTS],
        help="gateway variants besides the default, comma-separated: audit_off, 2_workers (these two "
        "unless told), keyed (a client key), limits_memory and limits_redis (that key with every limit, "
        "counted in memory or in a private redis-server on loopback), cache_memory and cache_redis "
        "(every answer an exact cache hit), shadow (every request also copied to a shadow target "
        "on the same fake: the client's latency with shadowing on against the default's, off), or none",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help=f"run a phase again when other processes used > {FOREIGN_LIMIT} core meanwhile (2)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=60.0,
        help="before each phase, wait up to this many seconds for other processes to go quiet (60)",
    )
    parser.add_argument("--no-baselines", action="store_true", help="skip Hypercorn-alone and minimal proxy")
    parser.add_argument("--gateway-cpu", type=int, default=0, help="core for the gateway and baselines (0)")
    parser.add_argument("--upstream-cpu", type=int, default=1, help="core for the fake server (1)")
    parser.add_argument("--loadgen-cpu", type=int, default=1, help="core for the load generator (1)")
    parser.add_argument("--profile", type=Path, help="also profile the gateway with py-spy; files go here")
    parser.add_argument(
        "--pairs",
        type=int,
        default=0,
        help="also measure the audit log's cost as N pairs of phases, audit log on then off, seconds "
        "apart, at the largest --rps-clients; the medians of the pairs are reported (0: none)",
    )


def run_scenario(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    duration, warmup, rps_clients = args.duration, args.warmup, args.rps_clients
    if args.quick:
        duration, warmup, rps_clients = QUICK["duration"], QUICK["warmup"], QUICK["rps_clients"]
    cpus = usable_cpus(
        {"gateway": args.gateway_cpu, "upstream": args.upstream_cpu, "loadgen": args.loadgen_cpu}
    )
    return run(
        duration=duration,
        warmup=warmup,
        clients=args.clients,
        rps_clients=rps_clients,
        baselines=not args.no_baselines,
        cpus=cpus,
        variants=args.variants,
        profile=args.profile,
        retries=0 if args.quick else args.retries,
        wait_quiet=0.0 if args.quick else args.wait_quiet,
        pairs=args.pairs,
        progress=progress,
    )


def print_extra(result: dict[str, Any]) -> None:
    paired = result["summary"].get("audit_pairs")
    if paired:
        rows = [
            [
                str(i),
                f"{r['on_rps']:,.0f}",
                f"{r['off_rps']:,.0f}",
                f"{r['ratio']:.0%}" if r["ratio"] is not None else "",
                f"{r['audit_us_per_request']:.0f}",
            ]
            for i, r in enumerate(paired["pairs"], 1)
        ]
        rows.append(
            [
                "**median**",
                f"{paired['median_on_rps']:,.0f}",
                f"{paired['median_off_rps']:,.0f}",
                f"**{paired['median_ratio']:.0%}**",
                f"**{paired['median_audit_us_per_request']:.0f}**",
            ]
        )
        print(f"\nAudit log on and off in pairs ({paired['clients']} clients, non-streaming, one worker):\n")
        print(markdown_table(["pair", "on req/s", "off req/s", "on / off", "audit CPU µs / request"], rows))
    if "profile" in result:
        from gateway.bench.harness.profiling import print_profile

        print_profile(result["profile"])


def main(argv: list[str] | None = None) -> int:
    """`python -m gateway.bench.overhead ...` is `gateway bench overhead ...`."""
    return scenario_main("overhead", sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
