"""`gateway bench mutation`: the AST mutator (every site numbered in a fixed order, one mutant applied
at a time) and a quick run (three mutants of `gateway.surfaces.access` against its unit tests)."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

from gateway.bench import mutation

from tests.bench.conftest import BenchRun, check_envelope

SAMPLE = '''"""A docstring stays."""


def f(x: int = 3) -> bool:
    """So does this one."""
    if not x and x < 2:
        g()
        return x + 1
    return None
'''


def test_mutants_are_numbered_and_applied_one_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "sample.py"
    path.write_text(SAMPLE)
    found = mutation.mutants(path)
    assert [(m.line, m.key) for m in found] == [
        (6, "f: and → or"),
        (6, "f: not x → x"),
        (6, "f: < → <="),
        (6, "f: 2 → 3"),
        (7, "f: removed `g()`"),
        (8, "f: return x → return None"),
        (8, "f: + → -"),
        (8, "f: 1 → 2"),
    ]
    assert mutation.mutants(path) == found
    baseline = mutation.mutated_source(path, -1)
    assert ast.dump(ast.parse(baseline)) == ast.dump(ast.parse(SAMPLE))
    changed = mutation.mutated_source(path, 2)
    assert "x <= 2" in changed and "x < 2" not in changed
    assert "x: int=3" in changed  # argument defaults and annotations are left alone


def test_a_key_names_its_scope_and_survives_edits_elsewhere(tmp_path: Path) -> None:
    path = tmp_path / "sample.py"
    path.write_text(SAMPLE)
    before = [m.key for m in mutation.mutants(path)]
    path.write_text(SAMPLE.replace('"""A docstring stays."""', '"""A docstring stays."""\n\nLIMIT = 1 < 2\n'))
    after = mutation.mutants(path)
    assert [m.key for m in after][:2] == ["<module>: < → <=", "<module>: 1 → 2"]
    assert [m.key for m in after][3:] == before  # f's mutants keep their keys, not their lines
    path.write_text("class C:\n    def m(self, x):\n        return x < 1 or x < 2\n")
    keys = [m.key for m in mutation.mutants(path)]
    assert "C.m: < → <=" in keys and "C.m: < → <= #2" in keys


def test_every_module_mapped_exists_with_its_tests() -> None:
    root = Path(mutation.__file__).resolve().parent.parent
    for module, tests in mutation.MODULES.items():
        assert mutation.module_path(module).is_file(), module
        assert tests and all((root / t).is_file() for t in tests), module
    for module, equivalents in mutation.EQUIVALENT.items():
        keys = {m.key for m in mutation.mutants(mutation.module_path(module))}
        assert set(equivalents) <= keys, f"{module}: an equivalent mutant no longer exists"


def test_mutation_quick(run_bench: Callable[..., BenchRun]) -> None:
    run = run_bench("mutation")
    assert run.exit_code == 0
    result = run.result
    check_envelope(result, "mutation")
    [module] = result["modules"]
    assert module["module"] == "gateway.surfaces.access"
    assert module["run"] == 3
    assert module["killed"] + module["equivalent"] + len(module["survived"]) == 3
    assert "| `gateway.surfaces.access` | 3 of" in run.stdout
