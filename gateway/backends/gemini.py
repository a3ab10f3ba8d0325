"""`gemini` backend: Google's Gemini API (Google AI Studio), spoken natively.

No client speaks Gemini, so every request goes out translated from the canonical form
(`gateway.protocol.gemini`) and every answer comes back canonical (`gateway.protocol.gemini_response`):
chat as `models/{model}:generateContent` (streamed: `:streamGenerateContent?alt=sse`), token counts
as `:countTokens`, embeddings as `:batchEmbedContents`. The key goes in the `x-goog-api-key` header,
never in the URL, so it stays out of logs and spans.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gateway.backends.http import HTTPBackend
from gateway.backends.streaming import open_event_stream
from gateway.backends.upstream import AttemptLimits, Reply, Stream, UpstreamCall, UpstreamFailure
from gateway.config.backends import GeminiSettings
from gateway.protocol import gemini as gemini_protocol
from gateway.protocol.canonical import ChatRequest, EmbeddingRequest, UpstreamProtocolError
from gateway.protocol.gemini_response import (
    GeminiBlocked,
    GeminiStreamDecoder,
    parse_count_tokens_response,
    parse_embeddings_response,
    parse_generate_response,
)
from gateway.protocol.usage import gemini_usage

__all__ = ["GeminiBackend"]

#: Reasons (`error.details[].reason`) that say the gateway's key is at fault, not the request, although
#: the API answers them with HTTP 400 INVALID_ARGUMENT.
_KEY_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED"})


class GeminiBackend(HTTPBackend):
    protocol = "gemini"
    config: GeminiSettings

    def default_headers(self) -> dict[str, str]:
        headers = super().default_headers()
        if self.config.api_key:
            headers["x-goog-api-key"] = self.config.api_key.reveal()
        return headers

    async def send(self, call: UpstreamCall, model: str, limits: AttemptLimits) -> Reply | Stream:
        # Routing skips targets lacking the capability (`gateway.routing.capabilities`) before calling
        # here; these refusals are a safety net for a config that claims what the API cannot do.
        request = call.request
        resource = gemini_protocol.model_path(model)
        if call.endpoint == "embeddings" and isinstance(request, EmbeddingRequest):
            return await self._embed(request, model, resource, limits)
        return await self.generate(call, model, f"/v1beta/{resource}", limits)

    async def generate(
        self, call: UpstreamCall, model: str, method_path: str, limits: AttemptLimits
    ) -> Reply | Stream:
        """Chat or a token count through the model's `generateContent`, `streamGenerateContent` or
        `countTokens` method, each at `{method_path}:{method}` (Vertex AI's publisher model paths
        differ from the Gemini API's)."""
        request = call.request
        if call.endpoint not in ("chat", "count_tokens") or not isinstance(request, ChatRequest):
            raise UpstreamFailure("unsupported", f"the Gemini API cannot answer {call.endpoint}")
        try:
            if call.endpoint == "count_tokens":
                body = self.count_tokens_body(request, model)
            else:
                body = gemini_protocol.chat_request_to_body(request)
        except gemini_protocol.GeminiRefusal as refusal:
            raise _refused(refusal) from None
        if call.endpoint == "count_tokens":
            response = await self.post(f"{method_path}:countTokens", orjson.dumps(body), limits)
            _, data = await self.read_json(response, limits)
            try:
                return parse_count_tokens_response(data)
            except UpstreamProtocolError as error:
                raise UpstreamFailure("http_5xx", f"malformed response: {error}") from None
        if call.stream:
            path = f"{method_path}:streamGenerateContent?alt=sse"
            response = await self.post(path, orjson.dumps(body), limits)
            return await open_event_stream(response, GeminiStreamDecoder(), limits)
        response = await self.post(f"{method_path}:generateContent", orjson.dumps(body), limits)
        _, data = await self.read_json(response, limits)
        try:
            return parse_generate_response(data)
        except GeminiBlocked as blocked:
            raise UpstreamFailure("client_error", str(blocked), usage=blocked.usage) from None
        except UpstreamProtocolError as error:
            # An answer the gateway cannot use may still have been billed: keep what it reported.
            usage = gemini_usage(data.get("usageMetadata") if isinstance(data, dict) else None)
            raise UpstreamFailure("http_5xx", f"malformed response: {error}", usage=usage) from None

    def count_tokens_body(self, request: ChatRequest, model: str) -> dict[str, Any]:
        """The `countTokens` body for `request`; raises `GeminiRefusal`."""
        return gemini_protocol.count_tokens_body(request, model)

    async def _embed(
        self, request: EmbeddingRequest, model: str, resource: str, limits: AttemptLimits
    ) -> Reply:
        try:
            body, count = gemini_protocol.embedding_request_to_body(request, model)
        except gemini_protocol.GeminiRefusal as refusal:
            raise _refused(refusal) from None
        response = await self.post(f"/v1beta/{resource}:batchEmbedContents", orjson.dumps(body), limits)
        _, data = await self.read_json(response, limits)
        try:
            return parse_embeddings_response(data, count, request.encoding_format)
        except UpstreamProtocolError as error:
            raise UpstreamFailure("http_5xx", f"malformed response: {error}") from None

    def status_failure(self, status: int, raw: bytes, headers: Mapping[str, str]) -> UpstreamFailure:
        """Gemini's error body is `{"error": {"code", "message", "status", "details"}}`. Most statuses
        mean what they mean elsewhere (429 RESOURCE_EXHAUSTED, 5xx UNAVAILABLE: retryable; 401/403:
        the gateway's credentials); two 400s are the backend's fault, not the client's: an invalid key
        (`API_KEY_INVALID`) and FAILED_PRECONDITION (the API is not available to this project, e.g. in
        its region)."""
        failure = super().status_failure(status, raw, headers)
        if status != 400:
            return failure
        grpc_status, reasons = _error_status(raw)
        if reasons & _KEY_REASONS:
            return UpstreamFailure(
                "auth",
                f"the backend refused the gateway's credentials (HTTP 400: {failure.detail})",
                status=status,
            )
        if grpc_status == "FAILED_PRECONDITION":
            return UpstreamFailure("unsupported", f"HTTP 400: {failure.detail}", status=status)
        return failure


def _refused(refusal: gemini_protocol.GeminiRefusal) -> UpstreamFailure:
    """A request this backend cannot take as asked: the next target may; if none can, the client gets
    400 naming the field (`gateway.routing.failover`)."""
    return UpstreamFailure("unsupported", f"the Gemini API cannot take {refusal}", param=refusal.field)


def _error_status(raw: bytes) -> tuple[str | None, frozenset[str]]:
    """The `error.status` of a Gemini error body, and the `reason`s of its `details`."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, frozenset()
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, frozenset()
    status = error.get("status")
    details = error.get("details")
    reasons = frozenset(
        d["reason"]
        for d in (details if isinstance(details, list) else ())
        if isinstance(d, dict) and isinstance(d.get("reason"), str)
    )
    return (status if isinstance(status, str) else None), reasons
