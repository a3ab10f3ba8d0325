"""A worker's connections: this module owns the sockets; `gateway.http1` speaks HTTP/1.1 on them
(Hypercorn's protocol takes over a connection that upgrades or speaks HTTP/2).

It accepts (at most `server.max_client_connections` open at once), bounds how long the gateway waits to
*receive* from a client (`server.timeouts`: the request head, the body, the idle keep-alive wait), and
drains on SIGTERM without resetting a request: what arrives after the signal is answered 503
`draining` with `Connection: close`. Hypercorn's own `worker_serve` and `TCPServer` offer only a
per-read timeout (a client trickling a byte at a time passes it forever) and close every idle
keep-alive connection the instant shutdown starts (a request already on its way meets a reset).
Built on Hypercorn 0.18's `ProtocolWrapper` (for the hand-over), `Lifespan` and `WorkerContext`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import h11
import orjson
from hypercorn.asyncio.lifespan import Lifespan
from hypercorn.asyncio.task_group import TaskGroup
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.typing import ConnectionState
from hypercorn.utils import parse_socket_addr, wrap_app

from gateway.config.model import ServerTimeouts
from gateway.errors import (
    PROBLEM_CONTENT_TYPE,
    Draining,
    GatewayError,
    RequestTimeout,
    problem_body,
)
from gateway.http1 import HTTP1, problem_response, unparsable
from gateway.request_ids import new_request_id
from gateway.surfaces.http import ModelRequest

__all__ = ["ConnectionPolicy", "RequestGuard", "serve_connections"]

log = logging.getLogger("gateway.server")

_MAX_RECV = 2**16
#: Unsent response bytes past which a writer waits for the client to read (asyncio's default mark).
_WRITE_HIGH_WATER = 2**16
#: accept() failures that concern one client only: accept the next at once.
_TRANSIENT_ERRORS = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR})

ASGIApp = Callable[
    [dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]
]


@dataclass(frozen=True, slots=True)
class ConnectionPolicy:
    """What a worker enforces on its connections; from `server.*`, fixed for the process's life."""

    timeouts: ServerTimeouts
    max_client_connections: int
    graceful_seconds: float


class Drain:
    """Set once, on SIGTERM: the worker takes no new requests from then on. It also carries
    `refused(reason)`, called for each request answered here rather than by the app (metrics, log)."""

    __slots__ = ("refused", "started")

    def __init__(self, refused: Callable[[str], None] | None = None) -> None:
        self.started = False
        self.refused = refused or _ignore


def _ignore(_reason: str) -> None:
    return None


class RequestGuard:
    """The ASGI half of the policy, around the gateway's app: a body not received within
    `body_seconds` gets a 408 problem (the app sees the client disconnect), and a request arriving
    during the drain a 503 `draining` problem without reaching the app.

    Only receiving is bounded: once the body is complete, `receive` (an app waiting for the
    disconnect of a long stream) and `send` pass through untouched."""

    def __init__(self, app: ASGIApp, body_seconds: float, drain: Drain) -> None:
        self.app = app
        self.body_seconds = body_seconds
        self.drain = drain

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.body_seconds
        if self.drain.started:
            await self._refuse(scope, receive, send, deadline)
            return
        body_done = False
        started = False
        answered = False

        async def guarded_receive() -> Any:
            nonlocal body_done, answered
            if body_done:
                return await receive()
            try:
                # asyncio.timeout_at: a timer that cancels this task, no task per call
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                body_done = True
                if not started:
                    detail = (
                        f"the request body was not received within {self.body_seconds:g} s"
                        " (server.timeouts.body_seconds)"
                    )
                    await _answer(
                        scope, receive, send, RequestTimeout(detail, headers={"connection": "close"})
                    )
                    answered = True
                    self.drain.refused("body_timeout")
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def guarded_send(message: Any) -> None:
            nonlocal started
            if answered:
                return  # the guard answered 408 itself; the app's late answer has nowhere to go
            if message["type"] == "http.response.start":
                started = True
                if not body_done and _has_body(scope):
                    # An answer given before the body was read (an early 401, 404 or 413): the unread
                    # bytes stop the connection from carrying another request, so the response says
                    # it closes (else the client's next request on it meets a closed socket).
                    message = _closing(message)
            await send(message)

        await self.app(scope, guarded_receive, guarded_send)

    async def _refuse(self, scope: dict[str, Any], receive: Any, send: Any, deadline: float) -> None:
        """503 `draining`. The body is read first (within `body_seconds`): a socket closed with unread
        bytes in it may be reset, and the reset may reach the client before the 503 does."""
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    message = await receive()
                    if message["type"] != "http.request" or not message.get("more_body", False):
                        break
        except TimeoutError:
            pass
        error = Draining(
            "the gateway is shutting down and takes no new requests; retry, another instance will answer",
            headers={"retry-after": "1", "connection": "close"},
        )
        await _answer(scope, receive, send, error)
        self.drain.refused("draining")


