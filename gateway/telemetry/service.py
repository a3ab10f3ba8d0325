"""The telemetry of one app: its metrics, the per-request reporting, and tracing's lifecycle.

Started after the config is loaded (`telemetry.*` comes from it) and closed at shutdown. A reload
applies `telemetry.prometheus` and `telemetry.logging`; `telemetry.logfire` is read at startup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway import tracing
from gateway.config.model import LoggingConfig
from gateway.routing.table import Runtime
from gateway.telemetry.logging import apply_logging
from gateway.telemetry.metrics import GatewayMetrics
from gateway.telemetry.requests import RequestTelemetry

if TYPE_CHECKING:
    from logfire import Logfire

__all__ = ["SYNC_INTERVAL_S", "Telemetry"]

log = logging.getLogger("gateway.telemetry")

#: How often a worker copies its gauges into the shared files (multiprocess mode).
SYNC_INTERVAL_S = 2.0


class Telemetry:
    def __init__(self, logfire_instance: Logfire | None = None) -> None:
        self.metrics = GatewayMetrics()
        self.requests = RequestTelemetry(self.metrics)
        #: A Logfire instance given by the caller (tests): used as is, whatever the config says.
        self._given = logfire_instance
        self._tracing: Logfire | None = None
        self._current: Callable[[], Runtime | None] = lambda: None
        self._audit: Any = None
        self._sync: asyncio.Task[None] | None = None
        self._logging: LoggingConfig | None = None

    async def start(self, current: Callable[[], Runtime | None], audit: Any) -> None:
        """Start with the loaded config; `current()` is the live Runtime, `audit` answers `stats()`.
        The caller reports reloads to `on_reload`."""
        runtime = current()
        assert runtime is not None
        config = runtime.config.telemetry
        self._current, self._audit = current, audit
        self.requests.apply(config)
        self._logging = config.logging  # (applied by `gateway serve` before the app was built)
        self.metrics.set_version(runtime.version)
        instance = self._given
        if instance is None:
            try:
                instance = tracing.configure_logfire(config.logfire)
            except Exception as error:  # traces are not worth refusing to serve for
                log.error(
                    "tracing not started: %s",
                    error,
                    extra={"event": "tracing_failed", "error": type(error).__name__},
                )
        if instance is not None:
            tracing.install(instance, owned=self._given is None)
            self._tracing = instance
            log.info(
                "tracing on (%s)",
                tracing.destination() or "given Logfire instance",
                extra={"event": "tracing_on", "service_name": config.logfire.service_name},
            )
        if self.metrics.multiprocess_dir:
            self._sync = asyncio.create_task(self._sync_periodically())

    def on_reload(self, outcome: str, version: str | None) -> None:
        self.metrics.on_reload(outcome, version)
        runtime = self._current()
        if outcome == "applied" and runtime is not None:
            config = runtime.config.telemetry
            self.requests.apply(config)
            if config.logging != self._logging:
                self._logging = config.logging
                apply_logging(config.logging)

    def sync(self) -> None:
        """Copy breaker, engine and audit state into the gauges (before a scrape, and periodically)."""
        runtime = self._current()
        stats = self._audit.stats() if self._audit is not None else {"enabled": False}
        self.metrics.sync(runtime, stats)

    async def _sync_periodically(self) -> None:
        while True:
            try:
                self.sync()
            except Exception:
                log.exception("updating the metrics gauges failed")
            await asyncio.sleep(SYNC_INTERVAL_S)

    async def close(self) -> None:
        if self._sync is not None:
            self._sync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync
            self._sync = None
        if self._tracing is not None:
            instance, self._tracing = self._tracing, None
            tracing.uninstall(instance)
