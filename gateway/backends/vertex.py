"""`vertex` backend: Google Cloud Vertex AI, for Gemini models and Anthropic's Claude models.

A chain target's `model` picks the publisher: a name starting with `claude-` is Anthropic's, served
through `rawPredict` / `streamRawPredict` with the Messages API body (`gateway.backends.anthropic`'s),
less `model` (it is in the path) and with `anthropic_version: vertex-2023-10-16`; any other name is
Google's, served through `generateContent`, `streamGenerateContent?alt=sse` and `countTokens` with the
Gemini body (`gateway.backends.gemini`'s), and text embedding models (`text-embedding-*`,
`text-multilingual-embedding-*`, `gemini-embedding-*`) through `:predict`. Both live under
`/v1/projects/{project}/locations/{region}/publishers/{publisher}/models/{model}`.

Every request carries a Google access token (`gateway.backends.google_credentials`); an upstream 401
drops it, so the next request gets a fresh one. Errors have Google's shape (`{"error": {"code",
"message", "status"}}`): 429 RESOURCE_EXHAUSTED and 5xx fail over, 401/403 are the gateway's
credentials, other 4xx the request's own fault.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from gateway.backends.anthropic import messages_answer, messages_body
from gateway.backends.base import SharedResources
from gateway.backends.gemini import GeminiBackend
from gateway.backends.google_credentials import GoogleCredentials, MissingCredentials
from gateway.backends.upstream import AttemptLimits, Reply, Stream, UpstreamCall, UpstreamFailure
from gateway.config.backends import VertexSettings
from gateway.protocol import gemini as gemini_protocol
from gateway.protocol.bedrock_embeddings import embedding_response
from gateway.protocol.canonical import ChatRequest, EmbeddingRequest, UpstreamProtocolError
from gateway.protocol.vertex_embeddings import VertexEmbedding, parse_predict_response, predict_bodies

__all__ = ["ANTHROPIC_VERSION", "VertexBackend", "publisher_of"]

#: The `anthropic_version` Claude models on Vertex AI take in the body (instead of the header).
ANTHROPIC_VERSION = "vertex-2023-10-16"


def publisher_of(model: str) -> str:
    """The Vertex AI publisher of an upstream model: `anthropic` for Claude models, else `google`."""
    return "anthropic" if model.startswith("claude-") else "google"


class VertexBackend(GeminiBackend):
    #: Gemini models speak `gemini`; Claude models `anthropic` (`protocol_for`).
    protocol = "gemini"
    config: VertexSettings  # type: ignore[assignment]

    def __init__(self, config: VertexSettings, shared: SharedResources | None = None) -> None:
        super().__init__(config, shared)  # type: ignore[arg-type]
        self.credentials = GoogleCredentials()

    def protocol_for(self, model: str) -> str:
        """The wire protocol a chain target on `model` speaks (an Anthropic client's request to a Claude
        model is forwarded as sent)."""
        return "anthropic" if publisher_of(model) == "anthropic" else "gemini"

    def default_headers(self) -> dict[str, str]:
        # No key header: the bearer token goes with each request (`post`).
        return super(GeminiBackend, self).default_headers()

    async def start(self) -> None:
        if self.session is None:
            await self.credentials.start()
        await super().start()

    def model_path(self, publisher: str, model: str) -> str:
        config = self.config
        return (
            f"/v1/projects/{config.project}/locations/{config.region}"
            f"/publishers/{publisher}/models/{quote(model, safe='@.-_')}"
        )

    async def post(
        self, path: str, body: bytes, limits: AttemptLimits, headers: dict[str, str] | None = None
    ) -> aiohttp.ClientResponse:
        """`post` with the access token; a 401 drops the token, so the next request refreshes it."""
        wait = limits.until_first_byte()
        try:
            async with asyncio.timeout(wait):
                token = await self.credentials.token()
        except MissingCredentials as error:
            raise UpstreamFailure("auth", str(error)) from None
        except TimeoutError:
            raise UpstreamFailure(
                "timeout", f"no Google access token within {wait:g} s (first-byte limit)"
            ) from None
        own = {**(headers or {}), "authorization": f"Bearer {token}"}
        try:
            return await super().post(path, body, limits, own)
        except UpstreamFailure as failure:
            if failure.status == 401:
                self.credentials.forget(token)
            raise

    async def send(self, call: UpstreamCall, model: str, limits: AttemptLimits) -> Reply | Stream:
        if publisher_of(model) == "anthropic":
            return await self._claude(call, model, limits)
        if call.endpoint == "embeddings" and isinstance(call.request, EmbeddingRequest):
            return await self._predict_embeddings(call.request, model, limits)
        # Routing skips targets lacking the capability before calling here; a safety net.
        if call.endpoint not in ("chat", "count_tokens"):
            raise UpstreamFailure(
                "unsupported", f"Gemini models on Vertex AI cannot answer {call.endpoint} here"
            )
        return await self.generate(call, model, self.model_path("google", model), limits)

    def count_tokens_body(self, request: ChatRequest, model: str) -> dict[str, Any]:
        # Vertex AI's CountTokensRequest takes the request's members at the top level.
        body = gemini_protocol.chat_request_to_body(request)
        return {
            k: v
            for k, v in body.items()
            if k in ("contents", "systemInstruction", "tools", "generationConfig")
        }

    async def _predict_embeddings(
        self, request: EmbeddingRequest, model: str, limits: AttemptLimits
    ) -> Reply:
        """Text embedding models through `:predict` (`gateway.protocol.vertex_embeddings`), the requests
        of a batch too large for one sent at once (within the pool)."""
        try:
            bodies = predict_bodies(request, model)
        except gemini_protocol.GeminiRefusal as refusal:
            raise UpstreamFailure(
                "unsupported", f"Vertex AI cannot take {refusal}", param=refusal.field
            ) from None
        path = f"{self.model_path('google', model)}:predict"

        async def predict(body: dict[str, Any]) -> list[VertexEmbedding]:
            response = await self.post(path, orjson.dumps(body), limits)
            _, data = await self.read_json(response, limits)
            return parse_predict_response(data, len(body["instances"]))

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(predict(body)) for body in bodies]
        except* UpstreamFailure as failures:
            raise failures.exceptions[0] from None  # the others were cancelled
        except* UpstreamProtocolError as errors:
            raise UpstreamFailure("http_5xx", str(errors.exceptions[0])) from None
        try:
            return embedding_response([part for task in tasks for part in task.result()], request)
        except UpstreamProtocolError as error:
            raise UpstreamFailure("http_5xx", str(error)) from None

    async def _claude(self, call: UpstreamCall, model: str, limits: AttemptLimits) -> Reply | Stream:
        body, same = messages_body(call, model)
        body["anthropic_version"] = ANTHROPIC_VERSION
        if call.endpoint == "count_tokens":
            # One endpoint counts for every Claude model; it reads the model from the body.
            path = self.model_path("anthropic", "count-tokens") + ":rawPredict"
        else:
            del body["model"]
            method = "streamRawPredict" if call.stream else "rawPredict"
            path = f"{self.model_path('anthropic', model)}:{method}"
        response = await self.post(path, orjson.dumps(body), limits)
        return await messages_answer(self, response, call, same, limits)
