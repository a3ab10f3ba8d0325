"""`gateway bench reload --quick`: the result's structure, and no failed request (no timing asserted)."""

from __future__ import annotations

from collections.abc import Callable

from tests.bench.conftest import BenchRun, check_envelope


def test_reload_quick(run_bench: Callable[..., BenchRun]) -> None:
    run = run_bench("reload")
    assert run.exit_code == 0
    assert "edit → live p50" in run.stdout
    result = run.result
    check_envelope(result, "reload")
    assert result["reloads"] == 5 and len(result["edit_to_live_ms_each"]) == 5
    assert result["failed_requests"] == 0
    assert result["requests"] > 0
    latency = result["edit_to_live_ms"]
    assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]
