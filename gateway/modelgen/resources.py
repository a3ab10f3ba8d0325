"""Whether a model fits where it is to be created and served: the disk it is written to, and the
memory available to serve it (at most `MEMORY_FRACTION` of it for the weights; the rest is the KV
cache and everything else). A refusal names both figures and the smaller variants that would fit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path

from gateway.modelgen.plan import ModelPlan, format_bytes
from gateway.modelgen.presets import weight_bytes

__all__ = ["MEMORY_FRACTION", "ModelTooLarge", "available_memory_bytes", "resource_problem"]

MEMORY_FRACTION = 0.85  # of the available memory the weights may take; the rest is KV cache and the OS


class ModelTooLarge(Exception):
    """The model would not fit in the available memory or disk."""


def available_memory_bytes() -> int | None:
    """Memory this process could use: MemAvailable, bounded by a cgroup limit (containers); on macOS
    the physical memory. None if unknown."""
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit != "max" and int(limit) < 1 << 60:
                found.append(int(limit) - int(Path(usage_file).read_text().strip()))
        except (OSError, ValueError):
            continue
    if not found and sys.platform == "darwin":
        with contextlib.suppress(ValueError, OSError):
            found.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return min(found) if found else None


def _free_disk_bytes(path: Path) -> int:
    probe = path.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def resource_problem(path: str | Path, plan: ModelPlan, *, force: bool = False) -> str | None:
    """Why this model should not be created here (disk, or memory unless `force`), else None."""
    need = plan.weight_bytes
    name = plan.preset.name
    what = f"{name} ({plan.dtype}{', 4-bit' if plan.quantize else ''})"
    disk = _free_disk_bytes(Path(path))
    if need + (64 << 20) > disk:
        return (
            f"not enough disk space to create {what}: its weights take {format_bytes(need)} and "
            f"{Path(path).absolute().parent} has {format_bytes(disk)} free." + _suggest(plan, disk)
        )
    memory = None if force else available_memory_bytes()
    if memory is not None and need > MEMORY_FRACTION * memory:
        return (
            f"refusing to create {what}: its weights take {format_bytes(need)} of memory to serve, but this "
            f"machine has {format_bytes(memory)} available (at most {MEMORY_FRACTION:.0%} of it may go to "
            f"weights; the rest is for the KV cache and everything else)."
            + _suggest(plan, MEMORY_FRACTION * memory)
        ) + " Or force it (--force, force=True) to serve it on a bigger machine."
    return None


def _suggest(plan: ModelPlan, limit: float) -> str:
    options = []
    for flags, dtype, quantize in (
        ("--dtype bfloat16", "bfloat16", plan.quantize),
        ("--quantize 4", plan.dtype, 4),
        ("--quantize 4 --dtype bfloat16", "bfloat16", 4),
    ):
        if (dtype, quantize) == (plan.dtype, plan.quantize):
            continue
        size = weight_bytes(plan.preset, dtype, quantize)
        if size < plan.weight_bytes and size <= limit:
            options.append(f"{flags} ({format_bytes(size)})")
    if not options:
        return " Even 4-bit bfloat16 weights would not fit; use a smaller preset or a bigger machine."
    return " Try " + ", or ".join(options) + "."
