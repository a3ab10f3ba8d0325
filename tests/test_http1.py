"""HTTP/1.1 as gateway/http1.py speaks it, through the real connection server on a loopback socket,
with small ASGI apps and raw sockets as clients: keep-alive, pipelining, both body framings, HEAD,
HTTP/1.0, 100-continue, the head limit, malformed requests, failing apps, and the hand-over of
upgrades and HTTP/2 to Hypercorn's protocol."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
from hypercorn.config import Config as HypercornConfig

from gateway.config.model import ServerTimeouts
from gateway.connections import ConnectionPolicy, serve_connections
from gateway.http1 import BODY_HIGH_WATER, MAX_HEAD_BYTES

App = Callable[[dict[str, Any], Any, Any], Any]


@contextmanager
def served(app: App, *, keep_alive_max_requests: int = 1000) -> Iterator[int]:
    """Serve `app` (HTTP only: lifespan is answered here) on a free loopback port, in a thread."""

    async def with_lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        await app(scope, receive, send)

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    config = HypercornConfig()
    config.keep_alive_max_requests = keep_alive_max_requests
    policy = ConnectionPolicy(ServerTimeouts(10, 10, 10, 1), 100, 2)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(
                serve_connections(with_lifespan, config, [listener], policy, stop, None, ready.set)
            )
        except BaseException as error:
            failure.append(error)
            ready.set()
        finally:
            loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10), "the server did not start"
    assert not failure, failure
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(15)
        assert not thread.is_alive()
        assert not failure, failure


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with what it saw: method, path, query, headers and the body (JSON, content-length)."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    answer = json.dumps(
        {
            "method": scope["method"],
            "path": scope["path"],
            "raw_path": scope["raw_path"].decode(),
            "query": scope["query_string"].decode(),
            "http_version": scope["http_version"],
            "headers": [[n.decode(), v.decode()] for n, v in scope["headers"]],
            "body": body.decode(),
        }
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes, raw_head: str) -> None:
        self.status, self.headers, self.body, self.raw_head = status, headers, body, raw_head

    def json(self) -> Any:
        return json.loads(self.body)


class Reader:
    """Reads HTTP/1.1 responses off a socket, one at a time, honouring their framing."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _more(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            if not self._more():
                raise EOFError(self.buffer)
        part, _, self.buffer = self.buffer.partition(marker)
        return part

    def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._more():
                raise EOFError(self.buffer)
        part, self.buffer = self.buffer[:size], self.buffer[size:]
        return part

    def response(self, head_request: bool = False) -> Response:
        raw_head = self._until(b"\r\n\r\n").decode("latin-1")
        lines = raw_head.split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            assert name.lower() not in headers, f"header {name} twice"
            headers[name.lower()] = value.strip()
        if head_request or status in (204, 304) or status < 200:
            body = b""
        elif "content-length" in headers:
            body = self._exactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int(self._until(b"\r\n"), 16)
                if size == 0:
                    self._until(b"\r\n")
                    break
                body += self._exactly(size)
                assert self._exactly(2) == b"\r\n"
        else:  # to the end of the connection
            while self._more():
                pass
            body, self.buffer = self.buffer, b""
        return Response(status, headers, body, raw_head)

    def closed(self) -> bool:
        """True when the server has closed the connection (and sent nothing more)."""
        return not self.buffer and not self._more()


def test_keep_alive_serves_many_requests_on_one_connection() -> None:
    with served(echo) as port, connect(port) as sock:
        reader = Reader(sock)
        for n in range(5):
            body = json.dumps({"n": n}).encode()
            sock.sendall(
                b"POST /v1/echo?x=%d HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
                b"X-Mixed-Case: Yes\r\nContent-Length: %d\r\n\r\n%s" % (n, len(body), body)
            )
            answer = reader.response()
            assert answer.status == 200 and answer.raw_head.startswith("HTTP/1.1 200 OK")
            assert "connection" not in answer.headers
            assert answer.headers["date"].endswith(" GMT")
            seen = answer.json()
            assert seen["method"] == "POST" and seen["path"] == "/v1/echo" and seen["query"] == f"x={n}"
            assert seen["body"] == body.decode() and seen["http_version"] == "1.1"
            assert ["x-mixed-case", "Yes"] in seen["headers"]  # names lower-cased, as ASGI asks


