"""A fake Gemini API server (`generateContent`, `streamGenerateContent?alt=sse`, `batchEmbedContents`,
`embedContent`) on loopback, with deterministic replies and the fault injection of `Behaviour`, for tests
and benchmarks.

Like the real API it takes the key in `x-goog-api-key` (or `?key=`), answers errors as
`{"error": {"code", "message", "status"}}`, refuses a body member it does not know (400 INVALID_ARGUMENT,
`Unknown name "..."`), and streams each SSE event as a whole `GenerateContentResponse` chunk with CRLF
line ends and no end marker.
"""

from __future__ import annotations

import secrets
from typing import Any, ClassVar

import orjson
from aiohttp import web

from gateway.testing.behaviour import (
    TOOL_TOKENS,
    Behaviour,
    FakeError,
    FakeServer,
    Handler,
    count_tokens,
    plan_text,
    reply_words,
    tool_arguments,
)
from gateway.testing.fake_openai import embedding

__all__ = ["FakeGemini"]

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_REQUEST_FIELDS = frozenset(
    {
        "contents",
        "systemInstruction",
        "tools",
        "toolConfig",
        "generationConfig",
        "safetySettings",
        "cachedContent",
    }
)
_GENERATION_FIELDS = frozenset(
    {
        "stopSequences",
        "responseMimeType",
        "responseSchema",
        "responseJsonSchema",
        "responseModalities",
        "candidateCount",
        "maxOutputTokens",
        "temperature",
        "topP",
        "topK",
        "seed",
        "presencePenalty",
        "frequencyPenalty",
        "responseLogprobs",
        "logprobs",
        "thinkingConfig",
    }
)
_PART_FIELDS = frozenset(
    {"text", "inlineData", "fileData", "functionCall", "functionResponse", "thought", "thoughtSignature"}
)
_DECLARATION_FIELDS = frozenset(
    {
        "name",
        "description",
        "parameters",
        "parametersJsonSchema",
        "response",
        "responseJsonSchema",
        "behavior",
    }
)
_DIMS = 16


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


#: Members whose value is the caller's own JSON (arguments, results, schemas): their keys stay as sent.
_FREE_FORM = frozenset(
    {"args", "response", "parameters", "parametersJsonSchema", "responseSchema", "responseJsonSchema"}
)


def _camel_keys(value: Any) -> Any:
    """`value` with every member name in lowerCamelCase: like any proto3 JSON parser, the API takes a
    field by that name or by its proto name (`max_output_tokens`), which some SDKs send."""
    if isinstance(value, list):
        return [_camel_keys(item) for item in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for name, item in value.items():
        key = _camel(name)
        out[key] = item if key in _FREE_FORM else _camel_keys(item)
    return out


def _unknown(obj: dict[str, Any], known: frozenset[str], where: str) -> None:
    for name in obj:
        if name not in known:
            raise FakeError(
                400,
                f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}': Cannot find field.",
            )


