"""Hot reload from the file system: watch the config file's directory, debounce, call `reload`.

The directory is watched, not the file: editors save by renaming a new file over the old one, and
Kubernetes swaps a `..data` symlink; both replace the inode a file watch would hold.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from watchfiles import Change, awatch

from gateway.runtime.live import LiveRuntime

__all__ = ["watch_config"]

log = logging.getLogger("gateway.config")


async def watch_config(live: LiveRuntime, stop: asyncio.Event, debounce_ms: int = 100) -> None:
    """Reload `live` whenever its file (or a Kubernetes `..data` link beside it) changes, until `stop`."""
    directory = live.path.parent.absolute()
    name = live.path.name

    def relevant(change: Change, changed: str) -> bool:
        base = Path(changed).name
        return base == name or base.startswith("..")

    log.info("watching %s for changes to %s", directory, name, extra={"event": "config_watch"})
    async for _changes in awatch(
        directory,
        watch_filter=relevant,
        debounce=debounce_ms,
        step=20,
        stop_event=stop,
        recursive=False,
        rust_timeout=200,
        yield_on_timeout=False,
    ):
        try:
            await live.reload("file")
        except Exception:  # the watcher must outlive any one bad reload
            log.exception("reload after a file change failed")