def test_the_path_is_percent_decoded_and_raw_path_kept() -> None:
    with served(echo) as port, connect(port) as sock:
        sock.sendall(b"GET /a%20b/c%2Fd HTTP/1.1\r\nHost: gw\r\n\r\n")
        seen = Reader(sock).response().json()
        assert seen["path"] == "/a b/c/d" and seen["raw_path"] == "/a%20b/c%2Fd"


def test_pipelined_requests_are_answered_in_order() -> None:
    order: list[int] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        n = int(scope["query_string"])
        await receive()
        if n == 0:
            await asyncio.sleep(0)  # let the others be parsed meanwhile
        order.append(n)
        body = str(n).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})

    with served(app) as port, connect(port) as sock:
        sock.sendall(b"".join(b"GET /?%d HTTP/1.1\r\nHost: gw\r\n\r\n" % n for n in range(4)))
        reader = Reader(sock)
        assert [reader.response().body for _ in range(4)] == [b"0", b"1", b"2", b"3"]
        assert order == [0, 1, 2, 3]  # one at a time


def test_a_chunked_request_body_reaches_the_app_whole() -> None:
    with served(echo) as port, connect(port) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        assert Reader(sock).response().json()["body"] == "hello world"


def test_a_response_without_length_is_chunked_and_keeps_the_connection() -> None:
    async def streaming(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        for part in (b"one ", b"", b"two ", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    with served(streaming) as port, connect(port) as sock:
        reader = Reader(sock)
        for _ in range(2):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
            answer = reader.response()
            assert answer.headers["transfer-encoding"] == "chunked"
            assert answer.body == b"one two three"


def test_head_answers_carry_no_body() -> None:
    with served(echo) as port, connect(port) as sock:
        reader = Reader(sock)
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: gw\r\n\r\n")
        answer = reader.response(head_request=True)
        assert answer.status == 200 and int(answer.headers["content-length"]) > 0
        sock.sendall(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")  # the next answer starts where it should
        assert reader.response().json()["method"] == "GET"


@pytest.mark.parametrize("status", [204, 304])
def test_no_content_and_not_modified_have_no_body_and_no_framing(status: int) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with served(app) as port, connect(port) as sock:
        reader = Reader(sock)
        for _ in range(2):
            sock.sendall(b"DELETE /x HTTP/1.1\r\nHost: gw\r\n\r\n")
            answer = reader.response()
            assert answer.status == status
            assert "transfer-encoding" not in answer.headers and "content-length" not in answer.headers


def test_http_1_0_closes_unless_kept_alive_and_streams_until_close() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"no length", "more_body": True})
        await send({"type": "http.response.body", "body": b" at all"})

    with served(app) as port, connect(port) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")  # no Host needed in 1.0
        reader = Reader(sock)
        answer = reader.response()
        assert answer.headers["connection"] == "close" and "transfer-encoding" not in answer.headers
        assert answer.body == b"no length at all"
    with served(echo) as port, connect(port) as sock:
        reader = Reader(sock)
        for _ in range(2):
            sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            answer = reader.response()
            assert answer.status == 200 and answer.json()["http_version"] == "1.0"


def test_connection_close_from_either_side_closes_after_the_answer() -> None:
    async def closing(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"connection", b"close"), (b"content-length", b"2")],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})

    with served(echo) as port, connect(port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        reader = Reader(sock)
        assert reader.response().headers["connection"] == "close"
        assert reader.closed()
    with served(closing) as port, connect(port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
        reader = Reader(sock)
        answer = reader.response()
        assert answer.body == b"ok" and answer.raw_head.lower().count("connection: close") == 1
        assert reader.closed()


def test_keep_alive_max_requests_closes_the_connection_at_its_last_request() -> None:
    with served(echo, keep_alive_max_requests=2) as port, connect(port) as sock:
        reader = Reader(sock)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert "connection" not in reader.response().headers
        sock.sendall(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert reader.response().headers["connection"] == "close"
        assert reader.closed()


def test_expect_100_continue_is_answered_when_the_app_reads() -> None:
    async def refusing(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 413, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    with served(echo) as port, connect(port) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        reader = Reader(sock)
        assert reader.response().status == 100
        sock.sendall(b"hello")
        assert reader.response().json()["body"] == "hello"
    with served(refusing) as port, connect(port) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        reader = Reader(sock)
        answer = reader.response()
        assert answer.status == 413  # no 100 first: the app answered without reading
        assert reader.closed()  # the body it did not read would be taken for the next request


def test_a_large_body_arrives_whole_through_the_backpressure() -> None:
    size = 8 * BODY_HIGH_WATER

    async def slow_reader(scope: dict[str, Any], receive: Any, send: Any) -> None:
        total = 0
        while True:
            message = await receive()
            total += len(message["body"])
            await asyncio.sleep(0)
            if not message["more_body"]:
                break
        body = str(total).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})

    with served(slow_reader) as port, connect(port) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n" % size + os.urandom(size))
        assert Reader(sock).response().body == str(size).encode()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES + 1) + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: gw\r\n" + b"X-Many: aaaaaaaaaaaaaaaaaaaa\r\n" * 1000 + b"\r\n", 431),
        (b"GET /" + b"a" * (MAX_HEAD_BYTES + 1) + b" HTTP/1.1\r\nHost: gw\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost gw\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
        (
            b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
        (b"GET /\xff HTTP/1.1\r\nHost: gw\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),  # TLS to a plain-HTTP port
    ],
    ids=[
        "long-header",
        "many-headers",
        "long-target",
        "no-colon",
        "no-host",
        "te-and-cl",
        "two-lengths",
        "non-ascii",
        "tls",
    ],
)
def test_a_request_llhttp_refuses_gets_a_problem_and_the_connection_closes(
    request_bytes: bytes, status: int
) -> None:
    called: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        called.append(scope["path"])
        await echo(scope, receive, send)

    with served(app) as port, connect(port) as sock:
        sock.sendall(request_bytes)
        reader = Reader(sock)
        answer = reader.response()
        assert answer.status == status
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.headers["connection"] == "close"
        problem = answer.json()
        assert problem["status"] == status and problem["request_id"] == answer.headers["x-request-id"]
        assert reader.closed()
    assert called == []


def test_a_bad_request_pipelined_behind_a_good_one_is_refused_after_its_answer() -> None:
    with served(echo) as port, connect(port) as sock:
        sock.sendall(b"GET /first HTTP/1.1\r\nHost: gw\r\n\r\nGET / HTTP/1.1\r\nHost gw\r\n\r\n")
        reader = Reader(sock)
        first = reader.response()
        assert first.json()["path"] == "/first" and "connection" not in first.headers
        assert reader.response().status == 400
        assert reader.closed()


def test_a_failing_app_gets_a_500_and_a_half_answer_closes_the_connection() -> None:
    async def failing(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/late":
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]}
            )
            await send({"type": "http.response.body", "body": b"half", "more_body": True})
        raise RuntimeError("boom")

    with served(failing) as port:
        with connect(port) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
            reader = Reader(sock)
            answer = reader.response()
            assert answer.status == 500 and answer.headers["connection"] == "close"
            assert reader.closed()
        with connect(port) as sock:
            sock.sendall(b"GET /late HTTP/1.1\r\nHost: gw\r\n\r\n")
            reader = Reader(sock)
            with pytest.raises(EOFError):  # 4 of the 10 bytes promised, then the connection ends
                reader.response()


