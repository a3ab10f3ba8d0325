"""Canary rollbacks beyond the request that decided one (`gateway.routing.canary`).

When a worker's canary is rolled back, `CanaryRollbacks`:

1. logs it (event `canary_rolled_back`, with both sides' numbers) and counts it
   (`gateway_canary_rollbacks_total`);
2. tells the other workers of `gateway serve --workers N` at once, through the directory the
   supervisor made for them (`GATEWAY_WORKERS_DIR`): one small JSON file per rollback, which every
   worker watches; each sets that canary's weight to 0 in memory;
3. writes the change into gateway.yaml through the edit transaction (`gateway.runtime.edit`): the
   weight set to 0 and a comment above it saying when and why, nothing else; the reload that follows
   reaches every worker. With `admin.write_back: false` nothing is written: the rollback stays in
   memory (every Runtime compiled after it keeps the canary at 0) and the patch to commit is kept
   for `/admin/api/routing` and the Status page, with a warning in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import itertools
import logging
import os
import tempfile
from collections import deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from watchfiles import awatch

from gateway.config.issues import ConfigError
from gateway.config.load import config_version
from gateway.config.model import CanaryConfig
from gateway.config.writeback import Edit, EditPlan, WriteBackError, plan_commented_edit
from gateway.routing.canary import Rollback, RouteCanary, WindowStats
from gateway.runtime.configlock import ConfigLockTimeout
from gateway.runtime.edit import ConfigFileUnavailable, StaleVersion, WriteBackOff, edit_config
from gateway.runtime.live import LiveRuntime

__all__ = ["WORKERS_DIR_ENV", "CanaryRollbacks", "fingerprint"]

log = logging.getLogger("gateway.routing")

#: The directory the workers of one server share (made and removed by the supervisor).
WORKERS_DIR_ENV = "GATEWAY_WORKERS_DIR"
_PREFIX = "canary-rollback-"
#: Tries of the write-back when the file changes under it (another worker's edit, a person's save).
_WRITE_TRIES = 3


def fingerprint(model: str, config: CanaryConfig) -> str:
    """Names a model's canary settings the same way in every worker (a rollback applies only to the
    canary it judged: changed settings are a new canary)."""
    return hashlib.sha256(f"{model}\0{config!r}".encode()).hexdigest()[:16]


class CanaryRollbacks:
    """This worker's side of canary rollbacks: writes them back, tells and hears the other workers,
    and keeps the recent ones (with their patch when not written) for the admin API."""

    def __init__(
        self,
        live: LiveRuntime,
        count: Callable[[str, str], None] | None = None,
        shared: str | os.PathLike[str] | None = None,
    ) -> None:
        self.live = live
        self.count = count
        self.shared = Path(shared) if shared else None
        #: The recent rollbacks, newest first: what `/admin/api/routing` shows.
        self.history: deque[dict[str, Any]] = deque(maxlen=50)
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        live.rollbacks.listener = self._decided

    # -- decided here ------------------------------------------------------------------------

    def _decided(self, canary: RouteCanary, rollback: Rollback) -> None:
        """Called by the canary, on the request path: log and count now, the rest in the background."""
        entry = {
            "id": f"{os.getpid()}-{next(self._ids)}",
            **rollback.as_dict(),
            "fingerprint": fingerprint(canary.model, canary.config),
            "target": {"backend": canary.config.target.backend, "model": canary.config.target.model},
            "decided_by": os.getpid(),
            "written": None,
            "patch": None,
            "error": None,
        }
        self.history.appendleft(entry)
        log.warning(
            "canary of model %s rolled back (weight %g -> 0): %s",
            canary.model,
            rollback.weight,
            rollback.reason,
            extra={
                "event": "canary_rolled_back",
                "model": canary.model,
                "rule": rollback.rule,
                "canary_target": f"{canary.config.target.backend}/{canary.config.target.model}",
                "canary": rollback.canary.as_dict(),
                "stable": rollback.stable.as_dict(),
                "weight": rollback.weight,
            },
        )
        if self.count is not None:
            self.count(canary.model, rollback.rule)
        task = asyncio.get_running_loop().create_task(self._follow_up(canary, rollback, entry))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _follow_up(self, canary: RouteCanary, rollback: Rollback, entry: dict[str, Any]) -> None:
        await self._tell(entry)
        await self._write_back(canary, rollback, entry)
        await self._tell(entry)  # again, with how the write-back went (the other workers show it)

    async def _write_back(self, canary: RouteCanary, rollback: Rollback, entry: dict[str, Any]) -> None:
        comment = f"canary rolled back by the gateway at {entry['at']} (was weight {rollback.weight:g}): "
        comment += rollback.reason
        planner = functools.partial(_plan, model=canary.model, comment=comment)
        for _ in range(_WRITE_TRIES):
            try:
                raw = await asyncio.to_thread(self.live.path.read_bytes)
                result = await edit_config(self.live, planner, config_version(raw), source="canary")
            except StaleVersion:
                continue
            except WriteBackOff as off:
                entry.update(written=False, patch=off.diff)
                log.warning(
                    "canary of model %s rolled back in memory only (admin.write_back is false): commit "
                    "the patch shown by /admin/api/routing to keep it",
                    canary.model,
                    extra={"event": "canary_rollback_not_written", "model": canary.model},
                )
                return
            except (ConfigError, WriteBackError, ConfigFileUnavailable, ConfigLockTimeout, OSError) as error:
                entry.update(written=False, error=str(error))
                log.error(
                    "canary of model %s rolled back in memory only: writing it into %s failed: %s",
                    canary.model,
                    self.live.path,
                    error,
                    extra={"event": "canary_rollback_not_written", "model": canary.model},
                )
                return
            entry.update(written=result.written, version=result.version, diff=result.diff)
            if result.written:
                log.info(
                    "canary rollback of model %s written into %s",
                    canary.model,
                    self.live.path,
                    extra={
                        "event": "canary_rollback_written",
                        "model": canary.model,
                        "version": result.version,
                    },
                )
            return
        entry.update(written=False, error="the config file kept changing under the write-back")

    # -- the other workers ---------------------------------------------------------------------

    async def _tell(self, entry: dict[str, Any]) -> None:
        if self.shared is None:
            return
        try:
            await asyncio.to_thread(_write_atomically, self.shared / f"{_PREFIX}{entry['id']}.json", entry)
        except OSError as error:
            log.error("cannot tell the other workers of a canary rollback: %s", error)

    async def watch(self, stop: asyncio.Event) -> None:
        """Apply the other workers' rollbacks as they come, until `stop`."""
        if self.shared is None:
            return
        await self.hear()
        async for _changes in awatch(
            self.shared,
            watch_filter=lambda _change, path: Path(path).name.startswith(_PREFIX),
            debounce=20,
            step=20,
            stop_event=stop,
            recursive=False,
            rust_timeout=200,
            yield_on_timeout=False,
        ):
            try:
                await self.hear()
            except Exception:  # the watch must outlive one bad file
                log.exception("reading the other workers' canary rollbacks failed")

    async def hear(self) -> None:
        """Read the shared directory; roll back here what another worker rolled back."""
        assert self.shared is not None
        entries = await asyncio.to_thread(_read_all, self.shared)
        runtime = self.live.current
        for entry in entries:
            own = entry["decided_by"] == os.getpid()
            known = next((e for e in self.history if e["id"] == entry["id"]), None)
            if known is not None:
                if not own:
                    known.update(entry)  # the decider's write-back result
                continue
            if own or runtime is None:
                continue
            self.history.appendleft(entry)
            route = runtime.routes.get(entry["model"])
            canary = route.canary if route is not None else None
            if canary is None:
                continue  # that canary is no longer in this config
            if fingerprint(canary.model, canary.config) != entry["fingerprint"]:
                if _written_here(canary, entry):
                    # The decider's write-back reached this worker (reloaded) before its note did.
                    self._heard(canary.model, entry, via="config")
                continue  # otherwise a changed canary: a new one, not the one judged
            if self.live.rollbacks.told(canary, _rollback(entry)):
                self._heard(canary.model, entry, via="peer")

    def _heard(self, model: str, entry: dict[str, Any], *, via: str) -> None:
        log.info(
            "canary of model %s rolled back, as worker %s decided",
            model,
            entry["decided_by"],
            extra={"event": "canary_rolled_back_by_peer", "model": model, "via": via},
        )
        if self.count is not None:
            self.count(model, "peer")

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _written_here(canary: RouteCanary, entry: dict[str, Any]) -> bool:
    """This worker's canary is the judged one with its weight set to 0 in the file: the rollback's
    write-back, reloaded here."""
    if canary.config.weight != 0:
        return False
    judged = dataclasses.replace(canary.config, weight=float(entry["weight"]))
    return fingerprint(canary.model, judged) == entry["fingerprint"]


def _plan(raw: bytes, path: Path, *, model: str, comment: str) -> EditPlan:
    return plan_commented_edit(raw, path, Edit(("models", model, "canary", "weight"), 0), comment)


def _rollback(entry: dict[str, Any]) -> Rollback:
    def side(raw: dict[str, Any]) -> WindowStats:
        return WindowStats(raw["requests"], raw["errors"], raw["p95_ms"])

    return Rollback(
        entry["model"],
        datetime.fromisoformat(entry["at"]),
        entry["rule"],
        entry["reason"],
        side(entry["canary"]),
        side(entry["stable"]),
        entry["weight"],
    )


def _write_atomically(path: Path, entry: dict[str, Any]) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(orjson.dumps(entry))
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _read_all(directory: Path) -> list[dict[str, Any]]:
    entries = []
    for path in sorted(directory.glob(f"{_PREFIX}*.json")):
        with contextlib.suppress(OSError, orjson.JSONDecodeError):
            entries.append(orjson.loads(path.read_bytes()))
    return entries
