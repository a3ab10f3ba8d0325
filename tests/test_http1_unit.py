"""gateway/http1.py driven directly, without sockets: bytes in through `received`, and what it writes,
the connection events it sends and the apps it starts observed one step at a time (the head limit's
exact bound, when reading stops for an unread body, 100-continue, the hand-over, a closed connection)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from hypercorn.events import Closed, RawData, Updated
from hypercorn.protocol.h2 import H2Protocol
from hypercorn.protocol.h11 import H11Protocol

from gateway.http1 import BODY_HIGH_WATER, HTTP1, MAX_HEAD_BYTES

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class Delegate:
    """Stands in for Hypercorn's ProtocolWrapper after a hand-over: records what it is fed."""

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.fed: list[Any] = []

    async def handle(self, event: Any) -> None:
        self.fed.append(event)


class Harness:
    """One HTTP1 with a recording connection around it."""

    def __init__(self, app: App, *, protocol: Any = None) -> None:
        self.written = bytearray()
        self.events: list[Any] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.delegate: Delegate | None = None
        self._delegate_protocol = protocol if protocol is not None else H11Protocol.__new__(H11Protocol)
        config = SimpleNamespace(keep_alive_max_requests=1000)
        self.http = HTTP1(
            app, config, self, {}, ("127.0.0.1", 1), ("127.0.0.1", 2), self._send, self._write, self._handover
        )

    def spawn(self, func: Any, *args: Any) -> None:  # the connection's task group
        self.tasks.append(asyncio.ensure_future(func(*args)))

    async def _send(self, event: Any) -> None:
        self.events.append(event)

    async def _write(self, data: bytes) -> None:
        self.written += data

    async def _handover(self) -> Delegate:
        self.delegate = Delegate(self._delegate_protocol)
        return self.delegate

    @property
    def closed(self) -> bool:
        return any(isinstance(event, Closed) for event in self.events)

    async def settle(self) -> None:
        """Let every started app finish (each test's apps end on their own)."""
        await asyncio.wait_for(asyncio.gather(*self.tasks), 10)


