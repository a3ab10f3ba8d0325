"""Anthropic non-streaming Messages: reading a backend's body and writing one for an Anthropic client."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.protocol._maps import finish_from_anthropic, finish_to_anthropic, new_id
from gateway.protocol.anthropic_body import arguments_to_input, tool_id
from gateway.protocol.canonical import (
    ChatResponse,
    Part,
    RawPart,
    ReasoningPart,
    TextPart,
    TokenCount,
    ToolCallPart,
    UpstreamProtocolError,
    Usage,
)
from gateway.protocol.reasoning import thinking_text
from gateway.protocol.usage import anthropic_usage, usage_to_anthropic

__all__ = ["encode_count_tokens_response", "encode_messages_response", "parse_messages_response"]


def parse_messages_response(body: Any) -> ChatResponse:
    """Read a backend's non-streaming Message; raises `UpstreamProtocolError` when malformed."""
    if isinstance(body, dict) and body.get("type") == "error":
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else error
        raise UpstreamProtocolError(f"backend returned an error body: {message!r}")
    try:
        parts: list[Part] = []
        for block in body["content"]:
            kind = block["type"]
            if kind == "text":
                parts.append(TextPart(block["text"]))
            elif kind == "tool_use":
                args = block.get("input")
                parts.append(ToolCallPart(block["id"], block["name"], orjson.dumps(args or {}).decode()))
            elif kind == "thinking" or kind == "redacted_thinking":
                parts.append(ReasoningPart(thinking_text(block), block))
            else:
                parts.append(RawPart("anthropic", block))
        stop_sequence = body.get("stop_sequence")
        return ChatResponse(
            id=body["id"],
            model=body.get("model") or "",
            content=tuple(parts),
            finish_reason=finish_from_anthropic(body.get("stop_reason")),
            usage=anthropic_usage(body.get("usage")),
            stop_sequence=stop_sequence if isinstance(stop_sequence, str) else None,
        )
    except (KeyError, TypeError, AttributeError) as e:
        raise UpstreamProtocolError(
            f"malformed Anthropic message from the backend ({type(e).__name__}: {e})"
        ) from e


def encode_messages_response(resp: ChatResponse, model: str) -> dict[str, Any]:
    """The Message body for an Anthropic client; `model` is the name the client asked for."""
    content: list[Any] = []
    for part in resp.content:
        kind = type(part)
        if kind is TextPart:
            if part.text:
                content.append({"type": "text", "text": part.text})
        elif kind is ToolCallPart:
            content.append(
                {
                    "type": "tool_use",
                    "id": tool_id(part.id),
                    "name": part.name,
                    "input": arguments_to_input(part.arguments),
                }
            )
        elif kind is RawPart and part.protocol == "anthropic":
            content.append(part.data)
        elif kind is ReasoningPart and part.protocol == "anthropic":
            content.append(part.block)
    stop_reason = finish_to_anthropic(resp.finish_reason, resp.stop_sequence)
    return {
        "id": resp.id or new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": resp.stop_sequence if stop_reason == "stop_sequence" else None,
        "usage": usage_to_anthropic(resp.usage or Usage()),
    }


def encode_count_tokens_response(count: TokenCount, model: str) -> dict[str, Any]:
    """The `/v1/messages/count_tokens` body for an Anthropic client."""
    return {"input_tokens": count.input_tokens}
