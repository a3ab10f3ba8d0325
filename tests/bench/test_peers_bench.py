"""`gateway bench peers` without LiteLLM installed: a clear skip in the table and the result file; with
it (opt-in, `GATEWAY_TEST_LITELLM=1`), the comparison itself."""

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
@pytest.mark.opt_in("GATEWAY_TEST_LITELLM")
def test_peers_quick_with_litellm(run_bench: Callable[..., BenchRun]) -> None:
    """Opt-in (`GATEWAY_TEST_LITELLM=1`, after `gateway bench peers --install-litellm`): the same
    phases through both, as ratios. A minutes-long benchmark with its own virtualenv, so CI leaves it
    out (deselected, not skipped); once asked for, a missing LiteLLM is a failure."""
    if not (DEFAULT_VENV / "bin" / "litellm").exists():
        pytest.fail(
            f"GATEWAY_TEST_LITELLM is set but LiteLLM is not in {DEFAULT_VENV}: run "
            "`gateway bench peers --install-litellm` first"
        )
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
