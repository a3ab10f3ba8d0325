"""Amazon Bedrock Converse API ⇄ canonical form: the request body a `bedrock` backend sends
(`POST /model/{modelId}/converse` and `/converse-stream`, the same body) and the non-streaming
answer read back. Streams are in `bedrock_stream`. Shapes follow the published API model
(botocore's `bedrock-runtime` service-2.json); Bedrock is never a client protocol.

Mapping rules:

* `system` (and system messages met mid-conversation, which Converse has nowhere else for) ⇄
  `system` text blocks; roles are only user/assistant, canonical "tool" messages become user
  messages, and consecutive messages of one role are merged (Converse wants them alternating).
* Parts: text ⇄ `text` (blank text dropped: the API refuses it), inline images ⇄ `image` (`format`
  png/jpeg/gif/webp, `source.bytes` base64), tool calls ⇄ `toolUse` (arguments JSON text ⇄ the
  `input` document; ids rewritten to the API's `[a-zA-Z0-9_.:-]`, at most 64), tool results ⇄
  `toolResult` (`status: error` for an error result; text and inline images inside).
  `cache_control` on a block, system block or tool ⇄ a `cachePoint` right after it (its `ttl`
  kept when 5m or 1h).
* `max_tokens`, `temperature` (at most 1: higher is sent as 1, as for Anthropic), `top_p`, `stop` ⇄
  `inferenceConfig` maxTokens, temperature, topP, stopSequences.
* `tools` ⇄ `toolConfig.tools[].toolSpec` (`inputSchema.json`, `strict`); `tool_choice` auto /
  required / tool ⇄ `toolChoice` auto / any / tool. `none` is honoured by sending no tools, which
  Converse allows only while the conversation holds no tool calls or results.
  `parallel_tool_calls: false` is honoured on the way back: only the answer's first tool call is kept.
* `user` ⇄ `requestMetadata.user` (tags for invocation logs; the API allows a restricted alphabet).
* `stopReason` end_turn / stop_sequence ⇄ `stop`, max_tokens / model_context_window_exceeded ⇄
  `length`, tool_use ⇄ `tool_calls`, guardrail_intervened / content_filtered ⇄ `content_filter`,
  malformed_model_output / malformed_tool_use ⇄ `error`. Converse does not say which stop sequence
  matched: it is reported only when the request gave exactly one.
* Usage (`gateway.protocol.usage.bedrock_usage`): `inputTokens` excludes the cache, as Anthropic's.
* Token counting (an Anthropic client's count_tokens) ⇄ CountTokens with the Converse input
  (`input.converse`: messages, system, tools) ⇄ `inputTokens`.

What the API cannot take raises `Untranslatable` naming the request field, before anything is sent:
an image given by URL (Converse takes bytes or S3 objects only; the gateway fetches nothing), a
content part or built-in tool of another protocol.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from gateway.protocol._maps import finish_from_bedrock, new_id
from gateway.protocol.anthropic_body import arguments_to_input
from gateway.protocol.canonical import (
    ChatRequest,
    ChatResponse,
    ImagePart,
    Message,
    Part,
    RawPart,
    TextPart,
    TokenCount,
    Tool,
    ToolCallPart,
    ToolResultPart,
    UpstreamProtocolError,
    join_text,
)
from gateway.protocol.usage import bedrock_usage

__all__ = [
    "Untranslatable",
    "converse_request_to_body",
    "count_tokens_request_to_body",
    "parse_converse_response",
    "parse_count_tokens_response",
    "stop_sequence_of",
    "tool_use_id",
]

_BAD_ID_CHARS = re.compile(r"[^a-zA-Z0-9_.:-]")
_IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif"}
_IMAGE_FORMATS["image/webp"] = "webp"
_METADATA_VALUE = re.compile(r"[a-zA-Z0-9\s:_@$#=/+,\-.]{0,256}")
_TTLS = frozenset({"5m", "1h"})


class Untranslatable(ValueError):
    """A request the Converse API cannot express: `field` names the request field, `detail` why."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