async def turns(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def answer(send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body, then answers."""
    while (await receive()).get("more_body"):
        pass
    await answer(send)


def head_of(size: int) -> bytes:
    """A GET whose head counts exactly `size` toward MAX_HEAD_BYTES: the target's bytes, and each
    header's name and value plus 4 (": " and CRLF)."""
    host = 4 + 2 + 4  # "Host", "gw", 4
    return b"GET /" + b"a" * (size - host - 1) + b" HTTP/1.1\r\nHost: gw\r\n\r\n"


@pytest.mark.parametrize(("size", "status"), [(MAX_HEAD_BYTES, b"200"), (MAX_HEAD_BYTES + 1, b"431")])
async def test_the_head_limit_is_exact(size: int, status: bytes) -> None:
    harness = Harness(ok)
    await harness.http.received(head_of(size))
    await harness.settle()
    assert harness.written.startswith(b"HTTP/1.1 " + status)


async def test_a_header_too_long_is_refused_before_it_ends() -> None:
    """One header arriving over several reads: llhttp hands it over only once it ends, so the bytes
    received meanwhile are what is counted."""
    harness = Harness(ok)
    await harness.http.received(b"GET / HTTP/1.1\r\nHost: gw\r\nX-Big: a")  # counts 11: "/" and Host
    await harness.http.received(b"a" * 8_000)  # 8,011
    await harness.http.received(b"a" * 8_000)  # 16,011: still under 16,384
    assert not harness.written
    await harness.http.received(b"a" * 8_000)  # no end of line yet, and past the limit
    assert harness.written.startswith(b"HTTP/1.1 431 ")
    assert harness.closed


async def test_reading_stops_while_more_than_the_high_water_mark_of_body_waits() -> None:
    go = asyncio.Event()

    async def late_reader(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await go.wait()
        await ok(scope, receive, send)

    harness = Harness(late_reader)
    size = 4 * BODY_HIGH_WATER
    reading = asyncio.ensure_future(
        harness.http.received(
            b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n" % size + b"x" * 1000
        )
    )
    await turns()
    assert reading.done()  # 1,000 bytes waiting: under the mark, reading goes on
    reading = asyncio.ensure_future(harness.http.received(b"x" * BODY_HIGH_WATER))
    await turns()
    assert not reading.done()  # past the mark: the connection stops reading
    go.set()
    await asyncio.wait_for(reading, 10)  # the app read: reading goes on
    await harness.http.received(b"x" * (size - 1000 - BODY_HIGH_WATER))
    await harness.settle()
    assert harness.written.startswith(b"HTTP/1.1 200 ")


async def test_the_end_of_a_chunked_body_wakes_a_waiting_reader() -> None:
    seen: list[tuple[bytes, bool]] = []

    async def reader(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            seen.append((message["body"], message["more_body"]))
            if not message["more_body"]:
                break
        await answer(send)

    harness = Harness(reader)
    await harness.http.received(
        b"POST / HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    )
    await turns()
    await harness.http.received(b"0\r\n\r\n")  # the end, with no body bytes
    await harness.settle()
    assert seen == [(b"hello", True), (b"", False)]


async def test_100_continue_is_sent_once_and_not_after_the_body_began() -> None:
    async def reader(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message["body"]
            if not message["more_body"]:
                break
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})

    head = b"POST / HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\nContent-Length: 9\r\n\r\n"
    asked = Harness(reader)  # the client waits for the 100 before sending its body
    await asked.http.received(head)
    await turns()
    await asked.http.received(b"abc")
    await turns()
    await asked.http.received(b"def")
    await turns()
    await asked.http.received(b"ghi")
    await asked.settle()
    assert asked.written.count(b"100 Continue") == 1
    assert asked.written.endswith(b"abcdefghi")

    eager = Harness(reader)  # the client did not wait: its body came with the head
    await eager.http.received(head + b"abc")
    await turns()
    await eager.http.received(b"defghi")
    await eager.settle()
    assert b"100 Continue" not in eager.written
    assert eager.written.endswith(b"abcdefghi")


async def test_header_names_and_values_may_be_any_bytes_type() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        headers = [(bytearray(b"x-made"), b"here"), (b"content-length", memoryview(b"2"))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    harness = Harness(app)
    await harness.http.received(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
    await harness.settle()
    assert harness.written.startswith(b"HTTP/1.1 200 ")
    assert b"x-made: here\r\n" in harness.written


async def test_an_app_that_returns_mid_answer_wakes_its_disconnect_watch() -> None:
    watched: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()

        async def watch() -> None:
            watched.append((await receive())["type"])

        watching = asyncio.ensure_future(watch())
        await asyncio.sleep(0)
        assert not watching.done()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})

    harness = Harness(app)
    await harness.http.received(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
    await harness.settle()
    await turns()
    assert watched == ["http.disconnect"]  # at once, not when the socket's end is noticed
    assert harness.closed


async def test_nothing_is_served_once_the_connection_is_closed() -> None:
    started: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        started.append(scope["path"])
        await ok(scope, receive, send)

    harness = Harness(app)
    await harness.http.received(b"GET /a HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    await harness.settle()
    assert harness.closed
    await harness.http.received(b"GET /b HTTP/1.1\r\nHost: gw\r\n\r\n")
    await turns()
    assert started == ["/a"]


async def test_after_a_pipelined_refusal_more_bytes_change_nothing() -> None:
    release = asyncio.Event()
    started: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        started.append(scope["path"])
        await release.wait()
        await ok(scope, receive, send)

    harness = Harness(app)
    await harness.http.received(b"GET /a HTTP/1.1\r\nHost: gw\r\n\r\nGET / HTTP/1.1\r\nHost gw\r\n\r\n")
    await turns()
    await harness.http.received(b"GET /c HTTP/1.1\r\nHost: gw\r\n\r\n")  # while /a is answered
    release.set()
    await harness.settle()
    assert started == ["/a"]
    assert harness.written.startswith(b"HTTP/1.1 200 ")  # /a's answer, then one 400
    assert harness.written.count(b"HTTP/1.1 200 ") == 1 and harness.written.count(b"HTTP/1.1 400 ") == 1
    assert harness.closed


async def test_a_request_after_a_p_that_was_not_http2_is_parsed_whole_over_several_reads() -> None:
    harness = Harness(ok)
    await harness.http.received(b"P")  # could be HTTP/2's preface: held
    assert not harness.tasks
    await harness.http.received(b"OST /x HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n")
    await harness.settle()
    await harness.http.received(b"GET /y HTTP/1.1\r\n")  # the next head, in two reads
    await harness.http.received(b"Host: gw\r\n\r\n")
    await harness.settle()
    assert harness.written.count(b"HTTP/1.1 200 ") == 2
    assert not harness.closed


async def test_http2_and_upgrades_are_handed_over_with_every_byte_since_idle() -> None:
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    h2 = Harness(ok, protocol=H2Protocol.__new__(H2Protocol))
    await h2.http.received(preface[:5])
    await h2.http.received(preface[5:])
    assert h2.delegate is not None and h2.http.http2
    assert h2.delegate.fed == [RawData(preface)]
    await h2.http.received(b"more")
    await h2.http.lost()
    assert h2.delegate.fed[1:] == [RawData(b"more"), Closed()]

    upgrade = b"GET /live HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    ws = Harness(ok)
    assert not ws.http.http2
    await ws.http.received(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
    await ws.settle()
    await ws.http.received(upgrade)
    assert ws.delegate is not None and not ws.http.http2  # Hypercorn's h11 runs it from here
    assert ws.delegate.fed == [RawData(upgrade)]


async def test_an_upgrade_pipelined_behind_a_request_closes_after_its_answer() -> None:
    harness = Harness(ok)
    await harness.http.received(
        b"GET /a HTTP/1.1\r\nHost: gw\r\n\r\n"
        b"GET /live HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    await harness.settle()
    assert harness.delegate is None
    assert harness.written.startswith(b"HTTP/1.1 200 ") and harness.written.count(b"HTTP/1.1 ") == 1
    assert b"connection: close\r\n" in harness.written
    assert harness.closed


async def test_the_connection_hears_when_a_request_starts_and_when_it_is_idle_again() -> None:
    harness = Harness(ok)
    await harness.http.received(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
    await harness.settle()
    assert harness.events == [Updated(idle=False), Updated(idle=True)]


# -- found by the mutation run (gateway bench mutation --module gateway.http1) --------------------


async def _past(harness: Harness, data: bytes) -> asyncio.Future[None]:
    """Feed `data` in a task; after some loop turns, the task is done unless reading stopped."""
    reading = asyncio.ensure_future(harness.http.received(data))
    await turns()
    return reading


@pytest.mark.parametrize(("waiting", "stops"), [(BODY_HIGH_WATER, False), (BODY_HIGH_WATER + 1, True)])
async def test_the_body_high_water_mark_is_exact(waiting: int, stops: bool) -> None:
    go = asyncio.Event()

    async def late_reader(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await go.wait()
        await ok(scope, receive, send)

    harness = Harness(late_reader)
    head = b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n" % (waiting + 10)
    reading = await _past(harness, head + b"x" * waiting)
    assert reading.done() is not stops
    go.set()
    await asyncio.wait_for(reading, 10)
    await harness.http.received(b"x" * 10)
    await harness.settle()
    assert harness.written.startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize(("more", "refused"), [(8_373, False), (8_374, True)])
async def test_the_head_limit_is_exact_over_several_reads(more: int, refused: bool) -> None:
    harness = Harness(ok)
    await harness.http.received(b"GET / HTTP/1.1\r\nHost: gw\r\nX-Big: a")  # counts 11
    await harness.http.received(b"a" * 8_000)
    await harness.http.received(b"a" * more)  # 16,384 in all, or one more
    assert harness.written.startswith(b"HTTP/1.1 431 ") is refused


async def test_exactly_http2s_preface_is_handed_over_at_once() -> None:
    harness = Harness(ok, protocol=H2Protocol.__new__(H2Protocol))
    await harness.http.received(b"PRI * HTTP/2.0")  # its first line, all of it, nothing more yet
    assert harness.delegate is not None


async def test_no_request_is_served_after_an_early_answer_closed_the_connection() -> None:
    """The app answered before reading the body: the connection closes, and bytes still arriving
    (the rest of that body, a next request) are not parsed into requests."""
    started: list[str] = []

    async def early(scope: dict[str, Any], receive: Any, send: Any) -> None:
        started.append(scope["path"])
        await answer(send)

    harness = Harness(early)
    await harness.http.received(b"POST /a HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\n\r\n12345")
    await harness.settle()
    assert harness.closed
    await harness.http.received(b"67890GET /b HTTP/1.1\r\nHost: gw\r\n\r\n")
    await turns()
    assert started == ["/a"]
    assert [type(e) for e in harness.events].count(Closed) == 1


async def test_a_refused_connection_answers_and_closes_once() -> None:
    harness = Harness(ok)
    await harness.http.received(b"GET / HTTP/1.1\r\nHost gw\r\n\r\n")
    await harness.http.received(b"GET / HTTP/1.1\r\nHost gw\r\n\r\n")  # more, before the socket closed
    assert harness.written.count(b"HTTP/1.1 400 ") == 1
    assert [type(e) for e in harness.events].count(Closed) == 1


async def test_closing_or_losing_the_connection_lets_a_stopped_reader_go_on() -> None:
    """Reading stopped for an unread body; the connection closing (an early answer) or breaking (a
    failed write) must end that wait, or the connection's task would never finish."""
    for how in ("answer", "lost"):
        go = asyncio.Event()

        async def app(scope: dict[str, Any], receive: Any, send: Any, go: asyncio.Event = go) -> None:
            await go.wait()
            await answer(send)

        harness = Harness(app)
        big = BODY_HIGH_WATER + 1
        reading = await _past(
            harness, b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n" % (2 * big) + b"x" * big
        )
        assert not reading.done()
        if how == "answer":
            go.set()
            await harness.settle()
        else:
            await harness.http.lost()
        await asyncio.wait_for(reading, 10)
        go.set()
        await harness.settle()


async def test_after_the_client_is_gone_nothing_is_written_or_announced() -> None:
    go = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await go.wait()
        await answer(send)

    harness = Harness(app)
    await harness.http.received(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
    await turns()
    await harness.http.lost()
    go.set()
    await harness.settle()
    assert not harness.written
    assert harness.events == [Updated(idle=False)]  # no "idle again" on a connection that is gone


@pytest.mark.parametrize(
    "header",
    [b"", b"X-Note: 100-continue\r\n", b"Expect: something-else\r\n"],
    ids=["no-expect", "another-header-with-that-value", "another-expectation"],
)
async def test_100_continue_only_when_asked_for(header: bytes) -> None:
    harness = Harness(ok)
    await harness.http.received(b"POST / HTTP/1.1\r\nHost: gw\r\n" + header + b"Content-Length: 4\r\n\r\n")
    await turns()  # the app waits for the body
    await harness.http.received(b"body")
    await harness.settle()
    assert b"100 Continue" not in harness.written
    assert harness.written.startswith(b"HTTP/1.1 200 ")


async def test_pipelined_requests_do_not_stop_reading_once_their_turn_came() -> None:
    go = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/a":
            await go.wait()
        await ok(scope, receive, send)

    harness = Harness(app)
    reading = await _past(harness, b"GET /a HTTP/1.1\r\nHost: gw\r\n\r\nGET /b HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert not reading.done()  # /b waits for /a: reading stops meanwhile
    go.set()
    await asyncio.wait_for(reading, 10)  # /b's turn came: reading goes on
    await harness.settle()
    assert harness.written.count(b"HTTP/1.1 200 ") == 2


async def test_an_upgrade_arriving_while_a_request_runs_waits_its_turn_and_then_closes() -> None:
    go = asyncio.Event()
    started: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        started.append(scope["path"])
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await go.wait()
        await send({"type": "http.response.body", "body": b"ok"})

    harness = Harness(app)
    await harness.http.received(b"GET /a HTTP/1.1\r\nHost: gw\r\n\r\n")
    await turns()
    await harness.http.received(
        b"GET /b HTTP/1.1\r\nHost: gw\r\n\r\n"
        b"GET /live HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    await turns()
    assert started == ["/a"]  # one at a time, whatever arrived meanwhile
    go.set()
    await harness.settle()
    await turns()
    await harness.settle()
    assert started == ["/a", "/b"]
    assert harness.delegate is None and harness.closed  # the upgrade is not served on this connection


async def test_an_upgrade_whose_head_began_during_an_answer_is_not_handed_over_in_part() -> None:
    go = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await go.wait()
        await ok(scope, receive, send)

    harness = Harness(app)
    await harness.http.received(b"GET /a HTTP/1.1\r\nHost: gw\r\n\r\n")
    await turns()
    await harness.http.received(b"GET /live HTTP/1.1\r\nHost: gw\r\n")  # half a head, while /a runs
    go.set()
    await harness.settle()
    await harness.http.received(b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    assert harness.delegate is None  # Hypercorn would have seen half a request
    assert harness.closed


async def test_body_before_the_start_or_after_the_end_is_refused() -> None:
    async def body_first(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.body", "body": b"ok"})

    async def body_after(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await answer(send)
        await send({"type": "http.response.body", "body": b"more"})

    first = Harness(body_first)
    await first.http.received(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
    await first.settle()
    assert first.written.startswith(b"HTTP/1.1 500 ")
    after = Harness(body_after)
    await after.http.received(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
    await after.settle()
    assert after.written.endswith(b"\r\n\r\nok")  # nothing after the answer's end


async def test_an_app_failure_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def failing(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    harness = Harness(failing)
    with caplog.at_level(logging.ERROR, logger="gateway.server"):
        await harness.http.received(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
        await harness.settle()
    assert [r.message for r in caplog.records] == ["the ASGI application failed"]
    assert caplog.records[0].exc_info is not None


async def test_the_apps_date_and_transfer_encoding_are_replaced_not_the_headers_after_them() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = [
            (b"date", b"Thu, 01 Jan 1970 00:00:00 GMT"),
            (b"x-one", b"1"),
            (b"transfer-encoding", b"chunked"),
            (b"x-two", b"2"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    harness = Harness(app)
    await harness.http.received(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
    await harness.settle()
    head = bytes(harness.written).partition(b"\r\n\r\n")[0].lower()
    assert b"x-one: 1" in head and b"x-two: 2" in head
    assert head.count(b"date: ") == 1 and b"1970" not in head
    assert head.count(b"transfer-encoding: chunked") == 1  # ours: no length was given


async def test_an_answer_shorter_than_its_content_length_closes_the_connection() -> None:
    async def short(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
        await send({"type": "http.response.body", "body": b"four"})

    harness = Harness(short)
    await harness.http.received(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
    await harness.settle()
    assert harness.written.endswith(b"four") and harness.closed  # the client cannot find the end
