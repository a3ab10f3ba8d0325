"""OpenAI Responses API requests: a client's `POST /v1/responses` body validated into a `ChatRequest`
(mapping rules: `gateway.protocol.responses`).

The canonical request is what a translating backend (Anthropic, OpenAI-compatible chat servers, local
models) serves; an `openai` backend gets the client's body itself. Its `extra` holds what the canonical
form lacks: `response_format` (from `text.format`, in the chat API's spelling, which the structured-output
capability and every translating encoder read) and the Responses-native members (`store: true`,
`previous_response_id`, a `reasoning` with no mapping, ...), which only a backend speaking the Responses
API can take. A mapped `reasoning` is `ChatRequest.reasoning` (docs/reasoning.md).
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from gateway.protocol._fields import (
    FieldError,
    at,
    opt_bool,
    opt_dict,
    opt_int,
    opt_number,
    opt_str,
    req_dict,
    req_str,
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
)
from gateway.protocol.reasoning import responses_reasoning, thinking_text

__all__ = ["REASONING_MARKER", "parse_responses_request"]

_UNSET = object()  # never equal to a JSON value
#: How the `encrypted_content` of a reasoning item the gateway wrote begins: the provider's block as
#: base64url JSON follows (docs/reasoning.md).
REASONING_MARKER = "gw1:"

#: Members read into the canonical form (or, `metadata` and friends, ignored: they change no answer).
_READ = frozenset(
    {
        "model",
        "input",
        "instructions",
        "max_output_tokens",
        "temperature",
        "top_p",
        "stream",
        "stream_options",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "text",
        "user",
        "metadata",
        "store",
        "safety_identifier",
        "prompt_cache_key",
    }
)
#: Values of native members that ask for nothing beyond the plain request (the defaults, which
#: clients such as the Agents SDK send explicitly): dropped, so no backend is refused for them.
_INERT: dict[str, Any] = {"truncation": "disabled", "background": False, "include": []}
_CHOICES = {mode: ToolChoice(mode) for mode in ("auto", "required", "none")}
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


def parse_responses_request(body: Any) -> ChatRequest:
    """Validate an OpenAI `/v1/responses` body into a `ChatRequest`; raises `FieldError`."""
    body = req_dict(body, "body")
    model = req_str(body, "model")
    extra: dict[str, Any] = {
        k: v for k, v in body.items() if k not in _READ and v is not None and _INERT.get(k, _UNSET) != v
    }
    store = opt_bool(body, "store")
    if store:  # the provider keeps the response: only OpenAI itself can; false is what the gateway does
        extra["store"] = True
    instructions = opt_str(body, "instructions")
    messages = _parse_input(body.get("input"))
    tools = _parse_tools(body.get("tools"))
    _parse_text(body.get("text"), extra)
    reasoning, maps = responses_reasoning(body.get("reasoning"))
    if maps:  # read into `reasoning` (or asking for nothing); otherwise native, OpenAI only
        extra.pop("reasoning", None)
    options = opt_dict(body, "stream_options")
    if options:
        opt_bool(options, "include_obfuscation", "stream_options")
    return ChatRequest(
        model=model,
        messages=messages,
        system=instructions,
        max_tokens=opt_int(body, "max_output_tokens", minimum=1),
        temperature=opt_number(body, "temperature", "", 0.0, 2.0),
        top_p=opt_number(body, "top_p", "", 0.0, 1.0),
        stream=bool(opt_bool(body, "stream")),
        # The completion event carries the usage: a Responses client always gets it.
        include_usage=True,
        tools=tools,
        tool_choice=_parse_tool_choice(body.get("tool_choice"), extra),
        parallel_tool_calls=opt_bool(body, "parallel_tool_calls"),
        user=opt_str(body, "user"),
        source="openai",
        extra=extra,
        # Reasoning models take only the newer spelling (an OpenAI-compatible chat backend's).
        max_tokens_field="max_completion_tokens" if reasoning is not None else "max_tokens",
        reasoning=reasoning,
    )


# --- input ---------------------------------------------------------------------------------------------


def _parse_input(value: Any) -> tuple[Message, ...]:
    if isinstance(value, str):
        return (Message("user", (TextPart(value),)),)
    if value is None:
        raise FieldError("input", "is required")
    if not isinstance(value, list):
        raise FieldError("input", "must be a string or an array of input items")
    if not value:
        raise FieldError("input", "must not be empty")
    messages: list[Message] = []
    for i, raw in enumerate(value):
        path = f"input[{i}]"
        item = req_dict(raw, path)
        kind = item.get("type", "message")
        if kind == "message":
            message = _message(item, path)
            last = messages[-1] if messages else None
            if (
                message.role == "assistant"
                and last is not None
                and last.role == "assistant"
                and all(type(p) is ReasoningPart for p in last.content)
            ):  # the reasoning before it is of the same turn
                messages[-1] = Message("assistant", (*last.content, *message.content))
            else:
                messages.append(message)
        elif kind == "function_call":
            call = ToolCallPart(
                req_str(item, "call_id", path), req_str(item, "name", path), _arguments(item, path)
            )
            if messages and messages[-1].role == "assistant":  # parallel calls join one assistant turn
                last = messages.pop()
                messages.append(Message("assistant", (*last.content, call)))
            else:
                messages.append(Message("assistant", (call,)))
        elif kind == "function_call_output":
            result = _output(req_str(item, "call_id", path), item.get("output"), at(path, "output"))
            if messages and messages[-1].role == "tool":
                last = messages.pop()
                messages.append(Message("tool", (*last.content, result)))
            else:
                messages.append(Message("tool", (result,)))
        elif kind == "reasoning" and _is_gateway_reasoning(item):
            part = _reasoning_part(item, path)
            if messages and messages[-1].role == "assistant":  # its turn's calls follow it
                last = messages.pop()
                messages.append(Message("assistant", (*last.content, part)))
            else:
                messages.append(Message("assistant", (part,)))
        elif isinstance(kind, str):
            # OpenAI's own reasoning, item_reference, built-in tool calls and their outputs: state of the
            # Responses API, which only OpenAI itself can take (the item stays in the body it gets).
            messages.append(Message("user", (RawPart("openai", {"type": kind}),)))
        else:
            raise FieldError(at(path, "type"), "must be a string")
    return tuple(messages)


def _is_gateway_reasoning(item: dict[str, Any]) -> bool:
    data = item.get("encrypted_content")
    return isinstance(data, str) and data.startswith(REASONING_MARKER)


def _reasoning_part(item: dict[str, Any], path: str) -> ReasoningPart:
    """A reasoning item the gateway wrote (`gateway.protocol.responses`): the provider's block it carries,
    restored exactly as the provider gave it."""
    data = item["encrypted_content"][len(REASONING_MARKER) :]
    try:
        raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
        block = orjson.loads(raw)
    except (ValueError, orjson.JSONDecodeError):
        raise FieldError(at(path, "encrypted_content"), "is not a reasoning item the gateway wrote") from None
    if not isinstance(block, dict) or block.get("type") not in ("thinking", "redacted_thinking"):
        raise FieldError(at(path, "encrypted_content"), "is not a reasoning item the gateway wrote")
    return ReasoningPart(thinking_text(block), block, "anthropic")


def _message(item: dict[str, Any], path: str) -> Message:
    role = item.get("role")
    canonical = _ROLES.get(role) if isinstance(role, str) else None
    if canonical is None:
        raise FieldError(
            at(path, "role"), f"must be 'user', 'assistant', 'system' or 'developer', got {role!r}"
        )
    content = item.get("content")
    cp = at(path, "content")
    if isinstance(content, str):
        return Message(canonical, (TextPart(content),))  # type: ignore[arg-type]
    if not isinstance(content, list):
        raise FieldError(cp, "must be a string or an array of content parts")
    parts: list[Part] = []
    for j, raw in enumerate(content):
        p = f"{cp}[{j}]"
        part = req_dict(raw, p)
        kind = req_str(part, "type", p)
        if kind in ("input_text", "output_text"):
            parts.append(TextPart(req_str(part, "text", p, empty_ok=True)))
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            parts.append(_image(part["image_url"], opt_str(part, "detail", p), at(p, "image_url")))
        else:  # an image by file_id, input_file, input_audio, refusal: native
            parts.append(RawPart("openai", {"type": kind}))
    if canonical == "system" and any(type(x) is not TextPart for x in parts):
        raise FieldError(cp, "of a system or developer message must be text")
    return Message(canonical, tuple(parts))  # type: ignore[arg-type]


def _image(url: str, detail: str | None, path: str) -> ImagePart:
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        if not comma:
            raise FieldError(path, "is not a valid data: URL (no comma before the data)")
        if header.endswith(";base64"):
            return ImagePart(data=data, media_type=header[:-7] or None, detail=detail)
    return ImagePart(url=url, detail=detail)


def _arguments(item: dict[str, Any], path: str) -> str:
    args = item.get("arguments", "")
    if isinstance(args, dict):
        return orjson.dumps(args).decode()
    if not isinstance(args, str):
        raise FieldError(at(path, "arguments"), "must be a string of JSON")
    return args


def _output(call_id: str, value: Any, path: str) -> ToolResultPart:
    """A function call's output: a string, or parts; text parts are canonical, others (an image, a
    file) native, kept as markers so that only OpenAI itself, which gets the body as sent, takes them."""
    if isinstance(value, str):
        return ToolResultPart(call_id, value)
    if not isinstance(value, list):
        raise FieldError(path, "must be a string or an array of input parts")
    texts: list[str] = []
    others: list[Part] = []
    for j, raw in enumerate(value):
        p = f"{path}[{j}]"
        part = req_dict(raw, p)
        kind = req_str(part, "type", p)
        if kind == "input_text":
            texts.append(req_str(part, "text", p, empty_ok=True))
        else:
            others.append(RawPart("openai", {"type": kind}))
    text = "".join(texts)
    if not others:
        return ToolResultPart(call_id, text)
    return ToolResultPart(call_id, text, parts=(TextPart(text), *others))


# --- tools, tool_choice, text ----------------------------------------------------------------------------


def _parse_tools(value: Any) -> tuple[Tool, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise FieldError("tools", "must be an array")
    tools = []
    for i, raw in enumerate(value):
        p = f"tools[{i}]"
        tool = req_dict(raw, p)
        kind = req_str(tool, "type", p)
        if kind != "function":  # web_search, file_search, mcp, ...: OpenAI's own tools
            tools.append(Tool(name=kind, raw=tool))
            continue
        tools.append(
            Tool(
                name=req_str(tool, "name", p),
                description=opt_str(tool, "description", p),
                parameters=opt_dict(tool, "parameters", p) or {},
                strict=opt_bool(tool, "strict", p),
            )
        )
    return tuple(tools)


def _parse_tool_choice(value: Any, extra: dict[str, Any]) -> ToolChoice | None:
    if value is None:
        return None
    if isinstance(value, str):
        choice = _CHOICES.get(value)
        if choice is None:
            raise FieldError("tool_choice", "must be 'auto', 'required', 'none' or an object")
        return choice
    obj = req_dict(value, "tool_choice")
    kind = req_str(obj, "type", "tool_choice")
    if kind == "function":
        return ToolChoice("tool", req_str(obj, "name", "tool_choice"))
    extra["tool_choice"] = obj  # allowed_tools, a built-in tool, mcp, custom: OpenAI only
    return None


def _parse_text(value: Any, extra: dict[str, Any]) -> None:
    """`text.format` as the chat API's `response_format`; `text.verbosity` stays native."""
    if value is None:
        return
    text = req_dict(value, "text")
    rest = {k: v for k, v in text.items() if k != "format" and v is not None}
    if rest:
        extra["text"] = rest
    fmt = opt_dict(text, "format", "text")
    if fmt is None:
        return
    kind = req_str(fmt, "type", "text.format")
    if kind == "text":
        return
    if kind == "json_object":
        extra["response_format"] = {"type": "json_object"}
        return
    if kind != "json_schema":
        raise FieldError("text.format.type", f"must be 'text', 'json_object' or 'json_schema', got {kind!r}")
    schema: dict[str, Any] = {
        "name": req_str(fmt, "name", "text.format"),
        "schema": req_dict(fmt.get("schema"), "text.format.schema"),
    }
    description = opt_str(fmt, "description", "text.format")
    if description is not None:
        schema["description"] = description
    strict = opt_bool(fmt, "strict", "text.format")
    if strict is not None:
        schema["strict"] = strict
    extra["response_format"] = {"type": "json_schema", "json_schema": schema}