def test_response_headers_that_could_inject_are_refused() -> None:
    async def injecting(scope: dict[str, Any], receive: Any, send: Any) -> None:
        value = b"a\r\nset-cookie: evil=1" if scope["path"] == "/value" else b"fine"
        name = b"bad name" if scope["path"] == "/name" else b"x-ok"
        await send({"type": "http.response.start", "status": 200, "headers": [(name, value)]})
        await send({"type": "http.response.body", "body": b""})

    with served(injecting) as port:
        for path in (b"/value", b"/name"):
            with connect(port) as sock:
                sock.sendall(b"GET %s HTTP/1.1\r\nHost: gw\r\n\r\n" % path)
                answer = Reader(sock).response()
                assert answer.status == 500 and "set-cookie" not in answer.headers


def test_a_body_longer_than_its_content_length_is_refused_and_the_connection_closed() -> None:
    async def lying(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"toolong"})

    with served(lying) as port, connect(port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\nGET / HTTP/1.1\r\nHost: gw\r\n\r\n")
        reader = Reader(sock)
        answer = reader.response()  # nothing of it was written yet: it becomes a 500
        assert answer.status == 500 and answer.headers["connection"] == "close"
        assert reader.closed()


def test_the_app_sees_the_client_disconnect() -> None:
    seen: list[str] = []
    gone = threading.Event()

    async def waiting(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append((await receive())["type"])
        seen.append((await receive())["type"])  # waits for the client to go
        gone.set()

    with served(waiting) as port:
        with connect(port) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert gone.wait(10)
    assert seen == ["http.request", "http.disconnect"]


def test_after_the_answer_a_waiting_receive_returns_disconnect() -> None:
    """ASGI: once the response is complete, receive() says the exchange is over (the model API's
    disconnect watch ends there)."""
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        watch = asyncio.ensure_future(receive())
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
        seen.append((await watch)["type"])

    with served(app) as port, connect(port) as sock:
        reader = Reader(sock)
        for _ in range(2):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
            assert reader.response().body == b"ok"
    assert seen == ["http.disconnect", "http.disconnect"]


def test_a_websocket_upgrade_is_handed_to_hypercorn_after_plain_requests() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            assert (await receive())["type"] == "websocket.connect"
            await send({"type": "websocket.accept"})
            message = await receive()
            await send({"type": "websocket.send", "text": "echo:" + message["text"]})
            await send({"type": "websocket.close"})
            return
        await echo(scope, receive, send)

    key = base64.b64encode(os.urandom(16))
    with served(app) as port, connect(port) as sock:
        reader = Reader(sock)
        sock.sendall(b"GET /plain HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert reader.response().json()["path"] == "/plain"
        sock.sendall(
            b"GET /live HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        answer = reader.response(head_request=True)
        assert answer.status == 101 and answer.headers["upgrade"].lower() == "websocket"
        mask = os.urandom(4)
        payload = b"hi"
        sock.sendall(
            bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        )
        frame = reader._exactly(2)
        assert frame[0] == 0x81
        assert reader._exactly(frame[1]) == b"echo:hi"


def test_http2_with_prior_knowledge_is_handed_to_hypercorn() -> None:
    with served(echo) as port, connect(port) as sock:
        connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        connection.initiate_connection()
        connection.send_headers(
            1,
            [(":method", "GET"), (":path", "/over/h2"), (":scheme", "http"), (":authority", "gw")],
            end_stream=True,
        )
        data = connection.data_to_send()
        sock.sendall(data[:5])  # the preface in two parts: held until it is whole
        sock.sendall(data[5:])
        body = b""
        ended = False
        while not ended:
            chunk = sock.recv(65536)
            assert chunk, "the connection closed"
            for event in connection.receive_data(chunk):
                if isinstance(event, h2.events.DataReceived):
                    body += event.data
                    connection.acknowledge_received_data(len(event.data), event.stream_id)
                ended = ended or isinstance(event, h2.events.StreamEnded)
            sock.sendall(connection.data_to_send())
        seen = json.loads(body)
        assert seen["path"] == "/over/h2" and seen["http_version"] == "2"


def test_every_waiting_receive_is_woken_even_when_another_was_cancelled() -> None:
    """The model API reads the body, then watches for the disconnect in a task it cancels; a receive
    cancelled while waiting must not take the others' wake-up with it."""
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        first, cancelled, second = (asyncio.ensure_future(receive()) for _ in range(3))
        await asyncio.sleep(0)  # all three wait now
        cancelled.cancel()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
        seen.extend([(await first)["type"], (await second)["type"]])

    with served(app) as port, connect(port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert Reader(sock).response().body == b"ok"
    assert seen == ["http.disconnect", "http.disconnect"]
