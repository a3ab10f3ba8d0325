"""The faults run: start the upstreams and the gateway, run the load through every phase, stop,
count each phase's requests and audit records, and write the table."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from gateway.bench.faults.auditdb import PG_HOST, PG_PORT, PostgresDatabases, request_id_counts
from gateway.bench.faults.load import OUTCOMES, FaultLoad, RequestRecord
from gateway.bench.faults.phases import FUZZ_FUNCTION, PHASES, UPSTREAM_PHASES, Run
from gateway.bench.faults.topology import GatewayConfig, Topology
from gateway.bench.harness.limits import raise_open_files
from gateway.bench.harness.loadgen import percentiles
from gateway.bench.harness.options import name_list, scenario_settings
from gateway.bench.harness.paths import checkout_commit
from gateway.bench.harness.progress import Progress, say
from gateway.bench.harness.results import markdown_table, ms

from gateway.testing.forwarder import TcpForwarder
from gateway.testing.process import free_port

__all__ = ["add_arguments", "print_extra", "run_scenario", "table"]

FULL: dict[str, Any] = {
    "clients": 24,
    "phase_seconds": 3.0,
    "recover_seconds": 1.5,
    "edits": 50,
    "edit_interval_ms": 100,
    "audit_outage_seconds": 8.0,
    "slowloris": 1000,
    "slowloris_interval": 1.0,
    "slowloris_seconds": 15.0,
    "token_delay_ms": 5.0,
    "first_byte": 1.5,
    "flush_interval_ms": 200,
    "buffer_records": 500,
    "workers": 1,
    "fuzz_cases": 300,
}
QUICK: dict[str, Any] = FULL | {
    "clients": 4,
    "phase_seconds": 1.0,
    "recover_seconds": 0.6,
    "edits": 12,
    "edit_interval_ms": 60,
    "audit_outage_seconds": 6.0,
    "slowloris": 40,
    "slowloris_seconds": 2.0,
    "fuzz_cases": 20,
}
#: Outcomes a phase may show besides 2xx without counting as a failure (see `_unexpected`).
ALLOWED: dict[str, set[str]] = {
    "upstream-restart": {"2xx_cut"},  # streams in flight when the upstream died (past the first byte)
    "upstream-reset": {"2xx_cut"},  # the fault itself: streams cut after their first byte
    "sigterm": {"conn_error", "reset"},  # while the gateway is down; see in_flight_at_signal
    "sigkill": {"conn_error", "reset", "2xx_cut"},
}
#: Answers older than this before the kill must have their audit record (one flush interval, plus
#: this much for the write itself).
WRITE_SLACK_MS = 100


def _unexpected(phase: str, records: list[RequestRecord], failover: bool) -> int:
    allowed = set(ALLOWED.get(phase, ())) | {"2xx"}
    if not failover and phase in UPSTREAM_PHASES:
        allowed |= {"4xx", "5xx"}  # nothing to fail over to: the upstream's failure is the answer
    return sum(1 for r in records if r.outcome not in allowed and not _drain_answer(phase, r))


def _drain_answer(phase: str, record: RequestRecord) -> bool:
    """A 503 `draining` (with `Connection: close`) to a request that reached a kept-alive
    connection while the gateway drained: the designed answer, which tells the client to retry."""
    return phase == "sigterm" and record.status == 503 and "draining" in (record.error or "")


def summarize_phase(
    phase: str,
    records: list[RequestRecord],
    counts: Counter[str],
    default_counts: Counter[str],
    notes: dict[str, Any],
    failover: bool,
) -> dict[str, Any]:
    """One phase's row. `counts`: audit records per request id in every database the run configured
    and the default one; `default_counts`: those in the default database alone."""
    t0 = min((r.start for r in records), default=0.0)
    outcomes = Counter(r.outcome for r in records)
    answered = [r for r in records if r.answered]
    # A drain's 503 is written by the connection layer before the model API reads the request, so
    # it has no audit record; it is counted apart (`draining_503`), not as lost.
    lost = [r for r in answered if counts[r.rid] == 0 and not _drain_answer(phase, r)]
    whole = [r.latency_ms() for r in records if r.outcome == "2xx" and not r.stream]
    streams = [r.latency_ms() for r in records if r.outcome == "2xx" and r.stream]
    row: dict[str, Any] = {
        "phase": phase,
        "sent": len(records),
        "outcomes": {outcome: outcomes.get(outcome, 0) for outcome in OUTCOMES},
        "answered": len(answered),
        "audit_rows": sum(1 for r in records if counts[r.rid] > 0),
        "lost": len(lost),
        "duplicated": sum(1 for r in records if counts[r.rid] > 1),
        "latency_ms_2xx": percentiles(whole),  # non-streamed requests answered whole
        "stream_ms_2xx": percentiles(streams),  # whole streams (the fakes' token delay included)
        "unexpected_outcomes": _unexpected(phase, records, failover),
        "draining_503": sum(1 for r in records if _drain_answer(phase, r)),
        "draining_503_with_record": sum(1 for r in records if _drain_answer(phase, r) and counts[r.rid]),
        "errors": sorted({r.error for r in records if r.error and r.outcome != "2xx"})[:5],
        # The first lost ones, times in s from the phase's first request (to tell when they happened).
        "lost_sample": [
            {
                "rid": r.rid,
                "outcome": r.outcome,
                "start_s": round(r.start - t0, 3),
                "end_s": round(r.end - t0, 3),
            }
            for r in lost[:10]
        ],
        "in_default_database": sum(1 for r in records if default_counts[r.rid]),
        "notes": notes,
    }
    if phase == "sigkill" and "killed_at" in notes:
        window = (notes["flush_interval_ms"] + WRITE_SLACK_MS) / 1000
        killed = notes["killed_at"]
        # Allowed: answers of the last flush interval before the kill (their records were still in
        # memory) and requests in flight at the kill (answered, then cut: no record was made yet).
        row["kill_bound"] = {
            "window_ms": round(window * 1000),
            "answered_in_last_window": sum(1 for r in answered if killed - window <= r.end <= killed),
            "answered_in_flight_at_kill": sum(1 for r in answered if r.start <= killed < r.end),
            "lost_in_last_window": sum(1 for r in lost if killed - window <= r.end <= killed),
            "lost_in_flight_at_kill": sum(1 for r in lost if r.start <= killed < r.end),
            "lost_older_than_window": sum(1 for r in lost if r.end < killed - window),
            "lost_after_restart": sum(1 for r in lost if r.start > killed),
        }
    return row


def violations(rows: list[dict[str, Any]]) -> list[str]:
    found = []
    for row in rows:
        phase = row["phase"]
        if row["unexpected_outcomes"]:
            found.append(f"{phase}: {row['unexpected_outcomes']} requests with an unexpected outcome")
        if row["duplicated"]:
            found.append(f"{phase}: {row['duplicated']} request ids with more than one audit record")
        if phase == "sigkill" and "kill_bound" in row:
            bound = row["kill_bound"]
            if bound["lost_older_than_window"] or bound["lost_after_restart"]:
                found.append(
                    f"sigkill: {bound['lost_older_than_window'] + bound['lost_after_restart']} lost audit "
                    f"records beyond the bound (one flush interval before the kill)"
                )
        elif row["lost"]:
            found.append(f"{phase}: {row['lost']} answered requests without an audit record")
        if row["in_default_database"]:
            found.append(
                f"{phase}: {row['in_default_database']} audit records in the default database "
                "(gateway-audit.sqlite3): a config without the run's `audit` section was applied"
            )
        notes = row["notes"]
        if notes.get("problem"):
            found.append(f"{phase}: {notes['problem']}")
        if phase == "sigterm" and notes.get("in_flight_at_signal"):
            dropped = sum(
                n for k, n in notes["in_flight_at_signal"].items() if k not in ("2xx", "503_draining")
            )
            if dropped:
                found.append(f"sigterm: {dropped} requests in flight at the signal not answered whole")
        if phase == "proxy" and "admin_served" in notes:
            if notes["admin_served"] or notes["model_served"] or not notes["config_unchanged"]:
                found.append(
                    f"proxy: served anonymously through a same-host proxy: {notes['admin_served']} admin "
                    f"calls, {notes['model_served']} model calls (gateway.yaml unchanged: "
                    f"{notes['config_unchanged']})"
                )
            if not notes["token_works"]:
                found.append("proxy: the local admin token did not open the admin API through the proxy")
        if phase == "fuzz" and notes.get("passed") is False and not notes.get("problem"):
            found.append("fuzz: an answer broke the promise (a 5xx, or an error without problem+json)")
    return found


async def _run(settings: dict[str, Any], workdir: Path, progress: Progress | None) -> dict[str, Any]:
    load_before = os.getloadavg()
    topology = Topology(workdir, settings["token_delay_ms"], workers=settings["workers"])
    postgres = forwarder = None
    try:
        await asyncio.to_thread(topology.start_upstreams)
        if settings["audit"] == "postgres":
            postgres = PostgresDatabases()
            name = await postgres.create()
            forwarder = TcpForwarder(PG_HOST, PG_PORT, free_port())
            await forwarder.bring_up()
            audit_url = f"postgres://postgres@127.0.0.1:{forwarder.port}/{name}"
            direct = f"postgres://postgres@{PG_HOST}:{PG_PORT}/{name}"
        else:
            audit_url = direct = f"sqlite://{workdir / 'audit-a.sqlite3'}"
        config = GatewayConfig(
            topology.upstreams,
            audit_url,
            failover=settings["failover"],
            first_byte_s=settings["first_byte"],
            flush_interval_ms=settings["flush_interval_ms"],
            buffer_records=settings["buffer_records"],
            server=settings["server_settings"],
        )
        load = FaultLoad(topology.base_url, settings["clients"])
        run = Run(topology, config, load, settings, [direct], forwarder, postgres)
        run.write_config()
        await asyncio.to_thread(topology.start_gateway)
        await load.start()
        notes: dict[str, dict[str, Any]] = {}
        try:
            await asyncio.sleep(1.0)  # warm-up (tagged "warmup", not in the table)
            for phase in settings["phases"]:
                load.phase = phase
                with progress.step(phase) if progress else contextlib.nullcontext():
                    started = time.monotonic()
                    notes[phase] = await PHASES[phase](run) | {
                        "duration_s": round(time.monotonic() - started, 1)
                    }
                say(f"  {phase}: {len(load.of_phase(phase))} requests; {_brief(notes[phase])}")
            load.phase = "end"
        finally:
            await load.stop()
            await asyncio.to_thread(topology.stop)  # SIGTERM: the last records are flushed
        counts: Counter[str] = Counter()
        for url in run.audit_urls:
            counts.update(await request_id_counts(url, "ft."))
        # Where records go under a config without `audit` (e.g. an empty file that was applied).
        default_counts = await request_id_counts(f"sqlite://{workdir / 'gateway-audit.sqlite3'}", "ft.")
        counts.update(default_counts)
        # Spill files the gateway left behind (records neither written nor replayed).
        leftover = {
            path.name: sum(1 for line in path.read_bytes().splitlines() if line.strip())
            for path in sorted(workdir.glob("*spill*"))
            if path.is_file()
        }
        rows = [
            summarize_phase(
                phase, load.of_phase(phase), counts, default_counts, notes[phase], settings["failover"]
            )
            for phase in settings["phases"]
        ]
    finally:
        await asyncio.to_thread(topology.stop)
        if forwarder is not None:
            await forwarder.take_down()
        if postgres is not None:
            with contextlib.suppress(Exception):
                await postgres.drop_all()
    _compare_to_baseline(rows)
    total = _total(rows)
    found = violations(rows)
    if sum(leftover.values()):
        found.append(f"spill files left at the end, not replayed: {leftover}")
    return {
        "settings": settings,
        "phases": rows,
        "total": total,
        "violations": found,
        "commit": checkout_commit(),
        "leftover_spill_records": leftover,
        # Other processes' load on a shared machine inflates latencies (not the counts).
        "load_average": {
            "start": [round(v, 2) for v in load_before],
            "end": [round(v, 2) for v in os.getloadavg()],
        },
        "requests": total["sent"],
        "failed_requests": len(found),
    }


def _compare_to_baseline(rows: list[dict[str, Any]]) -> None:
    """The slowloris phase's note: the load's latency then against the baseline's."""
    by_phase = {row["phase"]: row for row in rows}
    if "baseline" in by_phase and "slowloris" in by_phase:
        base, slow = by_phase["baseline"]["latency_ms_2xx"], by_phase["slowloris"]["latency_ms_2xx"]
        by_phase["slowloris"]["notes"]["load_latency_vs_baseline"] = (
            f"p50 {ms(slow['p50'], 1)} ms (baseline {ms(base['p50'], 1)}), "
            f"p99 {ms(slow['p99'], 1)} ms (baseline {ms(base['p99'], 1)})"
        )


