"""OpenAI chat requests: parsing and validating a client's `/v1/chat/completions` body into a `ChatRequest`,
and writing a `ChatRequest` as the body for an OpenAI-compatible backend (mapping rules: `openai`)."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.protocol._fields import (
    INT64_MAX,
    INT64_MIN,
    FieldError,
    at,
    check_members,
    logit_bias,
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
from gateway.protocol.reasoning import openai_effort, openai_reasoning

__all__ = ["chat_request_to_body", "parse_chat_request"]

_KNOWN = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "stream",
        "stream_options",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "seed",
        "user",
    }
)
#: Members forwarded as sent (to OpenAI-compatible backends) whose types and ranges are still checked here,
#: with OpenAI's documented bounds.
_CHECKED_INTS = {"n": (1, 128), "top_logprobs": (0, 20)}
_CHECKED_NUMBERS = {"presence_penalty": (-2.0, 2.0), "frequency_penalty": (-2.0, 2.0)}
_CHECKED_BOOLS = frozenset({"logprobs", "store"})
_CHOICES = {mode: ToolChoice(mode) for mode in ("auto", "required", "none")}
_ROLES = "'system', 'developer', 'user', 'assistant' or 'tool'"

# --- parsing client requests ---------------------------------------------------------------------------


def parse_chat_request(body: Any) -> ChatRequest:
    """Validate an OpenAI `/v1/chat/completions` body into a `ChatRequest`; raises `FieldError`."""
    body = req_dict(body, "body")
    model = req_str(body, "model")
    raw_messages = req_list(body, "messages")
    system: list[str] = []
    messages: list[Message] = []
    for i, raw in enumerate(raw_messages):
        msg = _parse_message(raw, f"messages[{i}]")
        if msg.role == "system" and not messages:
            system.append(join_text(msg.content, "\n\n"))
        else:
            messages.append(msg)

    max_tokens = opt_int(body, "max_completion_tokens", minimum=1)
    legacy_max = opt_int(body, "max_tokens", minimum=1)
    field = "max_completion_tokens"
    if max_tokens is None:
        max_tokens, field = legacy_max, "max_tokens"

    extra = {k: v for k, v in body.items() if k not in _KNOWN}
    if extra:
        _check_extra(extra)
    include_usage = False
    options = opt_dict(body, "stream_options")
    if options:
        include_usage = bool(opt_bool(options, "include_usage", "stream_options"))
        rest = {k: v for k, v in options.items() if k != "include_usage"}
        if rest:
            extra["stream_options"] = rest
    tool_choice = _parse_tool_choice(body.get("tool_choice"), extra)

    return ChatRequest(
        model=model,
        messages=tuple(messages),
        system="\n\n".join(system) if system else None,
        max_tokens=max_tokens,
        temperature=opt_number(body, "temperature", "", 0.0, 2.0),
        top_p=opt_number(body, "top_p", "", 0.0, 1.0),
        stop=stop_list(body.get("stop"), "stop", max_items=4),
        stream=bool(opt_bool(body, "stream")),
        include_usage=include_usage,
        tools=_parse_tools(body.get("tools")),
        tool_choice=tool_choice,
        parallel_tool_calls=opt_bool(body, "parallel_tool_calls"),
        seed=opt_int(body, "seed", minimum=INT64_MIN, maximum=INT64_MAX),
        user=opt_str(body, "user"),
        source="openai",
        extra=extra,
        max_tokens_field=field,
        reasoning=openai_reasoning(extra.get("reasoning_effort")),
    )


def _check_extra(extra: dict[str, Any]) -> None:
    """Check the forwarded members the gateway knows the shape of (`n`, `logit_bias`, penalties...)."""
    check_members(extra, "", _CHECKED_INTS, _CHECKED_NUMBERS, _CHECKED_BOOLS)
    bias = extra.get("logit_bias")
    if bias is not None:
        logit_bias(bias, "logit_bias")
    response_format = extra.get("response_format")
    if response_format is not None:
        req_str(req_dict(response_format, "response_format"), "type", "response_format")
    opt_str(extra, "reasoning_effort")


def _parse_message(raw: Any, path: str) -> Message:
    msg = req_dict(raw, path)
    role = msg.get("role")
    name = opt_str(msg, "name", path)
    if role == "user":
        return Message("user", _user_content(msg.get("content"), at(path, "content")), name)
    if role == "assistant":
        return Message("assistant", _assistant_content(msg, path), name)
    if role == "system" or role == "developer":
        return Message("system", _text_parts(msg.get("content"), at(path, "content")), name)
    if role == "tool":
        call_id = req_str(msg, "tool_call_id", path)
        text = join_text(_text_parts(msg.get("content"), at(path, "content")))
        return Message("tool", (ToolResultPart(call_id, text),), name)
    if role is None:
        raise FieldError(at(path, "role"), "is required")
    raise FieldError(at(path, "role"), f"must be {_ROLES}, got {role!r}")


def _text_parts(content: Any, path: str) -> tuple[TextPart, ...]:
    if isinstance(content, str):
        return (TextPart(content),)
    if content is None:
        raise FieldError(path, "is required")
    if not isinstance(content, list):
        raise FieldError(path, "must be a string or an array of text parts")
    parts = []
    for i, raw in enumerate(content):
        p = f"{path}[{i}]"
        part = req_dict(raw, p)
        if part.get("type") != "text":
            raise FieldError(at(p, "type"), "must be 'text' in this message")
        parts.append(TextPart(req_str(part, "text", p, empty_ok=True)))
    return tuple(parts)


def _user_content(content: Any, path: str) -> tuple[Part, ...]:
    if isinstance(content, str):
        return (TextPart(content),)
    if content is None:
        raise FieldError(path, "is required")
    if not isinstance(content, list):
        raise FieldError(path, "must be a string or an array of content parts")
    if not content:
        raise FieldError(path, "must not be empty")
    parts: list[Part] = []
    for i, raw in enumerate(content):
        p = f"{path}[{i}]"
        part = req_dict(raw, p)
        kind = req_str(part, "type", p)
        if kind == "text":
            parts.append(TextPart(req_str(part, "text", p, empty_ok=True)))
        elif kind == "image_url":
            parts.append(_image(part, p))
        else:
            parts.append(RawPart("openai", part))
    return tuple(parts)


def _image(part: dict[str, Any], path: str) -> ImagePart:
    image = part.get("image_url")
    p = at(path, "image_url")
    if isinstance(image, str):  # an early, still-seen shorthand
        url, detail = image, None
    else:
        image = req_obj(part, "image_url", path)
        url, detail = req_str(image, "url", p), opt_str(image, "detail", p)
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        if not comma:
            raise FieldError(at(p, "url"), "is not a valid data: URL (no comma before the data)")
        if header.endswith(";base64"):
            return ImagePart(data=data, media_type=header[:-7] or None, detail=detail)
    return ImagePart(url=url, detail=detail)


def _assistant_content(msg: dict[str, Any], path: str) -> tuple[Part, ...]:
    content = msg.get("content")
    parts: list[Part] = _thinking_blocks(msg.get("thinking_blocks"), at(path, "thinking_blocks"))
    if isinstance(content, str):
        if content or not msg.get("tool_calls"):
            parts.append(TextPart(content))
    elif isinstance(content, list):
        for i, raw in enumerate(content):
            p = f"{path}.content[{i}]"
            part = req_dict(raw, p)
            if part.get("type") == "text":
                parts.append(TextPart(req_str(part, "text", p, empty_ok=True)))
            else:
                parts.append(RawPart("openai", part))
    elif content is not None:
        raise FieldError(at(path, "content"), "must be a string, an array of content parts, or null")
    calls = msg.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list):
            raise FieldError(at(path, "tool_calls"), "must be an array")
        for i, raw in enumerate(calls):
            parts.append(_tool_call(raw, f"{path}.tool_calls[{i}]"))
    if not parts and content is None and not calls and msg.get("function_call") is None:
        raise FieldError(at(path, "content"), "is required unless the message has tool_calls")
    return tuple(parts)


def _thinking_blocks(value: Any, path: str) -> list[Part]:
    """An assistant message's `thinking_blocks`, as the gateway gave them (docs/reasoning.md): Anthropic
    thinking blocks, sent back verbatim so an Anthropic backend finds their signatures intact. The
    message's `reasoning_content` is their display copy and is not read."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise FieldError(path, "must be an array of thinking blocks")
    parts: list[Part] = []
    for i, raw in enumerate(value):
        p = f"{path}[{i}]"
        block = req_dict(raw, p)
        kind = req_str(block, "type", p)
        if kind == "thinking":
            parts.append(ReasoningPart(req_str(block, "thinking", p, empty_ok=True), block))
        elif kind == "redacted_thinking":
            req_str(block, "data", p)
            parts.append(ReasoningPart("", block))
        else:
            raise FieldError(at(p, "type"), "must be 'thinking' or 'redacted_thinking'")
    return parts


