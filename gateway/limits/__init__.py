"""Rate limits, concurrency limits and budgets of client keys, and backends' quotas (`gateway.limits`).

`rules` compiles the config's limits per subject; a store (`memory`: one process; `redis_store`:
shared by workers and instances) checks and charges them; `Limiter` is what a Runtime holds: admit a
request, settle it, and say so in the RateLimit headers.
"""

from gateway.limits.clock import Clock, ManualClock, system_clock
from gateway.limits.limiter import Admission, BackendQuota, Limiter, build_store
from gateway.limits.memory import MemoryStore
from gateway.limits.rules import ANONYMOUS, Rules, backend_rules, key_rules, per_worker_warning
from gateway.limits.store import LimitStore, StoreUnavailable, Verdict

__all__ = [
    "ANONYMOUS",
    "Admission",
    "BackendQuota",
    "Clock",
    "LimitStore",
    "Limiter",
    "ManualClock",
    "MemoryStore",
    "Rules",
    "StoreUnavailable",
    "Verdict",
    "backend_rules",
    "build_store",
    "key_rules",
    "per_worker_warning",
    "system_clock",
]
