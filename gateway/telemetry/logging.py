"""Log lines: one JSON object per line, or text for a terminal, with secrets redacted wherever they appear.

Every line is redacted as a whole, after formatting, so a key is caught whichever field carries it
(message, extra field, exception), in its JSON encoding. Lines logged while a traced request runs
carry its `trace_id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
from datetime import UTC, datetime
from typing import TextIO

import orjson

from gateway import tracing
from gateway.config.model import LoggingConfig

__all__ = [
    "CoalescingStreamHandler",
    "JSONFormatter",
    "TextFormatter",
    "apply_logging",
    "configure_logging",
    "json_line",
    "json_line_writer",
    "redact",
    "resolve_format",
]

# Never in a log line, whatever logged them: bearer tokens, sk-... style API keys, Logfire tokens,
# values of x-api-key / api_key / token / secret / password fields, passwords in URLs. The
# replacement keeps quotes and separators, so a JSON line stays valid JSON. Each pattern runs only
# when the line contains a word it could match (scanning a whole line costs tens of µs per pattern).
_FIELD_END = ('"', "'", ":", "=", " ", "\\")
#: (pattern, words it could match: a word, or a word and what may follow it).
_PATTERNS: tuple[tuple[re.Pattern[str], tuple[tuple[str, tuple[str, ...]], ...]], ...] = (
    (re.compile(r"(?i)(?P<prefix>bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), (("bearer", ()),)),
    (re.compile(r"(?i)\b(?:sk-|pylf_)[A-Za-z0-9_-]{8,}"), (("sk-", ()), ("pylf_", ()))),
    (
        re.compile(
            r"(?i)(?P<prefix>(?:x-api-key|api[_-]?key|token|secret|password)\\?[\"']?\s*[:=]\s*\\?[\"']?)"
            r"[^\s\"',}\\]{8,}"
        ),
        (("key", _FIELD_END), ("token", _FIELD_END), ("secret", ()), ("password", ())),
    ),
    (re.compile(r"(?P<prefix>://[^:/@\s\"']+:)[^@\s/\"']+(?P<at>@)"), (("://", ()),)),
)
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
#: Marks the handler `configure_logging` installed, so a reload reconfigures only that one.
_OURS = "_gateway_handler"


def redact(text: str) -> str:
    lowered = text.lower()
    for pattern, words in _PATTERNS:
        if any(_has(lowered, word, ends) for word, ends in words):
            text = pattern.sub(_replace, text)
    return text


def _has(text: str, word: str, ends: tuple[str, ...]) -> bool:
    if word not in text:
        return False
    return not ends or any(word + end in text for end in ends)


def _replace(match: re.Match[str]) -> str:
    groups = match.groupdict()
    return f"{groups.get('prefix') or ''}[REDACTED]{groups.get('at') or ''}"


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        fields = record.__dict__
        for key in fields.keys() - _STANDARD:
            if not key.startswith("_"):
                line[key] = fields[key]
        if "trace_id" not in line and tracing.enabled():
            trace_id = tracing.current_trace_id()
            if trace_id:
                line["trace_id"] = trace_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return redact(orjson.dumps(line, default=str).decode())


_LEVEL_WORDS = {"WARNING": "warn ", "ERROR": "ERROR", "CRITICAL": "FATAL", "DEBUG": "debug", "INFO": "info "}


class TextFormatter(logging.Formatter):
    """For a person at a terminal: local time, level, message; warnings and errors stand out.
    The structured fields stay in the JSON format (the message says what happened)."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        level = _LEVEL_WORDS.get(record.levelname, record.levelname.lower())
        line = f"{when} {level} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


def resolve_format(fmt: str, stream: TextIO | None = None) -> str:
    """`auto` -> `text` when `stream` (standard error) is a terminal, else `json`."""
    if fmt != "auto":
        return fmt
    stream = sys.stderr if stream is None else stream
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):  # closed, or not a real stream
        return "json"


#: How long an INFO line logged on the event loop may wait to be written with the lines after it.
FLUSH_INTERVAL_S = 0.05
#: Pending text past this many characters is written at once.
FLUSH_SIZE = 64 * 1024


class CoalescingStreamHandler(logging.StreamHandler):
    """A stream handler that writes the lines logged on the event loop within `FLUSH_INTERVAL_S`
    (50 ms) with one `write`.

    Under load a worker finishes a request every few hundred microseconds, each logging a line; one
    system call per line (stderr is line-buffered) costs far more than formatting the line, and each
    call lets another thread (the audit writer's) take the GIL. Lines logged outside the event
    loop's thread, and warnings and errors, are written at once (after any pending ones, so the
    order is kept); so is pending text past `FLUSH_SIZE`. `flush` (logging.shutdown at exit, the
    worker's own stop) writes what is pending.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._pending_size = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.write_line(line, urgent=record.levelno >= logging.WARNING)

    def write_line(self, line: str, *, urgent: bool = False) -> None:
        """Write one formatted line: within `FLUSH_INTERVAL_S`, or now (`urgent`, or no loop here)."""
        if not urgent:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                with self.lock:  # type: ignore[union-attr]
                    if not self._pending:
                        loop.call_later(FLUSH_INTERVAL_S, self.flush)
                    self._pending.append(line + self.terminator)
                    self._pending_size += len(line)
                    if self._pending_size < FLUSH_SIZE:
                        return
                self.flush()  # the timer then finds nothing to write
                return
        with self.lock:  # type: ignore[union-attr]
            self._pending.append(line + self.terminator)
        self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._pending:
                lines, self._pending = self._pending, []
                self._pending_size = 0
                with contextlib.suppress(Exception):  # a broken stderr must not break a request
                    self.stream.write("".join(lines))
            if self.stream and hasattr(self.stream, "flush"):
                self.stream.flush()


def json_line_writer(logger: logging.Logger) -> CoalescingStreamHandler | None:
    """The handler `configure_logging` installed, if `logger`'s INFO lines go only to it, as JSON,
    through no filter: then a caller may write a line it built itself (the per-request line, which
    skips the LogRecord and the formatter's generic work) and the output is the same. None when
    anything else is configured (an embedding application's or a test's handlers, text format)."""
    if logger.filters or not logger.propagate or logger.handlers or not logger.isEnabledFor(logging.INFO):
        return None
    handlers = logging.getLogger().handlers
    if len(handlers) != 1:
        return None
    handler = handlers[0]
    if (
        type(handler) is CoalescingStreamHandler
        and type(handler.formatter) is JSONFormatter
        and not handler.filters
        and handler.level <= logging.INFO
    ):
        return handler
    return None


def json_line(fields: dict[str, object]) -> str:
    """One JSON log line, redacted as `JSONFormatter` redacts it."""
    return redact(orjson.dumps(fields, default=str).decode())


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    handler = CoalescingStreamHandler(sys.stderr)
    setattr(handler, _OURS, True)
    if resolve_format(fmt) == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("hypercorn.access", "watchfiles"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def apply_logging(config: LoggingConfig) -> None:
    """Apply `telemetry.logging` after a reload, if `configure_logging` set up this process's logging
    (an embedding application's or a test runner's handlers are left alone)."""
    root = logging.getLogger()
    if any(getattr(handler, _OURS, False) for handler in root.handlers):
        configure_logging(config.level, config.format)
