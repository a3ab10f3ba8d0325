"""The semantic cache's index and lookup: the nearest stored last user turn above the threshold, in
the same bucket only; rows bounded, expired and forgotten; the fake's embeddings make paraphrases
close; a failed embedding is a miss."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from gateway.cache import CachedAnswer, MemoryCache, ResponseCache
from gateway.cache.semantic import SemanticIndex, last_user_text, unit_vector
from gateway.config.model import CacheConfig, ModelCache
from gateway.protocol import openai
from gateway.protocol.canonical import ChatResponse, TextPart, Usage
from gateway.testing.fake_openai import semantic_embedding

PARIS = "What is the capital of France?"
PARAPHRASE = "what's the capital city of France"
BREAD = "How do I bake bread at home?"


def vec(text: str) -> np.ndarray:
    return np.asarray(semantic_embedding(text), dtype=np.float32)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_fake_embeddings_make_paraphrases_close_and_unrelated_texts_far() -> None:
    assert 0.8 < float(vec(PARIS) @ vec(PARAPHRASE)) < 0.95
    assert abs(float(vec(PARIS) @ vec(BREAD))) < 0.2
    assert float(vec(PARIS) @ vec(PARIS)) == pytest.approx(1.0)
    assert np.linalg.norm(vec("the of a")) == pytest.approx(1.0)  # only stop words: still a direction


def test_nearest_above_the_threshold_in_the_same_bucket_only() -> None:
    index = SemanticIndex(100)
    index.add("gpt", "b1", vec(PARIS), "k-paris", 60)
    index.add("gpt", "b1", vec(BREAD), "k-bread", 60)
    key, similarity = index.search("gpt", "b1", vec(PARAPHRASE), 0.8)  # type: ignore[misc]
    assert key == "k-paris" and 0.8 < similarity < 0.95
    assert index.search("gpt", "b1", vec(PARAPHRASE), 0.95) is None
    assert index.search("gpt", "b2", vec(PARAPHRASE), 0.5) is None
    assert index.search("other", "b1", vec(PARAPHRASE), 0.5) is None


def test_rows_grow_past_the_first_block_and_are_bounded() -> None:
    index = SemanticIndex(40)
    rng = np.random.default_rng(7)
    vectors = [unit_vector(rng.standard_normal(32)) for _ in range(50)]
    for i, v in enumerate(vectors):
        index.add("gpt", "b", v, f"k{i}", 60)  # type: ignore[arg-type]
    assert index.rows == 40
    assert index.search("gpt", "b", vectors[0], 0.99) is None  # the oldest went first
    assert index.search("gpt", "b", vectors[49], 0.99)[0] == "k49"  # type: ignore[index]
    assert index.search("gpt", "b", vectors[10], 0.99)[0] == "k10"  # type: ignore[index]


def test_the_same_key_stored_again_replaces_its_row() -> None:
    index = SemanticIndex(10)
    index.add("gpt", "b", vec(PARIS), "k", 60)
    index.add("gpt", "b", vec(BREAD), "k", 60)
    assert index.rows == 1
    assert index.search("gpt", "b", vec(PARIS), 0.9) is None


def test_expired_rows_never_match_and_are_dropped() -> None:
    clock = Clock()
    index = SemanticIndex(10, clock)
    index.add("gpt", "b", vec(PARIS), "old", 5)
    index.add("gpt", "b", vec(BREAD), "young", 50)
    clock.now += 10
    assert index.search("gpt", "b", vec(PARIS), 0.9) is None
    assert index.search("gpt", "b", vec(BREAD), 0.9)[0] == "young"  # type: ignore[index]
    index.forget("gpt", "b", None)
    assert index.rows == 1
    clock.now += 100
    assert index.search("gpt", "b", vec(BREAD), 0.9) is None
    assert index.rows == 0


def test_forget_and_clear() -> None:
    index = SemanticIndex(10)
    index.add("gpt", "b", vec(PARIS), "k1", 60)
    index.add("gpt", "b", vec(BREAD), "k2", 60)
    index.add("claude", "b", vec(BREAD), "k3", 60)
    index.forget("gpt", "b", "k1")
    assert index.search("gpt", "b", vec(PARIS), 0.9) is None and index.rows == 2
    index.clear("gpt")
    assert index.rows == 1
    index.clear()
    assert index.rows == 0


def test_a_change_of_dimensions_starts_the_bucket_again() -> None:
    index = SemanticIndex(10)
    index.add("gpt", "b", vec(PARIS), "k1", 60)
    short = unit_vector(np.ones(8))
    assert index.search("gpt", "b", short, 0.5) is None  # type: ignore[arg-type]
    index.add("gpt", "b", short, "k2", 60)  # type: ignore[arg-type]
    assert index.rows == 1 and index.search("gpt", "b", short, 0.9)[0] == "k2"  # type: ignore[arg-type,index]


def test_last_user_text() -> None:
    def messages(*items: dict[str, Any]) -> tuple:
        return openai.parse_chat_request({"model": "m", "messages": list(items)}).messages

    assert last_user_text(messages({"role": "user", "content": "hi there"})) == (0, "hi there")
    assert (
        last_user_text(messages({"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}))
        is None
    )
    image = {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}
    assert (
        last_user_text(messages({"role": "user", "content": [{"type": "text", "text": "x"}, image]})) is None
    )
    assert last_user_text(messages({"role": "user", "content": "   "})) is None
    assert unit_vector(np.zeros(4)) is None and unit_vector(np.array([np.nan, 1.0])) is None


# -- the lookup through a ResponseCache ---------------------------------------------------------------

SEMANTIC = ModelCache(mode="semantic", embedding_model="embed", similarity=0.8)


def request(text: str, system: str = "Be brief.") -> Any:
    return openai.parse_chat_request(
        {
            "model": "gpt",
            "temperature": 0,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}],
        }
    )


def answer(text: str) -> CachedAnswer:
    response = ChatResponse(
        id="x", model="m", content=(TextPart(text),), finish_reason="stop", usage=Usage(3, 4)
    )
    return CachedAnswer(response, 1.0, "oa", "m")


class Embedder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fail = False

    async def __call__(self, model: str, text: str) -> Any:
        self.calls.append((model, text))
        if self.fail:
            raise RuntimeError("embedding model down")
        return semantic_embedding(text)


async def test_a_paraphrase_hits_and_an_unrelated_question_misses() -> None:
    cache = ResponseCache(CacheConfig(), MemoryCache(100, 1 << 20))
    embed = Embedder()
    first = cache.plan(SEMANTIC, "openai", "chat", "gpt", "team", request(PARIS), {})
    assert await cache.lookup(first, embed) is None
    cache.save(first, answer("Paris."))
    assert embed.calls == [("embed", PARIS)]

    again = cache.plan(SEMANTIC, "openai", "chat", "gpt", "team", request(PARIS), {})
    assert (await cache.lookup(again, embed)).response.content[0].text == "Paris."  # type: ignore[union-attr]
    assert len(embed.calls) == 1 and again.semantic.found is None  # type: ignore[union-attr]  # exact

    para = cache.plan(SEMANTIC, "openai", "chat", "gpt", "team", request(PARAPHRASE), {})
    found = await cache.lookup(para, embed)
    assert found is not None and found.response.content[0].text == "Paris."  # type: ignore[union-attr]
    assert 0.8 < para.semantic.found < 0.95  # type: ignore[union-attr,operator]

    for plan in (
        cache.plan(SEMANTIC, "openai", "chat", "gpt", "team", request(BREAD), {}),
        cache.plan(SEMANTIC, "openai", "chat", "gpt", "team", request(PARAPHRASE, "Be long."), {}),
        cache.plan(SEMANTIC, "openai", "chat", "gpt", "other", request(PARAPHRASE), {}),
        cache.plan(
            ModelCache(mode="semantic", embedding_model="embed", similarity=0.999),
            "openai",
            "chat",
            "gpt",
            "team",
            request(PARAPHRASE),
            {},
        ),
    ):
        assert await cache.lookup(plan, embed) is None


async def test_a_failed_embedding_is_a_counted_miss_and_an_entry_gone_from_the_store_is_forgotten() -> None:
    store = MemoryCache(100, 1 << 20)
    cache = ResponseCache(CacheConfig(), store)
    embed = Embedder()
    first = cache.plan(SEMANTIC, "openai", "chat", "gpt", "team", request(PARIS), {})
    await cache.lookup(first, embed)
    cache.save(first, answer("Paris."))
    embed.fail = True
    para = cache.plan(SEMANTIC, "openai", "chat", "gpt", "team", request(PARAPHRASE), {})
    assert await cache.lookup(para, embed) is None
    assert cache.stats.embedding_errors == 1
    embed.fail = False
    await store.clear(None)
    assert await cache.lookup(para, embed) is None
    assert cache.index.rows == 0


def test_exact_mode_and_requests_without_a_last_user_turn_plan_no_semantic_lookup() -> None:
    cache = ResponseCache(CacheConfig(), MemoryCache(100, 1 << 20))
    exact = cache.plan(ModelCache(mode="exact"), "openai", "chat", "gpt", "team", request(PARIS), {})
    assert exact.semantic is None
    tool_turn = openai.parse_chat_request(
        {
            "model": "gpt",
            "temperature": 0,
            "messages": [
                {"role": "user", "content": PARIS},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                    ],
                },
                {"role": "tool", "tool_call_id": "c", "content": "ok"},
            ],
        }
    )
    plan = cache.plan(SEMANTIC, "openai", "chat", "gpt", "team", tool_turn, {})
    assert plan.result == "miss" and plan.semantic is None


def test_the_embedding_answer_is_read_in_every_form_a_backend_gives() -> None:
    import base64
    import struct

    import orjson

    from gateway.backends.upstream import PassThroughReply
    from gateway.protocol.canonical import EmbeddingResponse
    from gateway.surfaces.model_api import _vector

    values = [0.5, -0.25, 1.0]
    raw = struct.pack("<3f", *values)

    def reply(embedding: Any, status: int = 200) -> PassThroughReply:
        body = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": embedding}]}
        return PassThroughReply(orjson.dumps(body), None, status)

    assert _vector(reply(values)).tolist() == values
    assert _vector(reply(base64.b64encode(raw).decode())).tolist() == values
    canonical = EmbeddingResponse(vectors=(raw,), dimensions=3, usage=Usage(2, 0))
    assert _vector(canonical).tolist() == values
    assert _vector(reply(values, status=500)) is None


def _unit_rows(count: int, dims: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, dims)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


async def test_a_large_bucket_is_searched_off_the_loop_with_the_same_answer() -> None:
    from gateway.cache.semantic import OFF_LOOP_ELEMENTS

    dims = 256
    count = OFF_LOOP_ELEMENTS // dims + 10
    index = SemanticIndex(count + 1)
    vectors = _unit_rows(count, dims, 1)
    for i, vector in enumerate(vectors):
        index.add("m", "b", vector, f"k{i}", 60)
    query = vectors[1234]
    assert await index.search_off_loop("m", "b", query, 0.99) == index.search("m", "b", query, 0.99)
    assert (await index.search_off_loop("m", "b", query, 0.99))[0] == "k1234"  # type: ignore[index]


def test_dropping_rows_never_changes_the_arrays_a_searching_thread_holds() -> None:
    # search_off_loop hands a thread the bucket's arrays as they are and reads the keys with them:
    # a drop (forget, replace, evict) must leave those arrays as they were, or keys and rows mismatch.
    index = SemanticIndex(1000)
    vectors = _unit_rows(300, 16, 2)
    for i, vector in enumerate(vectors):
        index.add("m", "b", vector, f"k{i}", 60)
    bucket = index._buckets[("m", "b")]
    matrix, expires, keys = bucket.matrix[: bucket.rows], bucket.expires[: bucket.rows], bucket.keys
    held = (matrix.copy(), expires.copy(), list(keys))
    for i in range(0, 200, 2):
        index.forget("m", "b", f"k{i}")
    index.add("m", "b", vectors[299], "k299", 60)  # the same key again: its row replaced
    assert np.array_equal(matrix, held[0]) and np.array_equal(expires, held[1]) and keys == held[2]
    found = index.search("m", "b", vectors[299], 0.99)
    assert found is not None and found[0] == "k299"
