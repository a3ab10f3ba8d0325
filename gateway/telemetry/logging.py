"""Log lines: one JSON object per line (or plain text), with secrets redacted wherever they appear."""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime

import orjson

__all__ = ["JSONFormatter", "configure_logging", "redact"]

# Bearer tokens, sk-... style API keys, x-api-key values: never in a log line, whatever logged them.
_SECRET = re.compile(
    r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}|\b(sk-[A-Za-z0-9_-]{8,})|(x-api-key[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]{8,}"
)
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def redact(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        prefix = match.group(1) or match.group(3) or ""
        return f"{prefix}[REDACTED]"

    return _SECRET.sub(replace, text)


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(line, default=str).decode()


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("hypercorn.access", "watchfiles"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
