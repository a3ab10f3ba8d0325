"""`gateway bench cache --quick`: the semantic lookup's cost at a few sizes (in process, no network)."""

from __future__ import annotations

from collections.abc import Callable

from tests.bench.conftest import BenchRun, check_envelope


def test_cache_quick(run_bench: Callable[..., BenchRun]) -> None:
    run = run_bench("cache")
    assert run.exit_code == 0
    assert "µs per lookup" in run.stdout
    result = run.result
    check_envelope(result, "cache")
    lookups = result["lookups"]
    assert {(r["entries"], r["dimensions"]) for r in lookups} == {
        (1000, 256),
        (10000, 256),
        (1000, 1536),
        (10000, 1536),
    }
    assert all(r["us_per_lookup"] > 0 and r["matrix_mib"] > 0 for r in lookups)
