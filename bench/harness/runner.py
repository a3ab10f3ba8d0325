"""Running one scenario the way `gateway bench SCENARIO` does: the options every scenario has
(`--quick`, `--json`, `--no-progress`), the progress line, the result envelope (scenario, command,
start, duration, machine) written as JSON, the table on stdout. `bench/cli.py` runs whichever
scenario was asked for through it; a scenario's own `python -m gateway.bench.X` runs itself through
it, so a scenario never imports the command that lists them all.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from gateway.bench.harness.progress import Progress, say
from gateway.bench.harness.results import RESULTS_DIR, default_result_path, machine, write_result

__all__ = ["add_common_arguments", "description", "run_scenario", "scenario_main"]


def add_common_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="a short smoke run (tests, CI); numbers mean little"
    )
    parser.add_argument(
        "--json",
        type=Path,
        help=f"result file (default: {RESULTS_DIR}/{name}.json; {name}-quick.json with --quick)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress output on stderr")


def description(module: ModuleType, fallback: str) -> str:
    """A scenario's first docstring paragraph (its --help text)."""
    return (module.__doc__ or fallback).strip().split("\n\n")[0]


def run_scenario(name: str, module: ModuleType, args: argparse.Namespace, argv: list[str]) -> int:
    """Run the scenario `module` with parsed `args`; print its table, write its result file. `argv`
    (after `gateway bench`) goes into the result as the command that reruns it. Exit status 1 if any
    request failed."""
    command = "gateway bench " + " ".join(shlex.quote(a) for a in argv)
    progress = Progress(f"bench {name}", enabled=not args.no_progress)
    started = time.time()
    with progress:
        found: dict[str, Any] = module.run_scenario(args, progress)
    result = {
        "scenario": name,
        "quick": args.quick,
        "command": command,
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1),
        "machine": machine(),
        **found,
    }
    path = args.json or default_result_path(name, args.quick)
    write_result(path, result)
    print(module.table(result))
    if hasattr(module, "print_extra"):
        module.print_extra(result)
    print(f"\nRerun: `{command}`")
    say(f"result: {path}")
    return 1 if result.get("failed_requests") else 0


def scenario_main(name: str, module: ModuleType, argv: list[str] | None = None) -> int:
    """`python -m gateway.bench.NAME ARGS` is `gateway bench NAME ARGS`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog=f"gateway bench {name}",
        description=description(module, name),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_arguments(parser, name)
    module.add_arguments(parser)
    return run_scenario(name, module, parser.parse_args(argv), [name, *argv])
