"""Anthropic request bodies: writing a `ChatRequest` as the `/v1/messages` (or count_tokens) body for an
Anthropic backend, whichever protocol the client spoke (mapping rules: `anthropic`)."""

from __future__ import annotations

import re
from typing import Any

import orjson

from gateway.protocol.canonical import (
    ChatRequest,
    ImagePart,
    Message,
    Part,
    ReasoningPart,
    TextPart,
    Tool,
    ToolCallPart,
    ToolResultPart,
    join_text,
)
from gateway.protocol.reasoning import MIN_BUDGET, anthropic_thinking

__all__ = [
    "NoThinkingBudget",
    "arguments_to_input",
    "count_tokens_request_to_body",
    "messages_request_to_body",
    "tool_id",
]


class NoThinkingBudget(ValueError):
    """A request's reasoning cannot be written as an Anthropic thinking budget under its max_tokens."""


_BAD_ID_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
_CHOICE_TYPES = {"auto": "auto", "required": "any", "none": "none", "tool": "tool"}


def messages_request_to_body(
    req: ChatRequest, upstream_model: str, *, default_max_tokens: int = 4096
) -> dict[str, Any]:
    """The `/v1/messages` body to send an Anthropic backend for `req`.

    `default_max_tokens` is used when the client (an OpenAI one) gave no `max_tokens`. Raises
    `NoThinkingBudget` when the client's reasoning does not fit under its own `max_tokens`.
    """
    body = _body(req, upstream_model)
    body["max_tokens"] = req.max_tokens if req.max_tokens is not None else default_max_tokens
    if req.reasoning is not None and "thinking" not in body:
        mapped = anthropic_thinking(req.reasoning, req.max_tokens, default_max_tokens)
        if mapped is None:
            raise NoThinkingBudget(
                f"a token cap of {req.max_tokens} (max_completion_tokens / max_tokens) leaves no room for "
                f"Anthropic's smallest thinking budget ({MIN_BUDGET} tokens, which must be below the cap)"
            )
        body["thinking"], body["max_tokens"] = mapped
    if req.temperature is not None:
        body["temperature"] = min(req.temperature, 1.0)
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.stop:
        body["stop_sequences"] = list(req.stop)
    if req.stream:
        body["stream"] = True
    if req.user is not None:
        body["metadata"] = {"user_id": req.user}
    return body


def count_tokens_request_to_body(req: ChatRequest, upstream_model: str) -> dict[str, Any]:
    """The `/v1/messages/count_tokens` body for `req` (the prompt only: no sampling or output members)."""
    return _body(req, upstream_model)


def _body(req: ChatRequest, upstream_model: str) -> dict[str, Any]:
    same = req.source == "anthropic"
    body: dict[str, Any] = dict(req.extra) if same and req.extra else {}
    body["model"] = upstream_model
    messages, hoisted = _encode_messages(req.messages)
    if req.system_blocks is not None:
        blocks = [_encode_block(b) for b in req.system_blocks]
        blocks += ({"type": "text", "text": text} for text in hoisted)
        system: Any = [b for b in blocks if b is not None]
    else:
        system = "\n\n".join(t for t in (req.system, *hoisted) if t)
    if system:
        body["system"] = system
    body["messages"] = messages
    tools = [_encode_tool(t) for t in req.tools if t.raw is None or same]
    if tools:
        body["tools"] = tools
        choice, parallel = req.tool_choice, req.parallel_tool_calls
        if choice is not None or parallel is False:
            mode = choice.mode if choice is not None else "auto"
            encoded: dict[str, Any] = {"type": _CHOICE_TYPES[mode]}
            if mode == "tool":
                encoded["name"] = choice.name  # type: ignore[union-attr]
            if parallel is False and mode != "none":
                encoded["disable_parallel_tool_use"] = True
            body["tool_choice"] = encoded
    return body


def _encode_tool(tool: Tool) -> Any:
    if tool.raw is not None:
        return tool.raw
    schema: Any = tool.parameters
    if not schema:
        schema = {"type": "object", "properties": {}}
    elif "type" not in schema:  # OpenAI tolerates a schema without it; Anthropic requires type "object"
        schema = {"type": "object", **schema}
    encoded: dict[str, Any] = {"name": tool.name}
    if tool.description:
        encoded["description"] = tool.description
    encoded["input_schema"] = schema
    if tool.cache_control is not None:
        encoded["cache_control"] = tool.cache_control
    return encoded


def _encode_messages(messages: tuple[Message, ...]) -> tuple[list[dict[str, Any]], list[str]]:
    out: list[dict[str, Any]] = []
    hoisted: list[str] = []
    for msg in messages:
        if msg.role == "system":
            hoisted.append(join_text(msg.content, "\n\n"))
            continue
        role = "assistant" if msg.role == "assistant" else "user"
        blocks = [b for b in map(_encode_block, msg.content) if b is not None]
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    for msg in out:
        content = msg["content"]
        if len(content) == 1:
            only = content[0]
            if only["type"] == "text" and "cache_control" not in only:
                msg["content"] = only["text"]
        elif msg["role"] == "user" and _result_after_other(content):
            content.sort(key=lambda b: b["type"] != "tool_result")  # stable: keeps each group's order
    return out, hoisted


def _result_after_other(content: list[dict[str, Any]]) -> bool:
    """Whether a tool_result block follows some other block (the API wants results first)."""
    other = False
    for block in content:
        if block["type"] != "tool_result":
            other = True
        elif other:
            return True
    return False


def _encode_block(part: Part) -> Any:
    kind = type(part)
    if kind is TextPart:
        if not part.text or part.text.isspace():
            return None
        block: dict[str, Any] = {"type": "text", "text": part.text}
    elif kind is ToolCallPart:
        block = {
            "type": "tool_use",
            "id": tool_id(part.id),
            "name": part.name,
            "input": arguments_to_input(part.arguments),
        }
    elif kind is ToolResultPart:
        block = {"type": "tool_result", "tool_use_id": tool_id(part.tool_call_id)}
        if part.parts is not None:
            block["content"] = [b for b in map(_encode_block, part.parts) if b is not None]
        elif part.content:
            block["content"] = part.content
        if part.is_error:
            block["is_error"] = True
    elif kind is ImagePart:
        if part.data is not None:
            source = {"type": "base64", "media_type": part.media_type or "image/png", "data": part.data}
        else:
            source = {"type": "url", "url": part.url}
        block = {"type": "image", "source": source}
    elif kind is ReasoningPart:
        return part.block if part.protocol == "anthropic" else None
    else:
        return part.data if part.protocol == "anthropic" else None
    if part.cache_control is not None:
        block["cache_control"] = part.cache_control
    return block


def arguments_to_input(arguments: str) -> dict[str, Any]:
    """Tool-call arguments JSON text as the object Anthropic's `input` must be."""
    if not arguments:
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        value = None
    # Keep what the model wrote even when it is not a JSON object, rather than silently sending {}.
    return value if isinstance(value, dict) else {"_raw_arguments": arguments}


def tool_id(call_id: str) -> str:
    """`call_id` in the character set Anthropic accepts for tool_use ids.

    Some OpenAI-compatible backends mint ids like `functions.get_weather:0`; the same rewrite is applied to
    a call and to its result, so they still match.
    """
    return _BAD_ID_CHARS.sub("_", call_id) if _BAD_ID_CHARS.search(call_id) else call_id
