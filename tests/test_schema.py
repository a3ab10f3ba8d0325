"""The JSON Schema is the one definition of the config: valid 2020-12, documented, shipped files pass it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from gateway.config.schema import SCHEMA_PATH, load_schema

REPO = Path(__file__).resolve().parents[1]


def test_schema_is_valid_draft_2020_12() -> None:
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def _properties(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        for name, prop in node.get("properties", {}).items():
            if isinstance(prop, dict):
                found.append((f"{path}.{name}", prop))
        for key, value in node.items():
            if key in ("properties", "$defs"):
                for name, child in value.items():
                    found += _properties(child, f"{path}.{name}")
            elif isinstance(value, dict):
                found += _properties(value, f"{path}/{key}")
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    found += _properties(item, f"{path}/{key}[{i}]")
    return found


def test_every_property_is_described_for_editor_hover_help() -> None:
    root = load_schema()
    missing = []
    for path, prop in _properties(root):
        if "/if." in path:  # conditions of if/then, not settings
            continue
        described = "description" in prop
        if not described and "$ref" in prop:
            target = root
            for part in prop["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            described = "description" in target
        # Branch-local re-declarations (`{"default": ...}` or `true`) inherit the description declared beside.
        if not described and set(prop) <= {"default", "errorMessage"}:
            continue
        if not described:
            missing.append(path)
    assert not missing, f"properties without a description: {missing}"


def test_cli_schema_prints_the_schema_file() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "schema"], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == json.loads(SCHEMA_PATH.read_text())


SHIPPED = [REPO / "gateway.yaml", *sorted((REPO / "examples" / "configs").glob("*.yaml"))]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_configs_pass_gateway_check(path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check", str(path)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_kubernetes_example_config_passes_check_without_secrets(tmp_path: Path) -> None:
    import yaml

    manifest = REPO / "examples" / "kubernetes" / "gateway.k8s.yml"
    config_map = next(d for d in yaml.safe_load_all(manifest.read_text()) if d["kind"] == "ConfigMap")
    path = tmp_path / "gateway.yaml"
    path.write_text(config_map["data"]["gateway.yaml"])
    command = [sys.executable, "-m", "gateway.cli", "check", str(path)]
    env = {"PATH": "/usr/bin:/bin"}
    assert subprocess.run(command, capture_output=True, env=env).returncode == 1  # secrets are required
    result = subprocess.run([*command, "--no-env"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "OPENAI_API_KEY" in result.stderr
