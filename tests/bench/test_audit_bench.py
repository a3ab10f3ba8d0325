"""`gateway bench audit --quick`: the audit log's CPU per record, on SQLite (and PostgreSQL when it
answers), as a scenario. Structure only: no figure is asserted."""

from __future__ import annotations

from collections.abc import Callable

from gateway.bench.audit_cost import DIALECTS

from tests.bench.conftest import BenchRun, check_envelope


def test_audit_quick(run_bench: Callable[..., BenchRun]) -> None:
    run = run_bench("audit")
    assert run.exit_code == 0
    assert "record() on the request path (µs)" in run.stdout
    result = run.result
    check_envelope(result, "audit")
    assert result["records"] == 500 and result["repeats"] == 1 and result["prefill"] == 1000
    assert set(result["us_per_record"]) == set(DIALECTS)
    sqlite = result["us_per_record"]["sqlite"]
    assert sqlite is not None, "SQLite needs no server: its leg always runs"
    for values in filter(None, result["us_per_record"].values()):
        assert values["record"] > 0 and values["total"] > values["record"]
        assert abs(values["total"] - values["record"] - values["flush"]) < 0.02  # rounding only
        assert len(values["runs"]) == 1


def test_audit_one_dialect(run_bench: Callable[..., BenchRun]) -> None:
    result = run_bench("audit", "--dialects", "sqlite").result
    assert list(result["us_per_record"]) == ["sqlite"]
