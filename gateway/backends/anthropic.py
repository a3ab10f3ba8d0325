"""`anthropic` backend: Anthropic's Messages API.

An Anthropic client's request is forwarded with the model replaced and the answer relayed untouched
(pass-through); any other client's request goes out translated from the canonical form, and the answer
comes back canonical, for the surface to encode.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from gateway.backends.http import HTTPBackend
from gateway.backends.streaming import AnthropicPassThrough, open_event_stream, open_pass_through
from gateway.backends.upstream import (
    AttemptLimits,
    PassThroughReply,
    Reply,
    Stream,
    UpstreamCall,
    UpstreamFailure,
)
from gateway.config.backends import AnthropicSettings
from gateway.protocol import anthropic as anthropic_protocol
from gateway.protocol.anthropic_body import NoThinkingBudget
from gateway.protocol.canonical import ChatRequest, UpstreamProtocolError
from gateway.protocol.usage import anthropic_usage

__all__ = ["AnthropicBackend", "messages_answer", "messages_body"]


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
        body, same = messages_body(call, model)
        path = "/v1/messages/count_tokens" if call.endpoint == "count_tokens" else "/v1/messages"
        response = await self.post(path, orjson.dumps(body), limits)
        return await messages_answer(self, response, call, same, limits)


def messages_body(call: UpstreamCall, model: str) -> tuple[dict[str, Any], bool]:
    """The Messages API body for `call` on `model`, and whether it is the client's own (an Anthropic
    client's request, forwarded with the model replaced: its answer is relayed untouched)."""
    # Routing skips targets lacking the capability (`gateway.routing.capabilities`) before calling
    # here; these refusals are a safety net for a config that claims what the API cannot do.
    if call.endpoint not in ("chat", "count_tokens"):
        raise UpstreamFailure("unsupported", f"the Anthropic API has no {call.endpoint} endpoint")
    if call.protocol == "anthropic":
        body = dict(call.body)
        body["model"] = model
        return body, True
    if not isinstance(call.request, ChatRequest) or call.endpoint != "chat":
        raise UpstreamFailure(
            "unsupported", f"the Anthropic API cannot answer {call.endpoint} in translation"
        )
    try:
        body = anthropic_protocol.messages_request_to_body(call.request, model)
    except NoThinkingBudget as error:
        raise UpstreamFailure("unsupported", str(error)) from None
    body["stream"] = call.stream
    return body, False


async def messages_answer(
    backend: HTTPBackend,
    response: aiohttp.ClientResponse,
    call: UpstreamCall,
    same: bool,
    limits: AttemptLimits,
) -> Reply | Stream:
    """The answer of a Messages API `response`: relayed untouched when the body was the client's own
    (`same`), else read into the canonical form."""
    if call.stream:
        if same:
            return await open_pass_through(response, AnthropicPassThrough(), limits)
        return await open_event_stream(response, anthropic_protocol.AnthropicStreamDecoder(), limits)
    raw, data = await backend.read_json(response, limits)
    if same:
        return PassThroughReply(raw, anthropic_usage(data.get("usage") if isinstance(data, dict) else None))
    try:
        return anthropic_protocol.parse_messages_response(data)
    except UpstreamProtocolError as error:
        # An answer the gateway cannot use may still have been billed: keep what it reported.
        usage = anthropic_usage(data.get("usage") if isinstance(data, dict) else None)
        raise UpstreamFailure("http_5xx", f"malformed response: {error}", usage=usage) from None
