"""The config edit transaction: check the version the editor read, plan the edit as text, prepare the
Runtime it describes with every check a reload makes, and only then write the file and swap it in.

All of it runs as one writer: the cross-process lock of the config file (`configlock`) keeps the
workers of `gateway serve --workers N` from interleaving their edits (so one `If-Match` wins once),
and `LiveRuntime.lock` keeps this worker's watcher and SIGHUP reloads out until the swap is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter

from gateway.config.issues import ConfigError
from gateway.config.load import config_version
from gateway.config.writeback import Edit, EditPlan, plan_edits
from gateway.routing.table import Runtime
from gateway.runtime.configlock import ConfigLockTimeout, config_file_lock
from gateway.runtime.live import LiveRuntime, ReloadEvent

__all__ = [
    "LOCK_WAIT_S",
    "ConfigFileUnavailable",
    "EditResult",
    "StaleVersion",
    "WriteBackOff",
    "check_edit",
    "edit_config",
]

#: Plans an edit of the config file: its bytes and path in, the planned text edit out (e.g. a JSON
#: Patch: `functools.partial(plan_patch, ops=...)`). Raises WriteBackError when it cannot be made.
Planner = Callable[[bytes, Path], EditPlan]

log = logging.getLogger("gateway.config")

#: How long an edit waits for another change of the config (in any worker) before it gives up.
LOCK_WAIT_S = 5.0


class StaleVersion(Exception):
    """The file on disk is not the version the edit was made against."""

    def __init__(self, current_version: str) -> None:
        super().__init__(f"the config file changed since it was read; its version is now {current_version}")
        self.current_version = current_version


class WriteBackOff(Exception):
    """`admin.write_back` is false: the edit is valid, nothing was written; `diff` is the patch to commit."""

    def __init__(self, previous_version: str, version: str, diff: str) -> None:
        super().__init__("admin.write_back is false: the config file is not written by the gateway")
        self.previous_version = previous_version
        self.version = version
        self.diff = diff


class ConfigFileUnavailable(Exception):
    """The config file (or a lock file for it) cannot be read or written here."""


@dataclass(frozen=True, slots=True)
class EditResult:
    #: The file's version the edit was made against, and the version of the edited file.
    previous_version: str
    version: str
    diff: str
    #: False when the edit left the file's bytes as they were.
    written: bool
    #: What the edit did to the live config: "applied", or "unchanged" when it already had the result.
    event: ReloadEvent
    #: The Runtime live after the edit.
    runtime: Runtime


async def edit_config(
    live: LiveRuntime,
    edits: Sequence[Edit] | Planner,
    expected_version: str,
    *,
    source: str = "api",
    lock_wait: float = LOCK_WAIT_S,
) -> EditResult:
    """Apply `edits` (scalar edits, or a Planner) to `live`'s config file if it is still at
    `expected_version`, as one transaction.

    Raises StaleVersion (the file changed since it was read), ConfigError (the result would be
    rejected: invalid, exposed, or a backend that cannot start; the file is untouched), WriteBackError
    (the edit cannot be made in this file), WriteBackOff (`admin.write_back: false`: validated,
    nothing written), ConfigLockTimeout, ConfigFileUnavailable.
    """
    # Shielded: a client that hangs up must not stop the transaction between writing and swapping.
    return await asyncio.shield(_edit(live, _planner(edits), expected_version, source, lock_wait))


async def check_edit(
    live: LiveRuntime, edits: Sequence[Edit] | Planner, expected_version: str, *, source: str = "api"
) -> EditPlan:
    """Plan the edit and run every check of the config pipeline on the result (parse, schema,
    cross-field, exposure), short of starting backends; write nothing. For a dry run, and for
    `admin.write_back: false`. Raises as `edit_config` does (but WriteBackOff and the lock errors)."""
    _, _, plan = await _read_and_plan(live, _planner(edits), expected_version)
    with _refusals_logged(source):
        await live.check(plan.new_raw)
    return plan


def _planner(edits: Sequence[Edit] | Planner) -> Planner:
    if callable(edits):
        return edits
    scalar_edits = tuple(edits)
    return lambda raw, path: plan_edits(raw, path, scalar_edits)


async def _edit(
    live: LiveRuntime, plan_edit: Planner, expected: str, source: str, lock_wait: float
) -> EditResult:
    deadline = time.monotonic() + lock_wait
    async with _worker_lock(live, lock_wait):
        started = perf_counter()
        runtime = live.current
        if runtime is None:  # pragma: no cover - edits are served only once the gateway has started
            raise ConfigFileUnavailable("the gateway has not loaded its config yet")
        if not runtime.config.admin.write_back:
            # Nothing will be written or applied, so no writers' lock (a read-only container may have
            # nowhere to put one): validate without starting backends and hand back the patch.
            plan = await check_edit(live, plan_edit, expected, source=source)
            raise WriteBackOff(plan.previous_version, plan.version, plan.diff)
        async with _writers_lock(live, max(0.0, deadline - time.monotonic())):
            real, raw, plan = await _read_and_plan(live, plan_edit, expected)
            if plan.version == runtime.version:
                # The edited file is the live config (usually: the values were already these).
                if plan.changes:
                    await _write(real, plan.new_raw, raw)
                event = live.unchanged(source, started)
                return EditResult(
                    plan.previous_version, plan.version, plan.diff, plan.changes, event, runtime
                )
            with _refusals_logged(source):
                prepared = await live.prepare(plan.new_raw, source, started=started)
            if plan.changes:
                try:
                    await _write(real, plan.new_raw, raw)
                except BaseException:
                    await live.discard(prepared)
                    raise
            event = live.swap(prepared)
            return EditResult(
                plan.previous_version, plan.version, plan.diff, plan.changes, event, prepared.runtime
            )


async def _read_and_plan(
    live: LiveRuntime, plan_edit: Planner, expected: str
) -> tuple[Path, bytes, EditPlan]:
    """The file's real path and bytes, checked against the version the editor read, and the edit."""
    real = Path(os.path.realpath(live.path))  # a Kubernetes-style symlink stays a symlink
    try:
        raw = await asyncio.to_thread(real.read_bytes)
    except OSError as error:
        raise ConfigFileUnavailable(f"cannot read {live.path}: {error.strerror or error}") from None
    current = config_version(raw)
    if current != expected:
        raise StaleVersion(current)
    return real, raw, await asyncio.to_thread(plan_edit, raw, live.path)


