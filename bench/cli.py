"""`gateway bench SCENARIO`: every benchmark behind one command, one progress bar, one kind of result.

Each scenario starts what it measures on loopback (the gateway, the fake providers, mlx_lm.server,
LiteLLM's proxy), stops it afterwards, prints Markdown tables on stdout (what PERFORMANCE.md shows)
and writes a JSON result file (`--json`; by default `bench/results/<scenario>.json` in a checkout,
`./bench-results/<scenario>.json` from an install, `<scenario>-quick.json` for `--quick`). Progress
goes to stderr. The exit status is 1 if any request failed.

A scenario is a module (or a package, such as `local`) with `add_arguments(parser)`,
`run_scenario(args, progress) -> dict` and `table(result) -> str` (and optionally
`print_extra(result)`). Scenarios import what they share from `harness/`, never from one another;
this module is the one place that imports them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from gateway.bench.harness.runner import add_common_arguments, description, run_scenario

__all__ = ["SCENARIOS", "build_parser", "main"]

#: name → (module, one line for --help)
SCENARIOS: dict[str, tuple[str, str]] = {
    "overhead": (
        "gateway.bench.overhead",
        "what the gateway adds to a request: vs the fake OpenAI server directly, 1/8/32 clients, "
        "1 and 2 workers, audit log on and off",
    ),
    "peers": ("gateway.bench.peers", "the same load through LiteLLM's proxy, as a ratio to the gateway"),
    "local": (
        "gateway.bench.local",
        "local inference: batching on/off vs mlx_lm.server, one vs two models, 4-bit size tiers",
    ),
    "failover": (
        "gateway.bench.failover",
        "primary dead, failing, hanging, slow: latency before and after the breaker opens",
    ),
    "cloud": (
        "gateway.bench.cloud",
        "latency and TTFT to OpenAI/Anthropic through the gateway (simulated without keys)",
    ),
    "reload": (
        "gateway.bench.reload",
        "config edit → new config serving, with requests flowing; failed requests",
    ),
    "telemetry": (
        "gateway.bench.telemetry_cost",
        "what one request's metrics, log line and spans cost (no network)",
    ),
    "faults": (
        "gateway.bench.faults",
        "load on both surfaces while faults are injected in turn: answers by status, lost and "
        "duplicated audit records per phase",
    ),
    "streams-held": (
        "gateway.bench.streams_held",
        "thousands of open streams on one worker: all complete? memory per stream, TTFT added",
    ),
    "limits": (
        "gateway.bench.limits_cost",
        "what one request's limits cost: memory store CPU, Redis store admission latency (no gateway)",
    ),
    "cache": (
        "gateway.bench.cache_cost",
        "what the semantic cache's lookup costs: nearest neighbour over 10k and 100k stored vectors",
    ),
    "routing": (
        "gateway.bench.routing_cost",
        "what picking a balanced group's member costs per request, and the split (no network)",
    ),
    "audit": (
        "gateway.bench.audit_cost",
        "what one request's audit record costs the worker's CPU, SQLite and PostgreSQL (no network)",
    ),
    "mutation": (
        "gateway.bench.mutation",
        "mutation testing: bugs planted one at a time in the critical modules, against their unit tests",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway bench",
        description="Run a benchmark scenario: a table on stdout, a JSON result file, progress on stderr.",
        epilog="`gateway bench SCENARIO --help` lists a scenario's options. Full runs need a quiet machine.",
    )
    scenarios = parser.add_subparsers(dest="scenario", required=True, metavar="SCENARIO")
    for name, (module_name, help_text) in SCENARIOS.items():
        module = importlib.import_module(module_name)
        sub = scenarios.add_parser(
            name,
            help=help_text,
            description=description(module, help_text),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_common_arguments(sub, name)
        module.add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    module = importlib.import_module(SCENARIOS[args.scenario][0])
    return run_scenario(args.scenario, module, args, argv)


if __name__ == "__main__":
    sys.exit(main())
