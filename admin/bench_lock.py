"""One backend benchmark at a time across the worker processes of a gateway: an exclusive, non-blocking
`fcntl.flock` on a lock file beside the config's writers' lock (`.gateway.yaml.bench.lock`, or in
the cache or temp directory when the config's directory is read-only), held while a run lasts.

The holder writes who it is (run id, backend, admin, pid) into the file, so a refused worker can say
which run is under way. The kernel drops the lock when the holder's process dies, so a crashed
worker never leaves it held. Instances on other hosts do not share it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path
from typing import Any

import orjson

from gateway.runtime.configlock import lock_file_candidates

__all__ = ["BenchLock", "bench_lock_candidates"]

#: Attempts at the lock while it is held by no run (an empty file): `holder()` probes it briefly.
_TRIES = 3


def bench_lock_candidates(config_path: str | os.PathLike[str]) -> list[Path]:
    """Where the benchmark lock of `config_path` may live, first choice first."""
    return [
        path.with_name(path.name.removesuffix(".lock") + ".bench.lock")
        for path in lock_file_candidates(config_path)
    ]


class BenchLock:
    """The lock, taken with `take()` (never waits) and given back with `release()`."""

    def __init__(self, config_path: str | os.PathLike[str]) -> None:
        self._candidates = bench_lock_candidates(config_path)
        self._fd: int | None = None

    def take(self, holder: dict[str, Any]) -> dict[str, Any] | None:
        """Take the lock and record `holder` in it: None when taken, else what the other holder
        recorded (`{}` when it could not be read). Raises OSError when no lock file can be made."""
        fd = self._open()
        for attempt in range(_TRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                other = _read(fd)
                # Empty: no run holds it, only another worker's `holder()` looking for a moment.
                if other or attempt == _TRIES - 1:
                    os.close(fd)
                    return other
        os.ftruncate(fd, 0)
        os.pwrite(fd, orjson.dumps(holder), 0)
        self._fd = fd
        return None

    def holder(self) -> dict[str, Any] | None:
        """What the process holding the lock recorded, or None when nobody holds it."""
        try:
            fd = self._open()
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return _read(fd)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the descriptor releases the flock

    def _open(self) -> int:
        failures = []
        for index, path in enumerate(self._candidates):
            try:
                if index:
                    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            except OSError as error:
                failures.append(f"{path}: {error.strerror or error}")
        raise OSError(errno.EACCES, f"cannot create the benchmark lock file ({'; '.join(failures)})")


def _read(fd: int) -> dict[str, Any]:
    try:
        value = orjson.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, orjson.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}
