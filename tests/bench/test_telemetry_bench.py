"""`gateway bench telemetry --quick`: bench.telemetry's micro-benchmark in both modes, as a scenario."""

from __future__ import annotations

from collections.abc import Callable

from gateway.bench.telemetry_cost import MODES, ROWS

from tests.bench.conftest import BenchRun, check_envelope


def test_telemetry_quick(run_bench: Callable[..., BenchRun]) -> None:
    run = run_bench("telemetry")
    assert run.exit_code == 0
    assert "multiprocess mode (µs)" in run.stdout
    result = run.result
    check_envelope(result, "telemetry")
    assert set(result["us_per_request"]) == set(MODES)
    for values in result["us_per_request"].values():
        assert set(ROWS) <= set(values)
        assert all(v > 0 for v in values.values())
