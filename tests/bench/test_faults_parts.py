"""The faults scenario's parts without processes: how a phase's requests and audit records are
counted (lost, duplicated, the SIGKILL bound), and the SQLite outage the bench makes."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from gateway.bench.faults.auditdb import SqliteLock
from gateway.bench.faults.load import RequestRecord
from gateway.bench.faults.scenario import summarize_phase, violations


def _record(n: int, phase: str, outcome: str, start: float, end: float) -> RequestRecord:
    status = {"2xx": 200, "2xx_cut": 200, "5xx": 502}.get(outcome)
    return RequestRecord(f"ft.{phase}.{n}", phase, "openai", False, start, end, status, outcome)


def test_lost_and_duplicated_are_counted_by_request_id() -> None:
    records = [
        _record(0, "baseline", "2xx", 0.0, 0.1),
        _record(1, "baseline", "2xx", 0.0, 0.1),  # no record: lost
        _record(2, "baseline", "2xx", 0.0, 0.1),  # two records: duplicated
        _record(3, "baseline", "conn_error", 0.0, 0.1),  # not answered: no record owed
    ]
    counts = Counter({"ft.baseline.0": 1, "ft.baseline.2": 2})
    row = summarize_phase("baseline", records, counts, Counter(), {}, failover=True)
    assert (row["sent"], row["answered"], row["audit_rows"], row["lost"], row["duplicated"]) == (
        4,
        3,
        2,
        1,
        1,
    )
    assert row["unexpected_outcomes"] == 1  # a connection error with the gateway up
    assert [r["rid"] for r in row["lost_sample"]] == ["ft.baseline.1"]
    found = violations([row])
    assert any("more than one audit record" in line for line in found)
    assert any("without an audit record" in line for line in found)


def test_sigkill_losses_within_one_flush_interval_are_allowed_and_older_ones_are_not() -> None:
    killed = 100.0
    records = [
        _record(0, "sigkill", "2xx", 99.0, 99.95),  # answered 50 ms before the kill: may be lost
        _record(1, "sigkill", "2xx_cut", 99.9, 100.2),  # in flight at the kill: may be lost
        _record(2, "sigkill", "2xx", 98.0, 99.0),  # answered 1 s before: must have its record
        _record(3, "sigkill", "2xx", 101.0, 101.1),  # served after the restart: must have its record
    ]
    notes = {"killed_at": killed, "flush_interval_ms": 200}
    row = summarize_phase("sigkill", records, Counter(), Counter(), notes, failover=True)
    bound = row["kill_bound"]
    assert bound["answered_in_last_window"] == 1 and bound["answered_in_flight_at_kill"] == 1
    assert bound["lost_older_than_window"] == 1 and bound["lost_after_restart"] == 1
    assert violations([row]) == [
        "sigkill: 2 lost audit records beyond the bound (one flush interval before the kill)"
    ]
    everything = Counter({"ft.sigkill.2": 1, "ft.sigkill.3": 1})
    assert (
        violations([summarize_phase("sigkill", records, everything, Counter(), notes, failover=True)]) == []
    )


def test_upstream_errors_are_allowed_only_without_failover() -> None:
    records = [_record(0, "5xx-storm", "5xx", 0.0, 0.1)]
    counts = Counter({"ft.5xx-storm.0": 1})
    assert (
        summarize_phase("5xx-storm", records, counts, Counter(), {}, failover=True)["unexpected_outcomes"]
        == 1
    )
    assert (
        summarize_phase("5xx-storm", records, counts, Counter(), {}, failover=False)["unexpected_outcomes"]
        == 0
    )


def test_the_sqlite_outage_makes_writes_fail_until_it_is_given_back(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE t (x INTEGER)")
    setup.commit()
    setup.close()
    writer = sqlite3.connect(path, timeout=0.05)

    async def scenario() -> None:
        lock = SqliteLock(path)
        await lock.take()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            writer.execute("INSERT INTO t VALUES (1)")
            writer.commit()
        writer.rollback()
        await lock.give_back()
        writer.execute("INSERT INTO t VALUES (2)")
        writer.commit()

    asyncio.run(scenario())
    assert writer.execute("SELECT x FROM t").fetchall() == [(2,)]
    writer.close()


def test_the_proxy_phase_breaks_a_rule_when_anything_is_served_anonymously() -> None:
    safe = {
        "admin_served": 0,
        "model_served": 0,
        "config_unchanged": True,
        "token_works": True,
    }
    row = summarize_phase("proxy", [], Counter(), Counter(), safe, failover=True)
    assert violations([row]) == []
    leaky = safe | {"admin_served": 3, "config_unchanged": False}
    [found] = violations([summarize_phase("proxy", [], Counter(), Counter(), leaky, failover=True)])
    assert found.startswith("proxy: served anonymously through a same-host proxy: 3 admin calls")
    locked = safe | {"token_works": False}
    assert violations([summarize_phase("proxy", [], Counter(), Counter(), locked, failover=True)]) == [
        "proxy: the local admin token did not open the admin API through the proxy"
    ]


def test_a_request_in_flight_at_sigterm_may_be_refused_draining_but_not_dropped() -> None:
    def row(in_flight: dict[str, int]) -> dict:
        notes = {"in_flight_at_signal": in_flight}
        return summarize_phase("sigterm", [], Counter(), Counter(), notes, failover=True)

    # Sent just before the signal, its head arrived after it: the 503 `draining` is its answer.
    assert violations([row({"2xx": 23, "503_draining": 1})]) == []
    assert violations([row({"2xx": 23, "reset": 1})]) == [
        "sigterm: 1 requests in flight at the signal not answered whole"
    ]