def converse_request_to_body(req: ChatRequest) -> dict[str, Any]:
    """The Converse (and ConverseStream) body for `req`; the model goes in the URL, not the body."""
    messages, hoisted = _encode_messages(req.messages)
    body: dict[str, Any] = {"messages": messages}
    system = _encode_system(req, hoisted)
    if system:
        body["system"] = system
    inference: dict[str, Any] = {}
    if req.max_tokens is not None:
        inference["maxTokens"] = req.max_tokens
    if req.temperature is not None:
        inference["temperature"] = min(req.temperature, 1.0)
    if req.top_p is not None:
        inference["topP"] = req.top_p
    if req.stop:
        inference["stopSequences"] = list(req.stop)
    if inference:
        body["inferenceConfig"] = inference
    tool_config = _encode_tool_config(req, messages)
    if tool_config is not None:
        body["toolConfig"] = tool_config
    if req.user is not None:
        if _METADATA_VALUE.fullmatch(req.user) is None:
            raise Untranslatable(
                "user",
                "Bedrock takes it as requestMetadata, whose values allow at most 256 letters, digits, "
                "spaces and :_@$#=/+,-. characters",
            )
        body["requestMetadata"] = {"user": req.user}
    return body


def count_tokens_request_to_body(req: ChatRequest) -> dict[str, Any]:
    """The CountTokens body (`POST /model/{modelId}/count-tokens`) for `req`: the Converse input it
    would send (messages, system, tools), without sampling settings or metadata."""
    messages, hoisted = _encode_messages(req.messages)
    converse: dict[str, Any] = {"messages": messages}
    system = _encode_system(req, hoisted)
    if system:
        converse["system"] = system
    tool_config = _encode_tool_config(req, messages)
    if tool_config is not None:
        converse["toolConfig"] = tool_config
    return {"input": {"converse": converse}}


def parse_count_tokens_response(body: Any) -> TokenCount:
    """Read a CountTokens answer; raises `UpstreamProtocolError` when malformed."""
    count = body.get("inputTokens") if isinstance(body, dict) else None
    if type(count) is not int or count < 0:
        raise UpstreamProtocolError(f"malformed CountTokens answer from the backend: {str(body)[:200]}")
    return TokenCount(count)


def stop_sequence_of(req: ChatRequest) -> str | None:
    """The stop sequence a `stop_sequence` stop matched: known only when the request gave one."""
    return req.stop[0] if len(req.stop) == 1 else None


def tool_use_id(call_id: str) -> str:
    """`call_id` as the API accepts a toolUseId (the same rewrite for a call and its result)."""
    if _BAD_ID_CHARS.search(call_id):
        call_id = _BAD_ID_CHARS.sub("_", call_id)
    return call_id[:64] or "call"


def _cache_point(cache_control: Any) -> dict[str, Any]:
    point: dict[str, Any] = {"type": "default"}
    ttl = cache_control.get("ttl") if isinstance(cache_control, dict) else None
    if ttl in _TTLS:
        point["ttl"] = ttl
    return {"cachePoint": point}