@contextlib.asynccontextmanager
async def _worker_lock(live: LiveRuntime, wait: float) -> AsyncIterator[None]:
    """This worker's reload lock: its watcher and SIGHUP reloads wait until the edit is done."""
    try:
        async with asyncio.timeout(wait):
            await live.lock.acquire()
    except TimeoutError:
        raise ConfigLockTimeout("this worker's reload lock", wait) from None
    try:
        yield
    finally:
        live.lock.release()


@contextlib.asynccontextmanager
async def _writers_lock(live: LiveRuntime, wait: float) -> AsyncIterator[None]:
    """The lock every worker's edits share. Taken after the worker's own lock, never while waiting
    for it, so the order is the same everywhere and a worker never holds it while it waits."""
    async with contextlib.AsyncExitStack() as stack:
        try:
            await stack.enter_async_context(config_file_lock(live.path, timeout=wait, env=live.env))
        except OSError as error:
            raise ConfigFileUnavailable(str(error.strerror or error)) from None
        yield


@contextlib.contextmanager
def _refusals_logged(source: str) -> Iterator[None]:
    """A ConfigError here is an edit refused. It is logged, but it is not a reload: the file on disk
    and the live config are both untouched, so `last_error`, the history and the metrics stay as
    they are (they describe what the file did to the live config)."""
    try:
        yield
    except ConfigError as error:
        log.warning(
            "config edit refused; the file was not changed",
            extra={
                "event": "config_edit_rejected",
                "source": source,
                "errors": [str(issue) for issue in error.issues],
            },
        )
        raise


async def _write(real: Path, content: bytes, expected: bytes) -> None:
    try:
        await asyncio.to_thread(replace_file, real, content, expected=expected)
    except OSError as error:
        raise ConfigFileUnavailable(f"cannot write {real}: {error.strerror or error}") from None


def replace_file(real: Path, content: bytes, *, expected: bytes) -> None:
    """Write `content` to a temp file beside `real`, fsync, keep its mode and owner, rename it over
    `real`, fsync the directory. Raises StaleVersion if `real` no longer holds `expected`."""
    status = real.stat()
    fd, temp = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
            out.flush()
            os.fchmod(out.fileno(), status.st_mode & 0o7777)
            with contextlib.suppress(PermissionError):
                os.fchown(out.fileno(), status.st_uid, status.st_gid)
            os.fsync(out.fileno())
        # A person (who takes no lock) may have saved the file since we read it: never overwrite that.
        now = real.read_bytes()
        if hashlib.sha256(now).digest() != hashlib.sha256(expected).digest():
            raise StaleVersion(config_version(now))
        os.replace(temp, real)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    directory = os.open(real.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
