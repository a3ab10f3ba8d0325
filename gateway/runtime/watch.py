"""Hot reload from the file system: watch the config file's directory, debounce, call `reload`.

The directory is watched, not the file: editors save by renaming a new file over the old one, and
Kubernetes swaps a `..data` symlink; both replace the inode a file watch would hold.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from watchfiles import Change, awatch

from gateway.config.load import config_version
from gateway.runtime.live import LiveRuntime

__all__ = ["watch_config"]

log = logging.getLogger("gateway.config")


async def watch_config(live: LiveRuntime, stop: asyncio.Event, debounce_ms: int = 100) -> None:
    """Reload `live` whenever its file (or a Kubernetes `..data` link beside it) changes, until `stop`.
    `live.watching` is true while the watch is in place: a change made after it turned true is seen."""
    directory = live.path.parent.absolute()
    name = live.path.name

    def relevant(change: Change, changed: str) -> bool:
        base = Path(changed).name
        return base == name or base.startswith("..")

    try:
        # Quiet rounds (`rust_timeout`) come back as an empty set: the first one, or the first change,
        # proves the watch is in place, so `live.watching` (and the admin API) can say so.
        async for changes in awatch(
            directory,
            watch_filter=relevant,
            debounce=debounce_ms,
            step=20,
            stop_event=stop,
            recursive=False,
            rust_timeout=200,
            yield_on_timeout=True,
        ):
            if not live.watching:
                live.watching = True
                log.info("watching %s for changes to %s", directory, name, extra={"event": "config_watch"})
            if not changes:
                continue
            try:
                event = await live.reload("file")
                if event.outcome == "rejected":
                    await _read_again_if_changed(live, event.version, debounce_ms)
            except Exception:  # the watcher must outlive any one bad reload
                log.exception("reload after a file change failed")
    finally:
        live.watching = False


async def _read_again_if_changed(live: LiveRuntime, rejected: str | None, debounce_ms: int) -> None:
    """A rejected file may be caught mid-save: an editor that truncates, then writes, shows an empty
    file first. The write's own change event normally brings the next reload; in case it was folded
    into the round just handled, read the file once more after the debounce, if it changed since."""
    await asyncio.sleep(debounce_ms / 1000)
    try:
        raw = await asyncio.to_thread(live.path.read_bytes)
    except OSError:
        return  # gone or unreadable: the next change event (or none) decides
    if config_version(raw) != rejected:
        await live.reload("file")
