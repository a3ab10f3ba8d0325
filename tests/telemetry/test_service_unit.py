"""Telemetry's lifecycle (`gateway.telemetry.service.Telemetry`) in process: tracing set up at start
and again only when a reload changes what it is built from, a tracing fault never failing start or
reload, and the gauges synced from the live runtime and the audit stats. Logfire itself is swapped
for a recorder at `tracing.configure_logfire` (the seam the service calls); no spans leave."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from gateway import tracing
from gateway.config.load import parse_config
from gateway.config.model import LogfireConfig
from gateway.routing.table import Runtime
from gateway.runtime.compile import compile_runtime
from gateway.telemetry.service import Telemetry, _tracing_key

BASE = """
backends:
  b: {type: openai_compatible, base_url: "http://127.0.0.1:1/v1"}
models:
  chat: {chain: [{backend: b}]}
telemetry:
  logfire: {enabled: true, service_name: NAME, project_url: "URL"}
"""


def runtime(name: str = "gw", url: str = "https://a.example") -> Runtime:
    config = parse_config(BASE.replace("NAME", name).replace("URL", url).encode(), Path("/tmp/gateway.yaml"))
    compiled, _ = compile_runtime(config, None, f"v-{name}-{url}")
    return compiled


class Configured:
    """Stands in for `tracing.configure_logfire`: records each config, answers None (tracing off) or
    raises `error`."""

    def __init__(self) -> None:
        self.calls: list[LogfireConfig] = []
        self.error: Exception | None = None

    def __call__(self, config: LogfireConfig, env: Any = None) -> None:
        self.calls.append(config)
        if self.error is not None:
            raise self.error


class Audit:
    def stats(self) -> dict[str, Any]:
        return {"enabled": False}


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch) -> Configured:
    recorder = Configured()
    monkeypatch.setattr(tracing, "configure_logfire", recorder)
    return recorder


class Live:
    def __init__(self, current: Runtime) -> None:
        self.current: Runtime | None = current

    def __call__(self) -> Runtime | None:
        return self.current


async def started(live: Live) -> Telemetry:
    telemetry = Telemetry()
    await telemetry.start(live, Audit())
    return telemetry


async def test_start_sets_tracing_up_once_from_the_config(configured: Configured) -> None:
    telemetry = await started(Live(runtime("gw")))
    assert [c.service_name for c in configured.calls] == ["gw"]
    assert telemetry.tracing_settled
    await telemetry.close()


async def test_a_tracing_fault_at_start_is_logged_not_raised(
    configured: Configured, caplog: pytest.LogCaptureFixture
) -> None:
    configured.error = RuntimeError("no exporter")
    caplog.set_level(logging.ERROR, logger="gateway.telemetry")
    telemetry = await started(Live(runtime()))
    assert [r.event for r in caplog.records] == ["tracing_failed"]  # type: ignore[attr-defined]
    assert "tracing not started: no exporter" in caplog.records[0].getMessage()
    await telemetry.close()


async def test_a_reload_changing_only_the_project_link_does_not_retrace(configured: Configured) -> None:
    live = Live(runtime(url="https://a.example"))
    telemetry = await started(live)
    live.current = runtime(url="https://b.example")
    telemetry.on_reload("applied", live.current.version)
    assert telemetry.tracing_settled
    assert len(configured.calls) == 1
    await telemetry.close()


async def test_a_reload_changing_the_service_name_retraces(configured: Configured) -> None:
    live = Live(runtime("gw"))
    telemetry = await started(live)
    live.current = runtime("renamed")
    telemetry.on_reload("applied", live.current.version)
    assert not telemetry.tracing_settled
    await telemetry._retracing  # type: ignore[misc]
    assert telemetry.tracing_settled
    assert [c.service_name for c in configured.calls] == ["gw", "renamed"]
    await telemetry.close()


async def test_a_failed_reload_changes_nothing(configured: Configured) -> None:
    live = Live(runtime("gw"))
    telemetry = await started(live)
    live.current = runtime("renamed")  # (what a failed reload would not install; the outcome says so)
    telemetry.on_reload("failed", None)
    assert telemetry.tracing_settled
    assert len(configured.calls) == 1
    await telemetry.close()


async def test_a_tracing_fault_on_reload_keeps_the_reload_and_settles(
    configured: Configured, caplog: pytest.LogCaptureFixture
) -> None:
    live = Live(runtime("gw"))
    telemetry = await started(live)
    configured.error = RuntimeError("collector gone")
    caplog.set_level(logging.ERROR, logger="gateway.telemetry")
    live.current = runtime("renamed")
    telemetry.on_reload("applied", live.current.version)
    await telemetry._retracing  # type: ignore[misc]
    assert telemetry.tracing_settled
    assert len(configured.calls) == 2  # tried once for these settings, not again and again
    assert "tracing not reconfigured after the reload: collector gone" in caplog.text
    await telemetry.close()


def test_the_tracing_key_leaves_out_the_project_link() -> None:
    one = LogfireConfig(enabled=True, service_name="gw", environment="prod", project_url="https://a")
    assert _tracing_key(one) == (True, "gw", "prod")


async def test_sync_reads_the_runtime_and_audit_stats(configured: Configured) -> None:
    telemetry = await started(Live(runtime()))
    telemetry.sync()  # no error with a live runtime and the audit off
    await telemetry.close()
    await telemetry.close()  # closing twice is harmless
