"""The backend registry: one backend class per settings type, built as `cls(settings, shared)`, and
no code anywhere choosing by comparing a backend's `type` to a name."""

from __future__ import annotations

import ast
from pathlib import Path

from gateway.backends.base import Backend, SharedResources
from gateway.backends.mlx.store import LocalModelStore
from gateway.backends.registry import BACKEND_CLASSES, build_backend
from gateway.config.backends import SETTINGS_BY_TYPE
from gateway.config.load import parse_config

ROOT = Path(__file__).resolve().parents[2]
TEXT = b"""
backends:
  local: {type: mlx, path: models/tiny, load: first_use}
  oa: {type: openai, api_key: "${OA_KEY}", organization: org-1}
  an: {type: anthropic, api_key: "${AN_KEY}", max_concurrency: 3}
  vllm: {type: openai_compatible, base_url: "http://127.0.0.1:8000/v1"}
models:
  m: {chain: [{backend: vllm}]}
"""
ENV = {"OA_KEY": "sk", "AN_KEY": "sk"}


def test_every_settings_type_has_a_backend_class() -> None:
    assert set(BACKEND_CLASSES) == set(SETTINGS_BY_TYPE)


def test_each_backend_is_built_from_its_settings() -> None:
    config = parse_config(TEXT, Path("/srv/gw/gateway.yaml"), env=ENV)
    shared = SharedResources(local_models=LocalModelStore())
    for settings in config.backends:
        backend = build_backend(settings, shared)
        assert isinstance(backend, BACKEND_CLASSES[settings.type])  # type: ignore[arg-type]
        assert isinstance(backend, Backend)
        assert backend.config is settings and backend.name == settings.name
        assert (backend.concurrency is None) == (settings.max_concurrency == 0)
    an = build_backend(config.backend("an"), shared)  # type: ignore[arg-type]
    assert an.concurrency is not None and an.concurrency.limit == 3


def test_openai_sends_the_organization_and_a_compatible_server_gets_no_such_header() -> None:
    config = parse_config(TEXT, Path("/srv/gw/gateway.yaml"), env=ENV)
    shared = SharedResources(local_models=LocalModelStore())
    oa = build_backend(config.backend("oa"), shared)  # type: ignore[arg-type]
    vllm = build_backend(config.backend("vllm"), shared)  # type: ignore[arg-type]
    an = build_backend(config.backend("an"), shared)  # type: ignore[arg-type]
    assert oa.default_headers()["openai-organization"] == "org-1"  # type: ignore[attr-defined]
    assert oa.default_headers()["authorization"] == "Bearer sk"  # type: ignore[attr-defined]
    assert "openai-organization" not in vllm.default_headers()  # type: ignore[attr-defined]
    assert an.default_headers()["anthropic-version"] == "2023-06-01"  # type: ignore[attr-defined]


def _type_comparisons(source: str, name: str) -> list[str]:
    """`x.type == "mlx"` (or `!=`, `in`) with a backend type name: choosing by tag in code."""
    found = []
    names = set(SETTINGS_BY_TYPE)
    for node in ast.walk(ast.parse(source, name)):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        tagged = any(isinstance(s, ast.Attribute) and s.attr == "type" for s in sides)
        constants = {
            c.value
            for s in sides
            for c in ast.walk(s)
            if isinstance(c, ast.Constant) and isinstance(c.value, str)
        }
        if tagged and constants & names:
            found.append(f"{name}:{node.lineno}")
    return found


def test_no_code_branches_on_the_backend_type() -> None:
    found = [
        hit
        for folder in ("gateway", "admin")
        for path in (ROOT / folder).rglob("*.py")
        for hit in _type_comparisons(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert found == [], "choose by registry (type -> class), not by comparing `.type`: " + ", ".join(found)


def test_the_branch_check_sees_a_branch() -> None:
    source = (
        "def f(config):\n"
        '    if config.type == "mlx":\n'
        "        return 1\n"
        '    return config.type in ("openai",)\n'
    )
    assert _type_comparisons(source, "sample.py") == ["sample.py:2", "sample.py:4"]
