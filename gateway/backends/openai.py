"""`openai` and `openai_compatible` backends: OpenAI's API, or any server that speaks it.

An OpenAI client's request is forwarded with the model replaced and the answer relayed untouched
(pass-through); any other client's request goes out translated from the canonical form, and the answer
comes back canonical, for the surface to encode. A Responses API client's request is forwarded to
`/responses` by an `openai` backend (OpenAI's own API has it); an `openai_compatible` server gets it
translated to chat completions.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.backends.http import HTTPBackend
from gateway.backends.streaming import (
    OpenAIPassThrough,
    ResponsesPassThrough,
    open_event_stream,
    open_pass_through,
)
from gateway.backends.upstream import (
    AttemptLimits,
    PassThroughReply,
    Reply,
    Stream,
    UpstreamCall,
    UpstreamFailure,
)
from gateway.config.backends import OpenAICompatibleSettings, OpenAISettings
from gateway.protocol import openai as openai_protocol
from gateway.protocol.canonical import ChatRequest, UpstreamProtocolError
from gateway.protocol.usage import openai_usage, responses_usage

__all__ = ["OpenAIBackend", "OpenAICompatibleBackend"]

_PATHS = {"chat": "/chat/completions", "completions": "/completions", "embeddings": "/embeddings"}


class OpenAICompatibleBackend(HTTPBackend):
    """`openai_compatible`, and the base of `openai` and `azure_openai`: a server speaking OpenAI's API."""

    protocol = "openai"
    #: Client protocols besides `protocol` whose requests it forwards as sent (`openai`: Responses).
    also_speaks: frozenset[str] = frozenset()
    #: Reads the upstream's stream when the client speaks another protocol.
    stream_decoder: type[openai_protocol.OpenAIStreamDecoder] = openai_protocol.OpenAIStreamDecoder

    def default_headers(self) -> dict[str, str]:
        headers = super().default_headers()
        if self.config.api_key:
            headers["authorization"] = f"Bearer {self.config.api_key.reveal()}"
        config = self.config
        if isinstance(config, OpenAICompatibleSettings):  # OpenRouter's attribution, when set
            if config.app_url:
                headers["http-referer"] = config.app_url
            if config.app_title:
                headers["x-title"] = config.app_title
        return headers

    def describe(self) -> dict[str, Any]:
        """The vendor preset, when `provider` names one (`GET /admin/api/backends` shows it)."""
        config = self.config
        if isinstance(config, OpenAICompatibleSettings) and config.provider:
            return {"provider": config.provider}
        return {}

    def path_for(self, endpoint: str, model: str) -> str | None:
        """The path (after `base_url`) that answers `endpoint` for upstream `model`; None: no such
        endpoint."""
        return _PATHS.get(endpoint)

    async def send(self, call: UpstreamCall, model: str, limits: AttemptLimits) -> Reply | Stream:
        if call.protocol == "responses" and "responses" in self.also_speaks:
            return await self._responses(call, model, limits)
        path = self.path_for(call.endpoint, model)
        # Routing never sends count_tokens here (`gateway.routing.capabilities`); a safety net.
        if path is None:
            raise UpstreamFailure("unsupported", f"the OpenAI API cannot answer {call.endpoint}")
        same = call.protocol == "openai"
        if same:
            body = dict(call.body)
            body["model"] = model
        else:
            if not isinstance(call.request, ChatRequest):
                raise UpstreamFailure(
                    "unsupported", f"the OpenAI API cannot answer {call.endpoint} in translation"
                )
            body = openai_protocol.chat_request_to_body(call.request, model)
            body["stream"] = call.stream
        if call.stream:
            # Always ask for usage: the audit log needs it, whatever the client asked for.
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        response = await self.post(path, orjson.dumps(body), limits)
        if call.stream:
            if same:
                wants_usage = bool(getattr(call.request, "include_usage", False))
                return await open_pass_through(response, OpenAIPassThrough(wants_usage), limits)
            return await open_event_stream(response, self.stream_decoder(), limits)
        raw, data = await self.read_json(response, limits)
        if same:
            return PassThroughReply(raw, openai_usage(data.get("usage") if isinstance(data, dict) else None))
        try:
            return openai_protocol.parse_chat_response(data)
        except UpstreamProtocolError as error:
            # An answer the gateway cannot use may still have been billed: keep what it reported.
            usage = openai_usage(data.get("usage") if isinstance(data, dict) else None)
            raise UpstreamFailure("http_5xx", f"malformed response: {error}", usage=usage) from None

    async def _responses(self, call: UpstreamCall, model: str, limits: AttemptLimits) -> Reply | Stream:
        """A Responses API request forwarded to `/responses` with the model replaced; the answer is
        relayed untouched (usage read on the way)."""
        body = dict(call.body)
        body["model"] = model
        response = await self.post("/responses", orjson.dumps(body), limits)
        if call.stream:
            return await open_pass_through(response, ResponsesPassThrough(), limits)
        raw, data = await self.read_json(response, limits)
        return PassThroughReply(raw, responses_usage(data.get("usage") if isinstance(data, dict) else None))


class OpenAIBackend(OpenAICompatibleBackend):
    """`openai`: OpenAI's own API, which also takes the organization header and the Responses API."""

    config: OpenAISettings
    also_speaks = frozenset({"responses"})

    def default_headers(self) -> dict[str, str]:
        headers = super().default_headers()
        if self.config.organization:
            headers["openai-organization"] = self.config.organization
        return headers
