"""What the HTTP backends (openai, anthropic, openai_compatible, gemini, azure_openai, bedrock, vertex) share:
one aiohttp pool per backend, the attempt limits applied to a request, and failure classification.
Streams are read in `gateway.backends.streaming`."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson
from yarl import URL

from gateway import tracing
from gateway.backends.base import SharedResources
from gateway.backends.breaker import CircuitBreaker
from gateway.backends.concurrency import ConcurrencyLimit
from gateway.backends.upstream import AttemptLimits, UpstreamFailure
from gateway.config.backends import HTTPSettings

__all__ = ["HTTPBackend"]

_ERROR_BODY_LIMIT = 64 * 1024
_SHORTEST_REDACTED = 8


class HTTPBackend:
    """A remote backend reached over HTTP. The pool opens in `start` and lives until `close`."""

    protocol: str = ""
    config: HTTPSettings

    def __init__(self, config: HTTPSettings, shared: SharedResources | None = None) -> None:
        self.config = config
        self.session: aiohttp.ClientSession | None = None
        self.breaker = CircuitBreaker()
        self.concurrency = ConcurrencyLimit.for_settings(config)

    @property
    def name(self) -> str:
        return self.config.name

    def default_headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        headers.update({name: value.reveal() for name, value in self.config.headers})
        return headers

    async def start(self) -> None:
        if self.session is not None:
            return
        connector = aiohttp.TCPConnector(
            limit=self.config.max_connections,
            ttl_dns_cache=300,
            enable_cleanup_closed=True,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            headers=self.default_headers(),
            # Deadlines are set per request from the timeout tier; the session has none of its own.
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=True,
            json_serialize=lambda value: orjson.dumps(value).decode(),
        )

    def describe(self) -> dict[str, Any]:
        return {}

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    def request_url(self, path: str) -> str | URL:
        """The URL a request to `path` goes to (a backend that signs its requests gives a `URL` sent
        exactly as written)."""
        return self.config.base_url + path

    async def post(
        self, path: str, body: bytes, limits: AttemptLimits, headers: dict[str, str] | None = None
    ) -> aiohttp.ClientResponse:
        """POST and return the response once its headers arrived with a 2xx status. `headers`: this
        request's own, over the pool's defaults.

        Raises UpstreamFailure: connect errors, no headers within the first-byte limit, error statuses.
        """
        if not tracing.enabled():
            return await self._post(path, body, limits, headers)
        return await self._traced_post(path, body, limits, headers)

    async def _traced_post(
        self, path: str, body: bytes, limits: AttemptLimits, own: dict[str, str] | None
    ) -> aiohttp.ClientResponse:
        """`post` inside an HTTP client span (OpenTelemetry semantic conventions), which ends when the
        response headers arrive; the upstream gets the trace context in `traceparent`."""
        url = URL(self.config.base_url + path)
        attributes = {
            "http.request.method": "POST",
            "url.full": str(url.with_user(None).with_query(None).with_fragment(None)),
            "server.address": url.host,
            "server.port": url.port,
        }
        failed: UpstreamFailure | None = None
        with tracing.span(f"POST {url.path}", **attributes) as client_span:
            headers: dict[str, str] = dict(own or {})
            tracing.inject_context(headers)
            try:
                response = await self._post(path, body, limits, headers)
            except UpstreamFailure as failure:
                # Kept out of the span: its detail may quote the upstream's error message.
                client_span.set_attribute("error.type", failure.kind)
                if failure.status:
                    client_span.set_attribute("http.response.status_code", failure.status)
                failed = failure
            else:
                client_span.set_attribute("http.response.status_code", response.status)
        if failed is not None:
            raise failed
        return response

    async def _post(
        self, path: str, body: bytes, limits: AttemptLimits, headers: dict[str, str] | None
    ) -> aiohttp.ClientResponse:
        if self.session is None:
            await self.start()
        assert self.session is not None
        wait = limits.until_first_byte()
        timeout = aiohttp.ClientTimeout(total=None, connect=limits.connect, sock_connect=limits.connect)
        try:
            async with asyncio.timeout(wait):
                response = await self.session.post(
                    self.request_url(path), data=body, timeout=timeout, headers=headers
                )
        except aiohttp.ConnectionTimeoutError:
            raise UpstreamFailure(
                "connect_error", f"could not connect within {limits.connect:g} s (connect limit)"
            ) from None
        except TimeoutError:
            raise UpstreamFailure("timeout", f"no response within {wait:g} s (first-byte limit)") from None
        except aiohttp.ClientConnectorError as error:
            reason = error.strerror or type(error.os_error).__name__
            raise UpstreamFailure("connect_error", f"connection failed: {reason}") from None
        except aiohttp.ClientError as error:
            raise UpstreamFailure("connect_error", f"connection failed: {type(error).__name__}") from None
        if response.status >= 400:
            raise await self._status_failure(response)
        return response

    async def _status_failure(self, response: aiohttp.ClientResponse) -> UpstreamFailure:
        status = response.status
        try:
            async with asyncio.timeout(5):
                raw = await response.content.read(_ERROR_BODY_LIMIT)
        except (TimeoutError, aiohttp.ClientError):
            raw = b""
        finally:
            response.release()
        return self.status_failure(status, self._redacted(raw), response.headers)

    def _redacted(self, raw: bytes) -> bytes:
        """An error body with every credential this backend sends replaced by `***`: an upstream may
        quote the key it refused, and a failure's detail reaches the logs and the client's problem
        detail. Values under 8 characters are left alone (no real key is that short; replacing them
        would garble the message)."""
        for secret in (self.config.api_key, *(value for _, value in self.config.headers)):
            value = secret.reveal().encode()
            if len(value) >= _SHORTEST_REDACTED:
                raw = raw.replace(value, b"***")
        return raw

    def status_failure(self, status: int, raw: bytes, headers: Mapping[str, str]) -> UpstreamFailure:
        """What an error answer (its status, the start of its body, its headers) is as a failure; a
        backend type whose API reports some failures its own way (Azure's content filter, Gemini's
        key errors, Bedrock's x-amzn-ErrorType) refines it."""
        message, error_type, param = _error_message(raw)
        retry_after = headers.get("retry-after")
        detail = f"HTTP {status}" + (f": {message}" if message else "")
        if status == 429:
            return UpstreamFailure("http_429", detail, status=status, retry_after=retry_after)
        if status == 529 or error_type == "overloaded_error":
            return UpstreamFailure("overloaded", detail, status=status, retry_after=retry_after)
        if status >= 500:
            return UpstreamFailure("http_5xx", detail, status=status)
        if status in (401, 403):
            return UpstreamFailure(
                "auth", f"the backend refused the gateway's credentials ({detail})", status=status
            )
        if status in (404, 405, 501):
            return UpstreamFailure("unsupported", detail, status=status)
        if status == 408:
            return UpstreamFailure("timeout", detail, status=status)
        return UpstreamFailure(
            "client_error", message or detail, status=status, error_type=error_type, param=param
        )

    async def read_json(self, response: aiohttp.ClientResponse, limits: AttemptLimits) -> tuple[bytes, Any]:
        """The whole response body, and its JSON, within the request's deadline."""
        try:
            async with asyncio.timeout_at(limits.deadline):
                raw = await response.read()
        except TimeoutError:
            raise UpstreamFailure("timeout", "the response body did not arrive before the deadline") from None
        except aiohttp.ClientError as error:
            raise UpstreamFailure("http_5xx", f"the response was cut off: {type(error).__name__}") from None
        finally:
            response.release()
        try:
            return raw, orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamFailure("http_5xx", "the backend answered with invalid JSON") from None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.config.name}>"


def _error_message(raw: bytes) -> tuple[str, str | None, str | None]:
    """Message, type and param of an OpenAI or Anthropic error body, and nothing else from it."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "", None, None
    error = body.get("error", body) if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "", None, None
    message = error.get("message")
    kind = error.get("type")
    param = error.get("param")
    return (
        str(message)[:500] if message else "",
        kind if isinstance(kind, str) else None,
        param if isinstance(param, str) else None,
    )
