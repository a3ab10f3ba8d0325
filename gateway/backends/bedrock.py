"""`bedrock` backend: Amazon Bedrock's Converse and ConverseStream APIs, one API in front of the
Anthropic, Meta, Mistral, Amazon and other models Bedrock serves.

No client speaks Bedrock's protocol, so every request goes out translated from the canonical form
(`gateway.protocol.bedrock`) and every answer comes back canonical; streams arrive as AWS
event-stream frames (`gateway.protocol.eventstream`). Each request is signed with SigV4
(`gateway.backends.aws_signing`), or carries a Bedrock API key when the backend has `api_key`.

Errors, by the `x-amzn-ErrorType` the API names them with (its model lists them per operation):
throttling and a model not ready yet are 429s (failover's `http_429`), internal, unavailable and
model errors are 5xx, a model timeout is a timeout, access and signature refusals are the backend's
credentials (`auth`), an unknown model moves on (`unsupported`), and a `ValidationException` is the
request's own fault, relayed as a 400. The same exceptions inside a stream, before its first event,
fail over like the status they stand for.

An Anthropic client's token count goes to CountTokens (`/model/{modelId}/count-tokens`) with the
Converse input the request would send; embeddings (Amazon Titan text embedding models) go to
InvokeModel (`/model/{modelId}/invoke`), one request per input.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from yarl import URL

from gateway.backends.aws_signing import AWSSigner, MissingCredentials
from gateway.backends.base import SharedResources
from gateway.backends.http import HTTPBackend
from gateway.backends.streaming import open_event_stream
from gateway.backends.upstream import AttemptLimits, FailureKind, Reply, Stream, UpstreamCall, UpstreamFailure
from gateway.config.backends import BedrockSettings
from gateway.protocol.bedrock import (
    Untranslatable,
    converse_request_to_body,
    count_tokens_request_to_body,
    parse_converse_response,
    parse_count_tokens_response,
    stop_sequence_of,
)
from gateway.protocol.bedrock_embeddings import (
    TitanEmbedding,
    embedding_response,
    parse_titan_response,
    titan_request_bodies,
)
from gateway.protocol.bedrock_stream import BedrockStreamDecoder
from gateway.protocol.canonical import (
    ChatRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    StreamError,
    StreamStart,
    UpstreamProtocolError,
)
from gateway.protocol.eventstream import CONTENT_TYPE, frames
from gateway.protocol.usage import bedrock_usage

__all__ = ["BedrockBackend", "failure_kind"]

_JSON = "application/json"
#: The API operation (its path's last segment) of each endpoint a bedrock backend answers.
_OPERATIONS = {"chat": "converse", "count_tokens": "count-tokens"}

#: Failure kind of each error type the API names (operations' `errors`, plus the signing and
#: credential refusals of AWS's front door); the stream's exception members are these in camelCase.
_KINDS: Mapping[str, FailureKind] = {
    "ThrottlingException": "http_429",
    "ModelNotReadyException": "http_429",
    "ServiceQuotaExceededException": "http_429",
    "InternalServerException": "http_5xx",
    "ServiceUnavailableException": "http_5xx",
    "ModelErrorException": "http_5xx",
    "ModelStreamErrorException": "http_5xx",
    "ModelTimeoutException": "timeout",
    "AccessDeniedException": "auth",
    "UnrecognizedClientException": "auth",
    "InvalidSignatureException": "auth",
    "IncompleteSignatureException": "auth",
    "MissingAuthenticationTokenException": "auth",
    "ExpiredTokenException": "auth",
    "ResourceNotFoundException": "unsupported",
    "ValidationException": "client_error",
}


def failure_kind(error_type: str) -> FailureKind | None:
    """The failure kind of an API error type (`ThrottlingException`, or a stream's
    `throttlingException`); None for one the API model does not list."""
    return _KINDS.get(error_type) or _KINDS.get(error_type[:1].upper() + error_type[1:])


def _error_type(headers: Mapping[str, str], body: Any) -> str:
    """The error's type: `x-amzn-ErrorType` (`ThrottlingException:http://internal.amazon.com/...`),
    else the body's `__type` (`com.amazon.coral.service#ThrottlingException`)."""
    value = headers.get("x-amzn-errortype") or (body.get("__type") if isinstance(body, dict) else None)
    if not isinstance(value, str):
        return ""
    return value.split(":", 1)[0].rsplit("#", 1)[-1]


