"""`anthropic` backend: Anthropic's Messages API."""

from __future__ import annotations

import orjson

from gateway.backends.http import HTTPBackend
from gateway.backends.streaming import AnthropicPassThrough, Translation, open_stream
from gateway.backends.upstream import AttemptLimits, Reply, Stream, UpstreamCall, UpstreamFailure
from gateway.config.backends import AnthropicSettings
from gateway.protocol import anthropic as anthropic_protocol
from gateway.protocol import openai as openai_protocol
from gateway.protocol.canonical import ChatRequest, UpstreamProtocolError, Usage

__all__ = ["AnthropicBackend"]


def _usage(body: object) -> Usage | None:
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt = (usage.get("input_tokens") or 0) + (usage.get("cache_read_input_tokens") or 0)
    return Usage(prompt, usage.get("output_tokens") or 0)


class AnthropicBackend(HTTPBackend):
    protocol = "anthropic"
    config: AnthropicSettings

    def default_headers(self) -> dict[str, str]:
        headers = super().default_headers()
        if self.config.api_key:
            headers["x-api-key"] = self.config.api_key.reveal()
        headers["anthropic-version"] = self.config.anthropic_version
        return headers

    async def send(self, call: UpstreamCall, model: str, limits: AttemptLimits) -> Reply | Stream:
        if call.endpoint not in ("chat", "count_tokens"):
            raise UpstreamFailure("unsupported", f"the Anthropic API has no {call.endpoint} endpoint")
        same = call.protocol == "anthropic"
        if same:
            body = dict(call.body)
            body["model"] = model
        else:
            assert isinstance(call.request, ChatRequest)
            body = anthropic_protocol.messages_request_to_body(call.request, model)
            body["stream"] = call.stream
        path = "/v1/messages/count_tokens" if call.endpoint == "count_tokens" else "/v1/messages"
        response = await self.post(path, orjson.dumps(body), limits)
        if call.stream:
            if same:
                relay = AnthropicPassThrough()
            else:
                relay = Translation(
                    anthropic_protocol.AnthropicStreamDecoder(),
                    openai_protocol.OpenAIStreamEncoder(
                        model, include_usage=bool(getattr(call.request, "include_usage", False))
                    ),
                )
            return await open_stream(response, relay, limits)
        raw, data = await self.read_json(response, limits)
        if same or call.endpoint == "count_tokens":
            return Reply(raw, _usage(data))
        try:
            parsed = anthropic_protocol.parse_messages_response(data)
        except UpstreamProtocolError as error:
            raise UpstreamFailure("http_5xx", f"malformed response: {error}") from None
        return Reply(orjson.dumps(openai_protocol.encode_chat_response(parsed, model)), parsed.usage)
