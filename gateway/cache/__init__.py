"""The response cache (`docs/cache.md`): the key of a request, the stored answer, the memory and
Redis stores, the semantic mode's in-process vector index, and the per-request decision a Runtime's
`ResponseCache` makes."""

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
from gateway.cache.semantic import SemanticIndex, SemanticQuery
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
    "SemanticIndex",
    "SemanticQuery",
    "StreamAssembler",
    "build_cache_store",
    "cacheable",
    "deterministic",
    "per_worker_cache_warning",
    "request_key",
    "storable",
]
