"""Smoke run of the local-inference benchmark: the result's structure and sanity (no timing asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.local import SYSTEMS, main, prompts, summarize

pytest.importorskip("mlx_lm")


def _check_percentiles(values: dict[str, float]) -> None:
    assert 0 < values["p50"] <= values["p90"] <= values["p99"] <= values["max"]


def test_prompts_are_distinct_and_repeatable() -> None:
    first = prompts("streams 4", 4, 3)
    assert first == prompts("streams 4", 4, 3)
    flat = [text for row in first for text in row]
    assert len(flat) == 12 and len(set(flat)) == 12
    # Different phases never share a prompt (a prompt cache must not carry one phase into another).
    assert not set(flat) & {text for row in prompts("warm-up 4", 4, 3) for text in row}


def test_summarize_counts_usage_tokens_not_chunks() -> None:
    def record(stream: int, tokens: int, chunks: int) -> dict[str, object]:
        return {
            "stream": stream,
            "round": 0,
            "t_start": 0.0,
            "t_first": 0.1,
            "t_last": 1.1,
            "t_done": 1.2,
            "tokens": tokens,
            "chunks": chunks,
            "prompt_tokens": 20,
            "cached_tokens": None,
            "finish_reason": "length",
            "error": None,
        }

    summary = summarize([record(0, 11, 7), record(1, 11, 11)], makespan=2.0, max_tokens=11)
    assert summary["tokens"]["total"] == 22
    assert summary["aggregate_tokens_per_s"] == 11.0
    assert summary["per_stream_tokens_per_s"]["p50"] == pytest.approx(10.0)
    assert summary["ttft_ms"]["p50"] == pytest.approx(100.0)
    assert summary["tokens"]["all_ran_to_max_tokens"] is True
    short = summarize([record(0, 5, 5)], makespan=1.0, max_tokens=11)
    assert short["tokens"]["all_ran_to_max_tokens"] is False


@pytest.mark.timeout(600)
def test_local_bench_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "local.json"
    assert main(["--quick", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| system | streams |" in printed and "aggregate tok/s" in printed

    result = json.loads(out.read_text())
    assert result["scenario"] == "local_inference"
    assert result["quick"] is True and result["preset"] == "tiny"
    assert result["failed_requests"] == 0
    assert result["streams"] == [1, 4]
    max_tokens, rounds = result["max_tokens"], result["rounds"]
    assert max_tokens > 1 and rounds >= 1
    assert result["machine"]["cores"] >= 1 and result["machine"]["python"]
    assert "BLAS" in result["blas"]
    assert set(result["systems"]) == set(SYSTEMS)

    phases = result["phases"]
    assert {(p["system"], p["streams"]) for p in phases} == {(s, n) for s in SYSTEMS for n in (1, 4)}
    prompt_sizes: dict[int, set[int]] = {}
    for phase in phases:
        streams = phase["streams"]
        # Every stream completed every request, each with exactly max_tokens tokens (from usage).
        assert phase["failed"] == 0 and phase["warmup_failed"] == 0, phase["errors"]
        assert phase["requests"] == phase["completed"] == streams * rounds
        tokens = phase["tokens"]
        assert tokens["per_request_min"] == tokens["per_request_max"] == max_tokens
        assert tokens["all_ran_to_max_tokens"] is True
        assert tokens["total"] == streams * rounds * max_tokens
        assert tokens["finish_reasons"] == {"length": streams * rounds}
        assert 1 <= phase["chunks_per_request"]["min"] <= phase["chunks_per_request"]["max"] <= max_tokens
        prompt_sizes.setdefault(streams, set()).add(phase["prompt_tokens"]["total"])
        assert phase["aggregate_tokens_per_s"] > 0
        assert phase["aggregate_tokens_per_s"] == pytest.approx(
            tokens["total"] / phase["makespan_s"], rel=0.01
        )
        _check_percentiles(phase["ttft_ms"])
        assert phase["ttft_ms"]["max"] <= phase["makespan_s"] * 1000
        assert phase["per_stream_tokens_per_s"]["p50"] > 0
        assert phase["system_cpu_cores"] >= 0 and phase["foreign_cpu_cores"] >= 0
        assert phase["repeats"] == [phase["aggregate_tokens_per_s"]]  # one cycle in a quick run
        assert all(t["cores"] > 0 for t in phase["system_threads"])
        assert len(phase["request_log"]) == phase["requests"]
        if phase["system"] == "bare":
            assert phase["loadgen_cpu_share"] is None
        else:
            assert 0 <= phase["loadgen_cpu_share"] <= 1.5
    # The same prompts, through the same chat template, for every system.
    assert all(len(totals) == 1 for totals in prompt_sizes.values()), prompt_sizes

    goals = result["goals"]
    assert set(goals) == {"gateway_vs_mlx_lm_server_at_4", "gateway_vs_bare_at_4"}
    for goal in goals.values():
        assert isinstance(goal["met"], bool) and goal["value"] > 0
