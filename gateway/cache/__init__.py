"""The exact response cache (`docs/cache.md`): the key of a request, the stored answer, the memory and
Redis stores, and the per-request decision a Runtime's `ResponseCache` makes."""

from gateway.cache.cache import (
    CachePlan,
    CacheResult,
    CacheStats,
    ResponseCache,
    build_cache_store,
    per_worker_cache_warning,
)
from gateway.cache.entry import CachedAnswer, PassThroughAssembler, StreamAssembler, storable
from gateway.cache.key import cacheable, deterministic, request_key
from gateway.cache.store import CacheStore, MemoryCache

__all__ = [
    "CachePlan",
    "CacheResult",
    "CacheStats",
    "CacheStore",
    "CachedAnswer",
    "MemoryCache",
    "PassThroughAssembler",
    "ResponseCache",
    "StreamAssembler",
    "build_cache_store",
    "cacheable",
    "deterministic",
    "per_worker_cache_warning",
    "request_key",
    "storable",
]
