"""One writer of the config file at a time, across worker processes: an exclusive `fcntl.flock` on a
lock file, taken with non-blocking retries so that waiting never blocks the event loop.

The lock file sits beside the config (`.gateway.yaml.lock`); when that directory is read-only (a
ConfigMap mount) it is `$GATEWAY_CACHE_DIR/<name>-<hash>.lock` (default `~/.cache/gateway`), then one
in the temp directory. Every worker of one gateway resolves the same config path, so all of them
pick the same file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

__all__ = ["ConfigLockTimeout", "config_file_lock", "lock_file_candidates"]

#: Retry delays while another holder has the lock: short first (an edit takes milliseconds), then
#: capped so a long holder (a reload loading a model) is polled rarely.
_FIRST_DELAY_S = 0.002
_MAX_DELAY_S = 0.05


class ConfigLockTimeout(Exception):
    """Another writer held the config file's lock for longer than the caller would wait."""

    def __init__(self, lock: str, waited: float) -> None:
        super().__init__(f"another change of the config is in progress ({lock} held for over {waited:g} s)")
        self.lock = lock
        self.waited = waited


def lock_file_candidates(
    config_path: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> list[Path]:
    """Where the lock file for `config_path` may live, first choice first."""
    environ = os.environ if env is None else env
    # Not resolved: a Kubernetes ConfigMap's symlink target changes with every update.
    config = Path(os.path.abspath(config_path))
    tag = hashlib.sha256(str(config).encode()).hexdigest()[:16]
    cache = Path(environ.get("GATEWAY_CACHE_DIR") or Path.home() / ".cache" / "gateway")
    temp = Path(tempfile.gettempdir()) / f"gateway-{os.getuid()}"
    return [
        config.parent / f".{config.name}.lock",
        cache / f"{config.name}-{tag}.lock",
        temp / f"{config.name}-{tag}.lock",
    ]


def _open(candidates: list[Path]) -> tuple[int, Path]:
    failures = []
    for index, path in enumerate(candidates):
        try:
            if index:
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
            return os.open(path, flags, 0o600), path
        except OSError as error:
            failures.append(f"{path}: {error.strerror or error}")
    raise OSError(errno.EACCES, f"cannot create a lock file for the config ({'; '.join(failures)})")


@contextlib.asynccontextmanager
async def config_file_lock(
    config_path: str | os.PathLike[str], *, timeout: float, env: Mapping[str, str] | None = None
) -> AsyncIterator[Path]:
    """Hold the exclusive lock of `config_path`'s writers; yields the lock file's path.

    Raises ConfigLockTimeout when it is not had within `timeout` seconds, OSError when no lock file
    can be created anywhere.
    """
    fd, path = await asyncio.to_thread(_open, lock_file_candidates(config_path, env))
    try:
        deadline = time.monotonic() + timeout
        delay = _FIRST_DELAY_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ConfigLockTimeout(f"lock file {path}", timeout) from None
                await asyncio.sleep(min(delay, remaining))
                delay = min(delay * 2, _MAX_DELAY_S)
        try:
            yield path
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
