"""The import rules of the package, read from the source (AST), not from what happens to be imported.

Every package (or top-level module) under `gateway` has a layer, and imports only from layers below
its own: never up, never sideways within a layer, so there is no import cycle between packages. The
layer order is written once, here; docs/architecture.md draws the same picture. `admin/` and `bench/`
are checked as the `gateway.admin` and `gateway.bench` they are installed as.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from tests.imports import imported_names, module_name

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"gateway": ROOT / "gateway", "gateway.admin": ROOT / "admin", "gateway.bench": ROOT / "bench"}

#: From the ground up. A package may import only from the layers before its own.
LAYERS: tuple[frozenset[str], ...] = tuple(
    frozenset(layer)
    for layer in (
        {"errors", "blas", "request_ids", "redis_link"},  # error kinds; OpenBLAS; request ids; a Redis link
        {"problems"},  # problem+json shapes of the errors
        {"config"},  # data only: YAML source spans, schema, load/validate, typed config, edit planning
        {"tracing"},  # spans (a shared no-op unless something receives them)
        {"protocol"},  # canonical form; OpenAI and Anthropic decoders/encoders; SSE; usage
        {"pricing"},  # the shipped price table, backend prices over it, usage -> cost
        {"auth"},  # keys, principals, exposure rules
        {"modelgen"},  # generated local models (files on disk)
        {"backends"},  # one contract, breaker, per-type settings; http, openai, anthropic, mlx
        {"limits", "cache"},  # key limits and backend quotas; the response cache (memory and Redis stores)
        {"routing"},  # the routing table, failover over a chain, the request trail
        {"audit", "telemetry"},  # records and signals built from the request trail
        {"runtime"},  # compile, prepare -> swap -> retire, watch, the edit transaction
        {"surfaces"},  # the model API over ASGI: parse, authenticate, route, encode at the edge
        {"admin"},  # admin API, panel, probes
        {"app"},  # wiring
        {"http1"},  # HTTP/1.1 over llhttp: requests parsed, responses framed, ASGI to the app
        {"connections"},  # accepting, per-connection deadlines and the drain, around Hypercorn's protocol
        {"server", "starter"},  # Hypercorn and the worker supervisor; the first run's config and `init`
        {"testing"},  # fake upstreams and gateway processes for tests and benchmarks
        {"bench"},  # benchmarks
        {"cli", "__main__"},  # commands
    )
)
LAYER_OF = {name: index for index, layer in enumerate(LAYERS) for name in layer}


def _unit(module: str) -> str | None:
    """`gateway.routing.failover` -> `routing`: the package (or top-level module) a module belongs to."""
    parts = module.split(".")
    return parts[1] if parts[0] == "gateway" and len(parts) > 1 else None


def _modules() -> dict[str, Path]:
    found = {}
    for prefix, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            found[module_name(prefix, folder, path)] = path
    return found


def _edges() -> dict[str, dict[str, set[str]]]:
    """unit -> imported unit -> the files that import it."""
    edges: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for module, path in _modules().items():
        source = _unit(module)
        if source is None:
            continue
        for name in imported_names(module, path):
            target = _unit(name)
            if target is not None and target != source:
                edges[source][target].add(str(path.relative_to(ROOT)))
    return edges


def test_every_package_has_a_layer() -> None:
    units = {_unit(module) for module in _modules()} - {None}
    assert not units - set(LAYER_OF), f"add these to LAYERS in {Path(__file__).name}: {units - set(LAYER_OF)}"


def test_imports_point_down_the_layers() -> None:
    wrong = [
        f"{source} (layer {LAYER_OF[source]}) imports {target} (layer {LAYER_OF[target]}) in {sorted(files)}"
        for source, targets in _edges().items()
        for target, files in targets.items()
        if source in LAYER_OF and target in LAYER_OF and LAYER_OF[target] >= LAYER_OF[source]
    ]
    assert not wrong, "imports that do not point down:\n" + "\n".join(sorted(wrong))


def test_no_import_cycle_between_packages() -> None:
    edges = {source: set(targets) for source, targets in _edges().items()}
    cycles = []
    for start in edges:
        # Depth-first search for a path back to `start`.
        stack = [(start, (start,))]
        seen: set[str] = set()
        while stack:
            node, path = stack.pop()
            for nxt in edges.get(node, ()):
                if nxt == start:
                    cycles.append(" -> ".join((*path, start)))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, (*path, nxt)))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles)))


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The rules catch what they claim: a config module importing the runtime is reported."""
    module = tmp_path / "bad.py"
    module.write_text("from gateway.runtime.live import LiveRuntime\nfrom ..backends import base\n")
    named = imported_names("gateway.config.bad", module)
    assert {_unit(name) for name in named} == {"runtime", "backends"}
    assert LAYER_OF["runtime"] > LAYER_OF["config"] and LAYER_OF["backends"] > LAYER_OF["config"]


@pytest.mark.parametrize("folder", sorted(SOURCES))
def test_sources_exist(folder: str) -> None:
    assert (SOURCES[folder] / "__init__.py").is_file()
