"""What every benchmark result shares: the machine it ran on, where its JSON file goes, and Markdown
tables (what the terminal shows is what PERFORMANCE.md pastes)."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from gateway.bench.harness.paths import RESULTS_DIR

__all__ = ["RESULTS_DIR", "default_result_path", "machine", "markdown_table", "ms", "write_result"]

PACKAGES = ("gateway", "hypercorn", "h11", "quart", "aiohttp", "orjson", "mlx", "mlx-lm")


def default_result_path(scenario: str, quick: bool) -> Path:
    """`bench/results/<scenario>.json` in a checkout (`./bench-results/` when installed); a smoke run
    goes to `<scenario>-quick.json`, so it never replaces a full run's file."""
    return RESULTS_DIR / f"{scenario}{'-quick' if quick else ''}.json"


def write_result(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


def _os_name() -> str:
    with contextlib.suppress(OSError):
        text = Path("/etc/os-release").read_text()
        match = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', text, re.M)
        if match:
            return match.group(1)
    return platform.platform()


def machine(packages: Iterable[str] = PACKAGES) -> dict[str, Any]:
    """CPU, cores, memory, OS, Python and package versions: the "Machine" line of PERFORMANCE.md."""
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    if model == "unknown":
        model = platform.processor() or platform.machine()
    memory = 0.0
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as meminfo:
        memory = int(meminfo.readline().split()[1]) / 2**20
    versions = {}
    for package in packages:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(memory, 1),
        "os": _os_name(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
    }


def ms(value: float | None, digits: int = 2) -> str:
    """Milliseconds for a table cell: fewer decimals as values grow."""
    if value is None:
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric_from: int = 1) -> str:
    """A GitHub Markdown table; columns from `numeric_from` on are right-aligned."""
    lines = [
        "| " + " | ".join(headers) + " |",
        "| " + " | ".join("---" if i < numeric_from else "---:" for i in range(len(headers))) + " |",
    ]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
