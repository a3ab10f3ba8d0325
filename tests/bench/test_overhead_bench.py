"""`gateway bench overhead --quick`: the result's structure and sanity (no timing asserted)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.bench.conftest import BenchRun, check_envelope, check_percentiles

TARGETS = (
    "direct",
    "gateway",
    "gateway_audit_off",
    "gateway_2_workers",
    "hypercorn_trivial",
    "minimal_proxy",
)
CLIENTS = (1, 8, 32)


@pytest.mark.timeout(300)
def test_overhead_quick(run_bench: Callable[..., BenchRun]) -> None:
    run = run_bench("overhead")
    assert run.exit_code == 0
    assert "| scenario |" in run.stdout and "ceiling req/s" in run.stdout
    assert "2 workers, audit log on" in run.stdout and "1 worker, audit log off" in run.stdout
    assert "Rerun: `gateway bench overhead --quick" in run.stdout

    result = run.result
    check_envelope(result, "overhead")
    assert result["failed_requests"] == 0
    assert result["requests"] == sum(p["requests"] for p in result["phases"]) > 0

    phases = result["phases"]
    seen = {(p["target"], p["mode"], p["clients"]) for p in phases}
    for target in ("direct", "gateway", "gateway_audit_off", "gateway_2_workers"):
        for mode in ("non_streaming", "streaming"):
            for clients in CLIENTS:
                assert (target, mode, clients) in seen
    assert {p["target"] for p in phases} == set(TARGETS)

    for phase in phases:
        assert phase["failed"] == 0, phase["errors"]
        assert phase["requests"] > 0 and phase["rps"] > 0
        assert phase["answered"] >= phase["requests"]
        check_percentiles(phase["latency_ms"])
        assert phase["cpu"]["server"]["us_per_request"] > 0
        assert 0 <= phase["loadgen_cpu_share"] <= 1.5
        if phase["target"].startswith("gateway") or phase["target"] == "minimal_proxy":
            assert phase["cpu"]["upstream"]["process"] == "fake"
        if phase["mode"] == "streaming":
            check_percentiles(phase["ttft_ms"])
            assert phase["ttft_ms"]["p50"] <= phase["latency_ms"]["p50"]
            assert phase["tokens_per_stream"] == {"min": 16, "max": 16}
        else:
            assert "ttft_ms" not in phase

    summary = result["summary"]
    assert [(r["mode"], r["clients"]) for r in summary["rows"]] == [
        (mode, n) for mode in ("non_streaming", "streaming") for n in CLIENTS
    ]
    for row in summary["rows"]:
        for side in ("direct", "gateway"):
            assert 0 < row[side]["p50"] <= row[side]["p99"] and row[side]["rps"] > 0
        for q in ("p50", "p99"):
            assert row["added_ms"][q] == pytest.approx(row["gateway"][q] - row["direct"][q], abs=0.002)
        # The ceiling is the best the rig managed against the fake directly: beside every row.
        assert row["ceiling_rps"] >= row["direct"]["rps"]

    variants = {v["variant"]: v for v in summary["variants"]}
    assert set(variants) == {"gateway", "gateway_audit_off", "gateway_2_workers"}
    assert (variants["gateway"]["workers"], variants["gateway"]["audit"]) == (1, True)
    assert (variants["gateway_audit_off"]["workers"], variants["gateway_audit_off"]["audit"]) == (1, False)
    assert (variants["gateway_2_workers"]["workers"], variants["gateway_2_workers"]["audit"]) == (2, True)
    for variant in variants.values():
        assert len(variant["rows"]) == 2 * len(CLIENTS)
        assert variant["max_rps"] > 0

    throughput = summary["throughput"]
    assert throughput["ceiling_rps"] == summary["ceiling_rps"]["non_streaming"] == throughput["direct_rps"]
    assert throughput["hypercorn_trivial_rps"] > 0 and throughput["minimal_proxy_rps"] > 0
    for target in summary["targets"].values():
        assert isinstance(target["met"], bool)


@pytest.mark.timeout(300)
def test_overhead_shadow_variant_quick(run_bench: Callable[..., BenchRun]) -> None:
    """`--variants shadow`: the same load with every request shadowed, beside the default (off)."""
    run = run_bench("overhead", "--variants", "shadow", "--no-baselines", "--clients", "1")
    assert run.exit_code == 0
    assert "every request shadowed" in run.stdout
    result = run.result
    assert result["failed_requests"] == 0
    variants = {v["variant"]: v for v in result["summary"]["variants"]}
    assert set(variants) == {"gateway", "gateway_shadow"}
    for variant in variants.values():
        assert [(r["mode"], r["clients"]) for r in variant["rows"]] == [
            ("non_streaming", 1),
            ("streaming", 1),
        ]


@pytest.mark.timeout(300)
def test_overhead_audit_pairs_quick(run_bench: Callable[..., BenchRun]) -> None:
    """`--pairs N`: the audit log's cost as N pairs of phases (on, then off), with the medians."""
    run = run_bench("overhead", "--variants", "none", "--no-baselines", "--clients", "1", "--pairs", "2")
    assert run.exit_code == 0
    assert "Audit log on and off in pairs (1 clients" in run.stdout
    paired = run.result["summary"]["audit_pairs"]
    assert paired["clients"] == 1 and len(paired["pairs"]) == 2
    for pair in paired["pairs"]:
        assert pair["on_rps"] > 0 and pair["off_rps"] > 0
        assert pair["ratio"] == round(pair["on_rps"] / pair["off_rps"], 4)
        assert pair["audit_us_per_request"] == round(
            pair["on_cpu_us_per_request"] - pair["off_cpu_us_per_request"], 1
        )
    ratios = sorted(pair["ratio"] for pair in paired["pairs"])
    assert paired["median_ratio"] == pytest.approx(sum(ratios) / 2)
    # The pairs are not phases of the run's tables: those hold the default gateway's rows only.
    assert {phase["target"] for phase in run.result["phases"]} == {"direct", "gateway"}
