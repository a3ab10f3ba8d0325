"""Smoke run of the gateway-overhead benchmark: the result's structure and sanity (no timing asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.overhead import main

TARGETS = ("direct", "gateway", "hypercorn_trivial", "minimal_proxy")


def _check_percentiles(values: dict[str, float]) -> None:
    assert 0 < values["p50"] <= values["p90"] <= values["p99"] <= values["max"]
    assert values["mean"] > 0


@pytest.mark.timeout(180)
def test_overhead_bench_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "overhead.json"
    assert main(["--quick", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| scenario |" in printed and "ceiling req/s" in printed

    result = json.loads(out.read_text())
    assert result["scenario"] == "overhead"
    assert result["quick"] is True
    assert result["failed_requests"] == 0
    assert result["requests"] == sum(p["requests"] for p in result["phases"]) > 0
    assert result["machine"]["cores"] >= 1 and result["machine"]["python"]

    phases = result["phases"]
    seen = {(p["target"], p["mode"], p["clients"]) for p in phases}
    for target in ("direct", "gateway"):
        for mode in ("non_streaming", "streaming"):
            for clients in (1, 32):
                assert (target, mode, clients) in seen
    assert {p["target"] for p in phases} == set(TARGETS)

    for phase in phases:
        assert phase["failed"] == 0, phase["errors"]
        assert phase["errors"] == []
        assert phase["requests"] > 0 and phase["rps"] > 0
        assert phase["answered"] >= phase["requests"]
        _check_percentiles(phase["latency_ms"])
        assert phase["cpu"]["server"]["us_per_request"] >= 0
        assert 0 <= phase["loadgen_cpu_share"] <= 1.5
        if phase["target"] in ("gateway", "minimal_proxy"):
            assert phase["cpu"]["upstream"]["process"] == "fake"
        if phase["mode"] == "streaming":
            _check_percentiles(phase["ttft_ms"])
            # The first token cannot come after the whole stream; every stream carried all its tokens.
            assert phase["ttft_ms"]["p50"] <= phase["latency_ms"]["p50"]
            assert phase["tokens_per_stream"] == {"min": 16, "max": 16}
        else:
            assert "ttft_ms" not in phase

    summary = result["summary"]
    rows = summary["rows"]
    assert [(r["mode"], r["clients"]) for r in rows] == [
        ("non_streaming", 1),
        ("non_streaming", 32),
        ("streaming", 1),
        ("streaming", 32),
    ]
    for row in rows:
        for side in ("direct", "gateway"):
            assert 0 < row[side]["p50"] <= row[side]["p99"]
            assert row[side]["rps"] > 0
        for q in ("p50", "p99"):
            assert row["added_ms"][q] == pytest.approx(row["gateway"][q] - row["direct"][q], abs=0.002)
        assert row["ceiling_rps"] >= row["direct"]["rps"]

    throughput = summary["throughput"]
    assert throughput["gateway_rps"] > 0
    assert throughput["ceiling_rps"] == summary["ceiling_rps"]["non_streaming"] == throughput["direct_rps"]
    assert throughput["hypercorn_trivial_rps"] > 0 and throughput["minimal_proxy_rps"] > 0
    assert set(summary["targets"]) == {"added_p50_ms_at_1_client", "gateway_rps_one_worker"}
    for target in summary["targets"].values():
        assert isinstance(target["met"], bool)
