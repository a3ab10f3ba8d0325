"""Every property the schema documents is read by the code: "a setting the schema documents is
enforced by code, or it is not in the schema".

The check walks the whole schema (`properties` through `$ref`, `allOf` / `if` / `then`, `oneOf`,
`anyOf`, `items` and `additionalProperties`) beside the typed config it loads into, from `Config`
down: each schema property must be a field of the dataclass its object loads into (for a backend,
of every settings class its `type` branch applies to), and each such field must be read as an
attribute (`.field`) somewhere in the code that runs outside `gateway/config/`. The few properties
consumed while loading itself are listed in `CONSUMED_BY_THE_LOADER`, each with the reason.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import types
import typing
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config.backends import SETTINGS_BY_TYPE, BackendSettings
from gateway.config.model import Config, TargetGroup
from gateway.config.schema import load_schema

ROOT = Path(__file__).resolve().parents[2]
#: Where the runtime reads its settings: the package outside its config layer, and the admin app.
#: (`gateway/testing/` holds the fakes tests use; a read there enforces nothing.)
RUNTIME_SOURCES = (ROOT / "gateway", ROOT / "admin")
NOT_RUNTIME = (ROOT / "gateway" / "config", ROOT / "gateway" / "testing")

#: Schema properties read while the file is loaded, and not kept as a field of their own.
CONSUMED_BY_THE_LOADER: dict[str, str] = {
    "version": "the file format's version: the schema accepts only 1 (Config.version is the hash of "
    "the file's bytes, another thing)",
    "auth.client_keys[].key": "hashed at load into key_sha256; keys are compared by hash and the key "
    "itself is never kept",
    "auth.admin_keys[].key": "hashed at load into key_sha256, as for client keys",
    "backends{}.resource": "an azure_openai resource name: builds base_url "
    "(https://{resource}.openai.azure.com) when none is given",
}

#: Fields read by name through an accessor of the config class (a `getattr` the AST scan cannot see):
#: property -> the accessor, which must itself be read outside gateway/config/.
READ_THROUGH: dict[str, str] = {
    f"timeouts.{kind}": "for_kind"  # TimeoutTiers.for_kind(kind), called per request by endpoint kind
    for kind in ("chat", "completions", "embeddings")
}

Owners = tuple[type, ...]

#: Properties whose object loads into a config class other than a field of its parent's class:
#: property -> that class (its own properties are then checked against it).
LOADS_INTO: dict[str, Owners] = {
    # A chain step that is a group: a TargetGroup in ModelConfig.steps (its members also in .chain).
    "models{}.chain[].group": (TargetGroup,),
}


def _resolve(root: dict[str, Any], ref: str) -> Any:
    node: Any = root
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _hints(owner: type) -> dict[str, Any]:
    """Every annotated name of a config class (fields and ClassVars, inherited ones too)."""
    return typing.get_type_hints(owner)


def _dataclasses_in(annotation: Any) -> Owners:
    """The config classes an annotated value loads into: `X`, `X | None` and `tuple[X, ...]` give X;
    `BackendSettings` gives every registered settings class."""
    origin = typing.get_origin(annotation)
    if origin is typing.ClassVar:
        return ()
    if origin in (typing.Union, types.UnionType, tuple):
        found: list[type] = []
        for arg in typing.get_args(annotation):
            if arg is not Ellipsis:
                found.extend(_dataclasses_in(arg))
        return tuple(found)
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        if annotation is BackendSettings:
            return tuple(SETTINGS_BY_TYPE.values())
        return (annotation,)
    return ()


def _narrow(owners: Owners, condition: Any) -> Owners:
    """The owners an `if` applies to: a condition on `type` (const or enum) keeps the classes whose
    `type` it names; any other condition keeps them all."""
    if not isinstance(condition, dict):
        return owners
    tag = condition.get("properties", {}).get("type", {})
    names = [tag["const"]] if "const" in tag else tag.get("enum")
    if names is None:
        return owners
    return tuple(o for o in owners if getattr(o, "type", None) in names)


@dataclasses.dataclass(frozen=True)
class SchemaProperty:
    path: str  # e.g. "backends{}.max_queue", "models{}.chain[].backend"
    name: str
    owners: Owners


def schema_properties(schema: dict[str, Any], root: Owners = (Config,)) -> Iterator[SchemaProperty]:
    """Every property of `schema`, with the config classes whose instances its object loads into."""

    def walk(node: Any, owners: Owners, path: str, depth: int = 0) -> Iterator[SchemaProperty]:
        if not isinstance(node, dict) or depth > 20:
            return
        if "$ref" in node:
            yield from walk(_resolve(schema, node["$ref"]), owners, path, depth + 1)
        for keyword in ("allOf", "oneOf", "anyOf"):
            for part in node.get(keyword, ()):
                yield from walk(part, owners, path, depth + 1)
        # The `if` of if/then is a condition on settings, not settings; it narrows `then`.
        if "then" in node:
            yield from walk(node["then"], _narrow(owners, node.get("if")), path, depth + 1)
        if "else" in node:
            yield from walk(node["else"], owners, path, depth + 1)
        for name, prop in node.get("properties", {}).items():
            if prop is True:  # re-declared where `unevaluatedProperties` needs it; described beside
                continue
            here = f"{path}.{name}" if path else name
            yield SchemaProperty(here, name, owners)
            children = LOADS_INTO.get(here) or tuple(
                dict.fromkeys(
                    c for o in owners if name in _hints(o) for c in _dataclasses_in(_hints(o)[name])
                )
            )
            yield from walk_value(prop, children, here, depth + 1)

    def walk_value(node: Any, owners: Owners, path: str, depth: int) -> Iterator[SchemaProperty]:
        """A property's own schema: an object of `owners`, a list of them, or a named map of them."""
        if not isinstance(node, dict) or not owners:
            return
        yield from walk(node, owners, path, depth)
        if isinstance(node.get("items"), dict):
            yield from walk_value(node["items"], owners, f"{path}[]", depth + 1)
        if isinstance(node.get("additionalProperties"), dict):
            yield from walk_value(node["additionalProperties"], owners, f"{path}{{}}", depth + 1)
        if "$ref" in node:
            target = _resolve(schema, node["$ref"])
            for key, suffix in (("items", "[]"), ("additionalProperties", "{}")):
                if isinstance(target.get(key), dict):
                    yield from walk_value(target[key], owners, f"{path}{suffix}", depth + 1)

    yield from walk(schema, root, "")


