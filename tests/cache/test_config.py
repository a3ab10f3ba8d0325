"""The `cache` section and each model's `cache`: defaults, a bare `off` (YAML's false), refusals."""

from __future__ import annotations

import pytest

from gateway.cache import per_worker_cache_warning
from gateway.config.issues import ConfigError
from gateway.config.load import parse_config
from gateway.config.model import CacheConfig, ModelCache

BACKENDS = "backends:\n  oa: {type: openai_compatible, base_url: 'http://127.0.0.1:9'}\n"


def load(models: str, extra: str = ""):
    return parse_config((BACKENDS + "models:\n" + models + extra).encode(), "gateway.yaml", env={})


def test_off_by_default_with_the_documented_defaults() -> None:
    config = load("  gpt: {chain: [{backend: oa}]}\n")
    assert config.models[0].cache == ModelCache(mode="off", ttl_seconds=None, any_temperature=False)
    assert config.cache == CacheConfig()
    assert (config.cache.store, config.cache.ttl_seconds, config.cache.key_prefix) == (
        "memory",
        3600,
        "gateway:cache:",
    )


def test_model_settings_and_a_bare_off() -> None:
    config = load(
        "  a: {chain: [{backend: oa}], cache: {mode: exact, ttl_seconds: 5, client_control: false}}\n"
        "  b: {chain: [{backend: oa}], cache: {mode: off}}\n",
        "cache: {store: 'redis://127.0.0.1:6379/0', shared_between_keys: true}\n",
    )
    a, b = config.models
    assert (a.cache.mode, a.cache.ttl_seconds, a.cache.client_control) == ("exact", 5, False)
    assert b.cache.mode == "off"
    assert config.cache.store == "redis://127.0.0.1:6379/0" and config.cache.shared_between_keys


@pytest.mark.parametrize(
    "bad",
    [
        "cache: {store: 'memcached://x'}\n",
        "cache: {ttl_seconds: 0}\n",
        "cache: {semantic: true}\n",
        "cache: {store: 'redis://:hunter2@127.0.0.1:6379/0'}\n",  # a literal password
    ],
)
def test_refused(bad: str) -> None:
    with pytest.raises(ConfigError):
        load("  gpt: {chain: [{backend: oa}]}\n", bad)


def test_a_memory_cache_with_several_workers_is_reported() -> None:
    config = load("  gpt: {chain: [{backend: oa}], cache: {mode: exact}}\n")
    warning = per_worker_cache_warning(config, 4)
    assert warning is not None and "4 workers" in warning and "redis://" in warning
    assert per_worker_cache_warning(config, 1) is None
    assert per_worker_cache_warning(load("  gpt: {chain: [{backend: oa}]}\n"), 4) is None
    shared = load(
        "  gpt: {chain: [{backend: oa}], cache: {mode: exact}}\n", "cache: {store: 'redis://h:6379/0'}\n"
    )
    assert per_worker_cache_warning(shared, 4) is None


def test_semantic_mode_with_its_embedding_model() -> None:
    config = load(
        "  gpt: {chain: [{backend: oa}], cache: {mode: semantic, embedding_model: embed, similarity: 0.9}}\n"
        "  embed: {chain: [{backend: oa, model: text-embedding-3-small}]}\n"
    )
    gpt = config.models[0].cache
    assert (gpt.mode, gpt.embedding_model, gpt.similarity) == ("semantic", "embed", 0.9)
    default = (
        load("  gpt: {chain: [{backend: oa}], cache: {mode: semantic, embedding_model: gpt}}\n")
        .models[0]
        .cache
    )
    assert default.similarity == 0.95


@pytest.mark.parametrize(
    ("cache", "path", "says"),
    [
        ("{mode: semantic}", "models.gpt.cache.mode", "needs cache.embedding_model"),
        ("{mode: semantic, embedding_model: nowhere}", "models.gpt.cache.embedding_model", "no model named"),
        ("{mode: semantic, embedding_model: gpt, similarity: 0}", "models.gpt.cache.similarity", ""),
        ("{mode: semantic, embedding_model: gpt, similarity: 1.5}", "models.gpt.cache.similarity", ""),
    ],
)
def test_semantic_refusals_are_located(cache: str, path: str, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load(f"  gpt: {{chain: [{{backend: oa}}], cache: {cache}}}\n")
    [issue] = [i for i in refused.value.issues if i.path == path]
    assert says in issue.message and issue.location.line == 4
