"""Every failure leaves the gateway as `application/problem+json` with the request's id."""

from __future__ import annotations

import logging
import re
from http import HTTPStatus

import orjson
from quart import Quart, Response, g, has_request_context, request, websocket
from werkzeug.exceptions import HTTPException

from gateway.errors import (
    PROBLEM_CONTENT_TYPE,
    BadRequest,
    GatewayError,
    InternalError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    problem_body,
)
from gateway.request_ids import new_request_id

__all__ = ["HTTPStatusProblem", "install_problem_handlers", "problem_response", "request_id"]

log = logging.getLogger("gateway.http")
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _incoming():
    """The HTTP request, or the WebSocket handshake when handling one."""
    return request if has_request_context() else websocket


def request_id() -> str:
    """This request's id: the client's `x-request-id` when well-formed, else a new one."""
    rid = getattr(g, "request_id", None)
    if rid is None:
        incoming = _incoming().headers.get("x-request-id", "")
        rid = incoming if _CLIENT_REQUEST_ID.match(incoming) else new_request_id()
        g.request_id = rid
    return rid


def problem_response(error: GatewayError) -> Response:
    rid = request_id()
    # Paths under the Anthropic surface get Anthropic's error type names (what its SDK expects).
    path = _incoming().path
    protocol = "anthropic" if path.startswith("/v1/messages") else "openai"
    body = problem_body(error, request_id=rid, instance=path, protocol=protocol)
    response = Response(orjson.dumps(body), status=error.status, content_type=PROBLEM_CONTENT_TYPE)
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


class HTTPStatusProblem(GatewayError):
    """A client error Quart or Werkzeug answered on their own (a failed `If-Match` on a panel file: 412,
    an unsatisfiable `Range`: 416), told as a problem like every other."""

    openai_type, anthropic_type = "invalid_request_error", "invalid_request_error"

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        phrase = _phrase(status)
        self.status, self.title, self.slug = status, phrase, phrase.lower().replace(" ", "-")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Client error"


_HTTP_TO_PROBLEM = {400: BadRequest, 404: NotFound, 405: MethodNotAllowed, 413: PayloadTooLarge}


def install_problem_handlers(app: Quart) -> None:
    @app.before_request
    async def assign_request_id() -> None:
        request_id()

    @app.after_request
    async def add_request_id(response: Response) -> Response:
        if 400 <= response.status_code < 500 and response.mimetype != PROBLEM_CONTENT_TYPE:
            # A 4xx Quart or Werkzeug wrote itself (conditional and range requests on files).
            status = response.status_code
            detail = f"{_phrase(status)}: {request.method} {request.path}"
            response = problem_response(HTTPStatusProblem(status, detail))
        response.headers["x-request-id"] = request_id()
        response.headers["request-id"] = request_id()  # the Anthropic SDK reads this one
        return response

    @app.errorhandler(GatewayError)
    async def gateway_error(error: GatewayError) -> Response:
        return problem_response(error)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        kind = _HTTP_TO_PROBLEM.get(error.code or 500)
        if kind is NotFound:
            return problem_response(NotFound(f"no route for {request.method} {request.path}"))
        if kind is MethodNotAllowed:
            allowed = ", ".join(sorted(getattr(error, "valid_methods", None) or []))
            problem = MethodNotAllowed(f"{request.method} is not allowed on {request.path}; use {allowed}")
            if allowed:
                problem.headers["allow"] = allowed
            return problem_response(problem)
        if kind is PayloadTooLarge:
            return problem_response(PayloadTooLarge("the request body exceeds server.max_body_bytes"))
        if kind is not None:
            return problem_response(kind(error.description or error.name))
        problem = GatewayError(error.description or error.name)
        problem.status = error.code or 500
        return problem_response(problem)

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        log.error("unhandled error", exc_info=error, extra={"request_id": request_id()})
        return problem_response(
            InternalError(f"the gateway failed unexpectedly; quote request id {request_id()}")
        )
