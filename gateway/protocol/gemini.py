"""Gemini API (Google AI Studio, `generativelanguage.googleapis.com`) request bodies from the canonical
form: `models/{model}:generateContent` (and `:streamGenerateContent`) and `:batchEmbedContents`. Gemini
is a backend protocol only: no client speaks it, so every request reaches it translated. The answers are
read in `gemini_response`.

Mapping rules (field names are the API's camelCase):

* `ChatRequest.system`, and role "system" messages found mid-conversation (OpenAI allows them), go to
  `systemInstruction` (one text part each), since Gemini has nowhere else to put them.
* Roles: user ⇄ `user`, assistant ⇄ `model`; canonical "tool" messages (tool results) are `user`
  contents. Consecutive messages that map to the same role are merged into one content.
* Text ⇄ `text` parts; inline images (base64, `data:` URLs) ⇄ `inlineData` {`mimeType`, `data`}. An
  image given by an http(s) URL is refused: the API reads only inline bytes or its own uploaded files.
* `ToolCallPart` ⇄ a `functionCall` part {`id`, `name`, `args`} (arguments that are not a JSON object go
  out as `{"_raw_arguments": text}`, as `args` must be an object); `ToolResultPart` ⇄ a
  `functionResponse` part {`id`, `name`, `response`: {"output": text} or {"error": text}}; its `name` is
  the called function's, found in the conversation by the call's id (a result whose call is not in the
  conversation is refused).
* Tools ⇄ `tools[0].functionDeclarations` {`name`, `description`, `parametersJsonSchema`}; `tool_choice`
  `auto`/`required`/`none`/`tool` ⇄ `toolConfig.functionCallingConfig.mode` `AUTO`/`ANY`/`NONE`/`ANY`
  with `allowedFunctionNames`. `parallel_tool_calls: false` is refused (Gemini has no such switch).
* `generationConfig`: `max_tokens` ⇄ `maxOutputTokens`, `temperature`, `top_p` ⇄ `topP`, `stop` ⇄
  `stopSequences`, `seed`; from the capability fields, `response_format` json_object ⇄ `responseMimeType`
  application/json (json_schema adds `responseJsonSchema`), `presence_penalty`/`frequency_penalty` ⇄
  `presencePenalty`/`frequencyPenalty` and an Anthropic client's `top_k` ⇄ `topK`. Routing sends a
  request using a capability field only to targets that claim it (`gateway.config.capabilities`).
* Not sent, as Gemini has no equivalent (docs/gemini.md says so): the end-user id (`user`), a
  message's `name`, a tool's `strict`. Native fields never get here (routing skips this backend).
* Token counting (Anthropic `count_tokens`): `:countTokens` with the whole `generateContentRequest`
  (its model named inside, as the API wants), so system instructions and tools are counted too.
* Embeddings: one `requests[]` entry per input {`model`, `content`: {`parts`: [{`text`}]},
  `outputDimensionality`}; token-id inputs are refused (the API takes text).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import quote

import orjson

from gateway.protocol.canonical import (
    ChatRequest,
    EmbeddingRequest,
    ImagePart,
    Part,
    TextPart,
    Tool,
    ToolCallPart,
    ToolResultPart,
    join_text,
)

__all__ = [
    "GeminiRefusal",
    "chat_request_to_body",
    "count_tokens_body",
    "embedding_request_to_body",
    "model_path",
]

_ROLES = {"user": "user", "tool": "user", "assistant": "model"}
_MODES = {"auto": "AUTO", "required": "ANY", "none": "NONE", "tool": "ANY"}


class GeminiRefusal(ValueError):
    """A request the Gemini API cannot take as asked; `field` names the request member at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def model_path(model: str) -> str:
    """The resource name of `model` in a URL path: `models/{model}`, unless it names its collection
    already (`models/...`, `tunedModels/...`)."""
    name = model if "/" in model else f"models/{model}"
    return quote(name, safe="/-._~")


def chat_request_to_body(req: ChatRequest) -> dict[str, Any]:
    """The `generateContent` body for `req` (the model is in the URL); raises `GeminiRefusal`."""
    body: dict[str, Any] = {}
    system: list[dict[str, Any]] = []
    if req.system:
        system.append({"text": req.system})
    names = {p.id: p.name for m in req.messages for p in m.content if type(p) is ToolCallPart}
    contents: list[dict[str, Any]] = []
    for i, msg in enumerate(req.messages):
        if msg.role == "system":
            system.append({"text": join_text(msg.content, "\n\n")})
            continue
        parts = [
            _encode_part(part, f"messages[{i}].content[{j}]", names) for j, part in enumerate(msg.content)
        ]
        parts = [p for p in parts if p is not None]
        if not parts:
            continue
        role = _ROLES[msg.role]
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    body["contents"] = contents
    if system:
        body["systemInstruction"] = {"parts": system}
    if req.tools:
        body["tools"] = [{"functionDeclarations": [_declaration(tool) for tool in req.tools]}]
        if req.tool_choice is not None:
            config: dict[str, Any] = {"mode": _MODES[req.tool_choice.mode]}
            if req.tool_choice.mode == "tool":
                config["allowedFunctionNames"] = [req.tool_choice.name]
            body["toolConfig"] = {"functionCallingConfig": config}
        if req.parallel_tool_calls is False:
            raise GeminiRefusal(
                "parallel_tool_calls", "the Gemini API cannot be told to make one tool call at a time"
            )
    generation = _generation_config(req)
    if generation:
        body["generationConfig"] = generation
    return body


