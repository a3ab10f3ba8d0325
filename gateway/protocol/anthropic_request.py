"""Anthropic requests: parsing and validating a client's `/v1/messages` or `/v1/messages/count_tokens` body
into a `ChatRequest` (mapping rules: `anthropic`)."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.protocol._fields import (
    INT32_MAX,
    FieldError,
    at,
    check_members,
    opt_bool,
    opt_dict,
    opt_int,
    opt_number,
    opt_str,
    req_dict,
    req_list,
    req_obj,
    req_str,
    stop_list,
)
from gateway.protocol.canonical import (
    ChatRequest,
    ImagePart,
    Message,
    Part,
    RawPart,
    ReasoningPart,
    TextPart,
    Tool,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    join_text,
)
from gateway.protocol.reasoning import anthropic_reasoning

__all__ = ["parse_count_tokens_request", "parse_messages_request"]

_KNOWN = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "temperature",
        "top_p",
        "stop_sequences",
        "stream",
        "tools",
        "tool_choice",
        "metadata",
    }
)
_COUNT_KNOWN = frozenset({"model", "messages", "system", "tools", "tool_choice"})
#: Forwarded members (to Anthropic backends) whose types and ranges are still checked here.
_CHECKED_INTS = {"top_k": (0, INT32_MAX)}
_THINKING_INTS = {"budget_tokens": (1, INT32_MAX)}
_CHOICE_MODES = {"auto": "auto", "any": "required", "none": "none"}


def parse_messages_request(body: Any) -> ChatRequest:
    """Validate an Anthropic `/v1/messages` body into a `ChatRequest`; raises `FieldError`."""
    return _parse(body, count_tokens=False)


def parse_count_tokens_request(body: Any) -> ChatRequest:
    """Validate a `/v1/messages/count_tokens` body (no `max_tokens`, no sampling parameters)."""
    return _parse(body, count_tokens=True)


def _parse(body: Any, *, count_tokens: bool) -> ChatRequest:
    body = req_dict(body, "body")
    model = req_str(body, "model")
    max_tokens = None
    if not count_tokens:
        if body.get("max_tokens") is None:
            raise FieldError("max_tokens", "is required")
        max_tokens = opt_int(body, "max_tokens", minimum=1)
    raw_messages = req_list(body, "messages")
    messages = tuple(_parse_message(raw, f"messages[{i}]") for i, raw in enumerate(raw_messages))
    system, system_blocks = _parse_system(body.get("system"))
    tool_choice, parallel = _parse_tool_choice(body.get("tool_choice"))
    known = _COUNT_KNOWN if count_tokens else _KNOWN
    extra = {k: v for k, v in body.items() if k not in known}
    if extra:
        _check_extra(extra)
    if count_tokens:
        return ChatRequest(
            model=model,
            messages=messages,
            system=system,
            tools=_parse_tools(body.get("tools")),
            tool_choice=tool_choice,
            parallel_tool_calls=parallel,
            source="anthropic",
            extra=extra,
            system_blocks=system_blocks,
        )
    if body.get("stop_sequences") is not None and not isinstance(body["stop_sequences"], list):
        raise FieldError("stop_sequences", "must be an array of strings")
    metadata = opt_dict(body, "metadata")
    return ChatRequest(
        model=model,
        messages=messages,
        system=system,
        max_tokens=max_tokens,
        temperature=opt_number(body, "temperature", "", 0.0, 1.0),
        top_p=opt_number(body, "top_p", "", 0.0, 1.0),
        stop=stop_list(body.get("stop_sequences"), "stop_sequences", max_items=None),
        stream=bool(opt_bool(body, "stream")),
        # Anthropic streams always report usage.
        include_usage=True,
        tools=_parse_tools(body.get("tools")),
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        user=opt_str(metadata, "user_id", "metadata") if metadata else None,
        source="anthropic",
        extra=extra,
        system_blocks=system_blocks,
        reasoning=anthropic_reasoning(extra.get("thinking")),
    )


def _check_extra(extra: dict[str, Any]) -> None:
    check_members(extra, "", _CHECKED_INTS)
    thinking = extra.get("thinking")
    if thinking is not None:
        thinking = req_dict(thinking, "thinking")
        req_str(thinking, "type", "thinking")
        check_members(thinking, "thinking", _THINKING_INTS)


def _parse_system(value: Any) -> tuple[str | None, tuple[TextPart, ...] | None]:
    if value is None or isinstance(value, str):
        return value, None
    if not isinstance(value, list):
        raise FieldError("system", "must be a string or an array of text blocks")
    blocks = []
    for i, raw in enumerate(value):
        p = f"system[{i}]"
        block = req_dict(raw, p)
        if block.get("type") != "text":
            raise FieldError(at(p, "type"), "must be 'text'")
        blocks.append(TextPart(req_str(block, "text", p, empty_ok=True), opt_dict(block, "cache_control", p)))
    if not blocks:
        return None, None
    return "\n\n".join(b.text for b in blocks), tuple(blocks)


def _parse_message(raw: Any, path: str) -> Message:
    msg = req_dict(raw, path)
    role = msg.get("role")
    if role != "user" and role != "assistant":
        if role is None:
            raise FieldError(at(path, "role"), "is required")
        raise FieldError(
            at(path, "role"),
            f"must be 'user' or 'assistant', got {role!r} (system instructions go in the top-level `system`)",
        )
    content = msg.get("content")
    if isinstance(content, str):
        return Message(role, (TextPart(content),))
    cp = at(path, "content")
    if content is None:
        raise FieldError(cp, "is required")
    if not isinstance(content, list):
        raise FieldError(cp, "must be a string or an array of content blocks")
    return Message(role, tuple(_parse_block(raw, f"{cp}[{i}]", role) for i, raw in enumerate(content)))


def _parse_block(raw: Any, path: str, role: str) -> Part:
    block = req_dict(raw, path)
    kind = req_str(block, "type", path)
    if kind == "text":
        return TextPart(req_str(block, "text", path, empty_ok=True), opt_dict(block, "cache_control", path))
    if kind == "image":
        return _parse_image(block, path)
    if kind == "tool_use":
        if role != "assistant":
            raise FieldError(at(path, "type"), "tool_use blocks may only appear in assistant messages")
        call_id, name = req_str(block, "id", path), req_str(block, "name", path)
        args = block.get("input")
        if not isinstance(args, dict):
            raise FieldError(at(path, "input"), "must be an object")
        return ToolCallPart(
            call_id, name, orjson.dumps(args).decode(), opt_dict(block, "cache_control", path)
        )
    if kind == "tool_result":
        if role != "user":
            raise FieldError(at(path, "type"), "tool_result blocks may only appear in user messages")
        return _parse_tool_result(block, path)
    if kind == "thinking" and role == "assistant":
        return ReasoningPart(req_str(block, "thinking", path, empty_ok=True), block)
    if kind == "redacted_thinking" and role == "assistant":
        return ReasoningPart("", block)
    return RawPart("anthropic", block)


def _parse_image(block: dict[str, Any], path: str) -> Part:
    source = req_obj(block, "source", path)
    sp = at(path, "source")
    kind = req_str(source, "type", sp)
    cache = opt_dict(block, "cache_control", path)
    if kind == "base64":
        return ImagePart(
            data=req_str(source, "data", sp),
            media_type=req_str(source, "media_type", sp),
            cache_control=cache,
        )
    if kind == "url":
        return ImagePart(url=req_str(source, "url", sp), cache_control=cache)
    return RawPart("anthropic", block)  # a Files API reference


def _parse_tool_result(block: dict[str, Any], path: str) -> ToolResultPart:
    call_id = req_str(block, "tool_use_id", path)
    is_error = bool(opt_bool(block, "is_error", path))
    cache = opt_dict(block, "cache_control", path)
    content = block.get("content")
    if content is None or isinstance(content, str):
        return ToolResultPart(call_id, content or "", is_error, None, cache)
    cp = at(path, "content")
    if not isinstance(content, list):
        raise FieldError(cp, "must be a string or an array of content blocks")
    parts: list[Part] = []
    for i, raw in enumerate(content):
        p = f"{cp}[{i}]"
        inner = req_dict(raw, p)
        kind = req_str(inner, "type", p)
        if kind == "text":
            parts.append(
                TextPart(req_str(inner, "text", p, empty_ok=True), opt_dict(inner, "cache_control", p))
            )
        elif kind == "image":
            parts.append(_parse_image(inner, p))
        else:
            parts.append(RawPart("anthropic", inner))
    return ToolResultPart(call_id, join_text(tuple(parts), "\n"), is_error, tuple(parts), cache)


def _parse_tools(value: Any) -> tuple[Tool, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise FieldError("tools", "must be an array")
    tools = []
    for i, raw in enumerate(value):
        p = f"tools[{i}]"
        tool = req_dict(raw, p)
        kind = tool.get("type")
        if kind is not None and kind != "custom":
            if not isinstance(kind, str):
                raise FieldError(at(p, "type"), "must be a string")
            tools.append(Tool(name=req_str(tool, "name", p), raw=tool))
            continue
        tools.append(
            Tool(
                name=req_str(tool, "name", p),
                description=opt_str(tool, "description", p),
                parameters=req_obj(tool, "input_schema", p),
                strict=opt_bool(tool, "strict", p),
                cache_control=opt_dict(tool, "cache_control", p),
            )
        )
    return tuple(tools)


def _parse_tool_choice(value: Any) -> tuple[ToolChoice | None, bool | None]:
    if value is None:
        return None, None
    choice = req_dict(value, "tool_choice")
    kind = choice.get("type")
    disable = opt_bool(choice, "disable_parallel_tool_use", "tool_choice")
    parallel = None if disable is None else not disable
    if kind == "tool":
        return ToolChoice("tool", req_str(choice, "name", "tool_choice")), parallel
    mode = _CHOICE_MODES.get(kind) if isinstance(kind, str) else None
    if mode is None:
        raise FieldError("tool_choice.type", "must be 'auto', 'any', 'tool' or 'none'")
    return ToolChoice(mode), parallel  # type: ignore[arg-type]