def _tool_call(raw: Any, path: str) -> Part:
    call = req_dict(raw, path)
    kind = call.get("type", "function")
    if kind != "function":
        if not isinstance(kind, str):
            raise FieldError(at(path, "type"), "must be a string")
        return RawPart("openai", call)
    call_id = req_str(call, "id", path)
    fn = req_obj(call, "function", path)
    fp = at(path, "function")
    name = req_str(fn, "name", fp)
    args = fn.get("arguments", "")
    if isinstance(args, dict):  # some clients send an object; the wire form is JSON text
        args = orjson.dumps(args).decode()
    elif not isinstance(args, str):
        raise FieldError(at(fp, "arguments"), "must be a string of JSON")
    return ToolCallPart(call_id, name, args)


def _parse_tools(value: Any) -> tuple[Tool, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise FieldError("tools", "must be an array")
    tools = []
    for i, raw in enumerate(value):
        p = f"tools[{i}]"
        tool = req_dict(raw, p)
        kind = tool.get("type", "function")
        if kind != "function":
            if not isinstance(kind, str):
                raise FieldError(at(p, "type"), "must be a string")
            inner = tool.get(kind)
            name = inner.get("name") if isinstance(inner, dict) else None
            tools.append(Tool(name=name if isinstance(name, str) else kind, raw=tool))
            continue
        fn = req_obj(tool, "function", p)
        fp = at(p, "function")
        tools.append(
            Tool(
                name=req_str(fn, "name", fp),
                description=opt_str(fn, "description", fp),
                parameters=opt_dict(fn, "parameters", fp) or {},
                strict=opt_bool(fn, "strict", fp),
            )
        )
    return tuple(tools)


def _parse_tool_choice(value: Any, extra: dict[str, Any]) -> ToolChoice | None:
    if value is None:
        return None
    if isinstance(value, str):
        choice = _CHOICES.get(value)
        if choice is None:
            raise FieldError(
                "tool_choice", "must be 'auto', 'required', 'none' or an object naming a function"
            )
        return choice
    choice_obj = req_dict(value, "tool_choice")
    kind = choice_obj.get("type")
    if kind == "function":
        fn = req_obj(choice_obj, "function", "tool_choice")
        return ToolChoice("tool", req_str(fn, "name", "tool_choice.function"))
    if not isinstance(kind, str):
        raise FieldError("tool_choice.type", "is required and must be a string")
    # allowed_tools, custom: no canonical form; OpenAI pass-through only.
    extra["tool_choice"] = choice_obj
    return None


# --- request bodies for OpenAI-compatible backends -----------------------------------------------------


def chat_request_to_body(
    req: ChatRequest, upstream_model: str, *, max_tokens_key: str | None = None
) -> dict[str, Any]:
    """The `/v1/chat/completions` body to send an OpenAI-compatible backend for `req`."""
    same = req.source == "openai"
    body: dict[str, Any] = dict(req.extra) if same and req.extra else {}
    body["model"] = upstream_model
    if not same and req.extra.get("top_k") is not None:
        # Anthropic's top_k as vLLM's (and SGLang's) top-level member. Routing sends a request with
        # top_k only to targets claiming the `top_k` capability, which OpenAI-protocol ones do only
        # when the config says so: OpenAI itself never gets it.
        body["top_k"] = req.extra["top_k"]
    messages: list[dict[str, Any]] = []
    if req.system is not None:
        messages.append({"role": "system", "content": req.system})
    for msg in req.messages:
        _encode_message(msg, messages)
    body["messages"] = messages
    if req.reasoning is not None and "reasoning_effort" not in body:
        # Another protocol's reasoning, or the Responses API's `reasoning.effort`.
        body["reasoning_effort"] = openai_effort(req.reasoning)
    if req.max_tokens is not None:
        # Reasoning models take only the newer spelling.
        translated = "max_completion_tokens" if req.reasoning is not None else "max_tokens"
        body[max_tokens_key or (req.max_tokens_field if same else translated)] = req.max_tokens
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.stop:
        body["stop"] = list(req.stop)
    if req.seed is not None:
        body["seed"] = req.seed
    if req.user is not None:
        body["user"] = req.user
    if req.stream:
        body["stream"] = True
        if req.include_usage:
            options = body.get("stream_options")
            options = dict(options) if isinstance(options, dict) else {}
            options["include_usage"] = True
            body["stream_options"] = options
    tools = [_encode_tool(t) for t in req.tools if t.raw is None or same]
    if tools:
        body["tools"] = tools
        choice = req.tool_choice
        if choice is not None:
            body["tool_choice"] = (
                {"type": "function", "function": {"name": choice.name}}
                if choice.mode == "tool"
                else choice.mode
            )
        if req.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = req.parallel_tool_calls
    return body


def _encode_tool(tool: Tool) -> Any:
    if tool.raw is not None:
        return tool.raw
    fn: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        fn["description"] = tool.description
    if tool.parameters:
        fn["parameters"] = tool.parameters
    if tool.strict is not None:
        fn["strict"] = tool.strict
    return {"type": "function", "function": fn}


def _encode_message(msg: Message, out: list[dict[str, Any]]) -> None:
    role = msg.role
    if role == "assistant":
        out.append(_encode_assistant(msg))
        return
    if role == "system":
        out.append({"role": "system", "content": join_text(msg.content, "\n\n")})
        return
    # user and tool: tool results become `tool` messages, which must directly follow the assistant turn.
    rest: list[Part] = []
    for part in msg.content:
        kind = type(part)
        if kind is ToolResultPart:
            out.append({"role": "tool", "tool_call_id": part.tool_call_id, "content": part.content})
        elif kind is TextPart or kind is ImagePart or (kind is RawPart and part.protocol == "openai"):
            rest.append(part)
    if not rest:
        return
    encoded: dict[str, Any] = {"role": "user"}
    if len(rest) == 1 and type(rest[0]) is TextPart:
        encoded["content"] = rest[0].text
    else:
        encoded["content"] = [_encode_user_part(p) for p in rest]
    if msg.name is not None:
        encoded["name"] = msg.name
    out.append(encoded)


def _encode_user_part(part: Part) -> Any:
    if type(part) is TextPart:
        return {"type": "text", "text": part.text}
    if type(part) is ImagePart:
        image: dict[str, Any] = {"url": part.as_url()}
        if part.detail is not None:
            image["detail"] = part.detail
        return {"type": "image_url", "image_url": image}
    return part.data  # an OpenAI RawPart


def _encode_assistant(msg: Message) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    raw: list[Any] = []
    for part in msg.content:
        kind = type(part)
        if kind is TextPart:
            texts.append(part.text)
        elif kind is ToolCallPart:
            calls.append(_encode_call(part))
        elif kind is RawPart and part.protocol == "openai":
            # A tool call of a non-function type (custom tools) has an id; a content part has none.
            if "id" in part.data:
                calls.append(part.data)
            else:
                raw.append(part.data)
    encoded: dict[str, Any] = {"role": "assistant"}
    if raw:
        encoded["content"] = [{"type": "text", "text": t} for t in texts] + raw
    elif texts:
        encoded["content"] = texts[0] if len(texts) == 1 else "".join(texts)
    else:
        encoded["content"] = None if calls else ""
    if calls:
        encoded["tool_calls"] = calls
    if msg.name is not None:
        encoded["name"] = msg.name
    return encoded


def _encode_call(part: ToolCallPart) -> dict[str, Any]:
    return {"id": part.id, "type": "function", "function": {"name": part.name, "arguments": part.arguments}}
