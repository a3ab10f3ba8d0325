"""`openai` and `openai_compatible` backends: OpenAI's API, or any server that speaks it."""

from __future__ import annotations

import orjson

from gateway.backends.http import HTTPBackend
from gateway.backends.streaming import OpenAIPassThrough, Translation, open_stream
from gateway.backends.upstream import AttemptLimits, Reply, Stream, UpstreamCall, UpstreamFailure
from gateway.config.backends import OpenAISettings
from gateway.protocol import anthropic as anthropic_protocol
from gateway.protocol import openai as openai_protocol
from gateway.protocol.canonical import ChatRequest, UpstreamProtocolError, Usage

__all__ = ["OpenAIBackend", "OpenAICompatibleBackend"]

_PATHS = {"chat": "/chat/completions", "completions": "/completions", "embeddings": "/embeddings"}


def _usage(body: object) -> Usage | None:
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return None
    return Usage(usage.get("prompt_tokens", 0) or 0, usage.get("completion_tokens", 0) or 0)


class OpenAICompatibleBackend(HTTPBackend):
    """`openai_compatible`, and the base of `openai`: a server speaking OpenAI's API."""

    protocol = "openai"

    def default_headers(self) -> dict[str, str]:
        headers = super().default_headers()
        if self.config.api_key:
            headers["authorization"] = f"Bearer {self.config.api_key.reveal()}"
        return headers

    async def send(self, call: UpstreamCall, model: str, limits: AttemptLimits) -> Reply | Stream:
        path = _PATHS.get(call.endpoint)
        if path is None:
            raise UpstreamFailure("unsupported", f"the OpenAI API cannot answer {call.endpoint}")
        same = call.protocol == "openai"
        if same:
            body = dict(call.body)
            body["model"] = model
        else:
            assert isinstance(call.request, ChatRequest)
            body = openai_protocol.chat_request_to_body(call.request, model)
            body["stream"] = call.stream
        if call.stream:
            # Always ask for usage: the audit log and the Anthropic translation need it.
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        response = await self.post(path, orjson.dumps(body), limits)
        if call.stream:
            if same:
                relay = OpenAIPassThrough(
                    client_wants_usage=bool(getattr(call.request, "include_usage", False))
                )
            else:
                relay = Translation(
                    openai_protocol.OpenAIStreamDecoder(),
                    anthropic_protocol.AnthropicStreamEncoder(model),
                )
            return await open_stream(response, relay, limits)
        raw, data = await self.read_json(response, limits)
        if same:
            return Reply(raw, _usage(data))
        try:
            parsed = openai_protocol.parse_chat_response(data)
        except UpstreamProtocolError as error:
            raise UpstreamFailure("http_5xx", f"malformed response: {error}") from None
        encoded = anthropic_protocol.encode_messages_response(parsed, model)
        return Reply(orjson.dumps(encoded), parsed.usage)


class OpenAIBackend(OpenAICompatibleBackend):
    """`openai`: OpenAI's own API, which also takes the organization header."""

    config: OpenAISettings

    def default_headers(self) -> dict[str, str]:
        headers = super().default_headers()
        if self.config.organization:
            headers["openai-organization"] = self.config.organization
        return headers
