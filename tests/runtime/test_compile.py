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


LIMITED = f"""
auth:
  client_keys:
    - {{name: team, key_sha256: "{"a" * 64}", limits: {{requests_per_minute: 3}}}}
    - {{name: other, key_sha256: "{"b" * 64}"}}
  default_limits: {{concurrent_requests: 5}}
backends:
  a: {{type: openai_compatible, base_url: "http://127.0.0.1:1/v1", limits: {{requests_per_minute: 100}}}}
models:
  m: {{chain: [{{backend: a}}]}}
"""


def test_limits_are_compiled_per_key_over_the_defaults() -> None:
    runtime, _ = compile_text(LIMITED)
    team, other = runtime.limits.keys["team"], runtime.limits.keys["other"]
    assert (team.requests_per_minute, team.concurrent_requests) == (3, 5)
    assert (other.requests_per_minute, other.concurrent_requests) == (None, 5)
    quota = runtime.models[0].chain[0].quota
    assert quota is not None and quota.rules.requests_per_minute == 100


def test_without_keys_the_anonymous_callers_share_the_default_limits() -> None:
    runtime, _ = compile_text(TEXT + "auth: {default_limits: {requests_per_minute: 7}}\n")
    assert list(runtime.limits.keys) == ["anonymous"]
    assert runtime.limits.keys["anonymous"].requests_per_minute == 7
    unlimited, _ = compile_text(TEXT)
    assert not unlimited.limits.keys and unlimited.models[0].chain[0].quota is None


def test_a_reload_keeps_the_limits_store_and_applies_changed_limits_at_once() -> None:
    first, _ = compile_text(LIMITED)
    changed = LIMITED.replace("requests_per_minute: 3", "requests_per_minute: 30").replace(
        "requests_per_minute: 100", "requests_per_minute: 50"
    )
    second, created = compile_text(changed, first)
    assert created == []  # a quota is not a reason to rebuild the backend (pools stay)
    assert second.limits.store is first.limits.store  # the counters survive
    assert second.limits.keys["team"].requests_per_minute == 30
    # The backend object is the old one, with its old settings; the quota comes from the new file.
    assert second.models[0].chain[0].backend is first.models[0].chain[0].backend
    assert second.models[0].chain[0].quota.rules.requests_per_minute == 50  # type: ignore[union-attr]


def test_a_new_limits_section_gets_a_new_store() -> None:
    first, _ = compile_text(LIMITED)
    second, _ = compile_text(LIMITED + "limits: {key_prefix: 'other:'}\n", first)
    assert second.limits.store is not first.limits.store
