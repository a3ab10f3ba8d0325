"""HTTP/1.1 on a connection: llhttp (httptools) parses requests, this module frames responses and
speaks ASGI to the app.

Hypercorn's h11 protocol cost more CPU per request than the rest of the gateway's request path
together (h11 is pure Python); llhttp is the C parser Node.js uses. What HTTP/1.1 does here:

- keep-alive (HTTP/1.1's default, HTTP/1.0's `Connection: keep-alive`), `Connection: close` from
  either side, and at most `keep_alive_max_requests` requests per connection (0 while draining);
- pipelined requests, answered in order (the next starts when the previous answer is complete);
- request bodies of either framing, handed to the app as they arrive; reading stops while more than
  `BODY_HIGH_WATER` bytes wait for the app; `Expect: 100-continue` answered when the app first reads;
- responses framed by their `content-length`, else chunked (close-delimited for HTTP/1.0 clients);
  no body for HEAD, 1xx, 204 and 304; a `date` header on every response;
- a head larger than `MAX_HEAD_BYTES` gets a 431 problem, a request llhttp rejects (bad syntax,
  conflicting framing, a missing `Host` on HTTP/1.1) a 400 problem, and the connection closes.

Any request carrying `Upgrade` (WebSocket, h2c) and HTTP/2 with prior knowledge hand the connection
to Hypercorn's protocol (h11, h2, WebSocket), which then runs it to its end: the bytes since the
connection was last idle are replayed to it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import httptools
import orjson
from hypercorn.events import Closed, RawData, Updated
from hypercorn.protocol.h2 import H2Protocol

from gateway.errors import PROBLEM_CONTENT_TYPE, BadRequest, GatewayError, HeadersTooLarge, problem_body
from gateway.request_ids import new_request_id

__all__ = ["BODY_HIGH_WATER", "HTTP1", "MAX_HEAD_BYTES", "problem_response", "unparsable"]

log = logging.getLogger("gateway.server")

#: The largest request head (request line and headers) accepted: h11's limit, which served before.
MAX_HEAD_BYTES = 16 * 1024
#: Request body bytes held for the app before the connection stops reading from the client.
BODY_HIGH_WATER = 64 * 1024

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]

_STATUS_LINES = {
    status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode() for status in HTTPStatus
}
_NO_BODY_STATUSES = frozenset({204, 304})
#: What may not appear in a response header (a CR or LF would let a value write headers of its own).
_BAD_HEADER_BYTES = re.compile(rb"[\x00\r\n]")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Header names already checked (response headers repeat the same few names).
_GOOD_NAMES: set[bytes] = set()


def _good_name(name: bytes) -> bool:
    if not _TOKEN.fullmatch(name):
        return False
    if len(_GOOD_NAMES) < 1024:
        _GOOD_NAMES.add(name)
    return True


_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
#: The connection's events (immutable: one of each serves every request).
_BUSY = Updated(idle=False)
_IDLE = Updated(idle=True)
_CLOSED = Closed()
_H2_PREFACE = b"PRI * HTTP/2.0"

_date_second = 0
_date_line = b""


def _date_header() -> bytes:
    """`date: ...\\r\\n`, formatted once a second."""
    global _date_second, _date_line
    now = int(time.time())
    if now != _date_second:
        _date_second = now
        _date_line = b"date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
    return _date_line


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d \r\n" % status


def unparsable(status: int) -> GatewayError:
    """The error for a request that could not be parsed: 431 (its head is too large) or another 4xx."""
    if status == 431:
        return HeadersTooLarge(
            "the request head is larger than the server accepts (16 KiB of headers); send fewer or "
            "shorter headers"
        )
    error = BadRequest("the request is not valid HTTP/1.1 (its head or framing could not be parsed)")
    error.status = status
    return error


def problem_response(error: GatewayError) -> bytes:
    """A whole HTTP/1.1 problem response that closes the connection, for errors met before any
    request reached the app (an unparsable or too-large head, a head that did not arrive in time)."""
    request_id = new_request_id()
    body = orjson.dumps(problem_body(error, request_id=request_id, instance=""))
    head = (
        f"{_status_line(error.status).decode()}content-type: {PROBLEM_CONTENT_TYPE}\r\n"
        f"content-length: {len(body)}\r\nx-request-id: {request_id}\r\nconnection: close\r\n"
    ).encode()
    return head + _date_header() + b"\r\n" + body


class _Exchange:
    """One request and its response."""

    __slots__ = (
        "body",
        "body_size",
        "chunked",
        "complete",
        "continue_sent",
        "disconnected",
        "expect_continue",
        "head",
        "head_only",
        "keep_alive",
        "length",
        "response_done",
        "response_started",
        "scope",
        "sent",
        "waiters",
    )

    def __init__(self, scope: dict[str, Any], keep_alive: bool, expect_continue: bool) -> None:
        self.scope = scope
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.body: list[bytes] = []
        self.body_size = 0
        self.complete = False  # the whole request body has arrived
        self.continue_sent = False
        self.disconnected = False
        self.response_started = False
        self.response_done = False
        self.head: bytes | None = None  # the response head, written with the first body bytes
        self.head_only = False  # HEAD, 1xx, 204, 304: no body goes out
        self.chunked = False
        self.length: int | None = None  # the response's content-length
        self.sent = 0
        self.waiters: list[asyncio.Future[None]] = []

    def wake(self) -> None:
        waiters = self.waiters
        if waiters:
            for waiter in waiters:
                if not waiter.done():  # a waiter whose task was cancelled is done
                    waiter.set_result(None)
            waiters.clear()


class HTTP1:
    """HTTP/1.1 on one connection. `received(data)` and `lost()` feed it; `write(data)` (the
    connection's) sends bytes, and `send` takes `Closed` to close the connection and `Updated(idle)`
    when a request starts (`idle=False`) or the connection waits for the next one (`idle=True`).

    `handover()` builds Hypercorn's protocol for a connection this module does not run (Upgrade,
    HTTP/2)."""

    def __init__(
        self,
        app: ASGIApp,
        config: Any,
        task_group: Any,
        lifespan_state: dict[str, Any],
        client: tuple[str, int] | None,
        server: tuple[str, int] | None,
        send: Callable[[Any], Awaitable[None]],
        write: Callable[[bytes], Awaitable[None]],
        handover: Callable[[], Awaitable[Any]],
    ) -> None:
        self.app = app
        self.config = config
        self.task_group = task_group
        self.lifespan_state = lifespan_state
        self.client = client
        self.server = server
        self.send = send
        self.write = write
        self._handover = handover
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        #: Hypercorn's protocol, once the connection was handed to it.
        self.delegate: Any = None
        self.current: _Exchange | None = None
        self.queued: deque[_Exchange] = deque()
        self.parsing: _Exchange | None = None
        self.requests = 0
        self.closed = False
        self.close_after = False  # a pipelined upgrade: close when the answers in flight are done
        # The head being parsed.
        self.in_head = False
        self.head_size = 0
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.expect_continue = False
        self.has_host = False
        self.upgrade = False
        self.too_large = False
        #: The bytes received since the connection was last idle (for a hand-over), or None once a
        #: request of this module's began in them.
        self.idle_raw: bytearray | None = bytearray()
        self.holding = False  # the bytes since idle may be HTTP/2's preface: not parsed yet
        #: A request refused while an earlier one is answered: refused once that answer is out.
        self.refusal: GatewayError | None = None
        self.resume: asyncio.Future[None] | None = None

    @property
    def http2(self) -> bool:
        """The connection was handed to Hypercorn's HTTP/2 protocol."""
        return self.delegate is not None and isinstance(self.delegate.protocol, H2Protocol)

    async def initiate(self) -> None:
        return None

    # -- input -----------------------------------------------------------------------------------

    async def lost(self) -> None:
        """The client closed the connection (or it broke)."""
        if self.delegate is not None:
            await self.delegate.handle(_CLOSED)
        else:
            self._lost()

    async def received(self, data: bytes) -> None:
        """Bytes from the client."""
        if self.delegate is not None:
            await self.delegate.handle(RawData(data))
            return
        if self.closed or self.refusal is not None:
            return
        idle_raw = self.idle_raw
        if idle_raw is not None:
            idle_raw += data
            if self.holding or (data[:1] == b"P" and not self.in_head):
                if _H2_PREFACE.startswith(idle_raw[: len(_H2_PREFACE)]):
                    if len(idle_raw) < len(_H2_PREFACE):
                        self.holding = True  # maybe HTTP/2's preface: wait for the rest of it
                        return
                    await self._hand_over()
                    return
                if self.holding:  # it was not: parse all that was held back
                    self.holding = False
                    data = bytes(idle_raw)
        continued = self.in_head
        size_before = self.head_size
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # the upgrade request's head is complete; `upgrade` is set
        except httptools.HttpParserError:
            if self.upgrade:
                pass
            elif self.too_large:
                await self._refuse(unparsable(431))
                return
            else:
                await self._refuse(unparsable(400))
                return
        if self.upgrade:
            if self.idle_raw is not None and self.current is None and not self.queued:
                await self._hand_over()
            else:  # an upgrade pipelined behind other requests: answer those, then close
                self.close_after = True
                if self.current is None:
                    if self.queued:
                        await self._advance()
                    else:  # its head began before the connection was idle: its bytes are gone
                        await self._close()
            return
        if self.in_head:
            if continued:  # the whole chunk was head
                self.head_size = size_before + len(data)
            if self.head_size > MAX_HEAD_BYTES:
                await self._refuse(unparsable(431))
                return
        if self.current is None and self.queued:
            await self._advance()
        # Backpressure: stop reading while a request's body waits unread, or requests wait in line.
        while not self.closed and (self.queued or self._body_waiting()):
            self.resume = self.loop.create_future()
            await self.resume

    def _body_waiting(self) -> bool:
        return self.parsing is not None and self.parsing.body_size > BODY_HIGH_WATER

    def _resume_reading(self) -> None:
        resume = self.resume
        if resume is not None:
            self.resume = None
            if not resume.done():
                resume.set_result(None)

    async def _hand_over(self) -> None:
        raw = bytes(self.idle_raw or b"")
        self.idle_raw = None
        self.delegate = await self._handover()
        await self.delegate.handle(RawData(raw))

    async def _refuse(self, error: GatewayError) -> None:
        """Answer a request that never reached the app, and close the connection (after the answers
        to the requests before it)."""
        if self.current is not None or self.queued:
            self.refusal = error
            if self.current is None:
                await self._advance()
            return
        if not self.closed:
            await self.write(problem_response(error))
        await self._close()

    async def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self._resume_reading()
            await self.send(_CLOSED)

    def _lost(self) -> None:
        self.closed = True
        for exchange in (self.current, self.parsing, *self.queued):
            if exchange is not None:
                exchange.disconnected = True
                exchange.wake()
        self.queued.clear()
        self._resume_reading()

    # -- llhttp's callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.in_head = True
        self.head_size = 0
        self.url = b""
        self.headers = []
        self.expect_continue = False
        self.has_host = False

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.upgrade:
            return
        self._count(len(name) + len(value) + 4)
        name = name.lower()
        if name == b"host":
            self.has_host = True
        elif name == b"upgrade":
            self.upgrade = True
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_continue = True
        self.headers.append((name, value))

    def _count(self, size: int) -> None:
        self.head_size += size
        if self.head_size > MAX_HEAD_BYTES:
            self.too_large = True
            raise _HeadTooLarge

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.upgrade:
            return
        parser = self.parser
        version = parser.get_http_version()
        if version == "1.1" and not self.has_host:
            raise _MissingHost  # h11 refused these too (RFC 9112 3.2: 400)
        path, _, query = self.url.partition(b"?")
        try:
            decoded = unquote(path.decode("ascii"))
        except UnicodeDecodeError:
            raise _BadTarget from None
        scope = {
            "type": "http",
            "asgi": {"spec_version": "2.1", "version": "3.0"},
            "http_version": version,
            "method": parser.get_method().decode("ascii"),
            "scheme": "http",
            "path": decoded,
            "raw_path": path,
            "query_string": query,
            "root_path": "",
            "headers": self.headers,
            "client": self.client,
            "server": self.server,
            "state": self.lifespan_state.copy(),
            "extensions": {},
        }
        exchange = _Exchange(scope, parser.should_keep_alive(), self.expect_continue and version == "1.1")
        self.parsing = exchange
        self.queued.append(exchange)
        self.idle_raw = None

    def on_body(self, body: bytes) -> None:
        exchange = self.parsing
        if exchange is not None:
            exchange.body.append(body)
            exchange.body_size += len(body)
            exchange.wake()

    def on_message_complete(self) -> None:
        exchange = self.parsing
        if exchange is not None:
            exchange.complete = True
            exchange.wake()
            self.parsing = None

    # -- exchanges -------------------------------------------------------------------------------

    async def _advance(self) -> None:
        """Start the next request in line (its head is complete)."""
        exchange = self.queued.popleft()
        self.current = exchange
        self.requests += 1
        await self.send(_BUSY)
        self.task_group.spawn(self._run, exchange)
        if not self.queued:
            self._resume_reading()

    async def _run(self, exchange: _Exchange) -> None:
        async def receive() -> dict[str, Any]:
            while True:
                if exchange.body_size or (exchange.complete and exchange.body is not None):
                    if (
                        exchange.expect_continue
                        and not exchange.continue_sent
                        and not exchange.response_started
                    ):
                        exchange.continue_sent = True  # the body already came: no need to ask
                    chunks = exchange.body
                    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                    more = not exchange.complete
                    if more:
                        exchange.body = []
                    else:
                        exchange.body = None  # type: ignore[assignment]  # all of it delivered
                    exchange.body_size = 0
                    if self.parsing is exchange:
                        self._resume_reading()
                    return {"type": "http.request", "body": body, "more_body": more}
                if exchange.disconnected or exchange.response_done:
                    return {"type": "http.disconnect"}
                if exchange.expect_continue and not exchange.continue_sent and not exchange.response_started:
                    exchange.continue_sent = True
                    await self.write(_CONTINUE)
                waiter = self.loop.create_future()
                exchange.waiters.append(waiter)  # a body reader and a disconnect watch may both wait
                await waiter

        async def send(message: dict[str, Any]) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                if exchange.response_started:
                    raise RuntimeError("the response has already started")
                self._start_response(exchange, message)
            elif kind == "http.response.body":
                if not exchange.response_started or exchange.response_done:
                    raise RuntimeError("http.response.body outside a response")
                await self._body(exchange, message.get("body", b""), message.get("more_body", False))
            else:
                raise RuntimeError(f"unexpected ASGI message {kind!r}")

        try:
            await self.app(exchange.scope, receive, send)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the ASGI application failed", extra={"event": "app_failed"})
        finally:
            if not exchange.response_done:
                await self._unfinished(exchange)

    def _start_response(self, exchange: _Exchange, message: dict[str, Any]) -> None:
        status = int(message["status"])
        scope = exchange.scope
        lines = [_status_line(status)]
        length: int | None = None
        close = False
        for name, value in message.get("headers", ()):
            if type(name) is not bytes or type(value) is not bytes:
                name, value = bytes(name), bytes(value)
            value = value.strip()
            lowered = name.lower()
            if lowered == b"content-length":
                length = int(value)
            elif lowered == b"connection":
                close = close or b"close" in value.lower()
            elif lowered == b"transfer-encoding":
                continue  # the framing is this module's
            elif lowered == b"date":
                continue  # one date, ours
            if _BAD_HEADER_BYTES.search(value) or (name not in _GOOD_NAMES and not _good_name(name)):
                raise ValueError(f"invalid response header {name!r}")
            lines.append(name + b": " + value + b"\r\n")
        keep_alive = (
            exchange.keep_alive
            and not close
            and not self.close_after
            and self.requests < self.config.keep_alive_max_requests
        )
        head_only = scope["method"] == "HEAD" or status < 200 or status in _NO_BODY_STATUSES
        if not head_only and length is None:
            if scope["http_version"] == "1.1":
                exchange.chunked = True
                lines.append(b"transfer-encoding: chunked\r\n")
            else:
                keep_alive = False  # the body ends when the connection does
        if not keep_alive and not close:
            lines.append(b"connection: close\r\n")
        lines.append(_date_header())
        lines.append(b"\r\n")
        exchange.keep_alive = keep_alive
        exchange.head_only = head_only
        exchange.length = length
        exchange.head = b"".join(lines)
        exchange.response_started = True

    async def _body(self, exchange: _Exchange, body: bytes, more: bool) -> None:
        length = exchange.length
        if body and length is not None and exchange.sent + len(body) > length and not exchange.head_only:
            exchange.keep_alive = False
            raise RuntimeError("the response body is longer than its content-length")
        out = exchange.head or b""
        exchange.head = None
        if body and not exchange.head_only:
            if exchange.chunked:
                out += b"%x\r\n" % len(body) + body + b"\r\n"
            else:
                exchange.sent += len(body)
                out += body
        if not more:
            if exchange.chunked:
                out += b"0\r\n\r\n"
            elif exchange.length is not None and exchange.sent != exchange.length and not exchange.head_only:
                exchange.keep_alive = False  # the client cannot tell where the answer ended
        if out and not exchange.disconnected:
            await self.write(out)
        if not more:
            await self._finish(exchange)

    async def _unfinished(self, exchange: _Exchange) -> None:
        """The app returned (or failed) without completing its response."""
        if exchange.disconnected or self.closed:
            exchange.response_done = True
            self._done(exchange)
            return
        if exchange.head is not None:  # started, but nothing written yet: it can still be a 500
            exchange.response_started, exchange.head = False, None
        if not exchange.response_started:
            exchange.keep_alive = False
            self._start_response(
                exchange, {"status": 500, "headers": [(b"content-length", b"0"), (b"connection", b"close")]}
            )
            await self._body(exchange, b"", False)
            return
        exchange.keep_alive = False
        exchange.response_done = True
        exchange.wake()
        self._done(exchange)
        await self._close()

    async def _finish(self, exchange: _Exchange) -> None:
        exchange.response_done = True
        exchange.wake()
        self._done(exchange)
        if self.closed:
            return
        # The next request can use this connection only if this one's body was read to its end.
        if not exchange.keep_alive or not exchange.complete or (self.close_after and not self.queued):
            await self._close()
            return
        if self.refusal is not None and not self.queued:
            await self.write(problem_response(self.refusal))
            await self._close()
            return
        if not self.queued and self.parsing is None and not self.in_head:
            self.idle_raw = bytearray()
        await self.send(_IDLE)
        if self.queued:
            await self._advance()

    def _done(self, exchange: _Exchange) -> None:
        if self.current is exchange:
            self.current = None


class _HeadTooLarge(Exception):
    pass


class _MissingHost(Exception):
    pass


class _BadTarget(Exception):
    pass
