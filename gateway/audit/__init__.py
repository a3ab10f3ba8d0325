"""The audit log: one metadata-only record per model-API request, batched into SQLite or PostgreSQL.

`AuditEntry` (built by the request path) → `AuditWriter.record()` (memory, no I/O) → background batches
→ `AuditStore` (keyset pages, export, live tail, retention). See docs/architecture.md.
"""

from gateway.audit.query import LogFilter
from gateway.audit.record import AuditEntry, default_instance
from gateway.audit.retention import run_retention
from gateway.audit.store import MAX_PAGE_SIZE, AuditStore
from gateway.audit.writer import AuditWriter

__all__ = [
    "MAX_PAGE_SIZE",
    "AuditEntry",
    "AuditStore",
    "AuditWriter",
    "LogFilter",
    "default_instance",
    "run_retention",
]