def _brief(notes: dict[str, Any]) -> str:
    shown = {k: v for k, v in notes.items() if k not in ("signalled_at", "killed_at")}
    return ", ".join(f"{k}={v}" for k, v in shown.items())[:300]


def _total(rows: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {"phase": "total", "outcomes": dict.fromkeys(OUTCOMES, 0)}
    for key in (
        "sent",
        "answered",
        "audit_rows",
        "lost",
        "duplicated",
        "unexpected_outcomes",
        "in_default_database",
    ):
        total[key] = sum(row[key] for row in rows)
    for row in rows:
        for outcome, n in row["outcomes"].items():
            total["outcomes"][outcome] += n
    return total


HEADERS = [
    "phase",
    "sent",
    "2xx",
    "2xx cut",
    "4xx",
    "5xx",
    "conn. errors",
    "resets",
    "timeouts",
    "answered",
    "audit rows",
    "lost",
    "duplicated",
    "p50 ms",
    "p99 ms",
]


def _cells(row: dict[str, Any]) -> list[Any]:
    o = row["outcomes"]
    latency = row.get("latency_ms_2xx")
    lost = f"{row['lost']:,}"
    if "kill_bound" in row:
        bound = row["kill_bound"]
        lost += f" (bound {bound['answered_in_last_window'] + bound['answered_in_flight_at_kill']})"
    return [
        f"**{row['phase']}**" if row["phase"] == "total" else row["phase"],
        f"{row['sent']:,}",
        *(f"{o[outcome]:,}" for outcome in OUTCOMES),
        f"{row['answered']:,}",
        f"{row['audit_rows']:,}",
        lost,
        f"{row['duplicated']:,}",
        ms(latency["p50"], 1) if latency and latency["p50"] else "–",
        ms(latency["p99"], 1) if latency and latency["p99"] else "–",
    ]


def _note_lines(row: dict[str, Any]) -> str:
    notes = {k: v for k, v in row["notes"].items() if k not in ("signalled_at", "killed_at", "duration_s")}
    parts = [f"{k}: {v}" for k, v in notes.items()]
    if "kill_bound" in row:
        parts.append(f"kill bound: {row['kill_bound']}")
    if row.get("draining_503"):
        parts.append(
            f"503 draining: {row['draining_503']} (the drain's answer on kept-alive connections, "
            f"{row['draining_503_with_record']} with an audit record; not counted as lost)"
        )
    if row["errors"]:
        parts.append(f"errors seen: {row['errors'][:3]}")
    return (
        f"- `{row['phase']}` ({row['notes'].get('duration_s', '?')} s): " + "; ".join(parts) if parts else ""
    )


def table(result: dict[str, Any]) -> str:
    s = result["settings"]
    load = result.get("load_average", {}).get("start", [0])[0]
    head = (
        f"{s['clients']} clients (OpenAI and Anthropic surfaces, streamed and not), audit log on "
        f"{s['audit']}, failover {'on' if s['failover'] else 'off'}, {s['workers']} worker(s); "
        f"phases of {s['phase_seconds']:g} s; machine load average {load:g} at the start; "
        f"commit {result.get('commit') or 'unknown'}, {result.get('started_at', '')}"
    )
    rows = [_cells(row) for row in result["phases"]] + [_cells(result["total"])]
    notes = [line for line in (_note_lines(row) for row in result["phases"]) if line]
    found = result["violations"]
    verdict = (
        "No violations: every answered request has exactly one audit record (SIGKILL: within its bound), "
        "no unexpected status, no hung request."
        if not found
        else "Violations:\n" + "\n".join(f"- {line}" for line in found)
    )
    return "\n\n".join([head, markdown_table(HEADERS, rows), "Phase notes:\n" + "\n".join(notes), verdict])


def print_extra(result: dict[str, Any]) -> None:
    path = result["settings"].get("markdown")
    if path:
        Path(path).write_text(table(result) + "\n")
        say(f"table: {path}")


def _server_setting(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError("expected KEY=VALUE (a server.* setting, the value as YAML)")
    return key.strip(), value.strip()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--phases",
        type=name_list(PHASES, "phase"),
        help=f"phases to run, in this order ({','.join(PHASES)}: all)",
    )
    parser.add_argument("--clients", type=int, help=f"load clients ({FULL['clients']})")
    parser.add_argument(
        "--phase-seconds", type=float, help=f"each fault's duration ({FULL['phase_seconds']})"
    )
    parser.add_argument(
        "--recover-seconds", type=float, help=f"load before and after each fault ({FULL['recover_seconds']})"
    )
    parser.add_argument(
        "--audit",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="the audit database (postgres: a new database at 127.0.0.1:5432, dropped after)",
    )
    parser.add_argument(
        "--no-failover",
        dest="failover",
        action="store_false",
        help="chains of one backend: upstream faults reach the client",
    )
    parser.add_argument("--workers", type=int, help="gateway worker processes (1)")
    parser.add_argument("--edits", type=int, help=f"config edits ({FULL['edits']})")
    parser.add_argument("--edit-interval-ms", type=float, help=f"between edits ({FULL['edit_interval_ms']})")
    parser.add_argument(
        "--audit-outage",
        dest="audit_outage_seconds",
        type=float,
        help=f"seconds the audit database is away ({FULL['audit_outage_seconds']})",
    )
    parser.add_argument("--slowloris", type=int, help=f"slow connections ({FULL['slowloris']})")
    parser.add_argument("--slowloris-interval", type=float, help="seconds between their bytes (1)")
    parser.add_argument(
        "--slowloris-seconds", type=float, help=f"how long they trickle ({FULL['slowloris_seconds']})"
    )
    parser.add_argument(
        "--token-delay-ms", type=float, help=f"the fakes' delay per streamed token ({FULL['token_delay_ms']})"
    )
    parser.add_argument("--first-byte", type=float, help=f"timeouts.chat.first_byte ({FULL['first_byte']})")
    parser.add_argument(
        "--flush-interval-ms", type=int, help=f"audit.flush_interval_ms ({FULL['flush_interval_ms']})"
    )
    parser.add_argument("--buffer-records", type=int, help=f"audit.buffer_records ({FULL['buffer_records']})")
    parser.add_argument(
        "--server-setting",
        dest="server_settings",
        type=_server_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a server.* setting for the gateway's config (repeatable)",
    )
    parser.add_argument(
        "--fuzz-cases", type=int, help=f"requests the fuzz phase sends ({FULL['fuzz_cases']})"
    )
    parser.add_argument("--fuzz-function", default=FUZZ_FUNCTION, help=f"module:function ({FUZZ_FUNCTION})")
    parser.add_argument("--markdown", type=Path, help="also write the table and notes to this file")


def run_scenario(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    settings = scenario_settings(args, QUICK, FULL)
    settings |= {
        "phases": args.phases or list(PHASES),
        "audit": args.audit,
        "failover": args.failover,
        "server_settings": dict(args.server_settings),
        "fuzz_function": args.fuzz_function,
        "markdown": str(args.markdown) if args.markdown else None,
    }
    limit = raise_open_files(4 * settings["slowloris"] + 4096)
    settings["open_files_limit"] = limit
    progress.add(len(settings["phases"]) - 1)
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as directory:
        return asyncio.run(_run(settings, Path(directory), progress))
