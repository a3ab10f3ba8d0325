"""The telemetry of one app: its metrics, the per-request reporting, and tracing's lifecycle.

Started after the config is loaded (`telemetry.*` comes from it) and closed at shutdown. A reload
applies all of `telemetry.*`: `prometheus` and `logging` at once, `logfire` by configuring a new
Logfire instance off the event loop (configuring is slow) and then switching spans to it (or off).
A tracing fault is logged, never a reason to fail the reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway import tracing
from gateway.config.model import LogfireConfig, LoggingConfig
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
        #: The `telemetry.logfire` settings tracing was last set up for, and the latest config's.
        self._traced_for: LogfireConfig | None = None
        self._trace_for: LogfireConfig | None = None
        self._retracing: asyncio.Task[None] | None = None

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
        self._trace_for = self._traced_for = config.logfire
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
            _log_tracing_on(config.logfire.service_name, given=self._given is not None)
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
            self._trace_for = config.logfire
            if self._given is None and not self._traced_as_wanted() and self._retracing is None:
                self._retracing = asyncio.get_running_loop().create_task(self._retrace())

    def _traced_as_wanted(self) -> bool:
        wanted, done = self._trace_for, self._traced_for
        return wanted is None or (done is not None and _tracing_key(wanted) == _tracing_key(done))

    @property
    def tracing_settled(self) -> bool:
        """Whether tracing runs as the live config's `telemetry.logfire` says (no change pending)."""
        return self._retracing is None

    async def _retrace(self) -> None:
        """Set tracing up for the latest `telemetry.logfire` (again while reloads change it meanwhile)."""
        try:
            while not self._traced_as_wanted():
                wanted = self._trace_for
                assert wanted is not None
                try:
                    instance = await asyncio.to_thread(tracing.configure_logfire, wanted)
                except Exception as error:  # the old tracing (or none) goes on; the reload stands
                    log.error(
                        "tracing not reconfigured after the reload: %s",
                        error,
                        extra={"event": "tracing_failed", "error": type(error).__name__},
                    )
                    self._traced_for = wanted
                    continue
                release = tracing.replace(instance, owned=True)
                self._tracing, self._traced_for = instance, wanted
                if instance is not None:
                    _log_tracing_on(wanted.service_name, given=False)
                else:
                    log.info(
                        "tracing off (%s)",
                        "telemetry.logfire.enabled is false"
                        if not wanted.enabled
                        else "nothing receives spans: no LOGFIRE_TOKEN, no OTLP endpoint",
                        extra={"event": "tracing_off"},
                    )
                await asyncio.to_thread(release)
        finally:
            self._retracing = None

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
        if self._retracing is not None:
            with contextlib.suppress(Exception):
                await self._retracing
        if self._tracing is not None:
            instance, self._tracing = self._tracing, None
            tracing.uninstall(instance)


def _tracing_key(config: LogfireConfig) -> tuple[bool, str, str]:
    """What of `telemetry.logfire` tracing is set up from (`project_url` is the panel's link only)."""
    return (config.enabled, config.service_name, config.environment)


def _log_tracing_on(service_name: str, *, given: bool) -> None:
    log.info(
        "tracing on (%s)",
        "given Logfire instance" if given else tracing.destination(),
        extra={"event": "tracing_on", "service_name": service_name},
    )
