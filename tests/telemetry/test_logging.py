"""Log lines: JSON with the trace id, secrets redacted wherever they appear, level and format from
the config."""

from __future__ import annotations

import json
import logging

import logfire
import pytest
from logfire.testing import CaptureLogfire

from gateway import tracing
from gateway.config.model import LoggingConfig
from gateway.telemetry.logging import JSONFormatter, apply_logging, configure_logging, redact


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abcdefghijklmnop", "abcdefghijklmnop"),
        ("calling with sk-proj-0123456789abcdef", "sk-proj-0123456789abcdef"),
        ('{"x-api-key": "ant-0123456789abcdef"}', "ant-0123456789abcdef"),
        ("api_key=0123456789abcdef", "0123456789abcdef"),
        ("LOGFIRE_TOKEN=pylf_v1_us_0123456789abcdef", "pylf_v1_us_0123456789abcdef"),
        ("postgres://gateway:hunter2hunter2@db:5432/audit", "hunter2hunter2"),
        ("password: correct-horse-battery", "correct-horse-battery"),
    ],
)
def test_secrets_are_redacted_in_text_and_in_json(text: str, secret: str) -> None:
    assert secret not in redact(text) and "[REDACTED]" in redact(text)
    encoded = json.dumps({"message": text})
    redacted = redact(encoded)
    assert secret not in redacted
    json.loads(redacted)  # still valid JSON


def test_metadata_is_left_alone() -> None:
    line = '{"prompt_tokens": 123456789, "completion_tokens": 42, "request_id": "req_0123456789abcdef"}'
    assert redact(line) == line


def record(message: str, **extra: object) -> logging.LogRecord:
    result = logging.LogRecord("gateway.test", logging.INFO, __file__, 1, message, None, None)
    result.__dict__.update(extra)
    return result


def test_json_lines_carry_extra_fields_and_redact_them_too() -> None:
    line = JSONFormatter().format(
        record("hello", event="request", request_id="r1", header="Bearer abcdefghijkl")
    )
    data = json.loads(line)
    assert data["message"] == "hello" and data["event"] == "request" and data["request_id"] == "r1"
    assert data["level"] == "info" and data["logger"] == "gateway.test" and isinstance(data["pid"], int)
    assert data["header"] == "Bearer [REDACTED]"
    assert "trace_id" not in data


def test_lines_logged_inside_a_span_carry_its_trace_id(capfire: CaptureLogfire) -> None:
    tracing.install(logfire.DEFAULT_LOGFIRE_INSTANCE, owned=False)
    try:
        with tracing.span("outer", purpose="test") as span:
            line = json.loads(JSONFormatter().format(record("inside")))
            expected = tracing.trace_id_of(span)
        outside = json.loads(JSONFormatter().format(record("outside")))
    finally:
        tracing.uninstall()
    assert expected and line["trace_id"] == expected
    assert "trace_id" not in outside
    [exported] = capfire.exporter.exported_spans_as_dict()
    assert exported["name"] == "outer" and exported["attributes"]["purpose"] == "test"


def test_span_is_a_shared_no_op_when_tracing_is_off() -> None:
    assert not tracing.enabled()
    with tracing.span("anything", key="value") as span:
        span.set_attribute("more", 1)
        span.set_attributes({"x": 1})
    assert span is tracing.NO_SPAN
    assert tracing.span("another") is tracing.NO_SPAN
    assert tracing.trace_id_of(span) is None


def test_tracing_stays_off_without_a_destination() -> None:
    from gateway.config.model import LogfireConfig

    config = LogfireConfig(enabled=True, service_name="gateway", environment="", project_url="")
    assert tracing.configure_logfire(config, env={}) is None
    off = LogfireConfig(enabled=False, service_name="gateway", environment="", project_url="")
    assert tracing.configure_logfire(off, env={"LOGFIRE_TOKEN": "pylf_v1_us_x"}) is None
    assert tracing.destination({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) == "otlp"
    assert tracing.destination({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}) == "otlp"
    assert tracing.destination({"LOGFIRE_TOKEN": "t"}) == "logfire"


def test_a_reload_reconfigures_only_the_gateways_own_handler() -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        foreign = logging.NullHandler()
        root.handlers[:] = [foreign]
        apply_logging(LoggingConfig(level="error", format="text"))
        assert root.handlers == [foreign] and root.level == saved_level
        configure_logging("info", "json")
        apply_logging(LoggingConfig(level="warning", format="text"))
        [handler] = root.handlers
        assert root.level == logging.WARNING and not isinstance(handler.formatter, JSONFormatter)
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def test_auto_is_text_at_a_terminal_and_json_anywhere_else(tmp_path) -> None:
    import os

    from gateway.telemetry.logging import resolve_format

    leader, follower = os.openpty()
    try:
        with os.fdopen(follower, "w", closefd=False) as terminal:
            assert resolve_format("auto", terminal) == "text"
            assert resolve_format("json", terminal) == "json"  # said explicitly: kept
        with open(tmp_path / "captured.log", "w") as file:
            assert resolve_format("auto", file) == "json"
            assert resolve_format("text", file) == "text"
    finally:
        os.close(leader)
        os.close(follower)


def test_text_lines_are_short_human_and_redacted() -> None:
    from gateway.telemetry.logging import TextFormatter

    record = logging.LogRecord(
        "gateway.server", logging.WARNING, __file__, 1, "key %s", ("sk-0123456789abcdef",), None
    )
    record.event = "something"
    line = TextFormatter().format(record)
    assert line.endswith(" warn  key [REDACTED]"), line
    assert line[2] == ":" and line[5] == ":"  # HH:MM:SS first
    assert "event" not in line and "{" not in line
