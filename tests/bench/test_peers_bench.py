"""`gateway bench peers` without LiteLLM installed: a clear skip in the table and the result file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from gateway.bench.peers import DEFAULT_VENV

from tests.bench.conftest import BenchRun, check_envelope


def test_peers_without_litellm_is_skipped_clearly(run_bench: Callable[..., BenchRun], tmp_path: Path) -> None:
    missing = tmp_path / "no-litellm-here"
    run = run_bench("peers", "--litellm-venv", str(missing))
    assert run.exit_code == 0
    assert "LiteLLM proxy: skipped" in run.stdout and "--install-litellm" in run.stdout

    result = run.result
    check_envelope(result, "peers")
    peer = result["peers"]["litellm"]
    assert peer["status"] == "skipped"
    assert str(missing) in peer["reason"] and "--install-litellm" in peer["reason"]
    assert result["phases"] == [] and result["rows"] == [] and result["failed_requests"] == 0
    assert not missing.exists()  # nothing installed unless asked


@pytest.mark.timeout(600)
@pytest.mark.skipif(not (DEFAULT_VENV / "bin" / "litellm").exists(), reason="LiteLLM is not installed")
def test_peers_quick_with_litellm(run_bench: Callable[..., BenchRun]) -> None:
    """Where `gateway bench peers --install-litellm` has run: the same phases through both, as ratios."""
    run = run_bench("peers")
    assert run.exit_code == 0
    result = run.result
    assert result["peers"]["litellm"]["status"] == "measured" and result["peers"]["litellm"]["version"]
    assert result["failed_requests"] == 0
    assert {p["target"] for p in result["phases"]} == {"direct", "gateway", "litellm"}
    for phase in result["phases"]:
        assert phase["failed"] == 0, phase["errors"]
        if phase["mode"] == "streaming":
            assert phase["tokens_per_stream"] == {"min": 16, "max": 16}
    assert [(r["mode"], r["clients"]) for r in result["rows"]] == [
        (mode, n) for mode in ("non_streaming", "streaming") for n in (1, 8, 32)
    ]
    for row in result["rows"]:
        ratio = row["ratio_litellm_to_gateway"]
        assert ratio["rps"] == pytest.approx(row["litellm"]["rps"] / row["gateway"]["rps"], abs=0.001)
        assert row["ceiling_rps"] >= row["direct"]["rps"]
