"""Where the benchmarks write: in a checkout of the repository, its `bench/` folder (results in
`bench/results/`, LiteLLM's virtualenv in `bench/.venvs/`, both git-ignored); in an installed copy,
`./bench-results/` in the current directory and the gateway's cache directory. Generated models go
to the cache directory either way (they outlive a checkout's clean)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CHECKOUT", "RESULTS_DIR", "VENVS_DIR", "cache_dir", "checkout_commit"]


def _checkout() -> Path | None:
    """The repository this package runs from (an editable install or a checkout), else None."""
    root = Path(__file__).resolve().parents[2]  # <root>/bench/harness/paths.py
    return root if (root / "pyproject.toml").is_file() and (root / "bench" / "harness").is_dir() else None


CHECKOUT = _checkout()
RESULTS_DIR = CHECKOUT / "bench" / "results" if CHECKOUT else Path("bench-results")


def cache_dir() -> Path:
    """`$GATEWAY_CACHE_DIR`, else `~/.cache/gateway` (as the admin secret and the tokenizers use)."""
    return Path(os.environ.get("GATEWAY_CACHE_DIR") or Path.home() / ".cache" / "gateway")


VENVS_DIR = CHECKOUT / "bench" / ".venvs" if CHECKOUT else cache_dir() / "bench-venvs"


def checkout_commit() -> str | None:
    """The checkout's commit (short hash, `+changes` when the work tree differs from it); None when
    this is not a git checkout (an installed wheel) or git is missing."""
    import subprocess

    if CHECKOUT is None:
        return None
    try:
        head = subprocess.run(
            ["git", "-C", str(CHECKOUT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(CHECKOUT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+changes" if dirty else "")) or None
