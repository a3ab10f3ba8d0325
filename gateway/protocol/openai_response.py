"""OpenAI non-streaming chat completions: reading a backend's body and writing one for an OpenAI client."""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.protocol._maps import finish_from_openai, finish_to_openai, new_id
from gateway.protocol.canonical import (
    ChatResponse,
    Part,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    UpstreamProtocolError,
)
from gateway.protocol.usage import openai_usage, usage_to_openai

__all__ = ["encode_chat_response", "parse_chat_response"]


def _encode_call(part: ToolCallPart) -> dict[str, Any]:
    return {"id": part.id, "type": "function", "function": {"name": part.name, "arguments": part.arguments}}


def parse_chat_response(body: Any) -> ChatResponse:
    """Read a backend's non-streaming chat completion; raises `UpstreamProtocolError` when malformed."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        raise UpstreamProtocolError(f"backend returned an error body: {body['error'].get('message')!r}")
    try:
        choice = body["choices"][0]
        msg = choice["message"]
        parts: list[Part] = []
        content = msg.get("content")
        if isinstance(content, str):
            if content:
                parts.append(TextPart(content))
        elif isinstance(content, list):
            parts.extend(TextPart(c["text"]) for c in content if c.get("type") == "text")
        elif content is not None:
            raise TypeError(f"message.content is {type(content).__name__}")
        for i, call in enumerate(msg.get("tool_calls") or ()):
            fn = call["function"]
            args = fn.get("arguments") or ""
            if not isinstance(args, str):
                args = orjson.dumps(args).decode()
            parts.append(ToolCallPart(call.get("id") or f"call_{i}", fn["name"], args))
        stop_reason = choice.get("stop_reason")
        return ChatResponse(
            id=body.get("id") or "",
            model=body.get("model") or "",
            content=tuple(parts),
            finish_reason=finish_from_openai(choice.get("finish_reason")),
            usage=openai_usage(body.get("usage")),
            stop_sequence=stop_reason if isinstance(stop_reason, str) else None,
        )
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        raise UpstreamProtocolError(
            f"malformed OpenAI chat completion from the backend ({type(e).__name__}: {e})"
        ) from e


def _encode_choice(index: int, content: tuple[Part, ...], finish_reason: Any) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    thinking: list[ReasoningPart] = []
    for part in content:
        if type(part) is TextPart:
            texts.append(part.text)
        elif type(part) is ToolCallPart:
            calls.append(_encode_call(part))
        elif type(part) is ReasoningPart:
            thinking.append(part)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts else (None if calls else ""),
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    if thinking:
        # OpenAI's chat API shows no reasoning: the de facto form of OpenAI-compatible servers (DeepSeek,
        # vLLM, LiteLLM) carries it, text and blocks (signatures intact, to be sent back) (docs/reasoning.md).
        message["reasoning_content"] = "".join(p.text for p in thinking)
        message["thinking_blocks"] = [p.block for p in thinking]
    return {
        "index": index,
        "message": message,
        "logprobs": None,
        "finish_reason": finish_to_openai(finish_reason),
    }


def encode_chat_response(resp: ChatResponse, model: str) -> dict[str, Any]:
    """The `chat.completion` body for an OpenAI client; `model` is the name the client asked for.
    Several choices (`n`) are written with their indexes 0, 1, ...; the usage covers them all."""
    choices = [_encode_choice(0, resp.content, resp.finish_reason)]
    for index, choice in enumerate(resp.extra_choices, 1):
        choices.append(_encode_choice(index, choice.content, choice.finish_reason))
    body: dict[str, Any] = {
        "id": resp.id or new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
    }
    if resp.usage is not None:
        body["usage"] = usage_to_openai(resp.usage)
    return body
