"""One audit record as the request path builds it: a plain slotted dataclass, no ORM object, no I/O.

Metadata only: never the prompt, the answer, or a key (`client_key` is the key's *name*).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.routing.trail import RequestTrail

__all__ = ["ENTRY_FIELDS", "AuditEntry", "default_instance", "entry_from_trail", "format_ts", "parse_ts"]

_REQUIRED = (
    "request_id",
    "instance",
    "surface",
    "endpoint",
    "stream",
    "status",
    "http_status",
    "attempts",
    "latency_ms",
)


def default_instance() -> str:
    """This process as records name it: `hostname:pid`."""
    return f"{socket.gethostname()}:{os.getpid()}"


def format_ts(ts: datetime) -> str:
    """ISO-8601 in UTC with a `Z` and always microseconds: `2025-01-02T03:04:05.000006Z`."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_ts(text: str) -> datetime:
    """The inverse of `format_ts`; any ISO-8601 form is accepted, a naive one is taken as UTC."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC)


def _uid() -> str:
    return uuid.uuid4().hex


@dataclass(slots=True, kw_only=True)
class AuditEntry:
    """What one model-API request did. `uid` is unique: writing the same entry twice stores it once."""

    uid: str = field(default_factory=_uid)
    ts: datetime = field(default_factory=_now)  # UTC, when the request started
    request_id: str
    trace_id: str | None = None
    instance: str  # hostname:pid
    client_key: str | None = None  # the key's name, never the key
    surface: str  # openai | anthropic
    endpoint: str  # chat | completions | embeddings | count_tokens | models
    model: str | None = None  # the public model the client asked for
    backend: str | None = None
    backend_type: str | None = None  # mlx | openai | anthropic | openai_compatible
    upstream_model: str | None = None
    stream: bool
    status: str  # success | error | timeout | rejected
    http_status: int
    error_type: str | None = None
    attempts: int
    #: Each step of the failover chain: {backend, model, outcome, status, duration_ms}.
    failover_path: list[dict[str, Any]] = field(default_factory=list)
    latency_ms: float
    ttft_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    config_version: str | None = None
    #: The row id, set only on entries read back from the database.
    id: int | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: `ts` as ISO-8601 with `Z`, and `id` first when the entry came from the DB."""
        data: dict[str, Any] = {} if self.id is None else {"id": self.id}
        for name in ENTRY_FIELDS:
            data[name] = getattr(self, name)
        data["ts"] = format_ts(self.ts)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AuditEntry:
        """Build from `to_json()` output (or its JSON text's parse). Raises ValueError when malformed."""
        if not isinstance(data, dict):
            raise ValueError("an audit entry must be a JSON object")
        missing = [name for name in _REQUIRED if data.get(name) is None]
        if missing:
            raise ValueError(f"audit entry lacks {', '.join(missing)}")
        values = {name: data[name] for name in ENTRY_FIELDS if name in data and data[name] is not None}
        ts = data.get("ts")
        if isinstance(ts, str):
            values["ts"] = parse_ts(ts)
        elif not isinstance(ts, datetime):
            raise ValueError("audit entry lacks a valid ts")
        if data.get("id") is not None:
            values["id"] = int(data["id"])
        return cls(**values)

    def to_line(self) -> bytes:
        """One JSON Lines line (with its newline), as the spill file holds it."""
        return orjson.dumps(self.to_json()) + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> AuditEntry:
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            raise ValueError(f"not JSON: {error}") from None
        return cls.from_json(data)


#: Every field but `id`, in declaration order (the order of `to_json` and of the table's columns).
ENTRY_FIELDS = tuple(f.name for f in fields(AuditEntry) if f.name != "id")


#: This process, as audit records name it (several gateway processes may share one database).
_INSTANCE = default_instance()


def entry_from_trail(trail: RequestTrail) -> AuditEntry:
    """The audit record of a finished request."""
    ended = time.monotonic()
    usage = trail.usage
    return AuditEntry(
        uid=os.urandom(16).hex(),
        ts=trail.ts,
        request_id=trail.request_id,
        trace_id=trail.trace_id,
        instance=_INSTANCE,
        client_key=trail.client_key,
        surface=trail.surface,
        endpoint=trail.endpoint,
        model=trail.model,
        backend=trail.backend,
        backend_type=trail.backend_type,
        upstream_model=trail.upstream_model,
        stream=trail.stream,
        status=trail.status(),
        http_status=trail.http_status,
        error_type=trail.error_type,
        attempts=trail.tried(),
        failover_path=[
            {
                "backend": a.backend,
                "model": a.model,
                "outcome": a.outcome,
                "status": a.status,
                "duration_ms": round(a.duration_ms, 2),
            }
            for a in trail.attempts
        ],
        latency_ms=round((ended - trail.started) * 1000, 2),
        ttft_ms=round((trail.first_byte_at - trail.started) * 1000, 2) if trail.first_byte_at else None,
        prompt_tokens=usage.prompt_tokens if usage else None,
        completion_tokens=usage.completion_tokens if usage else None,
        config_version=trail.config_version,
    )