def _encode_system(req: ChatRequest, hoisted: list[str]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if req.system_blocks is not None:
        for part in req.system_blocks:
            if part.text and not part.text.isspace():
                blocks.append({"text": part.text})
            if part.cache_control is not None:
                blocks.append(_cache_point(part.cache_control))
    elif req.system and not req.system.isspace():
        blocks.append({"text": req.system})
    blocks.extend({"text": text} for text in hoisted if text and not text.isspace())
    return blocks


def _encode_messages(messages: tuple[Message, ...]) -> tuple[list[dict[str, Any]], list[str]]:
    out: list[dict[str, Any]] = []
    hoisted: list[str] = []
    for index, msg in enumerate(messages):
        if msg.role == "system":
            hoisted.append(join_text(msg.content, "\n\n"))
            continue
        role = "assistant" if msg.role == "assistant" else "user"
        blocks: list[dict[str, Any]] = []
        for part in msg.content:
            blocks.extend(_encode_part(part, f"messages[{index}]"))
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out, hoisted


def _encode_part(part: Part, where: str) -> list[dict[str, Any]]:
    """The blocks of one part: the block itself, then a cachePoint when it carries cache_control."""
    kind = type(part)
    if kind is TextPart:
        if not part.text or part.text.isspace():
            return [_cache_point(part.cache_control)] if part.cache_control is not None else []
        block: dict[str, Any] = {"text": part.text}
    elif kind is ImagePart:
        block = {"image": _encode_image(part, where)}
    elif kind is ToolCallPart:
        block = {
            "toolUse": {
                "toolUseId": tool_use_id(part.id),
                "name": part.name,
                "input": arguments_to_input(part.arguments),
            }
        }
    elif kind is ToolResultPart:
        block = {"toolResult": _encode_tool_result(part, where)}
    else:
        # RawPart, ReasoningPart: routing sends neither here (native to the client's protocol).
        data = part.data if isinstance(part, RawPart) else part.block  # type: ignore[union-attr]
        raise Untranslatable(where, f"a '{data.get('type')}' content part has no Converse form")
    if part.cache_control is not None:
        return [block, _cache_point(part.cache_control)]
    return [block]


def _encode_image(part: ImagePart, where: str) -> dict[str, Any]:
    if part.data is None:
        raise Untranslatable(
            where,
            "an image given by URL: Bedrock takes images only inline (base64 data) or from S3, and the "
            "gateway fetches nothing",
        )
    media_type = (part.media_type or "image/png").lower()
    image_format = _IMAGE_FORMATS.get(media_type)
    if image_format is None:
        raise Untranslatable(where, f"an image of type {media_type!r} (Bedrock takes png, jpeg, gif, webp)")
    return {"format": image_format, "source": {"bytes": part.data}}


def _encode_tool_result(part: ToolResultPart, where: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if part.parts is not None:
        for inner in part.parts:
            kind = type(inner)
            if kind is TextPart:
                content.append({"text": inner.text})
            elif kind is ImagePart:
                content.append({"image": _encode_image(inner, where)})
            else:
                raise Untranslatable(where, "a tool result part other than text or an image")
    else:
        content.append({"text": part.content})
    result: dict[str, Any] = {"toolUseId": tool_use_id(part.tool_call_id), "content": content}
    if part.is_error:
        result["status"] = "error"
    return result


def _has_tool_blocks(messages: list[dict[str, Any]]) -> bool:
    return any("toolUse" in block or "toolResult" in block for m in messages for block in m["content"])


def _encode_tool_config(req: ChatRequest, messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    choice = req.tool_choice
    if not req.tools:
        return None
    if choice is not None and choice.mode == "none":
        if _has_tool_blocks(messages):
            raise Untranslatable(
                "tool_choice",
                "'none' with tool calls in the conversation: Converse has no 'none' choice, and needs "
                "the tools declared once the conversation holds tool calls",
            )
        return None  # no tools declared: the model cannot call any
    tools: list[dict[str, Any]] = []
    for tool in req.tools:
        tools.extend(_encode_tool(tool))
    config: dict[str, Any] = {"tools": tools}
    if choice is not None:
        if choice.mode == "auto":
            config["toolChoice"] = {"auto": {}}
        elif choice.mode == "required":
            config["toolChoice"] = {"any": {}}
        else:
            config["toolChoice"] = {"tool": {"name": choice.name}}
    return config


def _encode_tool(tool: Tool) -> list[dict[str, Any]]:
    if tool.raw is not None:
        raise Untranslatable("tools", f"the built-in tool '{tool.raw.get('type', tool.name)}'")
    schema: Any = tool.parameters
    if not schema:
        schema = {"type": "object", "properties": {}}
    elif "type" not in schema:
        schema = {"type": "object", **schema}
    spec: dict[str, Any] = {"name": tool.name, "inputSchema": {"json": schema}}
    if tool.description:
        spec["description"] = tool.description
    if tool.strict is not None:
        spec["strict"] = tool.strict
    encoded = [{"toolSpec": spec}]
    if tool.cache_control is not None:
        encoded.append(_cache_point(tool.cache_control))
    return encoded


def parse_converse_response(
    body: Any,
    *,
    response_id: str | None = None,
    stop_sequence: str | None = None,
    single_tool_call: bool = False,
) -> ChatResponse:
    """Read a Converse answer; raises `UpstreamProtocolError` when malformed.

    `response_id`: the answer's id (Converse has none in the body: the request id header).
    `stop_sequence`: the request's only stop sequence (`stop_sequence_of`). `single_tool_call`: keep
    only the first tool call (`parallel_tool_calls: false`)."""
    try:
        message = body["output"]["message"]
        parts: list[Part] = []
        calls = 0
        for block in message["content"]:
            if "text" in block:
                parts.append(TextPart(block["text"]))
            elif "toolUse" in block:
                calls += 1
                if single_tool_call and calls > 1:
                    continue
                use = block["toolUse"]
                parts.append(ToolCallPart(use["toolUseId"], use["name"], _arguments(use.get("input"))))
            # reasoningContent, citationsContent, images...: no canonical form; not text of the answer.
        reason = body["stopReason"]
        return ChatResponse(
            id=response_id or new_id("msg_"),
            model="",
            content=tuple(parts),
            finish_reason=finish_from_bedrock(reason),
            usage=bedrock_usage(body.get("usage")),
            stop_sequence=stop_sequence if reason == "stop_sequence" else None,
        )
    except (KeyError, TypeError, AttributeError) as e:
        raise UpstreamProtocolError(
            f"malformed Converse answer from the backend ({type(e).__name__}: {e})"
        ) from e


def _arguments(value: Any) -> str:
    return orjson.dumps(value if value is not None else {}).decode()
