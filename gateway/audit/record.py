"""One audit record: the row the writer builds from a finished request's trail (a tuple in column
order, one pass per batch), and `AuditEntry`, the same record as a slotted dataclass (what reads,
the spill file and the JSON API deal in).

Metadata only: never the prompt, the answer, or a key (`client_key` is the key's *name*).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.routing.failover import Attempt
from gateway.routing.trail import RequestTrail

__all__ = [
    "ENTRY_FIELDS",
    "AuditEntry",
    "AuditRow",
    "default_instance",
    "format_ts",
    "new_uids",
    "parse_ts",
    "rows_from_trails",
]

#: One record's column values in `ENTRY_FIELDS` order: `ts` a datetime, `stream` a bool, and
#: `failover_path` already JSON text (the form both databases take).
AuditRow = tuple[Any, ...]

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


def new_uids(count: int) -> list[str]:
    """`count` new record uids: 32 hex digits, the microseconds since the epoch (14) then 72 random
    bits. Time-ordered, so each insert lands at the end of the uid index (a random key dirties a
    page of it per row: that alone cost SQLite about 16 µs a record on a log of 200,000 rows)."""
    prefix = f"{time.time_ns() // 1000:014x}"
    noise = os.urandom(9 * count).hex()
    return [prefix + noise[i : i + 18] for i in range(0, 18 * count, 18)]


def _uid() -> str:
    return new_uids(1)[0]


@dataclass(slots=True, kw_only=True)
class AuditEntry:
    """What one model-API request did. `uid` is unique: writing the same entry twice stores it once."""

    uid: str = field(default_factory=_uid)
    ts: datetime = field(default_factory=_now)  # UTC, when the request started
    request_id: str
    trace_id: str | None = None
    instance: str  # hostname:pid
    client_key: str | None = None  # the key's name, never the key
    surface: str  # openai | anthropic | responses (the client protocol)
    endpoint: str  # chat | completions | embeddings | count_tokens | models
    model: str | None = None  # the public model the client asked for
    backend: str | None = None
    #: mlx | openai | anthropic | openai_compatible | gemini | azure_openai | bedrock | vertex
    backend_type: str | None = None
    upstream_model: str | None = None
    stream: bool
    status: str  # success | error | timeout | rejected
    http_status: int
    error_type: str | None = None
    attempts: int
    #: Each step of the failover chain: {backend, model, outcome, status, duration_ms}, and `detail`
    #: for a step skipped as `incapable` (the capability it lacks, the field it cannot take).
    failover_path: list[dict[str, Any]] = field(default_factory=list)
    latency_ms: float
    ttft_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    #: Input tokens read from / written to the provider's prompt cache (subsets of prompt_tokens);
    #: None on records written before the gateway stored them.
    cached_tokens: int | None = None
    cache_creation_tokens: int | None = None
    config_version: str | None = None
    #: The client's IP address (the peer's, or the one a trusted proxy forwarded); None on records
    #: written before the gateway stored it.
    client_address: str | None = None
    #: What the request cost in USD: its usage at the target's price, plus attempts the upstream billed
    #: before a failover; None when a price was unknown (never a guess) or no usage was reported.
    cost_usd: float | None = None
    #: The limit that refused the request (`requests_per_minute`, `budget_usd.per_day`, ...), else None.
    limit_name: str | None = None
    #: What the response cache did: hit, miss, bypass, off; None for endpoints it does not serve (and
    #: on records written before the gateway stored it).
    cache: str | None = None
    #: On a cache hit: the stored answer's tokens (input + output) and their cost in USD, which the
    #: hit did not spend.
    saved_tokens: int | None = None
    saved_usd: float | None = None
    #: A shadow copy (`models.<m>.shadow`): the request id of the client request it copied; None for
    #: client requests (and on records written before the gateway stored it).
    shadow_of: str | None = None
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

    def to_row(self) -> AuditRow:
        """The column values, as `rows_from_trails` makes them (failover_path as JSON text)."""
        values = [getattr(self, name) for name in ENTRY_FIELDS]
        values[_PATH] = orjson.dumps(self.failover_path or [], default=str).decode()
        return tuple(values)

    @classmethod
    def from_row(cls, row: AuditRow) -> AuditEntry:
        values = dict(zip(ENTRY_FIELDS, row, strict=True))
        values["failover_path"] = orjson.loads(row[_PATH])
        return cls(**values)

    @classmethod
    def from_line(cls, line: bytes) -> AuditEntry:
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            raise ValueError(f"not JSON: {error}") from None
        return cls.from_json(data)


#: Every field but `id`, in declaration order (the order of `to_json`, of rows and of the INSERT).
ENTRY_FIELDS = tuple(f.name for f in fields(AuditEntry) if f.name != "id")
_PATH = ENTRY_FIELDS.index("failover_path")


#: This process, as audit records name it (several gateway processes may share one database); kept
#: current across a fork.
_INSTANCE = default_instance()


def _forked() -> None:
    global _INSTANCE
    _INSTANCE = default_instance()


os.register_at_fork(after_in_child=_forked)


def rows_from_trails(finished: list[tuple[RequestTrail, float]]) -> list[AuditRow]:
    """The rows of finished requests: (trail, `time.monotonic()` when it ended) each, in one pass.

    The writer calls this for a whole batch, off the request path; a trail is not changed once its
    request has ended, so reading it now gives what reading it then would have.
    """
    instance = _INSTANCE
    dumps = orjson.dumps
    rows = []
    for (trail, ended), uid in zip(finished, new_uids(len(finished)), strict=True):
        usage = trail.usage
        started = trail.started
        first_byte = trail.first_byte_at
        path = dumps([_step(a) for a in trail.attempts]).decode()
        rows.append(
            (
                uid,
                trail.ts,
                trail.request_id,
                trail.trace_id,
                instance,
                trail.client_key,
                trail.surface,
                trail.endpoint,
                trail.model,
                trail.backend,
                trail.backend_type,
                trail.upstream_model,
                trail.stream,
                trail.status(),
                trail.http_status,
                trail.error_type,
                trail.tried(),
                path,
                round((ended - started) * 1000, 2),
                round((first_byte - started) * 1000, 2) if first_byte else None,
                *(
                    (None, None, None, None)
                    if usage is None
                    else (
                        usage.prompt_tokens,
                        usage.completion_tokens,
                        usage.cached_tokens,
                        usage.cache_creation_tokens,
                    )
                ),
                trail.config_version,
                trail.client_address,
                trail.cost_usd,
                trail.limit_name,
                trail.cache,
                trail.saved_tokens,
                trail.saved_usd,
                trail.shadow_of,
            )
        )
    return rows


def _step(attempt: Attempt) -> dict[str, Any]:
    """One step of the failover path as stored."""
    step: dict[str, Any] = {
        "backend": attempt.backend,
        "model": attempt.model,
        "outcome": attempt.outcome,
        "status": attempt.status,
        "duration_ms": round(attempt.duration_ms, 2),
    }
    if attempt.pick is not None:  # a group's member (which group) or the canary, and why it was tried
        if attempt.pick.group is not None:
            step["group"] = attempt.pick.group
        step["strategy"] = attempt.pick.strategy
        step["reason"] = attempt.pick.reason
    if attempt.outcome == "incapable":
        step["detail"] = attempt.detail
    return step
