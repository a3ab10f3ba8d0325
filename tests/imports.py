"""Reading a module's imports from its source (AST), for the tests that hold the package's import
rules (`tests/test_layers.py`, `tests/bench/test_scenario_imports.py`)."""

from __future__ import annotations

import ast
from pathlib import Path

__all__ = ["imported_names", "module_name"]


def module_name(prefix: str, folder: Path, path: Path) -> str:
    """`gateway.bench` + bench/ + bench/local/tiers.py -> `gateway.bench.local.tiers`."""
    return ".".join((prefix, *path.relative_to(folder).with_suffix("").parts)).removesuffix(".__init__")


def imported_names(module: str, path: Path) -> set[str]:
    """Every module an import statement names, anywhere in the file (functions and `if TYPE_CHECKING:`
    blocks included: a type-only import is still a dependency). `from a.b import c` names both `a.b`
    and `a.b.c`, since `c` may be a module (`from gateway.bench import local`)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    named: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            named.add(base)
            named.update(f"{base}.{alias.name}" for alias in node.names)
    return named
