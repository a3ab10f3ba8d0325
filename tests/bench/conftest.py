"""Runs `gateway bench SCENARIO --quick` the way a user does (through `gateway.cli.main`) and reads
the JSON result it wrote."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main as gateway_main


@dataclass
class BenchRun:
    exit_code: int
    result: dict[str, Any]
    stdout: str
    stderr: str


@pytest.fixture
def run_bench(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Callable[..., BenchRun]:
    """`run_bench("overhead", "--extra", ...)`: a quick run with its result file in tmp_path."""

    def run(scenario: str, *extra: str) -> BenchRun:
        out = tmp_path / f"{scenario}.json"
        code = gateway_main(["bench", scenario, "--quick", "--json", str(out), *extra])
        captured = capsys.readouterr()
        return BenchRun(code, json.loads(out.read_text()), captured.out, captured.err)

    return run


def check_envelope(result: dict[str, Any], scenario: str) -> None:
    """What every result file carries, whatever the scenario."""
    assert result["scenario"] == scenario
    assert result["quick"] is True
    assert result["command"].startswith(f"gateway bench {scenario} --quick")
    assert result["started_at"] and result["duration_s"] >= 0
    machine = result["machine"]
    assert machine["cores"] >= 1 and machine["python"] and machine["os"] and machine["memory_gib"] > 0


def check_percentiles(values: dict[str, float]) -> None:
    assert 0 < values["p50"] <= values["p90"] <= values["p99"] <= values["max"]
    assert values["mean"] > 0
