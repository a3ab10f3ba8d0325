"""The `gateway bench` command itself: scenarios listed, result paths, the progress line, and the
old `python -m gateway.bench.X` entry points still reaching the same code."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from gateway.bench.cli import SCENARIOS, build_parser
from gateway.bench.harness.progress import Progress, say
from gateway.bench.harness.results import RESULTS_DIR, default_result_path, machine, markdown_table

from gateway.cli import main as gateway_main

ROOT = Path(__file__).resolve().parents[2]


def test_every_scenario_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    assert set(SCENARIOS) == {
        "overhead",
        "peers",
        "local",
        "failover",
        "cloud",
        "reload",
        "telemetry",
        "audit",
        "faults",
        "streams-held",
        "limits",
        "cache",
        "routing",
        "mutation",
    }
    with pytest.raises(SystemExit) as exit_info:
        gateway_main(["bench", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in SCENARIOS:
        assert name in out
    # Every scenario has --quick and --json.
    parser = build_parser()
    for name in SCENARIOS:
        args = parser.parse_args([name, "--quick", "--json", "x.json"])
        assert args.quick is True and args.json == Path("x.json")


def test_gateway_help_lists_bench(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        gateway_main(["--help"])
    assert "bench" in capsys.readouterr().out


def test_unknown_scenario_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        gateway_main(["bench", "nope"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_results_default_to_bench_results_and_quick_runs_do_not_overwrite_full_ones() -> None:
    assert default_result_path("overhead", False) == RESULTS_DIR / "overhead.json"
    assert default_result_path("overhead", True) == RESULTS_DIR / "overhead-quick.json"
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(RESULTS_DIR / "overhead.json")], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0, "bench/results/ must be git-ignored"


def test_progress_without_a_terminal_prints_one_line_per_step() -> None:
    stream = io.StringIO()
    with Progress("bench x", 2, stream=stream) as progress:
        with progress.step("first"):
            say("a message")
        with progress.step("second"):
            pass
        with progress.step("a third, more than announced"):
            pass
    lines = stream.getvalue().splitlines()
    assert lines[:4] == ["[1/2] first", "a message", "[2/2] second", "[3/3] a third, more than announced"]
    assert lines[4].startswith("bench x: 3 steps in ")


def test_progress_bar_line() -> None:
    progress = Progress("bench x", 4, stream=io.StringIO())
    progress.done, progress.label = 2, "phase"
    line = progress.line(200)
    assert line.startswith("bench x [##########..........] 2/4 ") and line.endswith("phase")
    assert len(progress.line(30)) <= 29


def test_disabled_progress_prints_nothing() -> None:
    stream = io.StringIO()
    with Progress("bench x", 1, stream=stream, enabled=False) as progress, progress.step("one"):
        pass
    assert stream.getvalue() == ""


def test_markdown_table_and_machine() -> None:
    assert markdown_table(["a", "b"], [["x", 1]]) == "| a | b |\n| --- | ---: |\n| x | 1 |"
    found = machine()
    assert found["cores"] >= 1 and found["python"] and found["os"]


def test_python_m_aliases_reach_the_cli() -> None:
    for module in ("gateway.bench.overhead", "gateway.bench.local", "gateway.bench.reload", "gateway.bench"):
        out = subprocess.run(
            [sys.executable, "-m", module, *(["failover"] if module == "gateway.bench" else []), "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert "--quick" in out and "--json" in out