def _has_body(scope: dict[str, Any]) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"", b"0")):
            return True
    return False


def _closing(start: dict[str, Any]) -> dict[str, Any]:
    headers = list(start.get("headers", ()))
    if not any(name.lower() == b"connection" for name, _ in headers):
        headers.append((b"connection", b"close"))
    return {**start, "headers": headers}


async def _answer(scope: dict[str, Any], receive: Any, send: Any, error: GatewayError) -> None:
    """Send `error` as the model API sends its problems (request id, problem+json)."""
    await ModelRequest(scope, receive, send, "openai").problem(error)


def _head_timeout_response(header_seconds: float) -> bytes:
    """The raw HTTP/1.1 408 for a request head that did not arrive in time (h11 has no request to
    answer yet, so the bytes are written beside it, and the connection closed right after)."""
    return problem_response(
        RequestTimeout(
            f"the request head was not received within {header_seconds:g} s (server.timeouts.header_seconds)"
        )
    )


async def _send_problem_response(self: H11Protocol, status_code: int) -> None:
    """What Hypercorn's h11 protocol answers to a request it cannot parse (a head past h11's 16 KiB,
    broken framing): a problem with a request id, like every other error, instead of an empty body."""
    error = unparsable(status_code)
    request_id = new_request_id()
    body = orjson.dumps(problem_body(error, request_id=request_id, instance=""))
    headers = [
        (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
        (b"connection", b"close"),
        *self.config.response_headers("h11"),
    ]
    await self._send_h11_event(h11.Response(status_code=status_code, headers=headers))
    await self._send_h11_event(h11.Data(data=body))
    await self._send_h11_event(h11.EndOfMessage())


# Hypercorn is pinned (<0.19) for this and the connection handling above: one method, replaced.
H11Protocol._send_error_response = _send_problem_response  # type: ignore[method-assign]


# Where a connection stands, for its one timer.
_WAITING = 0  # no request: a fresh connection, or kept alive between requests
_HEAD = 1  # some bytes of a request head have arrived
_REQUEST = 2  # the head is complete: the app has the request (its body is the RequestGuard's)


class Connection:
    """One client connection: Hypercorn's protocol (h11, or h2) fed from the socket, with one timer
    for the wait the connection is in (adapted from Hypercorn's `TCPServer`)."""

    def __init__(
        self, server: ConnectionServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.transport = writer.transport
        self.loop = server.loop
        self.send_lock = asyncio.Lock()
        self.phase = _WAITING
        self.timer: asyncio.TimerHandle | None = None
        self.cutting: asyncio.Task[None] | None = None
        self.closed = False
        self.kept_alive = False  # has answered a request and waits for the next
        self.protocol: HTTP1

    async def run(self) -> None:
        sock = self.writer.get_extra_info("socket")
        try:
            client = parse_socket_addr(sock.family, sock.getpeername())
            local = parse_socket_addr(sock.family, sock.getsockname())
            async with TaskGroup(self.loop) as task_group:

                async def handover() -> ProtocolWrapper:
                    # Upgrades (WebSocket, h2c) and HTTP/2: Hypercorn's protocol takes the connection.
                    wrapper = ProtocolWrapper(
                        self.server.app,
                        self.server.config,
                        self.server.context,
                        task_group,
                        ConnectionState(self.server.lifespan_state),
                        False,
                        client,
                        local,
                        self._protocol_send,
                        "http/1.1",
                    )
                    await wrapper.initiate()
                    return wrapper

                self.protocol = HTTP1(
                    self.server.asgi_app,
                    self.server.config,
                    task_group,
                    self.server.lifespan_state,
                    client,
                    local,
                    self._protocol_send,
                    self._write,
                    handover,
                )
                # A fresh connection has `header_seconds` to deliver its first request head.
                self._wait(_WAITING, self.server.timeouts.header_seconds)
                await self._read()
        except OSError:
            pass
        finally:
            self._stop_timer()
            await self._close()

    async def _read(self) -> None:
        while not self.reader.at_eof():
            try:
                data = await self.reader.read(_MAX_RECV)
            except (ConnectionError, OSError):
                break
            if data and self.phase == _WAITING:
                if self.kept_alive:  # the next request's head: header_seconds from its first byte
                    self._wait(_HEAD, self.server.timeouts.header_seconds)
                else:  # the first request's: the timer running since the connection opened
                    self.phase = _HEAD
            await self.protocol.received(data)
        await self.protocol.lost()

    async def _write(self, data: bytes) -> None:
        """Send bytes; wait only while more than the transport's high-water mark is unsent."""
        try:
            self.writer.write(data)
            if self.transport.get_write_buffer_size() > _WRITE_HIGH_WATER:
                async with self.send_lock:
                    await self.writer.drain()
        except (ConnectionError, RuntimeError):
            await self.protocol.lost()

    async def _protocol_send(self, event: Event) -> None:
        if isinstance(event, RawData):
            await self._write(event.data)
        elif isinstance(event, Closed):
            await self._close()
        elif isinstance(event, Updated):
            if event.idle:  # the response is done and the connection kept alive
                self.kept_alive = True
                self._wait(_WAITING, self.server.timeouts.keep_alive_seconds)
            else:  # a request head is complete: from here on sending is the app's business
                self.phase = _REQUEST
                self._stop_timer()

    def _wait(self, phase: int, seconds: float) -> None:
        self.phase = phase
        if phase == _WAITING and self.server.drain.started:
            seconds = min(seconds, self.server.timeouts.drain_idle_seconds)
        self._stop_timer()
        self.timer = self.loop.call_later(seconds, self._expire)

    def on_drain(self) -> None:
        """The drain began: an idle connection waits `drain_idle_seconds` at most from now."""
        if self.phase == _WAITING and self.timer is not None:
            remaining = self.timer.when() - self.loop.time()
            if remaining > self.server.timeouts.drain_idle_seconds:
                self._wait(_WAITING, self.server.timeouts.drain_idle_seconds)

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expire(self) -> None:
        self.timer = None
        if self.phase == _REQUEST or self.cutting is not None or self.closed:
            return
        self.cutting = self.loop.create_task(self._cut_off(answer=self.phase == _HEAD))

    async def _cut_off(self, *, answer: bool) -> None:
        """Close a connection that waited too long: silently when it was idle, with a 408 when a
        request head had begun (over HTTP/1.1; an h2 connection just closes)."""
        if answer and not self.protocol.http2:
            with contextlib.suppress(ConnectionError, RuntimeError):
                self.writer.write(_head_timeout_response(self.server.timeouts.header_seconds))
            self.server.drain.refused("head_timeout")
        await self.protocol.lost()
        self.writer.close()

    async def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._stop_timer()
        with contextlib.suppress(NotImplementedError, OSError, RuntimeError):
            self.writer.write_eof()
        try:
            self.writer.close()
            await self.writer.wait_closed()
        except (
            BrokenPipeError,
            ConnectionAbortedError,
            ConnectionResetError,
            RuntimeError,
            asyncio.CancelledError,
        ):
            pass


class ConnectionServer:
    """A worker's listening sockets and open connections."""

    def __init__(
        self,
        app: Any,
        asgi_app: Any,
        config: HypercornConfig,
        policy: ConnectionPolicy,
        drain: Drain,
        lifespan_state: dict[str, Any],
    ) -> None:
        self.app = app
        #: The app itself, for gateway.http1 (`app` is Hypercorn's wrapper of it, for its protocols).
        self.asgi_app = asgi_app
        self.config = config
        self.policy = policy
        self.timeouts = policy.timeouts
        self.drain = drain
        self.lifespan_state = lifespan_state
        self.loop = asyncio.get_running_loop()
        self.context = WorkerContext(None)
        self.connections: dict[asyncio.Task[None], Connection | None] = {}
        self.room = asyncio.Event()
        self.room.set()
        self._warned_full = 0.0

    async def accept(self, listener: socket.socket) -> None:
        """Accept until cancelled, holding at most `max_client_connections` open."""
        listener.setblocking(False)
        listener.listen(self.config.backlog)
        while True:
            if len(self.connections) >= self.policy.max_client_connections:
                self.room.clear()
                self._warn_full()
                await self.room.wait()
            try:
                conn, _ = await self.loop.sock_accept(listener)
            except OSError as error:
                if error.errno in _TRANSIENT_ERRORS:
                    continue  # that one client gave up during the handshake
                # Out of descriptors or memory (or worse): wait rather than spin on the error.
                log.warning(
                    "cannot accept a connection (%s); trying again in 0.5 s",
                    error.strerror,
                    extra={"event": "accept_failed", "errno": error.errno},
                )
                await asyncio.sleep(0.5)
                continue
            self.start(conn)

    def sweep(self, listener: socket.socket) -> None:
        """Take every connection already in the listen queue (they are answered 503 `draining`),
        then close the listener: a connection still queued when the last descriptor of a listening
        socket closes is reset by the kernel, and its client may have sent its request already."""
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                break
            self.start(conn)
        listener.close()

    def start(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        task = self.loop.create_task(self._serve(conn))
        self.connections[task] = None
        task.add_done_callback(self._finished)

    async def _serve(self, conn: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=conn)
        except OSError:
            conn.close()
            return
        connection = Connection(self, reader, writer)
        self.connections[asyncio.current_task()] = connection  # type: ignore[index]
        await connection.run()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.connections.pop(task, None)
        if len(self.connections) < self.policy.max_client_connections:
            self.room.set()

    def begin_drain(self) -> None:
        self.drain.started = True
        # No more keep-alive: Hypercorn adds `Connection: close` to every response from now on (h11)
        # and sends GOAWAY on the next request (h2).
        self.config.keep_alive_max_requests = 0
        for connection in list(self.connections.values()):
            if connection is not None:
                connection.on_drain()

    def _warn_full(self) -> None:
        now = time.monotonic()
        if now - self._warned_full > 60:
            self._warned_full = now
            log.warning(
                "%d connections open (server.max_client_connections); not accepting more until one closes",
                len(self.connections),
                extra={
                    "event": "connection_limit",
                    "max_client_connections": self.policy.max_client_connections,
                },
            )


async def serve_connections(
    app: Any,
    config: HypercornConfig,
    listeners: list[socket.socket],
    policy: ConnectionPolicy,
    stop: asyncio.Event,
    refused: Callable[[str], None] | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve `app` on `listeners` until `stop` is set, then drain (Hypercorn's `worker_serve`, with
    the connection policy): stop accepting, answer what arrives with 503, let in-flight requests
    finish for up to `graceful_seconds`, then run the app's shutdown. `on_ready` is called once the
    app has started and connections are being accepted."""
    loop = asyncio.get_running_loop()
    drain = Drain(refused)
    guarded = RequestGuard(app, policy.timeouts.body_seconds, drain)
    wrapped = wrap_app(guarded, 0, "asgi")
    lifespan_state: dict[str, Any] = {}
    lifespan = Lifespan(wrapped, config, loop, lifespan_state)
    lifespan_task = loop.create_task(lifespan.handle_lifespan())
    await lifespan.wait_for_startup()
    if lifespan_task.done() and lifespan_task.exception() is not None:
        raise lifespan_task.exception()  # type: ignore[misc]

    server = ConnectionServer(wrapped, guarded, config, policy, drain, lifespan_state)
    acceptors = [loop.create_task(server.accept(listener)) for listener in listeners]
    if on_ready is not None and not stop.is_set():
        on_ready()
    try:
        await stop.wait()
    finally:
        server.begin_drain()
        for acceptor in acceptors:
            acceptor.cancel()
        await asyncio.gather(*acceptors, return_exceptions=True)
        for listener in listeners:
            server.sweep(listener)
        log.info(
            "draining %d connection(s) for up to %g s",
            len(server.connections),
            policy.graceful_seconds,
            extra={"event": "draining", "connections": len(server.connections)},
        )
        if server.connections:
            _, pending = await asyncio.wait(list(server.connections), timeout=policy.graceful_seconds)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        await lifespan.wait_for_shutdown()
        lifespan_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lifespan_task