def _check_parts(parts: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(parts, list) or not parts:
        raise FakeError(400, f"{where}.parts: must not be empty")
    for i, part in enumerate(parts):
        if not isinstance(part, dict):
            raise FakeError(400, f"Invalid value at '{where}.parts[{i}]'")
        _unknown(part, _PART_FIELDS, f"{where}.parts[{i}]")
        data = part.get("inlineData")
        if data is not None and (
            not isinstance(data, dict) or not data.get("mimeType") or not data.get("data")
        ):
            raise FakeError(400, f"{where}.parts[{i}].inlineData: mimeType and data are required")
        call = part.get("functionCall")
        if call is not None and (not isinstance(call, dict) or not isinstance(call.get("args", {}), dict)):
            raise FakeError(400, f"Invalid value at '{where}.parts[{i}].function_call.args'")
        response = part.get("functionResponse")
        if response is not None and (not isinstance(response, dict) or not response.get("name")):
            raise FakeError(400, f"{where}.parts[{i}].functionResponse.name: must not be empty")
    return parts


def _text(parts: list[dict[str, Any]]) -> str:
    out = []
    for part in parts:
        if isinstance(part.get("text"), str):
            out.append(part["text"])
        elif isinstance(part.get("functionResponse"), dict):
            out.append(orjson.dumps(part["functionResponse"].get("response")).decode())
    return " ".join(out)


def _frame(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\r\n\r\n"


class FakeGemini(FakeServer):
    """Fake Gemini API; `base_url` is the host root (the gateway and the SDKs add `/v1beta/...`)."""

    provider: ClassVar[str] = "gemini"
    request_id_header: ClassVar[str] = "x-goog-request-id"

    def __init__(self, behaviour: Behaviour | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(behaviour, host=host, port=port)
        #: The last generateContent request's body (member names in camelCase).
        self.last_body: dict[str, Any] | None = None

    def api_routes(self) -> list[tuple[str, str, Handler]]:
        # The gateway calls v1beta; SDKs may call the stable v1, which takes the same bodies here.
        return [
            ("POST", "/v1beta/models/{target}", self._model_method),
            ("POST", "/v1/models/{target}", self._model_method),
        ]

    async def read_json(self, request: web.Request) -> dict[str, Any]:  # type: ignore[override]
        return _camel_keys(await FakeServer.read_json(request))

    def check_auth(self, request: web.Request, behaviour: Behaviour) -> web.Response | None:
        if behaviour.api_key is None:
            return None
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if key is None:
            return self.error_response(
                403,
                "Method doesn't allow unregistered callers (callers without "
                "established identity). Please use API Key or other form of API consumer "
                "identity to call this API.",
            )
        if key != behaviour.api_key:
            return self._error(
                400, "API key not valid. Please pass a valid API key.", reason="API_KEY_INVALID"
            )
        return None

    def error_response(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> web.Response:
        return self._error(status, message)

    def _error(self, status: int, message: str, *, reason: str | None = None) -> web.Response:
        error: dict[str, Any] = {
            "code": status,
            "message": message,
            "status": _STATUS_NAMES.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION"),
        }
        if reason is not None:
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": reason,
                    "domain": "googleapis.com",
                }
            ]
        return self.make_response({"error": error}, status)

    async def _model_method(self, request: web.Request, behaviour: Behaviour) -> web.StreamResponse:
        model, _, method = request.match_info["target"].partition(":")
        if method == "generateContent":
            return await self._generate(request, behaviour, model, stream=False)
        if method == "streamGenerateContent":
            if request.query.get("alt") != "sse":
                raise FakeError(400, "this fake streams only with ?alt=sse")
            return await self._generate(request, behaviour, model, stream=True)
        if method == "countTokens":
            body = await self.read_json(request)
            _unknown(body, frozenset({"contents", "generateContentRequest"}), "")
            inner = body.get("generateContentRequest")
            if inner is not None:
                if not isinstance(inner, dict) or inner.get("model") != f"models/{model}":
                    raise FakeError(400, "generateContentRequest.model must name the model of the URL")
                body = {k: v for k, v in inner.items() if k != "model"}
            prompt, _ = self._read_request(body)
            return self.json_response({"totalTokens": prompt}, behaviour)
        if method == "batchEmbedContents":
            return await self._batch_embed(request, behaviour, model)
        if method == "embedContent":
            body = await self.read_json(request)
            vector = self._embed_one(body, model, "")
            return self.json_response({"embedding": {"values": vector}}, behaviour)
        raise FakeError(404, f"Method not found: {method or '(none)'}")

    # -- generateContent

    async def _generate(
        self, request: web.Request, behaviour: Behaviour, model: str, *, stream: bool
    ) -> web.StreamResponse:
        body = self.last_body = await self.read_json(request)
        prompt, declarations = self._read_request(body)
        contents = body["contents"]
        config = body.get("generationConfig") or {}
        max_tokens = config.get("maxOutputTokens")
        stops = config.get("stopSequences") or []

        last = contents[-1]
        answered = any("functionResponse" in p for p in last["parts"])
        tool = None
        mode = ((body.get("toolConfig") or {}).get("functionCallingConfig") or {}).get("mode", "AUTO")
        if declarations and last["role"] == "user" and not answered and mode != "NONE":
            allowed = ((body.get("toolConfig") or {}).get("functionCallingConfig") or {}).get(
                "allowedFunctionNames"
            )
            tool = next((d for d in declarations if not allowed or d["name"] in allowed), None)

        response_id = secrets.token_urlsafe(12)
        head = {"modelVersion": model, "responseId": response_id}
        if tool is not None:
            args = tool_arguments(tool.get("parametersJsonSchema") or tool.get("parameters"))
            call = {"name": tool["name"], "args": args}
            parts_out = [{"functionCall": call}]
            output, finish, pieces = len(orjson.dumps(args).decode()) // 8 + 1, "STOP", []
        else:
            if answered:
                words = f"Tool result received: {_text(last['parts'])[:20]}".split()
            else:
                words = reply_words(_text(last["parts"]), behaviour.reply_tokens)
            if config.get("responseMimeType") == "application/json":
                words = ['{"answer":', f'"{words[0]}"}}']
            plan = plan_text(words, max_tokens, stops)
            parts_out = [{"text": plan.text}]
            output, pieces = plan.tokens, plan.pieces
            finish = "MAX_TOKENS" if plan.finish == "length" else "STOP"

        def usage(candidates: int) -> dict[str, Any]:
            meta: dict[str, Any] = {
                "promptTokenCount": prompt,
                "candidatesTokenCount": candidates,
                "totalTokenCount": prompt + candidates,
            }
            read, _ = behaviour.prompt_cache(prompt)
            if read:
                meta["cachedContentTokenCount"] = read
            return meta

        whole = {
            "candidates": [
                {"content": {"parts": parts_out, "role": "model"}, "finishReason": finish, "index": 0}
            ],
            "usageMetadata": usage(output),
            **head,
        }
        if not stream:
            if behaviour.no_answer:
                del whole["candidates"]
            return self.json_response(whole, behaviour)

        # Each event a whole response chunk: the new text only, the running usage, and the finish
        # reason on the last one.
        if tool is not None:
            return await self.send_sse(request, behaviour, [], [], [_frame(whole)])
        frames = []
        said = ""
        for piece in pieces:
            said += piece
            chunk = {
                "candidates": [{"content": {"parts": [{"text": piece}], "role": "model"}, "index": 0}],
                "usageMetadata": usage(count_tokens(said)),
                **head,
            }
            frames.append(chunk)
        if not frames:
            frames.append(
                {"candidates": [{"content": {"parts": [{"text": ""}], "role": "model"}, "index": 0}], **head}
            )
        frames[-1]["candidates"][0]["finishReason"] = finish
        frames[-1]["usageMetadata"] = usage(output)
        encoded = [_frame(f) for f in frames]
        return await self.send_sse(request, behaviour, [], encoded[:-1], encoded[-1:])

    def _read_request(self, body: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
        """Validate a GenerateContentRequest as the API does; its prompt tokens and function declarations."""
        _unknown(body, _REQUEST_FIELDS, "")
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise FakeError(400, "* GenerateContentRequest.contents: contents is not specified")
        prompt = 0
        for i, content in enumerate(contents):
            if not isinstance(content, dict) or content.get("role") not in ("user", "model"):
                raise FakeError(400, f"Please use a valid role: user, model. (contents[{i}])")
            _unknown(content, frozenset({"role", "parts"}), f"contents[{i}]")
            prompt += count_tokens(_text(_check_parts(content.get("parts"), f"contents[{i}]")))
        system = body.get("systemInstruction")
        if system is not None:
            if not isinstance(system, dict):
                raise FakeError(400, "Invalid value at 'system_instruction'")
            prompt += count_tokens(_text(_check_parts(system.get("parts"), "system_instruction")))
        config = body.get("generationConfig") or {}
        if not isinstance(config, dict):
            raise FakeError(400, "Invalid value at 'generation_config'")
        _unknown(config, _GENERATION_FIELDS, "generation_config")
        if config.get("candidateCount", 1) != 1:
            raise FakeError(400, "Only one candidate can be specified in the current model")
        max_tokens = config.get("maxOutputTokens")
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
        ):
            raise FakeError(400, "Invalid value at 'generation_config.max_output_tokens'")
        stops = config.get("stopSequences") or []
        if not isinstance(stops, list) or len(stops) > 5:
            raise FakeError(400, "generation_config.stop_sequences: at most 5 stop sequences")
        declarations = self._declarations(body.get("tools"))
        prompt += TOOL_TOKENS * len(declarations)
        return prompt, declarations

    @staticmethod
    def _declarations(tools: Any) -> list[dict[str, Any]]:
        if tools is None:
            return []
        if not isinstance(tools, list):
            raise FakeError(400, "Invalid value at 'tools'")
        out = []
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict):
                raise FakeError(400, f"Invalid value at 'tools[{i}]'")
            for j, declaration in enumerate(tool.get("functionDeclarations") or ()):
                if not isinstance(declaration, dict) or not declaration.get("name"):
                    raise FakeError(400, f"tools[{i}].function_declarations[{j}].name: must not be empty")
                _unknown(declaration, _DECLARATION_FIELDS, f"tools[{i}].function_declarations[{j}]")
                out.append(declaration)
        return out

    # -- embeddings

    def _embed_one(self, entry: Any, model: str, where: str) -> list[float]:
        if not isinstance(entry, dict):
            raise FakeError(400, f"Invalid value at '{where or 'request'}'")
        _unknown(entry, frozenset({"model", "content", "taskType", "title", "outputDimensionality"}), where)
        content = entry.get("content")
        if not isinstance(content, dict):
            raise FakeError(400, f"{where}content: is required")
        text = _text(_check_parts(content.get("parts"), f"{where}content"))
        dims = entry.get("outputDimensionality", _DIMS)
        if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= 3072:
            raise FakeError(400, "outputDimensionality must be between 1 and 3072")
        return embedding(text.encode(), dims)

    async def _batch_embed(
        self, request: web.Request, behaviour: Behaviour, model: str
    ) -> web.StreamResponse:
        body = await self.read_json(request)
        _unknown(body, frozenset({"requests"}), "")
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise FakeError(400, "* BatchEmbedContentsRequest.requests: requests is not specified")
        vectors = []
        for i, entry in enumerate(requests):
            if isinstance(entry, dict) and entry.get("model") != f"models/{model}":
                raise FakeError(
                    400,
                    f"Model {entry.get('model')!r} in requests[{i}] differs from the URL's models/{model}",
                )
            vectors.append({"values": self._embed_one(entry, model, f"requests[{i}].")})
        return self.json_response({"embeddings": vectors}, behaviour)
