"""Capabilities in the config: each backend type's defaults, overrides per backend and per chain target,
and that a change of them re-routes without rebuilding the backend."""

from __future__ import annotations

from pathlib import Path

from gateway.config.capabilities import CAPABILITIES, DEFAULTS_BY_TYPE, default_capabilities
from gateway.config.load import parse_config
from gateway.config.model import Config
from gateway.config.schema import load_schema

ALL = frozenset(CAPABILITIES)
TEXT = """
backends:
  oa: {type: openai, api_key: "${OA_KEY}"}
  vllm:
    type: openai_compatible
    base_url: "http://127.0.0.1:8000/v1"
    capabilities: {top_k: true, logprobs: false}
  an: {type: anthropic, api_key: "${AN_KEY}", capabilities: {images: false}}
  local: {type: mlx, path: models/tiny}
models:
  m:
    chain:
      - {backend: vllm, model: small, capabilities: {tools: false, images: false}}
      - {backend: oa, model: gpt-4o}
      - {backend: oa, model: text-embedding-3-small}
      - {backend: an}
      - {backend: local, capabilities: {images: true}}
"""
ENV = {"OA_KEY": "sk-oa", "AN_KEY": "sk-an"}


def config(text: str = TEXT) -> Config:
    return parse_config(text.encode(), Path("/srv/gw/gateway.yaml"), env=ENV)


def test_the_defaults_of_each_type() -> None:
    assert DEFAULTS_BY_TYPE["openai"] == ALL - {"top_k"}
    assert DEFAULTS_BY_TYPE["openai_compatible"] == ALL - {"top_k"}
    assert DEFAULTS_BY_TYPE["anthropic"] == {"chat", "tools", "images", "top_k", "reasoning"}
    assert DEFAULTS_BY_TYPE["mlx"] == ALL - {"images", "logprobs", "reasoning"}
    # Every backend type of the schema has defaults.
    assert set(DEFAULTS_BY_TYPE) == set(load_schema()["$defs"]["backend"]["properties"]["type"]["enum"])


def test_openai_embedding_models_serve_embeddings_only() -> None:
    assert default_capabilities("openai", "text-embedding-3-large") == {"embeddings"}
    assert default_capabilities("openai", "gpt-4o") == ALL - {"top_k"}
    assert default_capabilities("openai_compatible", "text-embedding-3-large") == ALL - {"top_k"}


def test_the_schema_enum_is_the_list_of_names() -> None:
    enum = load_schema()["$defs"]["capabilities"]["propertyNames"]["enum"]
    assert tuple(enum) == CAPABILITIES


def test_backend_overrides_resolve_over_the_type_defaults() -> None:
    backends = {b.name: b for b in config().backends}
    assert backends["vllm"].capabilities == ALL - {"logprobs"}
    assert backends["an"].capabilities == {"chat", "tools", "top_k", "reasoning"}
    assert backends["oa"].capabilities == ALL - {"top_k"}
    assert dict(backends["vllm"].capability_overrides) == {"top_k": True, "logprobs": False}


def test_target_overrides_apply_on_top_of_the_backend_s() -> None:
    loaded = config()
    chain = loaded.models[0].chain
    resolved = [loaded.backend(t.backend).capabilities_for(t.model, dict(t.capabilities)) for t in chain]  # type: ignore[union-attr]
    assert resolved == [
        ALL - {"logprobs", "tools", "images"},
        ALL - {"top_k"},
        frozenset({"embeddings"}),
        frozenset({"chat", "tools", "top_k", "reasoning"}),
        ALL - {"logprobs", "reasoning"},
    ]
    assert chain[0].capabilities == (("images", False), ("tools", False))


def test_a_capability_change_does_not_make_the_settings_unequal() -> None:
    before = {b.name: b for b in config().backends}
    after = {b.name: b for b in config(TEXT.replace("top_k: true, logprobs: false", "n: false")).backends}
    # Equal settings: a reload keeps the backend object (its pool, its loaded weights)...
    assert after["vllm"] == before["vllm"]
    # ...while the new settings say what it can do now.
    assert after["vllm"].capabilities == ALL - {"top_k", "n"}


def test_the_documented_example_loads_as_described() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "capabilities.md").read_text()
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    loaded = parse_config(example.encode(), Path("/srv/gw/gateway.yaml"), env={"ANTHROPIC_API_KEY": "k"})
    vllm, claude = loaded.models[0].chain
    assert "tools" not in loaded.backend("vllm").capabilities_for(vllm.model, dict(vllm.capabilities))  # type: ignore[union-attr]
    assert "n" not in loaded.backend("claude").capabilities_for(claude.model)  # type: ignore[union-attr]
