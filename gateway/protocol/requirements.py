"""What one request needs of the backend that serves it: capabilities and protocol-native fields.

Computed once per request from its canonical form (no config is read): the endpoint's capability,
`tools` (tools given, or tool calls and results in the history), `images` (an image anywhere in the
conversation), the capabilities of the fields it uses (`gateway.protocol.fields`), and the fields, content
parts and built-in tools that only a backend speaking the client's protocol can take. Failover skips a
target that lacks any of them (`gateway.routing.capabilities`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.protocol.canonical import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    ImagePart,
    RawPart,
    ReasoningPart,
    ToolCallPart,
    ToolResultPart,
)
from gateway.protocol.fields import FIELD_TABLES, INERT_VALUES, FieldRule
from gateway.protocol.reasoning import REASONING_FIELDS, reasoning_need

__all__ = ["Requirements", "requirements"]

_ENDPOINT_CAPABILITY = {
    "chat": "chat",
    "count_tokens": "chat",
    "completions": "completions",
    "embeddings": "embeddings",
}
_RESPONSE_FORMATS = {"json_object": "json_object", "json_schema": "json_schema"}
_PROTOCOL_NAMES = {"openai": "an OpenAI", "anthropic": "an Anthropic", "responses": "an OpenAI Responses API"}


@dataclass(frozen=True, slots=True)
class Requirements:
    """What a request needs: every capability, and the native fields (by name) it carries."""

    endpoint: str
    #: The client's protocol: the one a backend must speak to take the native fields.
    protocol: str
    capabilities: frozenset[str]
    #: Top-level field names, or descriptions of content parts and tools (`'input_audio' content
    #: part`), that only a backend speaking `protocol` can take; in the order met.
    native: tuple[str, ...] = ()
    #: The request field that asks for each capability a field asks for: (capability, field), so a
    #: refusal names the field.
    capability_fields: tuple[tuple[str, str], ...] = ()
    #: Parts carried from the *other* protocol, which only a backend speaking it can take (an OpenAI
    #: client's `thinking_blocks`, Anthropic's): (protocol, what), or None.
    foreign: tuple[str, str] | None = None

    def field_for(self, capability: str) -> str | None:
        """The request field that asked for `capability`, if a field did."""
        return next((f for c, f in self.capability_fields if c == capability), None)

    def describe_native(self, name: str) -> str:
        """`name` as a refusal names it: "an OpenAI field 'service_tier'"."""
        article = _PROTOCOL_NAMES.get(self.protocol, self.protocol)
        if " " in name:
            return f"{article} {name}"
        return f"'{name}' ({article} field)"


def requirements(
    endpoint: str, protocol: str, request: ChatRequest | CompletionRequest | EmbeddingRequest
) -> Requirements:
    """The capabilities and native fields `request` (of `endpoint`, from a `protocol` client) needs."""
    needs = {_ENDPOINT_CAPABILITY.get(endpoint, endpoint)}
    native: list[str] = []
    asked: list[tuple[str, str]] = []
    foreign = None
    if type(request) is ChatRequest:
        foreign = _chat_needs(request, needs, native)
    table = FIELD_TABLES.get((protocol, endpoint), {})
    if request.extra:
        _extra_needs(request.extra, table, needs, native, asked)
    if type(request) is ChatRequest and request.reasoning is not None and "reasoning" not in needs:
        # The Responses API's `reasoning`, read into the canonical form (the chat fields stay in `extra`).
        needs.add("reasoning")
        asked.append(("reasoning", REASONING_FIELDS.get(protocol, "reasoning")))
    return Requirements(endpoint, protocol, frozenset(needs), tuple(native), tuple(asked), foreign)


def _chat_needs(request: ChatRequest, needs: set[str], native: list[str]) -> tuple[str, str] | None:
    foreign = None
    for tool in request.tools:
        needs.add("tools")
        if tool.raw is not None:
            native.append(f"built-in tool '{tool.raw.get('type', tool.name)}'")
    for message in request.messages:
        for part in message.content:
            kind = type(part)
            if kind is ImagePart:
                needs.add("images")
            elif kind is ToolCallPart:
                needs.add("tools")
            elif kind is ToolResultPart:
                needs.add("tools")
                for inner in part.parts or ():
                    if type(inner) is ImagePart:
                        # OpenAI tool messages carry text only: only Anthropic backends get the image.
                        needs.add("images")
                        native.append("image in a tool result")
                    elif type(inner) is RawPart:
                        native.append(_raw_name(inner))
            elif kind is RawPart:
                native.append(_raw_name(part))
            elif kind is ReasoningPart:
                what = f"'{part.block.get('type')}' content part"
                if part.protocol == request.source:
                    native.append(what)
                elif foreign is None:
                    foreign = (part.protocol, what)
    return foreign


def _raw_name(part: RawPart) -> str:
    kind = part.data.get("type")
    if part.protocol == "openai" and "id" in part.data:
        return f"'{kind}' tool call"
    if kind == "image":
        return "image from the Files API"  # the other image sources are canonical
    return f"'{kind}' content part"


def _extra_needs(
    extra: Mapping[str, Any],
    table: Mapping[str, FieldRule],
    needs: set[str],
    native: list[str],
    asked: list[tuple[str, str]],
) -> None:
    reasoning_fields = REASONING_FIELDS.values()
    for name, value in extra.items():
        if value is None:
            continue
        if name == "response_format":  # the Responses API's `text.format` is read into it too
            kind = value.get("type") if isinstance(value, dict) else None
            if kind in _RESPONSE_FORMATS:
                needs.add(_RESPONSE_FORMATS[kind])
                asked.append((_RESPONSE_FORMATS[kind], name))
            elif kind != "text":
                native.append(name)
            continue
        rule = table.get(name)
        if name in reasoning_fields and rule is not None:
            # Mapped across protocols when the value has a faithful counterpart (gateway.protocol.reasoning).
            need = reasoning_need(name, value)
            if need == "native":
                native.append(name)
            elif need is not None:
                needs.add(need)
                asked.append((need, name))
        elif rule is None or rule.kind == "canonical":
            # Unknown, or the part of a canonical field the canonical form does not hold (an OpenAI
            # tool_choice of type allowed_tools, stream_options members beside include_usage).
            native.append(name)
        elif rule.kind == "capability":
            capability = _active_capability(name, value, rule)
            if capability is not None:
                needs.add(capability)
                asked.append((capability, name))
        elif rule.kind == "native":
            inert = INERT_VALUES.get(name)
            if inert is None or value not in inert:
                native.append(name)


def _active_capability(name: str, value: Any, rule: FieldRule) -> str | None:
    """The capability `value` of field `name` asks for, or None when it asks for nothing (n: 1)."""
    if name == "n":
        return "n" if value != 1 else None
    if name == "logprobs":
        return "logprobs" if value is not False else None
    if name == "top_logprobs":  # 0 alternatives asks for nothing (logprobs: true asks on its own)
        return "logprobs" if value != 0 else None
    if name == "logit_bias":
        return "logit_bias" if value else None
    if name in ("presence_penalty", "frequency_penalty"):
        return "penalties" if value != 0 else None
    return rule.capability
