"""Compiling a config into a Runtime: a backend whose settings are unchanged is the same object in
the new Runtime (pool, breaker and concurrency count included); one whose settings changed is new."""

from __future__ import annotations

from pathlib import Path

from gateway.config.load import parse_config
from gateway.runtime.compile import compile_runtime

TEXT = """
backends:
  a: {type: openai_compatible, base_url: "http://127.0.0.1:1/v1", max_concurrency: 2}
  b: {type: anthropic, base_url: "http://127.0.0.1:2", api_key: "${KEY}", max_concurrency: 1}
models:
  m: {chain: [{backend: a}, {backend: b}]}
"""


def compile_text(text: str, previous=None):
    config = parse_config(text.encode(), Path("/srv/gw/gateway.yaml"), env={"KEY": "k"})
    return compile_runtime(config, previous, "test")


def test_unchanged_backends_are_carried_over_with_their_state() -> None:
    first, created = compile_text(TEXT)
    assert {b.name for b in created} == {"a", "b"}
    limit = first.backends["a"].concurrency
    assert limit is not None
    limit.in_flight = 1  # a request is running on it while the config reloads
    second, created = compile_text(TEXT + "\n# an unrelated edit\n", first)
    assert created == []
    assert second.backends["a"] is first.backends["a"]
    assert second.backends["a"].concurrency is limit and limit.in_flight == 1
    assert second.models[0].chain[0].backend is first.backends["a"]


def test_a_backend_whose_settings_changed_is_rebuilt_and_the_others_kept() -> None:
    first, _ = compile_text(TEXT)
    second, created = compile_text(TEXT.replace("max_concurrency: 2", "max_concurrency: 3"), first)
    assert [b.name for b in created] == ["a"]
    assert second.backends["a"] is not first.backends["a"]
    assert second.backends["a"].concurrency.limit == 3  # type: ignore[union-attr]
    assert second.backends["b"] is first.backends["b"]
