"""Process limits the benchmarks that hold thousands of connections need: the open-files limit,
raised (soft up to hard) before the gateway and the fakes are started, so they inherit it."""

from __future__ import annotations

import resource

__all__ = ["raise_open_files"]


def raise_open_files(wanted: int) -> int:
    """Raise this process's soft `RLIMIT_NOFILE` towards `wanted` (never past the hard limit, never
    lower); the limit now in force. Processes started afterwards inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft
