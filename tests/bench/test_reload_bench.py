"""Smoke run of the reload benchmark: the result's structure, and no failed request (no timing asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.reload import main


def test_reload_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "reload.json"
    assert main(["--quick", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["scenario"] == "reload"
    assert result["reloads"] == 5
    assert result["failed_requests"] == 0
    assert result["requests"] > 0
    latency = result["edit_to_live_ms"]
    assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]
