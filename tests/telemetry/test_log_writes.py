"""The log handler `configure_logging` installs: the lines logged within 50 ms go out in one write,
warnings at once, and the per-request line built without a LogRecord equals the formatter's."""

from __future__ import annotations

import asyncio
import io
import logging

import orjson

from gateway.routing.trail import RequestTrail
from gateway.telemetry import logging as gateway_logging
from gateway.telemetry.requests import _log_request, access_log
from tests.conftest import wait_for


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


def test_lines_of_one_interval_are_one_write_and_warnings_go_at_once() -> None:
    stream = CountingStream()
    saved = logging.getLogger().handlers[:]
    try:
        _install(stream)
        log = logging.getLogger("gateway.test")

        async def lines() -> tuple[int, int]:
            for i in range(5):
                log.info("line %d", i)
            await asyncio.sleep(0)  # several loop turns: still pending
            await asyncio.sleep(0)
            pending = stream.writes
            log.warning("now")  # written at once, after the lines before it
            after_warning = stream.writes
            log.info("later")
            await wait_for(lambda: stream.writes == 2)  # within FLUSH_INTERVAL_S, by the timer
            return pending, after_warning

        assert asyncio.run(lines()) == (0, 1)
        messages = [orjson.loads(line)["message"] for line in stream.getvalue().splitlines()]
        assert messages == ["line 0", "line 1", "line 2", "line 3", "line 4", "now", "later"]
    finally:
        logging.getLogger().handlers[:] = saved


def test_pending_text_past_the_size_mark_is_written_at_once() -> None:
    stream = CountingStream()
    saved = logging.getLogger().handlers[:]
    try:
        _install(stream)
        log = logging.getLogger("gateway.test")
        line = "x" * 1000

        async def many() -> int:
            for _ in range(gateway_logging.FLUSH_SIZE // 1000 + 1):
                log.info(line)
            return stream.writes

        assert asyncio.run(many()) == 1  # no timer ran: the loop never yielded
        written = stream.getvalue()
        assert gateway_logging.FLUSH_SIZE <= len(written) < gateway_logging.FLUSH_SIZE + 2000
        assert all(orjson.loads(text)["message"] == line for text in written.splitlines())
    finally:
        logging.getLogger().handlers[:] = saved


def test_a_worker_writes_its_pending_lines_when_it_stops() -> None:
    """The lines logged just before a worker's loop ends (its last request, the drain) are written at
    its exit, not lost with the loop's timer."""
    stream = CountingStream()
    saved = logging.getLogger().handlers[:]
    try:
        _install(stream)

        async def last_words() -> None:
            logging.getLogger("gateway.test").info("draining")

        asyncio.run(last_words())  # the loop is gone before the timer fires
        assert stream.getvalue() == ""
        logging.getLogger().handlers[0].flush()  # what gateway/server.py does as a worker ends
        assert orjson.loads(stream.getvalue())["message"] == "draining"
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
