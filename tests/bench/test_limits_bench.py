"""`gateway bench limits --quick`: the limits' cost per request, memory store and Redis store on loopback."""

from __future__ import annotations

from collections.abc import Callable

from tests.bench.conftest import BenchRun, check_envelope


def test_limits_quick(run_bench: Callable[..., BenchRun]) -> None:
    run = run_bench("limits")
    assert run.exit_code == 0
    assert "admission p50 (ms)" in run.stdout
    result = run.result
    check_envelope(result, "limits")
    assert result["memory_cpu_us_per_request"] > 0
    redis = result["redis"]
    assert 0 < redis["admit_p50_ms"] <= redis["admit_p99_ms"]
    assert redis["cpu_us_per_request"] > 0
    assert set(result["targets"]) == {"memory_cpu_us_per_request", "redis_admit_p50_ms"}