def _generation_config(req: ChatRequest) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if req.max_tokens is not None:
        config["maxOutputTokens"] = req.max_tokens
    if req.temperature is not None:
        config["temperature"] = req.temperature
    if req.top_p is not None:
        config["topP"] = req.top_p
    if req.stop:
        config["stopSequences"] = list(req.stop)
    if req.seed is not None:
        config["seed"] = req.seed
    extra = req.extra
    if req.source == "anthropic" and extra.get("top_k") is not None:
        config["topK"] = extra["top_k"]
    if req.source == "openai":
        for name, key in (("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty")):
            if extra.get(name) is not None:
                config[key] = extra[name]
        _response_format(extra.get("response_format"), config)
    return config


def _response_format(value: Any, config: dict[str, Any]) -> None:
    if not isinstance(value, dict):
        return
    kind = value.get("type")
    if kind == "json_object":
        config["responseMimeType"] = "application/json"
    elif kind == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise GeminiRefusal("response_format.json_schema.schema", "is required (a JSON Schema object)")
        config["responseMimeType"] = "application/json"
        config["responseJsonSchema"] = schema


def _declaration(tool: Tool) -> dict[str, Any]:
    declaration: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        declaration["description"] = tool.description
    if tool.parameters:
        declaration["parametersJsonSchema"] = tool.parameters
    return declaration


def _encode_part(part: Part, path: str, names: dict[str, str]) -> dict[str, Any] | None:
    kind = type(part)
    if kind is TextPart:
        return {"text": part.text} if part.text else None
    if kind is ImagePart:
        return {"inlineData": _inline_image(part, path)}
    if kind is ToolCallPart:
        call: dict[str, Any] = {"id": part.id, "name": part.name, "args": _arguments(part.arguments)}
        return {"functionCall": call}
    if kind is ToolResultPart:
        name = names.get(part.tool_call_id)
        if name is None:
            raise GeminiRefusal(
                path,
                f"the tool result for call {part.tool_call_id!r} has no matching tool call in the "
                "conversation; the Gemini API needs the called function's name",
            )
        response = {"error": part.content} if part.is_error else {"output": part.content}
        return {"functionResponse": {"id": part.tool_call_id, "name": name, "response": response}}
    # RawParts belong to a client protocol; routing never sends them here.
    raise GeminiRefusal(path, "this content part has no Gemini form")


def _inline_image(part: ImagePart, path: str) -> dict[str, str]:
    if part.data is not None:
        return {"mimeType": part.media_type or "image/png", "data": part.data}
    url = part.url or ""
    if url.startswith("data:"):
        head, _, data = url.partition(",")
        media_type, _, encoding = head[5:].partition(";")
        if encoding == "base64" and data:
            try:
                base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                raise GeminiRefusal(path, "the image's data: URL is not valid base64") from None
            return {"mimeType": media_type or "image/png", "data": data}
        raise GeminiRefusal(path, "an image data: URL must be base64-encoded")
    raise GeminiRefusal(
        path,
        "the Gemini API takes images inline only: send the image as a base64 data: URL, not by http URL",
    )


def _arguments(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return {"_raw_arguments": text}
    return value if isinstance(value, dict) else {"_raw_arguments": text}


def count_tokens_body(req: ChatRequest, model: str) -> dict[str, Any]:
    """The `countTokens` body for `req`; raises `GeminiRefusal`."""
    name = model if "/" in model else f"models/{model}"
    return {"generateContentRequest": {"model": name, **chat_request_to_body(req)}}


def embedding_request_to_body(req: EmbeddingRequest, model: str) -> tuple[dict[str, Any], int]:
    """The `batchEmbedContents` body for `req`, and how many inputs it holds; raises `GeminiRefusal`."""
    value = req.input
    inputs: list[Any] = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(item, str) for item in inputs):
        raise GeminiRefusal("input", "the Gemini API embeds text only, not token ids")
    name = model if "/" in model else f"models/{model}"
    requests = []
    for text in inputs:
        entry: dict[str, Any] = {"model": name, "content": {"parts": [{"text": text}]}}
        if req.dimensions is not None:
            entry["outputDimensionality"] = req.dimensions
        requests.append(entry)
    return {"requests": requests}, len(requests)
