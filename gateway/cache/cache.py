"""The response cache a Runtime holds: the top-level `cache` settings and their store, and the one
decision per request (off, bypass, or look up under this key for this long).

The store is shared by every Runtime whose `cache` section is equal, so entries survive a reload;
each model's own `cache` settings are read from the Runtime that serves the request, so a reload that
turns a model's cache off stops serving from it at once.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from gateway.cache.entry import CachedAnswer
from gateway.cache.key import cacheable, deterministic, request_key
from gateway.cache.semantic import SemanticIndex, SemanticQuery, last_user_text, unit_vector
from gateway.cache.store import CacheStore, MemoryCache
from gateway.config.model import CacheConfig, Config, ModelCache
from gateway.protocol.canonical import ChatRequest

__all__ = [
    "CachePlan",
    "CacheResult",
    "CacheStats",
    "Embed",
    "ResponseCache",
    "build_cache_store",
    "per_worker_cache_warning",
]

#: Embeds a text with a public model of the gateway: (model, text) → the vector, or None on failure.
Embed = Callable[[str, str], Awaitable[Any]]

#: What the cache did for a request: served it (`hit`), looked and found nothing (`miss`), was told
#: by the client to stay out (`bypass`), or was not used (`off`: the model's cache is off, or the
#: request is not deterministic or does not fit an entry).
CacheResult = Literal["hit", "miss", "bypass", "off"]


@dataclass(frozen=True, slots=True)
class CachePlan:
    result: CacheResult
    model: str = ""
    key: str = ""
    ttl_seconds: int = 0
    #: A semantic model's lookup (None: exact only).
    semantic: SemanticQuery | None = None


_OFF = CachePlan("off")
_BYPASS = CachePlan("bypass")


@dataclass(slots=True)
class CacheStats:
    """What the cache did in this process since its store was built (kept across reloads with it)."""

    since: float = field(default_factory=time.time)
    hit: int = 0
    miss: int = 0
    bypass: int = 0
    off: int = 0
    saved_tokens: int = 0
    saved_usd: float = 0.0
    #: Semantic lookups whose embedding failed (the request went on as a miss).
    embedding_errors: int = 0

    def count(self, result: str, saved_tokens: int | None, saved_usd: float | None) -> None:
        if result == "hit":
            self.hit += 1
            self.saved_tokens += saved_tokens or 0
            self.saved_usd += saved_usd or 0.0
        elif result == "miss":
            self.miss += 1
        elif result == "bypass":
            self.bypass += 1
        else:
            self.off += 1

    def as_dict(self) -> dict[str, Any]:
        looked = self.hit + self.miss
        return {
            "since": datetime.fromtimestamp(self.since, UTC).isoformat().replace("+00:00", "Z"),
            "requests": {"hit": self.hit, "miss": self.miss, "bypass": self.bypass, "off": self.off},
            "hit_rate": round(self.hit / looked, 4) if looked else None,
            "saved_tokens": self.saved_tokens,
            "saved_usd": round(self.saved_usd, 9),
            "embedding_errors": self.embedding_errors,
        }


def build_cache_store(config: CacheConfig) -> CacheStore:
    """The store `cache.store` names."""
    if config.store == "memory":
        return MemoryCache(config.max_entries, config.max_bytes)
    from gateway.cache.redis_store import RedisCache  # (redis is imported only by those who use it)

    return RedisCache(config.store, timeout_ms=config.store_timeout_ms, prefix=config.key_prefix)


def per_worker_cache_warning(config: Config, workers: int) -> str | None:
    """What to tell an operator whose cache is per process: a memory store, several workers and a
    model that uses it. None otherwise."""
    if config.cache.store != "memory" or workers <= 1:
        return None
    if not any(model.cache.mode != "off" for model in config.models):
        return None
    return (
        f"cache.store is memory and {workers} workers serve: each worker keeps its own entries, so a "
        "repeated request answered by another worker misses; set cache.store to a Redis URL "
        "(redis://host:6379/0) to share them"
    )


class ResponseCache:
    def __init__(
        self,
        config: CacheConfig,
        store: CacheStore,
        stats: CacheStats | None = None,
        clock: Callable[[], float] = time.time,
        index: SemanticIndex | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.stats = stats if stats is not None else CacheStats()
        #: Wall-clock time, for entries' `created` and a hit's age.
        self.clock = clock
        #: The semantic models' vectors, in this process (kept with the store across reloads).
        self.index = index if index is not None else SemanticIndex(config.max_entries)

    def plan(
        self,
        settings: ModelCache,
        protocol: str,
        endpoint: str,
        model: str,
        client_key: str,
        request: ChatRequest,
        headers: Mapping[bytes, bytes],
    ) -> CachePlan:
        """What to do for this request (`headers`: the request's, lower-case names)."""
        if settings.mode == "off":
            return _OFF
        ttl = settings.ttl_seconds or self.config.ttl_seconds
        if settings.client_control and headers:
            if headers.get(b"x-gateway-cache", b"").strip().lower() == b"bypass":
                return _BYPASS
            control = headers.get(b"cache-control")
            if control is not None and (b"no-cache" in control.lower() or b"no-store" in control.lower()):
                return _BYPASS
            asked = headers.get(b"x-gateway-cache-ttl")
            if asked is not None:
                try:
                    value = int(asked)
                except ValueError:
                    value = 0
                if value > 0:
                    ttl = value
        if not settings.any_temperature and not deterministic(request):
            return _OFF
        if cacheable(request) is not None:
            return _OFF
        namespace = "" if self.config.shared_between_keys else client_key
        key = request_key(protocol, endpoint, model, namespace, request)
        semantic = None
        if settings.mode == "semantic" and settings.embedding_model:
            last = last_user_text(request.messages)
            if last is not None:
                # The bucket: the request without its last user turn's text (system prompt, earlier
                # turns, tools, parameters, namespace): only requests equal in all that may match.
                at, text = last
                messages = (*request.messages[:at], dataclasses.replace(request.messages[at], content=()))
                bucket = request_key(
                    protocol,
                    f"{endpoint}/semantic",
                    model,
                    namespace,
                    dataclasses.replace(request, messages=messages),
                )
                semantic = SemanticQuery(bucket, text, settings.embedding_model, settings.similarity)
        return CachePlan("miss", model, key, min(ttl, self.config.max_ttl_seconds), semantic)

    async def lookup(self, plan: CachePlan, embed: Embed | None = None) -> CachedAnswer | None:
        """The exact entry; for a semantic model, else the nearest stored paraphrase above the model's
        `similarity` (the last user turn embedded with `embed`; a failed embedding is a miss)."""
        data = await self.store.get(plan.model, plan.key)
        if data is not None:
            return CachedAnswer.from_bytes(data)
        query = plan.semantic
        if query is None or embed is None:
            return None
        try:
            vector = unit_vector(await embed(query.embedding_model, query.text))
        except Exception:
            vector = None
        if vector is None:
            self.stats.embedding_errors += 1
            return None
        query.vector = vector
        found = await self.index.search_off_loop(plan.model, query.bucket, vector, query.similarity)
        if found is None:
            return None
        key, similarity = found
        data = await self.store.get(plan.model, key)
        answer = CachedAnswer.from_bytes(data) if data is not None else None
        if answer is None:  # expired, evicted or cleared in the store
            self.index.forget(plan.model, query.bucket, key)
            return None
        query.found = similarity
        return answer

    def save(self, plan: CachePlan, answer: CachedAnswer) -> None:
        self.store.put(plan.model, plan.key, answer.to_bytes(), plan.ttl_seconds)
        query = plan.semantic
        if query is not None and query.vector is not None:
            self.index.add(plan.model, query.bucket, query.vector, plan.key, plan.ttl_seconds)
