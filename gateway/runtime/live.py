"""The live Runtime and the one function that replaces it: `LiveRuntime.reload`.

Reload is *prepare* (read, parse, validate, compile, start new backends: may fail, touches nothing
live) then *swap* (one attribute assignment: cannot fail). The replaced Runtime's backends that the
new one does not reuse are closed once its last request has finished. File watch, SIGHUP, the admin
API and write-back all call `reload`.
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
from gateway.config.issues import ConfigError, ConfigIssue, Location
from gateway.config.load import config_version, parse_config
from gateway.routing.table import Runtime
from gateway.runtime.compile import compile_runtime

__all__ = ["LiveRuntime", "ReloadEvent"]

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


class LiveRuntime:
    """Holds the Runtime that new requests use. `current` is read on every request; nothing else is."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        host: str | None = None,
        env: Mapping[str, str] | None = None,
        history: int = 100,
    ) -> None:
        self.path = Path(path)
        #: The address actually bound (CLI flags may override the file); used for the exposure check.
        self.host = host
        self.env = env
        self.current: Runtime | None = None
        self.history: deque[ReloadEvent] = deque(maxlen=history)
        self.last_error: ReloadEvent | None = None
        self.listeners: list[Callable[[ReloadEvent], None]] = []
        self._lock = asyncio.Lock()
        #: Loaded local models, shared by every Runtime of this process.
        self.local_models = LocalModelStore()
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
        async with self._lock:
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
                # Same bytes as the live version: nothing to do, and any earlier error is now moot.
                self.last_error = None
                return self._record(source, "unchanged", version, previous_version, started)
            try:
                runtime, created = await self._prepare(raw, previous, source)
            except ConfigError as error:
                return self._record(source, "rejected", version, previous_version, started, error.issues)
            self.current = runtime  # the swap
            self.last_error = None
            if previous is not None:
                self._retire(previous, runtime)
            rebuilt = tuple(b.name for b in created)
            return self._record(source, "applied", version, previous_version, started, rebuilt=rebuilt)

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

    async def _prepare(
        self, raw: bytes, previous: Runtime | None, source: str
    ) -> tuple[Runtime, list[Backend]]:
        config = await asyncio.to_thread(parse_config, raw, self.path, env=self.env)
        problem = exposure_issue(config, self.host or config.server.host)
        if problem:
            raise ConfigError([ConfigIssue(str(self.path), Location(1, 1), "auth", problem)])
        runtime, created = compile_runtime(config, previous, source, self.local_models)
        started: list[Backend] = []
        failing: Backend | None = None
        try:
            for failing in created:
                await failing.start()
                started.append(failing)
        except Exception as error:
            for backend in started:
                await backend.close()
            path = f"backends.{failing.name}" if failing is not None else "backends"
            issue = ConfigIssue(str(self.path), Location(1, 1), path, f"backend failed to start: {error}")
            raise ConfigError([issue]) from error
        return runtime, created

    def _retire(self, old: Runtime, new: Runtime) -> None:
        kept = {id(b) for b in new.backends.values()}
        dropped = [b for b in old.backends.values() if id(b) not in kept]
        if not dropped:
            return

        async def release() -> None:
            await old.drained()
            for backend in dropped:
                try:
                    await backend.close()
                except Exception:  # a failing close must not stop the others
                    log.exception("closing backend %s failed", backend.name)

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

    async def close(self) -> None:
        """Close every backend (at shutdown, after the server stopped taking requests)."""
        for task in list(self._retiring):
            task.cancel()
        if self.current is not None:
            for backend in self.current.backends.values():
                await backend.close()
        await self.local_models.close()