def attributes_read(sources: Iterable[Path], excluded: Iterable[Path] = NOT_RUNTIME) -> set[str]:
    """Every name read as an attribute (`x.name`) in the Python files under `sources`."""
    skip = tuple(excluded)
    names: set[str] = set()
    for source in sources:
        for path in source.rglob("*.py"):
            if any(path.is_relative_to(folder) for folder in skip):
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                    names.add(node.attr)
    return names


def unread_properties(
    schema: dict[str, Any],
    read: set[str],
    consumed: dict[str, str] = CONSUMED_BY_THE_LOADER,
) -> list[str]:
    """What is wrong, one line per schema property nothing reads; [] when every one is read."""
    problems = []
    for prop in schema_properties(schema):
        if prop.path in consumed or prop.path in LOADS_INTO:
            continue
        if not prop.owners:
            problems.append(f"{prop.path}: its object loads into no config class")
            continue
        missing = [o.__name__ for o in prop.owners if prop.name not in _hints(o)]
        if missing:
            problems.append(f"{prop.path}: not a field of {', '.join(missing)}")
        elif prop.name not in read and READ_THROUGH.get(prop.path) not in read:
            owners = ", ".join(o.__name__ for o in prop.owners)
            problems.append(f"{prop.path}: {owners}.{prop.name} is never read outside gateway/config/")
    return sorted(set(problems))


@pytest.fixture(scope="module")
def read() -> set[str]:
    return attributes_read(RUNTIME_SOURCES)


def test_every_schema_property_is_read_by_the_code(read: set[str]) -> None:
    assert unread_properties(load_schema(), read) == []


