"""The fault phases, in the order a run takes them. Each is an `async def phase(run) -> notes`: it
injects its fault while the load keeps running, takes it away, and returns what it saw (the notes
of the result). The load tags every request with the phase it started in; what became of those
requests and their audit records is counted afterwards, for every phase alike (`scenario.py`).

A new fault is a function here and a line in `PHASES`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import re
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.bench.faults.auditdb import PG_HOST, PG_PORT, PostgresDatabases, SqliteLock
from gateway.bench.faults.exposure import probe_same_host_proxy
from gateway.bench.faults.load import FaultLoad
from gateway.bench.faults.slowloris import Slowloris
from gateway.bench.faults.topology import ADMIN_KEY, GatewayConfig, Topology, version_of

from gateway.testing.behaviour import Behaviour
from gateway.testing.forwarder import TcpForwarder

__all__ = ["FUZZ_FUNCTION", "PHASES", "Run", "fuzz_function"]

#: The property-based fuzz the `fuzz` phase runs, as "module:function": called in a thread while the
#: load runs as `function(base_url, cases, models=[...], admin_key=...)` (the signature of
#: `gateway.testing.fuzz.fuzz_gateway`); its report's `failed` (answers that broke the promise: a
#: 5xx, an error not problem+json, a problem without its request_id) must be 0. `--fuzz-function`
#: names another with that signature; the phase is skipped, and says so, when it cannot be imported
#: (the fuzz needs `hypothesis`, from the `dev` extra).
FUZZ_FUNCTION = "gateway.testing.fuzz:fuzz_gateway"
DEFAULT_BEHAVIOUR = Behaviour()


@dataclass
class Run:
    """What the phases share: the processes, the config they edit, the load, the settings."""

    topology: Topology
    config: GatewayConfig
    load: FaultLoad
    settings: dict[str, Any]
    audit_urls: list[str] = field(default_factory=list)  # every database the run wrote to (read direct)
    forwarder: TcpForwarder | None = None
    postgres: PostgresDatabases | None = None

    @property
    def phase_s(self) -> float:
        return float(self.settings["phase_seconds"])

    @property
    def recover_s(self) -> float:
        return float(self.settings["recover_seconds"])

    def write_config(self) -> bytes:
        data = self.config.text().encode()
        self.topology.config_path.write_bytes(data)
        return data

    async def wait_for_version(self, version: str, timeout: float = 10.0) -> float | None:
        """Seconds until the gateway serves config `version` (None if it did not within `timeout`)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            with contextlib.suppress(Exception):
                response = await asyncio.to_thread(self.topology.admin, "/admin/api/config")
                if response.status_code == 200 and response.json().get("version") == version:
                    return round(time.monotonic() - started, 2)
            await asyncio.sleep(0.1)
        return None

    async def audit_metrics(self) -> dict[str, float]:
        """The audit writer's counters and gauges from `/metrics` ({} if the gateway does not answer)."""
        try:
            response = await asyncio.to_thread(self.topology.admin, "/metrics")
        except Exception:
            return {}
        found: dict[str, float] = {}
        for line in response.text.splitlines():
            match = re.match(r'gateway_audit_records_total\{outcome="(\w+)"\} ([0-9.e+]+)', line)
            if match:
                found[match.group(1)] = float(match.group(2))
            for name in ("gateway_audit_buffered_records", "gateway_audit_database_up"):
                if line.startswith(name + " "):
                    found[name.removeprefix("gateway_audit_")] = float(line.split()[1])
            if line.startswith("gateway_audit_failed_batches_total "):
                found["failed_batches"] = float(line.split()[1])
        return found


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    keys = ("written", "spilled", "replayed", "lost", "failed_batches")
    return {key: after.get(key, 0) - before.get(key, 0) for key in keys} if after else {}


# ---------------------------------------------------------------- the phases


async def baseline(run: Run) -> dict[str, Any]:
    """No fault: the reference for every other phase."""
    await asyncio.sleep(run.phase_s)
    return {}


async def upstream_restart(run: Run) -> dict[str, Any]:
    """Both primaries SIGKILLed (connections reset, then refused) and started again on their ports."""
    await asyncio.sleep(run.recover_s / 2)
    for upstream in run.topology.primaries():
        await asyncio.to_thread(upstream.kill)
    await asyncio.sleep(run.phase_s)
    for upstream in run.topology.primaries():
        await asyncio.to_thread(upstream.start)
    await asyncio.sleep(run.recover_s)
    return {"down_s": run.phase_s}


