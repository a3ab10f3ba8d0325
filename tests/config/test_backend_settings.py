"""Backend settings: one class per backend `type`, chosen by the tag, holding only its own type's
fields; equal (and equally hashed) when the settings are the same, which is what lets a reload
keep a backend object."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gateway.config.backends import (
    SETTINGS_BY_TYPE,
    AnthropicSettings,
    BackendSettings,
    MLXSettings,
    OpenAICompatibleSettings,
    OpenAISettings,
)
from gateway.config.load import parse_config
from gateway.config.schema import load_schema
from gateway.config.secret import Secret

TEXT = """
backends:
  local: {type: mlx, path: models/tiny, max_batch_size: 4}
  oa: {type: openai, api_key: "${OA_KEY}", organization: org-1}
  an: {type: anthropic, api_key: "${AN_KEY}", max_concurrency: 8}
  vllm: {type: openai_compatible, base_url: "http://127.0.0.1:8000/v1/", headers: {x-b: "2", x-a: "1"}}
models:
  m: {chain: [{backend: vllm}]}
"""
ENV = {"OA_KEY": "sk-oa", "AN_KEY": "sk-an"}


def backends(text: str = TEXT, env: dict[str, str] = ENV) -> dict[str, BackendSettings]:
    config = parse_config(text.encode(), Path("/srv/gw/gateway.yaml"), env=env)
    return {b.name: b for b in config.backends}


def test_each_type_loads_into_its_own_settings_class() -> None:
    loaded = backends()
    assert type(loaded["local"]) is MLXSettings
    assert type(loaded["oa"]) is OpenAISettings
    assert type(loaded["an"]) is AnthropicSettings
    assert type(loaded["vllm"]) is OpenAICompatibleSettings
    assert {name: b.type for name, b in loaded.items()} == {
        "local": "mlx",
        "oa": "openai",
        "an": "anthropic",
        "vllm": "openai_compatible",
    }


def test_a_settings_class_holds_its_own_type_s_fields_only() -> None:
    names = {kind: {f.name for f in dataclasses.fields(cls)} for kind, cls in SETTINGS_BY_TYPE.items()}
    common = {f.name for f in dataclasses.fields(BackendSettings)}
    assert {"name", "enabled", "disabled_reason", "max_concurrency", "max_queue"} <= common
    assert all(common <= fields for fields in names.values())
    assert "base_url" not in names["mlx"] and "max_batch_size" in names["mlx"]
    assert "organization" in names["openai"] and "organization" not in names["openai_compatible"]
    assert "anthropic_version" in names["anthropic"] and "anthropic_version" not in names["openai"]
    assert "path" not in names["anthropic"]


def test_values_defaults_and_resolution() -> None:
    loaded = backends()
    local, oa, an, vllm = loaded["local"], loaded["oa"], loaded["an"], loaded["vllm"]
    assert isinstance(local, MLXSettings)
    assert local.path == Path("/srv/gw/models/tiny")
    assert (local.max_batch_size, local.batching, local.load, local.prompt_cache_size) == (
        4,
        True,
        "startup",
        10,
    )
    assert isinstance(oa, OpenAISettings)
    assert (oa.organization, oa.api_key, oa.base_url) == (
        "org-1",
        Secret("sk-oa"),
        "https://api.openai.com/v1",
    )
    assert isinstance(an, AnthropicSettings)
    assert (an.anthropic_version, an.max_concurrency, an.max_queue) == ("2023-06-01", 8, 256)
    assert an.queue_timeout_seconds == 30
    assert isinstance(vllm, OpenAICompatibleSettings)
    assert vllm.base_url == "http://127.0.0.1:8000/v1"
    assert [name for name, _ in vllm.headers] == ["x-a", "x-b"]
    assert vllm.api_key == Secret("")


def test_settings_compare_and_hash_by_value() -> None:
    first, second = backends(), backends()
    for name in first:
        assert first[name] == second[name]
        assert hash(first[name]) == hash(second[name])
        assert first[name] is not second[name]
    changed = backends(TEXT.replace("max_concurrency: 8", "max_concurrency: 9"))
    assert changed["an"] != first["an"]
    assert changed["oa"] == first["oa"]


def test_different_types_with_the_same_values_are_not_equal() -> None:
    vllm = backends()["vllm"]
    assert isinstance(vllm, OpenAICompatibleSettings)
    shared = {f.name for f in dataclasses.fields(OpenAISettings)} - {"organization"}
    other = OpenAISettings(**{name: getattr(vllm, name) for name in shared}, organization=None)
    assert other != vllm


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        backends()["an"].max_concurrency = 1  # type: ignore[misc]


def test_the_registry_knows_exactly_the_schema_s_types() -> None:
    enum = load_schema()["$defs"]["backend"]["properties"]["type"]["enum"]
    assert sorted(SETTINGS_BY_TYPE) == sorted(enum)
    assert all(cls.type == kind for kind, cls in SETTINGS_BY_TYPE.items())
