"""The log handler `configure_logging` installs: the lines of one event-loop turn go out in one write,
warnings at once, and the per-request line built without a LogRecord equals the formatter's."""

from __future__ import annotations

import asyncio
import io
import logging

import orjson

from gateway.routing.trail import RequestTrail
from gateway.telemetry import logging as gateway_logging
from gateway.telemetry.requests import _log_request, access_log


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def _install(stream: CountingStream) -> logging.Handler:
    gateway_logging.configure_logging("info", "json")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, gateway_logging.CoalescingStreamHandler)
    handler.setStream(stream)
    return handler


def test_one_loop_turn_is_one_write_and_warnings_go_at_once() -> None:
    stream = CountingStream()
    saved = logging.getLogger().handlers[:]
    try:
        _install(stream)
        log = logging.getLogger("gateway.test")

        async def turn() -> int:
            for i in range(5):
                log.info("line %d", i)
            pending = stream.writes
            await asyncio.sleep(0)  # the end of this turn
            await asyncio.sleep(0)
            log.warning("now")
            return pending

        assert asyncio.run(turn()) == 0  # nothing written during the turn
        lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
        assert [line["message"] for line in lines] == [
            "line 0",
            "line 1",
            "line 2",
            "line 3",
            "line 4",
            "now",
        ]
        assert stream.writes == 2  # the five lines together, then the warning
    finally:
        logging.getLogger().handlers[:] = saved


def test_the_request_line_is_the_formatters_line() -> None:
    trail = RequestTrail("openai", "chat", "req_1")
    trail.model, trail.backend, trail.http_status = "sk-looks-like-a-key-123456789", "fake", 200
    saved = logging.getLogger().handlers[:]
    try:
        fast = CountingStream()
        _install(fast)
        _log_request(trail, "success", 0.0123)
        logging.getLogger().handlers[0].flush()
        slow = CountingStream()
        handler = logging.StreamHandler(slow)
        handler.setFormatter(gateway_logging.JSONFormatter())
        logging.getLogger().handlers[:] = [handler]  # not ours: the line goes through `logging`
        _log_request(trail, "success", 0.0123)
    finally:
        logging.getLogger().handlers[:] = saved
    built, formatted = orjson.loads(fast.getvalue()), orjson.loads(slow.getvalue())
    assert built.pop("time")[:16] == formatted.pop("time")[:16]
    assert built == formatted
    assert built["logger"] == access_log.name and built["event"] == "request"
    assert "sk-looks-like" not in fast.getvalue()  # redacted as the formatter redacts
