"""The endpoint fuzz itself (gateway.testing.fuzz), without a gateway: what it generates, and that its
checks catch what they claim (a 5xx, an error that is not problem+json, a problem without its id)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from gateway.admin.openapi import load_openapi

from gateway.testing.fuzz import _set_path, generate_requests, operations, send_requests

DOC = load_openapi()


def test_the_same_seed_gives_the_same_requests_over_every_operation() -> None:
    first = generate_requests(DOC, 400, models=["gpt"], client_key="k", admin_key="a", seed=3)
    again = generate_requests(DOC, 400, models=["gpt"], client_key="k", admin_key="a", seed=3)
    assert first == again and len(first) == 400
    documented = {f"{op.method.upper()} {op.path}" for op in operations(DOC)}
    assert {request.route for request in first} == documented
    kinds = {request.kind for request in first}
    assert {"valid", "member", "number", "raw-body", "content-type", "header", "method"} <= kinds


def test_set_path_makes_the_containers_on_the_way() -> None:
    body = {"prompt": "text", "messages": [{"role": "user"}]}
    _set_path(body, ("prompt", 0, 0), 1e20)
    _set_path(body, ("thinking", "budget_tokens"), 2**64)
    _set_path(body, ("messages", 0, "content"), None)
    assert body == {
        "prompt": [[1e20]],
        "messages": [{"role": "user", "content": None}],
        "thinking": {"budget_tokens": 2**64},
    }


class _Answers(BaseHTTPRequestHandler):
    """Answers by path: /ok 200, /boom 500, /html 404 as HTML, /no-id a problem without a request id,
    /bare an empty 431 (what Hypercorn answered before the gateway replaced it), /problem a proper
    problem."""

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        path = self.path.split("?")[0]
        status, content_type, body, rid = {
            "/ok": (200, "application/json", b"{}", "r1"),
            "/boom": (500, "application/problem+json", b'{"request_id": "r2", "status": 500}', "r2"),
            "/html": (404, "text/html", b"<h1>no</h1>", "r3"),
            "/no-id": (400, "application/problem+json", b'{"status": 400}', "r4"),
            "/bare": (431, "", b"", ""),
            "/problem": (400, "application/problem+json", b'{"request_id": "r5", "status": 400}', "r5"),
        }[path]
        self.send_response(status)
        if content_type:
            self.send_header("content-type", content_type)
        if rid:
            self.send_header("x-request-id", rid)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def answers() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_checks_catch_what_breaks_the_promise(answers: str) -> None:
    template = generate_requests(DOC, 1, seed=0)[0]
    cases = [
        type(template)("GET", path, (), None, "valid", f"GET {path}")
        for path in ("/ok", "/boom", "/html", "/no-id", "/bare", "/problem")
    ]
    report = send_requests(answers, cases, concurrency=2)
    assert report.cases == 6 and report.server_errors == 1
    reasons = {failure.request.path: failure.reason for failure in report.failures}
    assert reasons == {
        "/boom": "5xx",
        "/html": "error answered as text/html, not problem+json",
        "/no-id": "problem has no request_id",
        "/bare": "error answered as no content type, not problem+json",
    }
    assert report.failed == 4 and "4 broke the promise" in report.summary()
    assert json.dumps(dict(report.by_status), sort_keys=True) == json.dumps(
        {"200": 1, "400": 2, "404": 1, "431": 1, "500": 1}, sort_keys=True
    )