async def _misbehave(run: Run, fields: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(run.recover_s / 2)
    for upstream in run.topology.primaries():
        await asyncio.to_thread(upstream.behave, **fields)
    await asyncio.sleep(run.phase_s)
    for upstream in run.topology.primaries():
        await asyncio.to_thread(upstream.behave, **{key: getattr(DEFAULT_BEHAVIOUR, key) for key in fields})
    await asyncio.sleep(run.recover_s)
    return {"primaries": fields, "for_s": run.phase_s}


async def upstream_reset(run: Run) -> dict[str, Any]:
    """The primaries cut every stream after 3 SSE frames (after the first byte: no failover; the
    client gets the protocol's error event)."""
    return await _misbehave(run, {"drop_after_chunks": 3})


async def upstream_hang(run: Run) -> dict[str, Any]:
    """The primaries accept requests and never answer: `timeouts.chat.first_byte` ends each attempt."""
    notes = await _misbehave(run, {"hang": True})
    return notes | {"first_byte_s": run.config.first_byte_s}


async def storm_5xx(run: Run) -> dict[str, Any]:
    """The primaries answer HTTP 500 to everything."""
    return await _misbehave(run, {"status": 500})


async def storm_429(run: Run) -> dict[str, Any]:
    """The primaries answer HTTP 429 (rate limited) to everything."""
    return await _misbehave(run, {"status": 429})


def _truncated(data: bytes) -> bytes:
    """The file cut inside the first model's chain (a write that stopped there): never valid YAML,
    wherever the description's length puts the middle of the file."""
    return data[: data.index(b"chain: [") + 10]


def _edits(run: Run, count: int) -> list[tuple[str, list[bytes]]]:
    """`count` edits, each (kind, the writes it makes); the last is valid, so the run ends on it."""

    def valid(i: int) -> bytes:
        run.config.description = f"edit {i}"
        return run.config.text().encode()

    kinds: list[tuple[str, Callable[[int], list[bytes]]]] = [
        ("valid", lambda i: [valid(i)]),
        ("invalid schema", lambda i: [valid(i) + b"timeouts_typo: 1\n"]),
        ("empty, then full", lambda i: [b"", valid(i)]),
        ("truncated", lambda i: [_truncated(valid(i))]),
        ("garbage", lambda i: [os.urandom(256)]),
        ("NUL byte", lambda i: [valid(i).replace(b"models:", b"models:\x00", 1)]),
    ]
    edits = []
    for i in range(count - 1):
        kind, make = kinds[i % len(kinds)]
        edits.append((kind, make(i)))
    edits.append(("valid", [valid(count)]))
    return edits


async def config_edits(run: Run) -> dict[str, Any]:
    """`--edits` writes of gateway.yaml, most of them broken (schema errors, an empty file then the
    full one, a truncated file, random bytes, a NUL byte), each written in place as an editor
    without atomic saves would; the last one valid. The gateway must keep serving the last good
    config throughout, and serve the last edit at the end."""
    edits = _edits(run, int(run.settings["edits"]))
    interval = float(run.settings["edit_interval_ms"]) / 1000
    path = run.topology.config_path
    began = time.time()
    kinds: dict[str, int] = {}
    for kind, writes in edits:
        kinds[kind] = kinds.get(kind, 0) + 1
        for i, data in enumerate(writes):
            path.write_bytes(data)
            if i < len(writes) - 1:
                await asyncio.sleep(0.005)
        await asyncio.sleep(interval)
    final = edits[-1][1][-1]
    live_after = await run.wait_for_version(version_of(final))
    notes: dict[str, Any] = {"edits": len(edits), "kinds": kinds, "last_edit_live_after_s": live_after}
    with contextlib.suppress(Exception):
        state = (await asyncio.to_thread(run.topology.admin, "/admin/api/config")).json()
        # The reloads the gateway made of these writes (its history keeps the latest few only).
        outcomes: dict[str, int] = {}
        for event in state.get("history", []):
            if datetime.fromisoformat(event["at"]).timestamp() >= began:
                outcomes[event["outcome"]] = outcomes.get(event["outcome"], 0) + 1
        notes["reloads_in_history"] = outcomes
    if live_after is None:
        notes["problem"] = "the last (valid) edit was not live 10 s after it was written"
    await asyncio.sleep(run.recover_s)
    return notes


async def _wait_audit_recovered(
    run: Run, before: dict[str, float], timeout: float
) -> tuple[float | None, dict[str, float]]:
    """Seconds until the writer is back: database up, every record spilled since `before` replayed,
    the buffer below its spill mark (None if not within `timeout`); the metrics last read."""
    started = time.monotonic()
    metrics: dict[str, float] = {}
    while time.monotonic() - started < timeout:
        metrics = await run.audit_metrics()
        spilled = metrics.get("spilled", 0) - before.get("spilled", 0)
        replayed = metrics.get("replayed", 0) - before.get("replayed", 0)
        if (
            metrics.get("database_up") == 1
            and replayed >= spilled
            and metrics.get("buffered_records", 0) < run.config.buffer_records
        ):
            return round(time.monotonic() - started, 2), metrics
        await asyncio.sleep(0.2)
    return None, metrics


async def audit_down(run: Run) -> dict[str, Any]:
    """The audit database goes away for `--audit-outage` seconds (SQLite: held under an exclusive
    lock, so every write waits its 5 s busy timeout and fails; PostgreSQL: the forwarder in front of
    it stops listening and cuts its connections), then comes back. Records past the buffer spill to
    disk and must be replayed exactly once."""
    before = await run.audit_metrics()
    outage = float(run.settings["audit_outage_seconds"])
    await asyncio.sleep(run.recover_s / 2)
    if run.forwarder is not None:
        await run.forwarder.take_down()
        await asyncio.sleep(outage)
        await run.forwarder.bring_up()
        how = "forwarder to PostgreSQL down"
    else:
        path = Path(run.config.audit_url.removeprefix("sqlite://"))
        lock = SqliteLock(path)
        await lock.take()
        await asyncio.sleep(outage)
        await lock.give_back()
        how = "SQLite write lock held" + (f" (failed: {lock.error})" if lock.error else "")
    recovered_after, after = await _wait_audit_recovered(run, before, timeout=30)
    notes: dict[str, Any] = {"outage": how, "outage_s": outage, "writer_caught_up_after_s": recovered_after}
    notes["writer"] = _delta(before, after)
    await asyncio.sleep(run.recover_s / 2)
    return notes


async def audit_switch(run: Run) -> dict[str, Any]:
    """A reload points `audit.database_url` at another database (another SQLite file, another
    PostgreSQL database) while requests flow: each record lands in one of the two, once."""
    old = run.config.audit_url
    await asyncio.sleep(run.recover_s / 2)
    if run.postgres is not None:
        name = await run.postgres.create()
        new = f"postgres://postgres@{PG_HOST}:{PG_PORT}/{name}"
    else:
        new = f"sqlite://{run.topology.workdir / 'audit-b.sqlite3'}"
    run.config.audit_url = new
    run.audit_urls.append(new)
    live_after = await run.wait_for_version(version_of(run.write_config()))
    await asyncio.sleep(run.phase_s)
    notes: dict[str, Any] = {"from": _redact(old), "to": _redact(new), "live_after_s": live_after}
    if live_after is None:
        notes["problem"] = "the switch was not live 10 s after it was written"
    return notes


def _redact(url: str) -> str:
    return url.rsplit("/", 1)[-1]


async def slowloris(run: Run) -> dict[str, Any]:
    """`--slowloris` connections trickle requests at a byte per `--slowloris-interval` seconds (half
    never finish their headers, half their body) for `--slowloris-seconds` while the load continues:
    how many the gateway cut off, and when; the load's latency meanwhile is the phase's row."""
    attack = Slowloris(
        "127.0.0.1",
        run.topology.port,
        int(run.settings["slowloris"]),
        float(run.settings["slowloris_interval"]),
    )
    await attack.start()
    await asyncio.sleep(float(run.settings["slowloris_seconds"]))
    summary = await attack.stop()
    await asyncio.sleep(run.recover_s / 2)
    return summary | {"held_s": run.settings["slowloris_seconds"]}


def _in_flight_at(run: Run, phase: str, moment: float) -> dict[str, int]:
    """The requests of `phase` in flight at `moment`, by what became of them."""
    found: dict[str, int] = {}
    for record in run.load.of_phase(phase):
        if record.start <= moment and (record.end == 0 or record.end > moment):
            key = record.outcome or "unfinished"
            if record.status == 503 and "draining" in (record.error or ""):
                # Sent before the signal, but its head reached the gateway after it: refused on
                # arrival (503 `draining`, Connection: close), retryable elsewhere, not dropped.
                key = "503_draining"
            found[key] = found.get(key, 0) + 1
    return found


async def sigterm(run: Run) -> dict[str, Any]:
    """SIGTERM to the gateway under load: it drains (requests in flight finish, new connections are
    refused) and exits; then it starts again on its port."""
    await asyncio.sleep(run.recover_s / 2)
    gateway = run.topology.gateway
    assert gateway is not None
    signalled = time.time()
    run.topology.signal_gateway(signal.SIGTERM)
    code = await asyncio.to_thread(gateway.process.wait, 60)
    drained = time.time() - signalled
    restart = await run.topology.restart_gateway()
    await asyncio.sleep(run.recover_s)
    return {
        "exit_code": code,
        "drain_s": round(drained, 2),
        "restart_s": round(restart, 2),
        "signalled_at": signalled,
        "in_flight_at_signal": _in_flight_at(run, "sigterm", signalled),
    }


async def sigkill(run: Run) -> dict[str, Any]:
    """SIGKILL to the gateway (and its workers) under load, then a start on the same port. Records
    buffered in memory are lost: at most one `audit.flush_interval_ms` of answered requests (the
    bound is counted in the result as the answers in that window before the kill)."""
    await asyncio.sleep(max(run.recover_s / 2, 0.5))
    gateway = run.topology.gateway
    assert gateway is not None
    killed = time.time()
    run.topology.signal_gateway(signal.SIGKILL)
    await asyncio.to_thread(gateway.process.wait, 30)
    restart = await run.topology.restart_gateway()
    await asyncio.sleep(run.recover_s)
    return {
        "restart_s": round(restart, 2),
        "killed_at": killed,
        "in_flight_at_kill": _in_flight_at(run, "sigkill", killed),
        "flush_interval_ms": run.config.flush_interval_ms,
    }


def fuzz_function(spec: str) -> Callable[..., Any] | None:
    module_name, _, name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    return getattr(module, name, None)


async def fuzz(run: Run) -> dict[str, Any]:
    """The property-based fuzz (`FUZZ_FUNCTION`, `--fuzz-function`) against the gateway while the
    load runs: whatever a client sends, no 5xx, and every error a problem with its request_id."""
    spec = str(run.settings["fuzz_function"])
    function = fuzz_function(spec)
    if function is None:
        await asyncio.sleep(0.1)
        return {"skipped": f"{spec} cannot be imported (the fuzz needs hypothesis: the dev extra)"}
    cases = int(run.settings["fuzz_cases"])
    try:
        report = await asyncio.to_thread(
            function, run.topology.base_url, cases, models=["chat", "claude"], admin_key=ADMIN_KEY
        )
    except AssertionError as error:
        return {"function": spec, "passed": False, "problem": str(error)[:500]}
    failed = getattr(report, "failed", None)
    notes: dict[str, Any] = {"function": spec, "cases": getattr(report, "cases", cases), "passed": not failed}
    by_status = getattr(report, "by_status", None)
    if by_status:
        notes["by_status"] = {str(status): n for status, n in sorted(by_status.items())}
    if failed:
        notes["broke_the_promise"] = failed
        notes["problem"] = report.summary()[:500] if hasattr(report, "summary") else str(report)[:500]
    await asyncio.sleep(run.recover_s / 2)
    return notes


async def proxy(run: Run) -> dict[str, Any]:
    """A second gateway on its defaults behind same-host reverse proxies, attacked with every header
    combination that might pass for a local caller (`bench.faults.exposure`); the load goes on."""
    notes = await asyncio.to_thread(probe_same_host_proxy)
    await asyncio.sleep(run.recover_s / 2)
    return notes


Phase = Callable[[Run], Awaitable[dict[str, Any]]]
#: name → the phase; the order of a run.
PHASES: dict[str, Phase] = {
    "baseline": baseline,
    "upstream-restart": upstream_restart,
    "upstream-reset": upstream_reset,
    "upstream-hang": upstream_hang,
    "5xx-storm": storm_5xx,
    "429-storm": storm_429,
    "config-edits": config_edits,
    "audit-down": audit_down,
    "audit-switch": audit_switch,
    "slowloris": slowloris,
    "fuzz": fuzz,
    "proxy": proxy,
    "sigterm": sigterm,
    "sigkill": sigkill,
}
#: Phases where the upstream (not the gateway) fails: their 5xx are expected without failover.
UPSTREAM_PHASES = ("upstream-restart", "upstream-reset", "upstream-hang", "5xx-storm", "429-storm")
