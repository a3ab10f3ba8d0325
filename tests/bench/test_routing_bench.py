"""`gateway bench routing --quick`: what picking a balanced group's member costs (in process, no network)."""

from __future__ import annotations

from collections.abc import Callable

from tests.bench.conftest import BenchRun, check_envelope


def test_routing_quick(run_bench: Callable[..., BenchRun]) -> None:
    run = run_bench("routing")
    assert run.exit_code == 0
    assert "CPU µs per pick" in run.stdout
    result = run.result
    check_envelope(result, "routing")
    rows = {r["strategy"]: r for r in result["strategies"]}
    assert set(rows) == {"weighted", "least_busy", "latency"}
    assert rows["weighted"]["share_first"] == 0.75  # 3:1, exact over 2,000 picks
    assert all(r["us_per_pick"] > 0 and r["us_per_sticky_pick"] > 0 for r in rows.values())
    canary = result["canary"]
    assert canary["share"] == 0.05 and canary["us_per_request"] > 0  # weight 5: exact over 2,000
    assert "take + observe" in run.stdout
