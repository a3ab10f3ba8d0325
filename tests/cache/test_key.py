"""The cache key: identical requests share it, anything that changes the answer changes it, and what
does not (user, metadata, the stream flag) leaves it alone; which requests are cached at all."""

from __future__ import annotations

from typing import Any

from gateway.cache import CachePlan, ResponseCache, cacheable, deterministic, request_key
from gateway.cache.store import MemoryCache
from gateway.config.model import CacheConfig, ModelCache
from gateway.protocol import anthropic, openai

BASE: dict[str, Any] = {
    "model": "gpt",
    "temperature": 0,
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def key(body: dict[str, Any], namespace: str = "team", protocol: str = "openai") -> str:
    parse = openai.parse_chat_request if protocol == "openai" else anthropic.parse_messages_request
    return request_key(protocol, "chat", "gpt", namespace, parse(body))


def test_identical_requests_share_a_key_whatever_does_not_change_the_answer() -> None:
    first = key(BASE)
    assert key(dict(BASE)) == first
    assert key({**BASE, "stream": True, "stream_options": {"include_usage": True}}) == first
    assert key({**BASE, "user": "someone", "metadata": {"a": "b"}, "store": False}) == first
    assert key({**BASE, "model": "gpt-alias"}) == first  # the public model's name is passed apart
    assert len(first) == 64


def test_what_changes_the_answer_changes_the_key() -> None:
    first = key(BASE)
    changed = [
        {**BASE, "temperature": 0.5},
        {**BASE, "tools": [TOOL]},
        {**BASE, "messages": [{"role": "system", "content": "Be long."}, BASE["messages"][1]]},
        {**BASE, "messages": [BASE["messages"][0], {"role": "user", "content": "Hello!"}]},
        {**BASE, "max_tokens": 5},
        {**BASE, "stop": ["x"]},
        {**BASE, "seed": 1},
        {**BASE, "response_format": {"type": "json_object"}},
    ]
    keys = {key(body) for body in changed}
    assert first not in keys and len(keys) == len(changed)


def test_keys_are_namespaced_by_client_key_and_protocol() -> None:
    assert key(BASE, "team") != key(BASE, "other")
    assert key(BASE, "") != key(BASE, "team")
    body = {
        "model": "gpt",
        "max_tokens": 10,
        "temperature": 0,
        "messages": [{"role": "user", "content": "Hello"}],
    }
    assert key(body, protocol="anthropic") != key(body, protocol="openai")


def test_deterministic_and_cacheable() -> None:
    assert deterministic(openai.parse_chat_request(BASE))
    assert deterministic(openai.parse_chat_request({**BASE, "temperature": 0.7, "seed": 3}))
    assert not deterministic(openai.parse_chat_request({**BASE, "temperature": 0.7}))
    assert not deterministic(openai.parse_chat_request({k: v for k, v in BASE.items() if k != "temperature"}))
    assert cacheable(openai.parse_chat_request(BASE)) is None
    assert cacheable(openai.parse_chat_request({**BASE, "n": 2})) == "n"
    assert cacheable(openai.parse_chat_request({**BASE, "n": 1})) is None
    assert cacheable(openai.parse_chat_request({**BASE, "logprobs": True})) == "logprobs"


def plan(settings: ModelCache, headers: dict[bytes, bytes] | None = None, **body: Any) -> CachePlan:
    cache = ResponseCache(CacheConfig(ttl_seconds=60, max_ttl_seconds=600), MemoryCache(10, 10_000))
    request = openai.parse_chat_request({**BASE, **body})
    return cache.plan(settings, "openai", "chat", "gpt", "team", request, headers or {})


def test_the_plan_follows_the_model_the_request_and_the_client() -> None:
    exact = ModelCache(mode="exact")
    assert plan(ModelCache()).result == "off"
    looked = plan(exact)
    assert (looked.result, looked.model, looked.ttl_seconds) == ("miss", "gpt", 60)
    assert plan(exact, temperature=1).result == "off"
    assert plan(ModelCache(mode="exact", any_temperature=True), temperature=1).result == "miss"
    assert plan(exact, {b"cache-control": b"no-cache"}).result == "bypass"
    assert plan(exact, {b"x-gateway-cache": b"bypass"}).result == "bypass"
    assert plan(exact, {b"x-gateway-cache-ttl": b"5"}).ttl_seconds == 5
    assert plan(exact, {b"x-gateway-cache-ttl": b"99999"}).ttl_seconds == 600  # capped
    assert plan(exact, {b"x-gateway-cache-ttl": b"junk"}).ttl_seconds == 60
    assert plan(ModelCache(mode="exact", ttl_seconds=7)).ttl_seconds == 7
    # Client control turned off: the headers are ignored.
    deaf = ModelCache(mode="exact", client_control=False)
    assert plan(deaf, {b"cache-control": b"no-cache", b"x-gateway-cache-ttl": b"5"}).ttl_seconds == 60
