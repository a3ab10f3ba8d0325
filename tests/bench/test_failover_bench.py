"""`gateway bench failover --quick`: who served each request and the breaker's phases (no timing
asserted beyond what the cases force: a hanging primary costs at least the first-byte timeout)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.bench.conftest import BenchRun, check_envelope, check_percentiles

FAULTY = ("dead", "failing", "hanging")


@pytest.mark.timeout(180)
def test_failover_quick(run_bench: Callable[..., BenchRun]) -> None:
    run = run_bench("failover")
    assert run.exit_code == 0
    assert "before the breaker opens" in run.stdout and "after it opened" in run.stdout

    result = run.result
    check_envelope(result, "failover")
    assert result["failed_requests"] == 0
    settings = result["settings"]
    per_case = settings["clients"] * settings["requests"]
    threshold = settings["failure_threshold"]
    cases = {(c["case"], c["mode"]): c for c in result["cases"]}
    assert set(cases) == {
        (case, mode)
        for case in ("direct", "healthy", "dead", "failing", "hanging", "slow")
        for mode in ("non_streaming", "streaming")
    }
    for (case, mode), found in cases.items():
        assert found["requests"] == per_case and found["failed"] == 0, found["errors"]
        assert len(found["request_log"]) == per_case
        assert sum(s["requests"] for s in found["phases"].values()) == per_case
        for summary in found["phases"].values():
            check_percentiles(summary["latency_ms"])
            if mode == "streaming":
                check_percentiles(summary["ttft_ms"])
        if case in FAULTY:
            # Every request was served by the secondary: first after a failed attempt on the
            # primary, then, once `failure_threshold` of them opened its circuit, without one.
            assert found["served_by"] == {"primary": 0, "secondary": per_case}
            before, after = found["phases"]["before_open"], found["phases"]["after_open"]
            assert threshold <= before["requests"] < threshold + settings["clients"]
            assert after["requests"] == per_case - before["requests"]
            breaker = found["breaker"]
            assert breaker["opened"] is True and breaker["state_after"] == 2  # open
            assert breaker["primary_failures_before_open"] == before["requests"]
            assert after["first_start_s"] >= before["first_start_s"]
        elif case == "slow":
            # Slow is not failed: the primary serves everything and its circuit stays closed.
            assert found["served_by"] == {"primary": per_case, "secondary": 0}
            assert set(found["phases"]) == {"primary"}
            assert found["breaker"]["opened"] is False and found["breaker"]["state_after"] == 0
        else:
            assert set(found["phases"]) == {"baseline"}
    # The hanging primary's attempts end at the first-byte timeout, which they must have waited.
    hanging = cases[("hanging", "non_streaming")]["phases"]["before_open"]
    assert hanging["latency_ms"]["p50"] >= settings["first_byte"] * 1000
