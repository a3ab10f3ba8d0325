"""Local inference (`gateway bench local`): the gateway's `mlx` backend against `mlx_lm.server` and a
bare `BatchGenerator` loop, one model against two served at once, and 4-bit models of each size tier.

    gateway bench local [--quick] [--parts servers,two_models,tiers,grammar] [--json FILE]
                        [--preset tiny|3b] [--streams 1,4,16] [--tokens N] [--rounds R] [--repeat K]
                        [--systems LIST] [--batch-size 16] [--blas-threads N] [--profile DIR]
                        [--server-args "MORE mlx_lm.server OPTIONS"]
                        [--two-model-streams 4] [--tiers tiny,3b,7b,14b] [--tier-streams 1,4]
                        [--grammar-tokens 128] [--grammar-rounds 5]

Four parts, each a module here: `servers` (batching on and off, mlx_lm.server, the bare loop),
`two_models` (one model against two served at once), `tiers` (the gateway on 4-bit models of
each size tier, as far as the machine's memory allows) and `grammar` (what structured output and the
sampling fields cost per token). Their docstrings say what each measures and
how. The exit status is 1 if any request failed.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gateway.bench.harness.options import name_list
from gateway.bench.harness.progress import Progress
from gateway.bench.harness.runner import scenario_main
from gateway.bench.local import grammar, servers, tiers, two_models

__all__ = ["PARTS", "add_arguments", "main", "run_scenario", "table"]

PARTS = ("servers", "two_models", "tiers", "grammar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--parts",
        type=name_list(PARTS, "parts"),
        default=list(PARTS),
        help="what to run: " + ", ".join(PARTS),
    )
    servers.add_arguments(
        parser.add_argument_group("servers: batching on and off, mlx_lm.server, the bare loop")
    )
    two_models.add_arguments(parser.add_argument_group("two_models: one model against two served at once"))
    tiers.add_arguments(parser.add_argument_group("tiers: 4-bit models of each size tier"))
    grammar.add_arguments(
        parser.add_argument_group("grammar: structured output and sampling fields per token")
    )


def run_scenario(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    result: dict[str, Any] = {"parts": args.parts}
    if "servers" in args.parts:
        result["servers"] = servers.run_part(args, progress)
    if "two_models" in args.parts:
        result["two_models"] = two_models.run_part(args, progress)
    if "tiers" in args.parts:
        result["tiers"] = tiers.run_part(args, progress)
    if "grammar" in args.parts:
        result["grammar"] = grammar.run_part(args, progress)
    result["failed_requests"] = sum(result[part]["failed_requests"] for part in args.parts)
    return result


def table(result: dict[str, Any]) -> str:
    sections = []
    if "servers" in result:
        found = result["servers"]
        sections.append(
            f"servers: {found['preset']} model, {found['max_tokens']} tokens per request, "
            f"{found['rounds']} per stream; {found['blas']}\n\n" + servers.servers_table(found)
        )
    if "two_models" in result:
        sections.append(two_models.table(result["two_models"]))
    if "tiers" in result:
        sections.append(tiers.table(result["tiers"]))
    if "grammar" in result:
        sections.append(grammar.table(result["grammar"]))
    return "\n\n".join(sections)


def main(argv: list[str] | None = None) -> int:
    """`python -m gateway.bench.local ...` is `gateway bench local ...`."""
    return scenario_main("local", sys.modules[__name__], argv)
