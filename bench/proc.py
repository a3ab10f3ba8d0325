"""CPU accounting from /proc, shared by the benchmarks: what a process, its threads, this process and
the whole machine spent, so every result can say who was busy while it was measured."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = [
    "CLOCK_TICKS",
    "cpu_seconds",
    "descendants",
    "machine_busy_seconds",
    "own_cpu_seconds",
    "thread_cpu_seconds",
    "tree_cpu_seconds",
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
