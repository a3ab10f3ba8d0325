"""The benchmarks' import rules, read from the source (AST): a scenario imports what it shares from
`bench/harness/`, never from another scenario; the harness imports no scenario; `bench/cli.py` (the
one place that knows every scenario) names them in `SCENARIOS`.

A scenario is a module of `bench/` (`overhead.py`) or a package of it (`local/`, whose parts may
import one another); the programs that scenarios start as processes (`baselines.py`,
`telemetry.py`) count as scenarios too, so nothing imports them either.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from gateway.bench.cli import SCENARIOS

from tests.imports import imported_names, module_name

BENCH = Path(__file__).resolve().parents[2] / "bench"
PREFIX = "gateway.bench"
#: Units of bench/ that are not scenarios.
NOT_SCENARIOS = {"harness", "cli", "__init__", "__main__"}


def _unit(module: str) -> str | None:
    """`gateway.bench.local.tiers` -> `local`; None outside gateway.bench (or for the package itself)."""
    parts = module.split(".")
    return parts[2] if parts[:2] == PREFIX.split(".") and len(parts) > 2 else None


def _wrong_imports(module: str, path: Path) -> list[str]:
    unit = _unit(module) or "__init__"
    wrong = []
    for name in sorted(imported_names(module, path)):
        target = _unit(name)
        if target is None or target == unit or target == "harness":
            continue
        if unit == "harness":
            wrong.append(f"{module}: the harness imports {name}")
        elif unit not in NOT_SCENARIOS:
            wrong.append(f"{module}: scenario {unit} imports {name}")
    return wrong


def test_scenarios_import_only_the_harness_and_the_harness_no_scenario() -> None:
    wrong = [
        line
        for path in sorted(BENCH.rglob("*.py"))
        for line in _wrong_imports(module_name(PREFIX, BENCH, path), path)
    ]
    assert not wrong, "imports between scenarios (move what they share into bench/harness/):\n" + "\n".join(
        wrong
    )


def test_every_scenario_of_the_command_is_a_scenario_unit() -> None:
    for name, (module, _help) in SCENARIOS.items():
        assert _unit(module) not in NOT_SCENARIOS | {None}, name
        assert (BENCH / f"{_unit(module)}.py").is_file() or (BENCH / str(_unit(module))).is_dir(), name


@pytest.mark.parametrize(
    ("where", "source", "complaint"),
    [
        ("peers.py", "from gateway.bench.overhead import LoadBench\n", "scenario peers imports"),
        ("local/tiers.py", "from ..overhead import int_list\n", "scenario local imports"),
        ("harness/phases.py", "from gateway.bench import local\n", "the harness imports"),
    ],
)
def test_the_checker_sees_a_forbidden_import(tmp_path: Path, where: str, source: str, complaint: str) -> None:
    copy = tmp_path / Path(where).name
    copy.write_text(source)
    found = _wrong_imports(module_name(PREFIX, BENCH, BENCH / where), copy)
    assert found and complaint in found[0], found


def test_the_checker_allows_the_harness_and_a_package_s_own_parts(tmp_path: Path) -> None:
    copy = tmp_path / "tiers.py"
    copy.write_text("from gateway.bench.harness.streams import summarize\nfrom . import servers\n")
    assert _wrong_imports("gateway.bench.local.tiers", copy) == []