class BedrockBackend(HTTPBackend):
    protocol = "bedrock"
    config: BedrockSettings

    def __init__(self, config: BedrockSettings, shared: SharedResources | None = None) -> None:
        super().__init__(config, shared)
        #: None when the backend has a Bedrock API key (a bearer token) instead of AWS credentials.
        self.signer = None if config.api_key else AWSSigner(config.profile, config.region)

    def default_headers(self) -> dict[str, str]:
        headers = super().default_headers()
        if self.config.api_key:
            headers["authorization"] = f"Bearer {self.config.api_key.reveal()}"
        return headers

    async def start(self) -> None:
        if self.signer is not None and self.session is None:
            await self.signer.start()
        await super().start()

    def request_url(self, path: str) -> URL:
        # Sent exactly as signed: the model id's `:` and `/` stay percent-encoded.
        return URL(self.config.base_url + path, encoded=True)

    async def signed_post(
        self, path: str, body: bytes, limits: AttemptLimits, accept: str = _JSON
    ) -> aiohttp.ClientResponse:
        """`post`, signed with SigV4 unless the backend has a Bedrock API key."""
        headers = {"content-type": _JSON, "accept": accept}
        if self.signer is not None:
            try:
                headers = await self.signer.sign("POST", self.config.base_url + path, body, headers)
            except MissingCredentials as error:
                raise UpstreamFailure("auth", str(error)) from None
        return await self.post(path, body, limits, headers)

    async def send(self, call: UpstreamCall, model: str, limits: AttemptLimits) -> Reply | Stream:
        request = call.request
        if call.endpoint == "embeddings" and isinstance(request, EmbeddingRequest):
            return await self._embed(request, model, limits)
        # Routing skips targets lacking the capability before calling here; a safety net.
        if call.endpoint not in _OPERATIONS or not isinstance(request, ChatRequest):
            raise UpstreamFailure("unsupported", f"the Bedrock Converse API cannot answer {call.endpoint}")
        counting = call.endpoint == "count_tokens"
        try:
            converse = (
                count_tokens_request_to_body(request) if counting else converse_request_to_body(request)
            )
        except Untranslatable as error:
            raise UpstreamFailure(
                "unsupported", f"cannot take {error.field}: {error.detail}", param=error.field
            ) from None
        body = orjson.dumps(converse)
        operation = "converse-stream" if call.stream else _OPERATIONS[call.endpoint]
        path = f"/model/{quote(model, safe='')}/{operation}"
        response = await self.signed_post(path, body, limits, CONTENT_TYPE if call.stream else _JSON)
        response_id = response.headers.get("x-amzn-requestid") or ""
        stop_sequence = stop_sequence_of(request)
        single_tool_call = request.parallel_tool_calls is False
        if call.stream:
            decoder = BedrockStreamDecoder(
                response_id, stop_sequence=stop_sequence, single_tool_call=single_tool_call
            )
            stream = await open_event_stream(response, decoder, limits, framing=frames)
            if decoder.exception is not None and not any(type(e) is StreamStart for e in stream.first):
                # Refused before the answer began (throttled, say): as the HTTP status would have been.
                await stream.aclose()
                error = next(e for e in stream.first if type(e) is StreamError)
                kind = failure_kind(decoder.exception) or "http_5xx"
                raise UpstreamFailure(kind, f"in-stream {error.message}", status=None)
            return stream
        _, data = await self.read_json(response, limits)
        if counting:
            try:
                return parse_count_tokens_response(data)
            except UpstreamProtocolError as error:
                raise UpstreamFailure("http_5xx", str(error)) from None
        try:
            return parse_converse_response(
                data,
                response_id=response_id or None,
                stop_sequence=stop_sequence,
                single_tool_call=single_tool_call,
            )
        except UpstreamProtocolError as error:
            # An answer the gateway cannot use may still have been billed: keep what it reported.
            usage = bedrock_usage(data.get("usage") if isinstance(data, dict) else None)
            raise UpstreamFailure("http_5xx", f"malformed response: {error}", usage=usage) from None

    async def _embed(self, request: EmbeddingRequest, model: str, limits: AttemptLimits) -> EmbeddingResponse:
        """Titan text embeddings: one InvokeModel request per input, all at once (within the pool)."""
        try:
            bodies = titan_request_bodies(request)
        except Untranslatable as error:
            raise UpstreamFailure(
                "unsupported", f"cannot take {error.field}: {error.detail}", param=error.field
            ) from None
        path = f"/model/{quote(model, safe='')}/invoke"

        async def embed(body: dict[str, Any]) -> TitanEmbedding:
            response = await self.signed_post(path, orjson.dumps(body), limits)
            _, data = await self.read_json(response, limits)
            return parse_titan_response(data)

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(embed(body)) for body in bodies]
        except* UpstreamFailure as failures:
            raise failures.exceptions[0] from None  # the others were cancelled
        except* UpstreamProtocolError as errors:
            raise UpstreamFailure("http_5xx", str(errors.exceptions[0])) from None
        try:
            return embedding_response([task.result() for task in tasks], request)
        except UpstreamProtocolError as error:
            raise UpstreamFailure("http_5xx", str(error)) from None

    def status_failure(self, status: int, raw: bytes, headers: Mapping[str, str]) -> UpstreamFailure:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        error_type = _error_type(headers, body)
        kind = failure_kind(error_type) if error_type else None
        if kind is None:
            return super().status_failure(status, raw, headers)
        message = ""
        if isinstance(body, dict):
            value = body.get("message") or body.get("Message")
            message = str(value)[:500] if value else ""
        detail = f"HTTP {status} {error_type}" + (f": {message}" if message else "")
        if kind == "client_error":
            return UpstreamFailure("client_error", message or detail, status=status)
        if kind == "auth":
            detail = f"the backend refused the gateway's AWS credentials ({detail})"
        retry_after = headers.get("retry-after") if kind == "http_429" else None
        return UpstreamFailure(kind, detail, status=status, retry_after=retry_after)
