"""`gateway bench streams-held --quick`: every stream completes, direct and through the gateway, and
the memory and TTFT figures are there (no timing asserted)."""

from __future__ import annotations

from collections.abc import Callable

from tests.bench.conftest import BenchRun, check_envelope


def test_streams_held_quick(run_bench: Callable[..., BenchRun]) -> None:
    run = run_bench("streams-held", "--streams", "40", "--tokens", "5")
    assert run.exit_code == 0
    result = run.result
    check_envelope(result, "streams-held")
    for path in ("direct", "gateway"):
        found = result[path]
        assert found["streams"] == found["completed"] == 40 and found["failed"] == 0, found
        assert 0 < found["peak_open"] <= 40
        assert found["ttft_ms"]["p50"] > 0
    assert result["gateway_idle_rss_bytes"] > 0 and result["gateway"]["peak_rss_bytes"] > 0
    assert isinstance(result["ttft_p99_added_ms"], float)
    assert "KiB per open stream" in run.stdout
