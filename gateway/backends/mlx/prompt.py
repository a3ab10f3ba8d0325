"""The prompt of a chat request for a local model: the conversation in the form chat templates expect
(Hugging Face's messages, with tool calls and tool results), the tools, and what `tool_choice` asks.

A request's tools are honoured or refused, never dropped: the template gets the tools (OpenAI's
function form) unless `tool_choice` is `none`; assistant tool calls and tool results stay in the
history (`{"role": "assistant", "tool_calls": [...]}` with arguments as a mapping, and
`{"role": "tool", "tool_call_id": ..., "content": ...}`), whichever protocol the client spoke
(Anthropic `tool_use` / `tool_result` blocks arrive as the same canonical parts). `required` and a
named function are honoured by prefilling the opening of a call after the generation prompt, so the
model's continuation is the call. A model whose template has no tool-call format (mlx-lm found no
tool parser for it), a provider built-in tool, or a forced function the model's format cannot prefill
are refused as `unsupported`, so failover can try another backend.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gateway.backends.upstream import UpstreamFailure
from gateway.protocol.canonical import (
    ChatRequest,
    Message,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    join_text,
)

__all__ = ["ChatPrompt", "build_chat_prompt", "template_messages", "template_tools"]

#: The module of mlx-lm's parser for the `<tool_call>{"name": ..., "arguments": ...}</tool_call>` format.
JSON_TOOLS = "mlx_lm.tool_parsers.json_tools"


@dataclass(frozen=True, slots=True)
class ChatPrompt:
    """The prompt's tokens and, when tool calls are to be parsed out of the answer, what parses them."""

    tokens: list[int]
    #: The tools in OpenAI's function form (what the template and mlx-lm's parsers take); empty when
    #: there are none or `tool_choice` is `none` (then nothing is parsed).
    tools: tuple[dict[str, Any], ...] = ()
    #: Text appended after the generation prompt (the opening of a forced call): the answer's start.
    prefill: str = ""
    #: `parallel_tool_calls: false`: only the first call of the answer is kept.
    single_call: bool = False


def template_tools(request: ChatRequest) -> tuple[dict[str, Any], ...]:
    """The request's tools in OpenAI's function form. A provider built-in tool (`Tool.raw`) is refused:
    a local model cannot run it."""
    tools = []
    for tool in request.tools:
        if tool.raw is not None:
            raise UpstreamFailure("unsupported", "local models take function tools only, not built-in tools")
        function: dict[str, Any] = {"name": tool.name}
        if tool.description is not None:
            function["description"] = tool.description
        function["parameters"] = dict(tool.parameters) or {"type": "object", "properties": {}}
        tools.append({"type": "function", "function": function})
    return tuple(tools)


def template_messages(request: ChatRequest) -> list[dict[str, Any]]:
    """The conversation as chat templates take it (Hugging Face's message form)."""
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    for message in request.messages:
        _add_message(message, messages)
    return messages


def _add_message(message: Message, out: list[dict[str, Any]]) -> None:
    if message.role == "assistant":
        calls = [_template_call(p) for p in message.content if type(p) is ToolCallPart]
        entry: dict[str, Any] = {"role": "assistant", "content": message.text}
        if calls:
            entry["tool_calls"] = calls
        out.append(entry)
        return
    # Tool results (OpenAI `tool` messages, Anthropic `tool_result` blocks in a user turn) become `tool`
    # messages, ahead of any text of the same turn.
    texts: list[TextPart] = []
    for part in message.content:
        if type(part) is ToolResultPart:
            out.append({"role": "tool", "tool_call_id": part.tool_call_id, "content": part.content})
        elif type(part) is TextPart:
            texts.append(part)
    if texts or not any(type(p) is ToolResultPart for p in message.content):
        role = "user" if message.role == "tool" else message.role
        out.append({"role": role, "content": join_text(tuple(texts), "\n\n")})


def _template_call(part: ToolCallPart) -> dict[str, Any]:
    """A call as templates expect it: arguments as a mapping (its JSON text kept when it is not one)."""
    try:
        arguments: Any = json.loads(part.arguments) if part.arguments.strip() else {}
    except ValueError:
        arguments = part.arguments
    if not isinstance(arguments, dict):
        arguments = part.arguments
    return {"type": "function", "id": part.id, "function": {"name": part.name, "arguments": arguments}}


def build_chat_prompt(tokenizer: Any, request: ChatRequest) -> ChatPrompt:
    """The prompt of a chat request (see the module docstring)."""
    messages = template_messages(request)
    choice = request.tool_choice.mode if request.tool_choice is not None else "auto"
    tools = template_tools(request) if request.tools and choice != "none" else ()
    if choice in ("required", "tool") and not tools:
        raise UpstreamFailure(
            "client_error", "tool_choice forces a tool call but no tools are given", param="tool_choice"
        )
    if tools and not tokenizer.has_tool_calling:
        raise UpstreamFailure("unsupported", "this local model's chat template has no tool-call format")
    if tools:
        tokens = list(tokenizer.apply_chat_template(messages, tools=list(tools), add_generation_prompt=True))
    else:
        tokens = list(tokenizer.apply_chat_template(messages, add_generation_prompt=True))
    prefill = _prefill(tokenizer, request, tools) if choice in ("required", "tool") else ""
    if prefill:
        tokens += tokenizer.encode(prefill, add_special_tokens=False)
    return ChatPrompt(tokens, tools, prefill, request.parallel_tool_calls is False)


def _prefill(tokenizer: Any, request: ChatRequest, tools: tuple[dict[str, Any], ...]) -> str:
    """The opening of the call that `tool_choice` forces, in the model's tool-call format."""
    start = tokenizer.tool_call_start
    choice = request.tool_choice
    assert choice is not None
    if choice.mode == "required":
        return f"{start}\n"
    name = choice.name or ""
    if name not in {t["function"]["name"] for t in tools}:
        raise UpstreamFailure(
            "client_error", f"tool_choice names {name!r}, which is not among the tools", param="tool_choice"
        )
    if getattr(tokenizer.tool_parser, "__module__", None) != JSON_TOOLS:
        raise UpstreamFailure("unsupported", "this local model's tool-call format cannot force a named tool")
    return f'{start}\n{{"name": {json.dumps(name, ensure_ascii=False)}, "arguments": '
