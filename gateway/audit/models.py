"""The audit tables as Tortoise models: the schema's description in code.

The tables themselves are created by the numbered migrations in `gateway/audit/migrations.py` (so a
change to a model is a new migration, never an edit of what is deployed); `AuditStore` reads and
writes with SQL of its own and uses Tortoise for its connections.
"""

from __future__ import annotations

from tortoise import fields
from tortoise.indexes import Index
from tortoise.models import Model

__all__ = ["TEXT_LIMITS", "AuditRecord", "BenchRun", "SchemaVersion"]

#: Longest value each text column keeps; longer values are cut by the store (never a rejected batch).
TEXT_LIMITS = {
    "uid": 64,
    "request_id": 200,
    "trace_id": 64,
    "instance": 255,
    "client_key": 255,
    "surface": 32,
    "endpoint": 32,
    "model": 255,
    "backend": 255,
    "backend_type": 32,
    "upstream_model": 255,
    "status": 16,
    "error_type": 64,
    "config_version": 64,
    "client_address": 64,
    "limit_name": 64,
    "cache": 8,
    "shadow_of": 200,
}


class AuditRecord(Model):
    """One model-API request (metadata only). Mirrors `gateway.audit.record.AuditEntry`."""

    id = fields.BigIntField(primary_key=True)
    uid = fields.CharField(max_length=TEXT_LIMITS["uid"], unique=True)
    ts = fields.DatetimeField()
    request_id = fields.CharField(max_length=TEXT_LIMITS["request_id"], db_index=True)
    trace_id = fields.CharField(max_length=TEXT_LIMITS["trace_id"], null=True)
    instance = fields.CharField(max_length=TEXT_LIMITS["instance"])
    client_key = fields.CharField(max_length=TEXT_LIMITS["client_key"], null=True)
    surface = fields.CharField(max_length=TEXT_LIMITS["surface"])
    endpoint = fields.CharField(max_length=TEXT_LIMITS["endpoint"])
    model = fields.CharField(max_length=TEXT_LIMITS["model"], null=True)
    backend = fields.CharField(max_length=TEXT_LIMITS["backend"], null=True)
    backend_type = fields.CharField(max_length=TEXT_LIMITS["backend_type"], null=True)
    upstream_model = fields.CharField(max_length=TEXT_LIMITS["upstream_model"], null=True)
    stream = fields.BooleanField()
    status = fields.CharField(max_length=TEXT_LIMITS["status"])
    http_status = fields.IntField()
    error_type = fields.CharField(max_length=TEXT_LIMITS["error_type"], null=True)
    attempts = fields.IntField()
    failover_path = fields.JSONField()
    latency_ms = fields.FloatField()
    ttft_ms = fields.FloatField(null=True)
    prompt_tokens = fields.BigIntField(null=True)
    completion_tokens = fields.BigIntField(null=True)
    cached_tokens = fields.BigIntField(null=True)  # migration 2
    cache_creation_tokens = fields.BigIntField(null=True)  # migration 2
    config_version = fields.CharField(max_length=TEXT_LIMITS["config_version"], null=True)
    client_address = fields.CharField(max_length=TEXT_LIMITS["client_address"], null=True)  # migration 3
    cost_usd = fields.FloatField(null=True)  # migration 4
    limit_name = fields.CharField(max_length=TEXT_LIMITS["limit_name"], null=True)  # migration 4
    cache = fields.CharField(max_length=TEXT_LIMITS["cache"], null=True)  # migration 5
    saved_tokens = fields.BigIntField(null=True)  # migration 5
    saved_usd = fields.FloatField(null=True)  # migration 5
    shadow_of = fields.CharField(max_length=TEXT_LIMITS["shadow_of"], null=True)  # migration 7

    class Meta:
        table = "audit_records"
        # Newest-first keyset pages, alone or under one equality filter. `id` ends each index so
        # that the (ts DESC, id DESC) order is read straight from it on PostgreSQL too (SQLite
        # appends the rowid to every index anyway).
        indexes = (
            Index(fields=("ts", "id"), name="audit_records_ts_id"),
            Index(fields=("model", "ts", "id"), name="audit_records_model_ts"),
            Index(fields=("status", "ts", "id"), name="audit_records_status_ts"),
            Index(fields=("backend_type", "ts", "id"), name="audit_records_backend_type_ts"),
        )


class BenchRun(Model):
    """One admin-panel benchmark run against a backend (migration 6; `gateway/audit/bench_store.py`)."""

    id = fields.BigIntField(primary_key=True)
    uid = fields.CharField(max_length=64, unique=True)
    ts = fields.DatetimeField()
    finished_at = fields.DatetimeField(null=True)
    instance = fields.CharField(max_length=255)
    admin = fields.CharField(max_length=255, null=True)
    backend = fields.CharField(max_length=255)
    backend_type = fields.CharField(max_length=32)
    model = fields.CharField(max_length=255, null=True)
    config_version = fields.CharField(max_length=64, null=True)
    status = fields.CharField(max_length=16)
    #: The request's settings: concurrency levels, seconds per level, stream, max_tokens.
    parameters = fields.JSONField()
    #: Per concurrency level: requests, errors, requests/s, latency and TTFT percentiles.
    levels = fields.JSONField()
    error = fields.TextField(null=True)

    class Meta:
        table = "bench_runs"
        indexes = (Index(fields=("backend", "ts", "id"), name="bench_runs_backend_ts"),)


class SchemaVersion(Model):
    """One row per migration applied to this database."""

    version = fields.IntField(primary_key=True, generated=False)
    name = fields.CharField(max_length=200)
    applied_at = fields.DatetimeField()

    class Meta:
        table = "audit_schema_version"