def test_the_walk_reaches_every_part_of_the_schema() -> None:
    """Guards the checker itself: properties behind $ref, items, named maps and if/then are visited,
    each with the classes it loads into."""
    found = {p.path: {o.__name__ for o in p.owners} for p in schema_properties(load_schema())}
    assert found["server.port"] == {"ServerConfig"}
    assert found["timeouts.chat.first_byte"] == {"TimeoutTier"}  # via $ref
    assert found["auth.client_keys[].models"] == {"ClientKey"}  # via items and $ref
    assert found["models{}.chain[].backend"] == {"Target"}  # a named map, then a list
    assert found["failover.circuit_breaker.cooldown_seconds"] == {"CircuitBreakerPolicy"}
    # Common backend settings belong to every type; a branch's to the types its `if` names.
    assert found["backends{}.max_concurrency"] == {cls.__name__ for cls in SETTINGS_BY_TYPE.values()}
    assert found["backends{}.prompt_cache_size"] == {"MLXSettings"}
    assert found["backends{}.organization"] == {"OpenAISettings"}
    assert found["backends{}.max_connections"] == {
        "OpenAISettings",
        "AnthropicSettings",
        "OpenAICompatibleSettings",
        "GeminiSettings",
        "AzureOpenAISettings",
        "BedrockSettings",
        "VertexSettings",
    }


def _backend_branch(schema: dict[str, Any], kind: str) -> dict[str, Any]:
    for part in schema["$defs"]["backend"]["allOf"]:
        if part["if"]["properties"]["type"].get("const") == kind:
            return part["then"]
    raise LookupError(kind)


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (("$defs", "backend"), "backends{}.warm_up_requests: not a field of"),
        (("properties", "audit"), "audit.warm_up_requests: not a field of AuditConfig"),
        (("$defs", "chain_step"), "models{}.chain[].warm_up_requests: not a field of Target"),
        (("$defs", "timeout_tier"), "timeouts.chat.warm_up_requests: not a field of TimeoutTier"),
    ],
)
def test_a_property_nothing_reads_fails_the_check(
    read: set[str], where: tuple[str, str], expected: str
) -> None:
    schema = copy.deepcopy(load_schema())
    schema[where[0]][where[1]].setdefault("properties", {})["warm_up_requests"] = {
        "description": "Requests sent at start to warm the backend.",
        "type": "integer",
        "default": 0,
    }
    problems = unread_properties(schema, read)
    assert any(p.startswith(expected) for p in problems), problems


def test_a_property_in_one_type_branch_must_be_a_field_of_that_type(read: set[str]) -> None:
    """`max_batch_size` is an MLXSettings field: declared for anthropic too, the check names the
    class that lacks it."""
    schema = copy.deepcopy(load_schema())
    _backend_branch(schema, "anthropic")["properties"]["max_batch_size"] = {
        "description": "Most sequences decoded together.",
        "type": "integer",
    }
    assert "backends{}.max_batch_size: not a field of AnthropicSettings" in unread_properties(schema, read)


def test_a_field_the_runtime_never_reads_fails_the_check() -> None:
    """Without the HTTP backend's source, nothing reads `max_connections` (the pool size)."""
    http = ROOT / "gateway" / "backends" / "http.py"
    read = attributes_read(RUNTIME_SOURCES, excluded=(*NOT_RUNTIME, http))
    problems = unread_properties(load_schema(), read)
    assert any(p.startswith("backends{}.max_connections:") and "never read" in p for p in problems), problems


def test_every_exception_names_a_property_the_schema_has() -> None:
    paths = {p.path for p in schema_properties(load_schema())}
    assert set(CONSUMED_BY_THE_LOADER) <= paths
    assert set(READ_THROUGH) <= paths


def test_a_field_read_through_an_accessor_needs_the_accessor_called() -> None:
    """The timeout tiers are read with `TimeoutTiers.for_kind(kind)`: without its callers (the model
    API and its shadow copies, the admin API, the panel's benchmark and `gateway check`), nothing
    reads them."""
    callers = (
        ROOT / "gateway" / "surfaces" / "model_api.py",
        ROOT / "gateway" / "surfaces" / "shadow.py",
        ROOT / "gateway" / "cli.py",
        ROOT / "admin" / "api.py",
        ROOT / "admin" / "bench_runner.py",
    )
    read = attributes_read(RUNTIME_SOURCES, excluded=(*NOT_RUNTIME, *callers))
    problems = unread_properties(load_schema(), read)
    assert "timeouts.chat: TimeoutTiers.chat is never read outside gateway/config/" in problems
