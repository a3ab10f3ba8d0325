"""What the admin API may ask of the audit log: the filters, parsed and checked once, and the cursor."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.audit.record import format_ts, parse_ts

__all__ = ["BACKEND_TYPES", "STATUSES", "LogFilter", "decode_cursor", "encode_cursor", "parse_instant"]

STATUSES = frozenset({"success", "error", "timeout", "rejected"})
BACKEND_TYPES = frozenset(
    {"mlx", "openai", "anthropic", "openai_compatible", "gemini", "azure_openai", "bedrock", "vertex"}
)
#: Longest text filter accepted (longer than any stored value).
_MAX_TEXT = 255
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
_CURSOR = re.compile(r"^(-?\d{1,19})\.(\d{1,19})$")


@dataclass(frozen=True, slots=True)
class LogFilter:
    """Records matching every field that is set. `since` is inclusive, `until` exclusive."""

    model: str | None = None
    backend_type: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    request_id: str | None = None
    #: True: only shadow copies' records (`shadow_of` set); False: only client requests'; None: both.
    shadow: bool | None = None

    @classmethod
    def from_query(cls, query: Mapping[str, Any]) -> LogFilter:
        """From query-string parameters (other keys are ignored; an empty value means unset).

        Raises ValueError naming the parameter and what it accepts.
        """

        def text(name: str) -> str | None:
            value = query.get(name)
            if value is None or value == "":
                return None
            if not isinstance(value, str):
                raise ValueError(f"{name} must be text")
            if len(value) > _MAX_TEXT:
                raise ValueError(f"{name} is longer than {_MAX_TEXT} characters")
            return value

        status = text("status")
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(sorted(STATUSES))}, not {status!r}")
        backend_type = text("backend_type")
        if backend_type is not None and backend_type not in BACKEND_TYPES:
            raise ValueError(
                f"backend_type must be one of {', '.join(sorted(BACKEND_TYPES))}, not {backend_type!r}"
            )
        shadow = text("shadow")
        if shadow is not None and shadow not in ("true", "false"):
            raise ValueError(f"shadow must be true or false, not {shadow!r}")
        since = parse_instant("since", text("since"))
        until = parse_instant("until", text("until"))
        if since is not None and until is not None and since >= until:
            raise ValueError("since must be earlier than until")
        return cls(
            model=text("model"),
            backend_type=backend_type,
            status=status,
            since=since,
            until=until,
            request_id=text("request_id"),
            shadow=None if shadow is None else shadow == "true",
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, every key present (unset ones as null), times as ISO-8601 with `Z`."""
        return {
            "model": self.model,
            "backend_type": self.backend_type,
            "status": self.status,
            "since": format_ts(self.since) if self.since else None,
            "until": format_ts(self.until) if self.until else None,
            "request_id": self.request_id,
            "shadow": self.shadow,
        }

    def matches(self, record: Mapping[str, Any]) -> bool:
        """Whether a record (an `AuditEntry.to_json()` dict) passes these filters; for the live tail."""
        for name in ("model", "backend_type", "status", "request_id"):
            wanted = getattr(self, name)
            if wanted is not None and record.get(name) != wanted:
                return False
        if self.shadow is not None and (record.get("shadow_of") is not None) != self.shadow:
            return False
        if self.since is None and self.until is None:
            return True
        ts = record.get("ts")
        if isinstance(ts, str):
            try:
                ts = parse_ts(ts.replace("Z", "+00:00"))
            except ValueError:
                return False
        if not isinstance(ts, datetime):
            return False
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        if self.since is not None and ts < self.since:
            return False
        return self.until is None or ts < self.until


def parse_instant(name: str, value: str | None) -> datetime | None:
    """ISO-8601 (a `Z` or an offset; without one, UTC) or seconds since the epoch."""
    if value is None:
        return None
    if _NUMBER.match(value):
        try:
            return _EPOCH + timedelta(seconds=float(value))
        except OverflowError:
            raise ValueError(f"{name} is out of range: {value!r}") from None
    try:
        return parse_ts(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{name} must be ISO-8601 (2025-01-31T12:00:00Z) or seconds since the epoch, not {value!r}"
        ) from None


def encode_cursor(ts: datetime, row_id: int) -> str:
    """The opaque position just after the row (ts, id) in newest-first order."""
    micros = (ts - _EPOCH) // timedelta(microseconds=1)
    return base64.urlsafe_b64encode(f"{micros}.{row_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """The (ts, id) a cursor stands for. Raises ValueError for anything `encode_cursor` did not make."""
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        match = _CURSOR.match(raw.decode("ascii"))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        match = None
    if not match or len(cursor) > 64:
        raise ValueError("invalid cursor (pass back the next_cursor of a previous page)")
    try:
        ts = _EPOCH + timedelta(microseconds=int(match.group(1)))
    except OverflowError:
        raise ValueError("invalid cursor (pass back the next_cursor of a previous page)") from None
    return ts, int(match.group(2))
