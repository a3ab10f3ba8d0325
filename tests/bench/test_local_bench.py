"""`gateway bench local --quick` on the tiny model: the result's structure and sanity (no timing
asserted), and the pieces it is computed from."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from gateway.bench.harness.streams import prompts, summarize
from gateway.bench.local.servers import SYSTEMS

from tests.bench.conftest import BenchRun, check_envelope, check_percentiles

pytest.importorskip("mlx_lm")


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


def test_a_short_phase_s_rate_agrees_with_its_recorded_makespan() -> None:
    """A quick phase: 8 tokens in 21.2477 ms. Its makespan rounded to the millisecond (0.021 s) would
    make tokens / makespan_s 380.95 tok/s against the 376.51 reported; to the µs they agree."""
    record = {
        **dict.fromkeys(("t_first", "t_last", "t_done", "prompt_tokens", "cached_tokens", "error")),
        **{"stream": 0, "round": 0, "t_start": 0.0, "tokens": 8, "chunks": 8, "finish_reason": "length"},
    }
    summary = summarize([record], makespan=0.0212477, max_tokens=8)
    assert summary["makespan_s"] == 0.021248
    assert summary["aggregate_tokens_per_s"] == 376.51
    assert abs(summary["aggregate_tokens_per_s"] - 8 / summary["makespan_s"]) <= 0.005


def _check_generation(phase: dict[str, Any], max_tokens: int, requests: int) -> None:
    """Every request completed with exactly max_tokens tokens (from usage), with sane rates."""
    assert phase["failed"] == 0, phase["errors"]
    assert phase["requests"] == phase["completed"] == requests
    tokens = phase["tokens"]
    assert tokens["per_request_min"] == tokens["per_request_max"] == max_tokens
    assert tokens["all_ran_to_max_tokens"] is True
    assert tokens["total"] == requests * max_tokens
    # The rate is computed from the makespan as recorded (to the µs), then rounded to 0.01.
    assert abs(phase["aggregate_tokens_per_s"] - tokens["total"] / phase["makespan_s"]) <= 0.005 + 1e-9
    check_percentiles(phase["ttft_ms"])
    assert phase["ttft_ms"]["max"] <= phase["makespan_s"] * 1000
    assert phase["per_stream_tokens_per_s"]["p50"] > 0


@pytest.mark.timeout(600)
def test_local_quick(run_bench: Callable[..., BenchRun]) -> None:
    run = run_bench("local")
    assert run.exit_code == 0
    assert "| system | streams |" in run.stdout and "aggregate tok/s" in run.stdout
    assert "two models at once" in run.stdout and "4-bit weights" in run.stdout

    result = run.result
    check_envelope(result, "local")
    assert result["parts"] == ["servers", "two_models", "tiers", "grammar"]
    assert result["failed_requests"] == 0

    # servers: batching on and off, mlx_lm.server and the bare loop, at 1 and 4 streams.
    servers = result["servers"]
    assert servers["preset"] == "tiny" and servers["streams"] == [1, 4]
    assert servers["failed_requests"] == 0
    max_tokens, rounds = servers["max_tokens"], servers["rounds"]
    assert max_tokens > 1 and rounds >= 1
    assert "BLAS" in servers["blas"]
    assert servers["load_generator_loop"] == "uvloop"
    # Every system computes with the same OpenBLAS thread count (1 for tiny), and says so.
    assert servers["blas_threads"] == 1
    if servers["blas"].startswith("OpenBLAS"):
        assert servers["blas"].endswith(", 1 thread)"), servers["blas"]
        for name in ("gateway", "gateway_no_batching", "bare"):
            assert servers["systems"][name]["blas"].endswith(", 1 thread)"), (name, servers["systems"][name])
        assert servers["systems"]["mlx_lm_server"]["blas"] == "OPENBLAS_NUM_THREADS=1"
    assert set(servers["systems"]) == set(SYSTEMS)
    phases = servers["phases"]
    assert {(p["system"], p["streams"]) for p in phases} == {(s, n) for s in SYSTEMS for n in (1, 4)}
    prompt_sizes: dict[int, set[int]] = {}
    for phase in phases:
        _check_generation(phase, max_tokens, phase["streams"] * rounds)
        assert phase["warmup_failed"] == 0
        assert phase["tokens"]["finish_reasons"] == {"length": phase["streams"] * rounds}
        prompt_sizes.setdefault(phase["streams"], set()).add(phase["prompt_tokens"]["total"])
        assert phase["system_cpu_cores"] >= 0 and phase["foreign_cpu_cores"] >= 0
        assert phase["repeats"] == [phase["aggregate_tokens_per_s"]]  # one cycle in a quick run
        assert len(phase["request_log"]) == phase["requests"]
        if phase["system"] == "bare":
            assert phase["loadgen_cpu_share"] is None
        else:
            assert 0 <= phase["loadgen_cpu_share"] <= 1.5
    # The same prompts, through the same chat template, for every system.
    assert all(len(totals) == 1 for totals in prompt_sizes.values()), prompt_sizes
    assert set(servers["goals"]) == {"gateway_vs_mlx_lm_server_at_4", "gateway_vs_bare_at_4"}

    # two_models: one model at S and 2S streams, then two models at S streams each.
    two = result["two_models"]
    assert two["failed_requests"] == 0 and two["model"]["copies_loaded"] == 2
    s = two["streams"]
    names = [(p["name"], p["streams_per_model"], p["models_under_load"]) for p in two["phases"]]
    assert names == [("one_model", s, 1), ("one_model", 2 * s, 1), ("two_models", s, 2)]
    for phase in two["phases"]:
        under_load = phase["models_under_load"]
        _check_generation(phase, two["max_tokens"], phase["streams_per_model"] * under_load * two["rounds"])
    both = two["phases"][-1]
    assert set(both["per_model"]) == {"local-a", "local-b"}
    assert sum(m["tokens"]["total"] for m in both["per_model"].values()) == both["tokens"]["total"]

    # tiers: the tiny tier only in a quick run, 4-bit, checked against the memory available.
    tiers = result["tiers"]
    assert tiers["quantize"] == 4 and tiers["failed_requests"] == 0
    [tiny] = tiers["tiers"]
    assert tiny["tier"] == "tiny" and tiny["status"] == "measured" and tiny["fits"] is True
    assert 0 < tiny["weight_bytes"] < tiny["available_memory_bytes"]
    assert tiny["model_path"].endswith("tiny-q4")
    for phase in tiny["phases"]:
        _check_generation(phase, tiers["max_tokens"], phase["streams"] * tiers["rounds"])

    _check_grammar(result["grammar"])


def _check_grammar(grammar: dict[str, Any]) -> None:
    """Every mode at every stream count, decoding the same tokens; costs relative to `plain`."""
    from gateway.bench.local.grammar import MODES

    assert grammar["failed_requests"] == 0
    rows = grammar["rows"]
    assert [(r["mode"], r["streams"]) for r in rows] == [(m, s) for s in (1, 2) for m in MODES]
    for row in rows:
        assert row["tokens"] == row["streams"] * (grammar["max_tokens"] - 1) * grammar["rounds"]
        assert row["us_per_token"] > 0
        if row["mode"] == "plain":
            assert row["overhead_us"] == 0
    assert set(grammar["processor_us"]) == {"sampling", "json_schema"}
    assert all(us > 0 for us in grammar["processor_us"].values())


@pytest.mark.timeout(300)
def test_local_grammar_part_quick(run_bench: Callable[..., BenchRun]) -> None:
    run = run_bench("local", "--parts", "grammar")
    assert run.exit_code == 0
    assert "| mode | streams |" in run.stdout and "json_schema processors alone" in run.stdout
    assert run.result["parts"] == ["grammar"]
    _check_grammar(run.result["grammar"])


def test_tier_that_does_not_fit_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tier whose weights exceed the memory available is not loaded, and the result says why."""
    from gateway.modelgen import resources

    monkeypatch.setattr(resources, "available_memory_bytes", lambda: 4 * 2**30)
    from gateway.bench.local.tiers import memory_check

    check = memory_check("14b")
    assert check["fits"] is False
    assert "9.2 GB" in check["reason"] and "4.3 GB of memory is available" in check["reason"]
    assert memory_check("tiny")["fits"] is True
