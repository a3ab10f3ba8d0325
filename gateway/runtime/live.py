"""The live Runtime and the two steps that replace it: `LiveRuntime.prepare` and `LiveRuntime.swap`.

*Prepare* (parse, validate, exposure check, compile, start new backends) may fail and touches nothing
live; *swap* (one attribute assignment) cannot fail. The replaced Runtime's backends that the new one
does not reuse are closed once its last request has finished. File watch, SIGHUP and the admin API's
reload call `reload` (read the file, prepare, swap); a write-back edit (`gateway.runtime.edit`) runs
the same prepare and swap around writing the file, under the same lock.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter
from typing import Any, Literal

from gateway.auth import exposure_issue
from gateway.backends.base import Backend
from gateway.backends.mlx.store import LocalModelStore
from gateway.cache import CacheStore
from gateway.config.issues import ConfigError, ConfigIssue, Location
from gateway.config.load import config_version, parse_config
from gateway.config.model import Config
from gateway.config.yamlsource import parse_yaml
from gateway.limits import Clock, system_clock
from gateway.routing.canary import RollbackBook
from gateway.routing.table import Runtime
from gateway.runtime.compile import compile_runtime

__all__ = ["LiveRuntime", "PreparedRuntime", "ReloadEvent"]

log = logging.getLogger("gateway.config")

Outcome = Literal["applied", "unchanged", "rejected"]


@dataclass(frozen=True, slots=True)
class ReloadEvent:
    """One attempt to load the config: what triggered it and how it ended."""

    at: datetime
    source: str
    outcome: Outcome
    version: str | None
    previous_version: str | None
    issues: tuple[ConfigIssue, ...] = ()
    duration_ms: float = 0.0
    rebuilt_backends: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "source": self.source,
            "outcome": self.outcome,
            "version": self.version,
            "previous_version": self.previous_version,
            "errors": [issue.as_dict() for issue in self.issues],
            "duration_ms": round(self.duration_ms, 3),
            "rebuilt_backends": list(self.rebuilt_backends),
        }


@dataclass(frozen=True, slots=True)
class PreparedRuntime:
    """A Runtime built from `raw` with its new backends started, not yet live: `swap` it in, or
    `discard` it. Only valid while the lock it was prepared under is held (it reuses `previous`'s
    backends)."""

    runtime: Runtime
    version: str
    source: str
    previous: Runtime | None
    #: The backends this Runtime built and started (the rest are `previous`'s, carried over).
    created: tuple[Backend, ...]
    #: `perf_counter()` when the attempt began: the recorded duration counts from here.
    started: float


class LiveRuntime:
    """Holds the Runtime that new requests use. `current` is read on every request; nothing else is."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        host: str | None = None,
        env: Mapping[str, str] | None = None,
        history: int = 100,
        clock: Clock = system_clock,
    ) -> None:
        self.path = Path(path)
        #: The time the limits read (windows, budget periods); tests pass a manual clock.
        self.clock = clock
        #: The address actually bound (CLI flags may override the file); used for the exposure check.
        self.host = host
        self.env = env
        self.current: Runtime | None = None
        self.history: deque[ReloadEvent] = deque(maxlen=history)
        self.last_error: ReloadEvent | None = None
        self.listeners: list[Callable[[ReloadEvent], None]] = []
        #: True while the file watcher (`gateway.runtime.watch`) has its watch in place: a save made
        #: after this turned true is seen. Tests and the admin API read it instead of waiting a while.
        self.watching = False
        #: Held by every change of `current`: reload, and the edit transaction from its read of the
        #: file to its swap. Whoever holds it may call `prepare`, `swap` and `discard`.
        self.lock = asyncio.Lock()
        #: Loaded local models, shared by every Runtime of this process.
        self.local_models = LocalModelStore()
        #: Canary rollbacks of this process, applied to every Runtime compiled after them.
        self.rollbacks = RollbackBook()
        self._retiring: set[asyncio.Task[None]] = set()

    async def start(self) -> Runtime:
        """Load the config for the first time. Raises ConfigError: a server never starts on a bad file."""
        event = await self.reload("startup")
        if event.outcome == "rejected":
            raise ConfigError(list(event.issues))
        assert self.current is not None
        return self.current

    async def reload(self, source: str) -> ReloadEvent:
        """Load the file again and, if it is new and valid, make it the live config."""
        async with self.lock:
            started = perf_counter()
            previous = self.current
            previous_version = previous.version if previous else None
            try:
                raw = await self._read()
            except OSError as error:
                issue = ConfigIssue(
                    str(self.path), Location(1, 1), "", f"cannot read file: {error.strerror or error}"
                )
                return self._record(source, "rejected", None, previous_version, started, (issue,))
            version = config_version(raw)
            if previous is not None and version == previous.version:
                return self.unchanged(source, started)
            try:
                prepared = await self.prepare(raw, source, started=started)
            except ConfigError as error:
                return self._record(source, "rejected", version, previous_version, started, error.issues)
            except Exception as error:
                # A file the loader does not cope with is still a rejected reload, never one that
                # vanishes from the history (and the watcher's log) as an exception.
                log.exception("loading the config failed unexpectedly", extra={"event": "config_load_failed"})
                message = f"the config could not be loaded ({type(error).__name__}); see the gateway log"
                issue = ConfigIssue(str(self.path), Location(1, 1), "", message)
                return self._record(source, "rejected", version, previous_version, started, (issue,))
            return self.swap(prepared)

    async def _read(self) -> bytes:
        # An editor saving by rename leaves a moment with no file; give it that moment.
        for attempt in range(5):
            try:
                return await asyncio.to_thread(self.path.read_bytes)
            except FileNotFoundError:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.05)
        raise AssertionError("unreachable")  # pragma: no cover

    async def check(self, raw: bytes) -> Config:
        """Parse and validate `raw` and run the exposure check: every check of `prepare` short of
        building and starting backends. Raises ConfigError."""
        config = await asyncio.to_thread(parse_config, raw, self.path, env=self.env)
        problem = exposure_issue(config, self.host or config.server.host)
        if problem:
            where = _locate(raw, str(self.path), ("auth",), self.env)
            raise ConfigError([ConfigIssue(str(self.path), where, "auth", problem)])
        return config

    async def prepare(self, raw: bytes, source: str, *, started: float | None = None) -> PreparedRuntime:
        """Build the Runtime for config file content `raw` and start its new backends; nothing live
        changes. Raises ConfigError (and has closed what it started). Call with `lock` held."""
        started = perf_counter() if started is None else started
        config = await self.check(raw)
        previous = self.current
        runtime, created = compile_runtime(
            config, previous, source, self.local_models, self.clock, self.rollbacks
        )
        running: list[Backend] = []
        failing: Backend | None = None
        try:
            for failing in created:
                await failing.start()
                running.append(failing)
        except Exception as error:
            for backend in running:
                await backend.close()
            await _close_new_store(runtime, previous)
            path = f"backends.{failing.name}" if failing is not None else "backends"
            keys = ("backends", failing.name) if failing is not None else ("backends",)
            where = _locate(raw, str(self.path), keys, self.env)
            issue = ConfigIssue(str(self.path), where, path, f"backend failed to start: {error}")
            raise ConfigError([issue]) from error
        return PreparedRuntime(runtime, config.version, source, previous, tuple(created), started)

    def swap(self, prepared: PreparedRuntime) -> ReloadEvent:
        """Make `prepared` the live Runtime and record the applied reload. Call with `lock` held."""
        previous = self.current
        if previous is not prepared.previous:
            # Only a caller that let go of the lock between prepare and swap gets here.
            raise RuntimeError("the Runtime was prepared against one that is no longer live")
        self.current = prepared.runtime  # the swap
        self.last_error = None
        if previous is not None:
            self._retire(previous, prepared.runtime)
        return self._record(
            prepared.source,
            "applied",
            prepared.version,
            previous.version if previous else None,
            prepared.started,
            rebuilt=tuple(b.name for b in prepared.created),
        )

    async def discard(self, prepared: PreparedRuntime) -> None:
        """Close the backends (and the limits store) `prepared` started: it will not be swapped in."""
        for backend in prepared.created:
            try:
                await backend.close()
            except Exception:  # a failing close must not stop the others
                log.exception("closing backend %s failed", backend.name)
        await _close_new_store(prepared.runtime, prepared.previous)

    def unchanged(self, source: str, started: float) -> ReloadEvent:
        """Record that `source` found the live version already in place. Call with `lock` held."""
        # The file is the live version again: any earlier error about it is moot.
        self.last_error = None
        version = self.current.version if self.current else None
        return self._record(source, "unchanged", version, version, started)

    def _retire(self, old: Runtime, new: Runtime) -> None:
        kept = {id(b) for b in new.backends.values()}
        dropped = [b for b in old.backends.values() if id(b) not in kept]
        store = old.limits.store if old.limits.store is not new.limits.store else None
        cache = _own_cache_store(old, new)
        if not dropped and store is None and cache is None:
            return

        async def release() -> None:
            await old.drained()
            for backend in dropped:
                try:
                    await backend.close()
                except Exception:  # a failing close must not stop the others
                    log.exception("closing backend %s failed", backend.name)
            if store is not None:  # `limits` changed: the old counters go with it
                try:
                    await store.close()
                except Exception:
                    log.exception("closing the limits store failed")
            if cache is not None:  # `cache` changed: the old entries go with it
                try:
                    await cache.close()
                except Exception:
                    log.exception("closing the cache store failed")

        task = asyncio.get_running_loop().create_task(release())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _record(
        self,
        source: str,
        outcome: Outcome,
        version: str | None,
        previous_version: str | None,
        started: float,
        issues: tuple[ConfigIssue, ...] = (),
        rebuilt: tuple[str, ...] = (),
    ) -> ReloadEvent:
        event = ReloadEvent(
            at=datetime.now(UTC),
            source=source,
            outcome=outcome,
            version=version,
            previous_version=previous_version,
            issues=tuple(issues),
            duration_ms=(perf_counter() - started) * 1000,
            rebuilt_backends=rebuilt,
        )
        if outcome != "unchanged":
            self.history.append(event)
        if outcome == "rejected":
            self.last_error = event
            log.error(
                "config rejected; still serving version %s",
                previous_version,
                extra={"event": "config_rejected", "source": source, "errors": [str(i) for i in issues]},
            )
        elif outcome == "applied":
            log.info(
                "config %s applied",
                version,
                extra={
                    "event": "config_applied",
                    "source": source,
                    "config_version": version,
                    "previous_version": previous_version,
                    "rebuilt_backends": list(rebuilt),
                },
            )
        for listener in self.listeners:
            listener(event)
        return event

    async def retired(self) -> None:
        """Return once every replaced Runtime has been released (its last request finished, the
        backends and stores the new one does not reuse closed). Tests await this instead of a while."""
        while pending := [task for task in self._retiring if not task.done()]:
            await asyncio.gather(*pending, return_exceptions=True)

    async def close(self) -> None:
        """Close every backend (at shutdown, after the server stopped taking requests)."""
        for task in list(self._retiring):
            task.cancel()
        if self.current is not None:
            for backend in self.current.backends.values():
                await backend.close()
            await self.current.limits.store.close()
            if self.current.cache is not None:
                await self.current.cache.store.close()
        await self.local_models.close()


async def _close_new_store(runtime: Runtime, previous: Runtime | None) -> None:
    """Close `runtime`'s limits store if it built its own (it is not the live one's)."""
    if previous is None or runtime.limits.store is not previous.limits.store:
        try:
            await runtime.limits.store.close()
        except Exception:
            log.exception("closing the limits store failed")
    cache = _own_cache_store(runtime, previous)
    if cache is not None:
        try:
            await cache.close()
        except Exception:
            log.exception("closing the cache store failed")


def _own_cache_store(runtime: Runtime, other: Runtime | None) -> CacheStore | None:
    """`runtime`'s cache store when `other` does not share it (None: shared, or none)."""
    if runtime.cache is None:
        return None
    if other is not None and other.cache is not None and other.cache.store is runtime.cache.store:
        return None
    return runtime.cache.store


def _locate(raw: bytes, name: str, keys: tuple[str, ...], env: Mapping[str, str] | None) -> Location:
    """Where `keys` is in the file (for an issue found after parsing; only on that failure path)."""
    try:
        doc, _ = parse_yaml(raw.decode("utf-8-sig"), name, env, strict_env=False)
    except UnicodeDecodeError:
        return Location(1, 1)
    return doc.key_location(keys) if doc is not None else Location(1, 1)
