"""Readings from /proc, shared by the benchmarks: the CPU a process, its threads, this process and the
whole machine spent (so every result can say who was busy while it was measured), resident and
available memory, and which BLAS library a process has mapped."""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

__all__ = [
    "CLOCK_TICKS",
    "available_memory",
    "cpu_seconds",
    "descendants",
    "machine_busy_seconds",
    "mapped_blas",
    "own_cpu_seconds",
    "rss_bytes",
    "thread_cpu_seconds",
    "tree_cpu_seconds",
    "wait_for_memory",
]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def descendants(pid: int) -> list[int]:
    """The running children of a process, their children, and so on (from /proc's children lists)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{parent}/task").iterdir():
                with contextlib.suppress(OSError, ValueError):
                    children = [int(c) for c in (task / "children").read_text().split()]
                    found += children
                    pending += children
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its running descendants: a server with worker processes
    (`gateway serve --workers N`) counts as one."""
    return cpu_seconds(pid) + sum(cpu_seconds(child) for child in descendants(pid))


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of a process."""
    found: dict[int, float] = {}
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                found[int(task.name)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return found


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (user, nice, system, irq, softirq, steal)."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def available_memory() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def wait_for_memory(needed: int, timeout: float = 180) -> int:
    """Wait until `needed` bytes are available (the previous system's memory returned); raise if not."""
    deadline = time.monotonic() + timeout
    while True:
        available = available_memory()
        if available >= needed or time.monotonic() > deadline:
            break
        time.sleep(1)
    if available < needed:
        raise RuntimeError(
            f"not enough memory to load the model: {available / 2**30:.1f} GiB available, "
            f"{needed / 2**30:.1f} GiB needed (stop other processes that hold large models)"
        )
    return available


def mapped_blas(pid: int) -> list[str]:
    """The BLAS/LAPACK libraries a process has mapped, in the order of its memory map."""
    try:
        text = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return []
    found: list[str] = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and re.search(r"(blas|lapack)[^/]*\.so", parts[5]) and parts[5] not in found:
            found.append(parts[5])
    return found
