"""A fake OpenAI API server (chat completions, the Responses API, legacy completions, embeddings, models)
on loopback,
with deterministic replies and the fault injection of `Behaviour`, for tests and benchmarks.

`FakeOpenAI(vendor="groq")` plays an OpenAI-compatible vendor instead (`gateway.testing.vendors`): its
path prefix, its key (or none, for a local server), the fields it refuses with a 400 or ignores, the
endpoints it lacks.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import secrets
import struct
import time
from typing import Any, ClassVar

import orjson
from aiohttp import web

from gateway.testing.behaviour import (
    TOOL_TOKENS,
    Behaviour,
    FakeError,
    FakeServer,
    Handler,
    TextPlan,
    count_tokens,
    plan_text,
    reply_words,
    split_fragments,
    tool_arguments,
)
from gateway.testing.vendors import VENDORS, Vendor

__all__ = ["FakeOpenAI"]

MODELS = (
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1-mini",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "text-embedding-semantic",
)
_FINISH = {"end": "stop", "stop_sequence": "stop", "length": "length"}
_ERROR_TYPES = {429: "requests", 401: "invalid_request_error", 403: "invalid_request_error"}
_ERROR_CODES = {429: "rate_limit_exceeded", 401: "invalid_api_key"}


def _text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _item_text(item: dict[str, Any]) -> str:
    """The text of a Responses input item: a message's content, a function call output's output."""
    if item.get("type") == "function_call_output":
        output = item.get("output")
        if isinstance(output, str):
            return output
        return " ".join(p.get("text", "") for p in output or [] if isinstance(p, dict))
    content = item.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p.get("text", "")
            for p in content
            if isinstance(p, dict) and p.get("type") in ("input_text", "output_text")
        )
    return ""


def _stops(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return stop
    raise FakeError(400, "Invalid type for 'stop': expected a string or an array of strings.", param="stop")


def _max_tokens(body: dict[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise FakeError(400, f"Invalid '{name}': integer below minimum value 1.", param=name)
        return value
    return None


#: Tokens a reasoning model spends thinking, by `reasoning_effort` (hidden; reported in usage only).
REASONING_TOKENS = {"none": 0, "minimal": 8, "low": 16, "medium": 32, "high": 64, "xhigh": 128}


def _reasoning_tokens(body: dict[str, Any], max_tokens: int | None) -> int:
    """What a reasoning model thinks for this request's `reasoning_effort`, refusing what OpenAI does."""
    effort = body.get("reasoning_effort")
    if effort is None:
        return 0
    if effort not in REASONING_TOKENS:
        raise FakeError(
            400,
            f"Invalid value: {effort!r}. Supported values are: {', '.join(map(repr, REASONING_TOKENS))}.",
            param="reasoning_effort",
            code="invalid_value",
        )
    if "max_tokens" in body:
        raise FakeError(
            400,
            "Unsupported parameter: 'max_tokens' is not supported with this model. Use "
            "'max_completion_tokens' instead.",
            param="max_tokens",
            code="unsupported_parameter",
        )
    tokens = REASONING_TOKENS[effort]
    return tokens if max_tokens is None else min(tokens, max_tokens - 1)


def _usage(
    prompt_tokens: int, completion_tokens: int, behaviour: Behaviour, reasoning_tokens: int = 0
) -> dict[str, Any]:
    """OpenAI's usage object. With a prompt cache, the details members OpenAI sends: cached tokens are
    part of `prompt_tokens`; reasoning tokens are part of `completion_tokens`."""
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if reasoning_tokens:
        usage["completion_tokens_details"] = {
            "reasoning_tokens": reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        }
    if behaviour.cached_tokens or behaviour.cache_creation_tokens:
        cached, _ = behaviour.prompt_cache(prompt_tokens)
        usage["prompt_tokens_details"] = {"cached_tokens": cached, "audio_tokens": 0}
        usage["completion_tokens_details"] = {
            "reasoning_tokens": reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        }
    return usage


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _pick_tool(tools: Any, choice: Any) -> dict[str, Any] | None:
    """The function tool to call: the one `tool_choice` names, else the first; None if choice is "none"."""
    if not isinstance(tools, list) or choice == "none":
        return None
    functions = [t["function"] for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        for fn in functions:
            if fn.get("name") == wanted:
                return fn
    return functions[0] if functions else None


def embedding(key: bytes, dims: int) -> list[float]:
    """A unit-length vector derived from a hash of `key`, with float32-exact components."""
    raw = struct.unpack(f"<{dims}I", hashlib.shake_256(key).digest(4 * dims))
    vec = [x / 2147483647.5 - 1.0 for x in raw]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    # Round-trip through float32 so the float and base64 encodings carry the same numbers.
    return list(struct.unpack(f"<{dims}f", struct.pack(f"<{dims}f", *(v / norm for v in vec))))


#: The model whose vectors carry meaning (a bag of word stems): paraphrases are close, unrelated texts
#: nearly orthogonal. Every other model's vectors are a hash of the whole input.
SEMANTIC_EMBEDDING_MODEL = "text-embedding-semantic"
_SEMANTIC_DIMS = 256
_WORD = re.compile(r"[a-z0-9]+")
_STOP_TEXT = (
    "a an the of to in on at for and or is are was were be do does did what whats which who how "
    "me my i you your it its this that s please tell"
)
_STOP_WORDS = frozenset(_STOP_TEXT.split())
_SUFFIXES = ("ing", "ies", "es", "ed", "ly", "s")


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def semantic_embedding(text: str, dims: int = _SEMANTIC_DIMS) -> list[float]:
    """A unit-length bag of word stems hashed into `dims` buckets (lower case, no punctuation, a few
    stop words dropped), float32-exact: "What is the capital of France?" and "what's the capital city
    of France" are about 0.8 apart by cosine, unrelated texts near 0."""
    vec = [0.0] * dims
    for word in _WORD.findall(text.lower().replace("'", "")):
        if word in _STOP_WORDS:
            continue
        digest = hashlib.blake2b(_stem(word).encode(), digest_size=8).digest()
        bucket = int.from_bytes(digest[:4], "little") % dims
        vec[bucket] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vec))
    if norm == 0.0:  # nothing but stop words: a fixed direction of its own
        return embedding(text.encode(), dims)
    return list(struct.unpack(f"<{dims}f", struct.pack(f"<{dims}f", *(v / norm for v in vec))))


class FakeOpenAI(FakeServer):
    """Fake OpenAI API. `base_url` ends in /v1, as the OpenAI SDK expects."""

    provider: ClassVar[str] = "openai"
    request_id_header: ClassVar[str] = "x-request-id"

    def __init__(
        self,
        behaviour: Behaviour | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        vendor: str | None = None,
    ) -> None:
        super().__init__(behaviour, host=host, port=port)
        #: The vendor played (None: OpenAI itself), and its quirks.
        self.vendor = vendor
        self.quirks: Vendor = VENDORS[vendor] if vendor else Vendor()
        #: The last chat request's body and Authorization header (None when it had none).
        self.last_body: dict[str, Any] | None = None
        self.last_authorization: str | None = None
        #: Fields the vendor ignored, in the order seen (a vendor that `ignores` them drops them silently).
        self.ignored: list[str] = []

    @property
    def base_url(self) -> str:
        return self.url + self.quirks.prefix

    def api_routes(self) -> list[tuple[str, str, Handler]]:
        prefix = self.quirks.prefix
        routes: list[tuple[str, str, Handler]] = [
            ("POST", "/chat/completions", self._chat),
            ("POST", "/responses", self._responses),
            ("POST", "/completions", self._completions),
            ("POST", "/embeddings", self._embeddings),
            ("GET", "/models", self._models),
            ("GET", "/models/{model}", self._model),
        ]
        lacks = {f"/{endpoint}" for endpoint in self.quirks.lacks}
        return [(method, prefix + path, handler) for method, path, handler in routes if path not in lacks]

    def check_auth(self, request: web.Request, behaviour: Behaviour) -> web.Response | None:
        if request.path.endswith(("/chat/completions", "/responses")):
            self.last_authorization = request.headers.get("Authorization")
        if behaviour.api_key is None or not self.quirks.needs_key:
            return None
        header = request.headers.get("Authorization", "")
        if not header:
            return self.error_response(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization header.",
            )
        if header != f"Bearer {behaviour.api_key}":
            return self.error_response(401, "Incorrect API key provided.", code="invalid_api_key")
        return None

    def error_response(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> web.Response:
        kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        error = {"message": message, "type": kind, "param": param, "code": code or _ERROR_CODES.get(status)}
        return self.make_response({"error": error}, status)

    # -- chat completions

    def _vendor_checks(self, body: dict[str, Any]) -> None:
        """The vendor's refusals (a 400 naming the field) and the fields it ignores."""
        for name, refuses in self.quirks.refuses.items():
            message = refuses(body)
            if message is not None:
                raise FakeError(400, message, param=name)
        self.ignored.extend(name for name in sorted(self.quirks.ignores) if name in body)

    async def _chat(self, request: web.Request, behaviour: Behaviour) -> web.StreamResponse:
        body = await self.read_json(request)
        self.last_body = body
        self._vendor_checks(body)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise FakeError(400, "you must provide a model parameter")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise FakeError(
                400,
                "Missing required parameter: 'messages'.",
                param="messages",
                code="missing_required_parameter",
            )
        max_tokens, stops = _max_tokens(body), _stops(body)
        reasoning = _reasoning_tokens(body, max_tokens)
        if max_tokens is not None:
            max_tokens -= reasoning  # reasoning counts in max_completion_tokens
        tools = body.get("tools") or []
        prompt_tokens = sum(count_tokens(_text(m.get("content"))) for m in messages)
        prompt_tokens += TOOL_TOKENS * (len(tools) if isinstance(tools, list) else 0)
        last = messages[-1]
        tool = _pick_tool(tools, body.get("tool_choice")) if last.get("role") == "user" else None

        plan: TextPlan | None = None
        call: dict[str, Any] | None = None
        fragments: list[str] = []
        if tool is not None:
            arguments = orjson.dumps(tool_arguments(tool.get("parameters"))).decode()
            call = {"id": "call_" + secrets.token_hex(12), "type": "function"}
            call["function"] = {"name": tool.get("name", ""), "arguments": arguments}
            fragments = split_fragments(arguments)
            completion_tokens, finish = len(fragments), "tool_calls"
        else:
            if last.get("role") == "tool":
                words = f"Tool result received: {_text(last.get('content'))[:20]}".split()
            else:
                seed = next(
                    (_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
                )
                words = reply_words(seed, behaviour.reply_tokens)
            plan = plan_text(words, max_tokens, stops)
            completion_tokens, finish = plan.tokens, _FINISH[plan.finish]
        usage = _usage(prompt_tokens, completion_tokens + reasoning, behaviour, reasoning)
        cid, created = "chatcmpl-" + secrets.token_hex(12), int(time.time())

        if body.get("stream") is not True:
            message: dict[str, Any] = {"role": "assistant", "content": plan.text if plan else None}
            if call is not None:
                message["tool_calls"] = [call]
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            obj = {"id": cid, "object": "chat.completion", "created": created, "model": model}
            obj.update(choices=[] if behaviour.no_answer else [choice], usage=usage)
            return self.json_response(obj, behaviour)

        include_usage = _include_usage(body)
        prefix = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            obj = {
                **prefix,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if include_usage:
                obj["usage"] = None  # as OpenAI does: null on every chunk but the last
            return b"data: " + orjson.dumps(obj) + b"\n\n"

        if call is not None:
            first = {**call, "index": 0, "function": {"name": call["function"]["name"], "arguments": ""}}
            head = [chunk({"role": "assistant", "content": None, "tool_calls": [first]})]
            tokens = [chunk({"tool_calls": [{"index": 0, "function": {"arguments": f}}]}) for f in fragments]
        else:
            assert plan is not None
            head = [chunk({"role": "assistant", "content": ""})]
            tokens = [chunk({"content": piece}) for piece in plan.pieces]
        tail = [chunk({}, finish)]
        if include_usage:
            tail.append(b"data: " + orjson.dumps({**prefix, "choices": [], "usage": usage}) + b"\n\n")
        tail.append(b"data: [DONE]\n\n")
        return await self.send_sse(request, behaviour, head, tokens, tail)

    # -- the Responses API

    async def _responses(self, request: web.Request, behaviour: Behaviour) -> web.StreamResponse:
        """`POST /v1/responses`: the same deterministic answers as chat (a tool call when function
        tools are given and the last input is the user's; a tool-result reply after a
        function_call_output), as a response object or its event stream."""
        body = await self.read_json(request)
        self.last_body = body
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise FakeError(400, "Missing required parameter: 'model'.", param="model")
        raw_input = body.get("input")
        items = [{"role": "user", "content": raw_input}] if isinstance(raw_input, str) else raw_input
        if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
            raise FakeError(400, "Missing required parameter: 'input'.", param="input")
        max_tokens = body.get("max_output_tokens")
        if max_tokens is not None and (type(max_tokens) is not int or max_tokens < 16):
            raise FakeError(
                400, "Invalid 'max_output_tokens': integer below minimum value 16.", param="max_output_tokens"
            )
        instructions = body.get("instructions") if isinstance(body.get("instructions"), str) else ""
        tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"]
        prompt_tokens = count_tokens(instructions) + TOOL_TOKENS * len(tools)
        prompt_tokens += sum(count_tokens(_item_text(i)) for i in items)
        last = items[-1]
        calling = last.get("type", "message") == "message" and last.get("role") == "user"
        choice = body.get("tool_choice")
        tool = _pick_tool([{"function": t} for t in tools], choice) if calling else None
        output: list[dict[str, Any]] = []
        pieces: list[str] = []
        fragments: list[str] = []
        if tool is not None:
            arguments = orjson.dumps(tool_arguments(tool.get("parameters"))).decode()
            fragments = split_fragments(arguments)
            call = {"id": "fc_" + secrets.token_hex(12), "type": "function_call", "status": "completed"}
            call.update(
                arguments=arguments, call_id="call_" + secrets.token_hex(12), name=tool.get("name", "")
            )
            output.append(call)
            completion_tokens, status = len(fragments), "completed"
        else:
            if last.get("type") == "function_call_output":
                words = f"Tool result received: {_item_text(last)[:20]}".split()
            else:
                seed = next((_item_text(i) for i in reversed(items) if i.get("role") == "user"), "")
                words = reply_words(seed, behaviour.reply_tokens)
            plan = plan_text(words, max_tokens)
            pieces = plan.pieces
            completion_tokens = plan.tokens
            status = "incomplete" if plan.finish == "length" else "completed"
            text = {"type": "output_text", "annotations": [], "logprobs": [], "text": plan.text}
            output.append(
                {
                    "id": "msg_" + secrets.token_hex(12),
                    "type": "message",
                    "status": status,
                    "role": "assistant",
                    "content": [text],
                }
            )
        cached, _ = behaviour.prompt_cache(prompt_tokens)
        usage = {
            "input_tokens": prompt_tokens,
            "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt_tokens + completion_tokens,
        }
        response: dict[str, Any] = {
            "id": "resp_" + secrets.token_hex(24),
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": max_tokens,
            "model": model,
            "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": choice or "auto",
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": usage,
            "user": None,
            "metadata": body.get("metadata") or {},
        }
        if body.get("stream") is not True:
            return self.json_response(response, behaviour)
        return await self._responses_stream(request, behaviour, response, pieces, fragments)

    async def _responses_stream(
        self,
        request: web.Request,
        behaviour: Behaviour,
        response: dict[str, Any],
        pieces: list[str],
        fragments: list[str],
    ) -> web.StreamResponse:
        sequence = 0

        def event(kind: str, **members: Any) -> bytes:
            nonlocal sequence
            obj = {"type": kind, **members, "sequence_number": sequence}
            sequence += 1
            return f"event: {kind}\n".encode() + b"data: " + orjson.dumps(obj) + b"\n\n"

        start = {**response, "status": "in_progress", "output": [], "usage": None, "incomplete_details": None}
        head = [event("response.created", response=start), event("response.in_progress", response=start)]
        item = response["output"][0]
        where = {"item_id": item["id"], "output_index": 0}
        if item["type"] == "function_call":
            head.append(
                event(
                    "response.output_item.added",
                    output_index=0,
                    item={**item, "arguments": "", "status": "in_progress"},
                )
            )
            tokens = [event("response.function_call_arguments.delta", **where, delta=f) for f in fragments]
            tail = [event("response.function_call_arguments.done", **where, arguments=item["arguments"])]
        else:
            part = item["content"][0]
            head.append(
                event(
                    "response.output_item.added",
                    output_index=0,
                    item={**item, "content": [], "status": "in_progress"},
                )
            )
            head.append(
                event("response.content_part.added", **where, content_index=0, part={**part, "text": ""})
            )
            tokens = [
                event("response.output_text.delta", **where, content_index=0, delta=p, logprobs=[])
                for p in pieces
            ]
            tail = [
                event("response.output_text.done", **where, content_index=0, text=part["text"], logprobs=[]),
                event("response.content_part.done", **where, content_index=0, part=part),
            ]
        tail.append(event("response.output_item.done", output_index=0, item=item))
        final = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        tail.append(event(final, response=response))
        return await self.send_sse(request, behaviour, head, tokens, tail)

    # -- legacy completions

    async def _completions(self, request: web.Request, behaviour: Behaviour) -> web.StreamResponse:
        body = await self.read_json(request)
        model, prompt = body.get("model"), body.get("prompt")
        if not isinstance(model, str) or not model:
            raise FakeError(400, "you must provide a model parameter")
        if isinstance(prompt, str):
            prompts: list[Any] = [prompt]
        elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            prompts = [prompt]  # one prompt given as token ids
        elif isinstance(prompt, list) and prompt:
            prompts = prompt
        else:
            raise FakeError(400, "Missing required parameter: 'prompt'.", param="prompt")
        prompt_tokens = sum(count_tokens(p) if isinstance(p, str) else len(p) for p in prompts)
        seed = prompts[0] if isinstance(prompts[0], str) else str(prompts[0])
        plan = plan_text(reply_words(seed, behaviour.reply_tokens), _max_tokens(body), _stops(body))
        finish = _FINISH[plan.finish]
        usage = _usage(prompt_tokens, plan.tokens, behaviour)
        prefix = {
            "id": "cmpl-" + secrets.token_hex(12),
            "object": "text_completion",
            "created": int(time.time()),
        }
        prefix["model"] = model

        def choice(text: str, finish_reason: str | None) -> dict[str, Any]:
            return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}

        if body.get("stream") is not True:
            return self.json_response(
                {**prefix, "choices": [choice(plan.text, finish)], "usage": usage}, behaviour
            )

        include_usage = _include_usage(body)

        def chunk(text: str, finish_reason: str | None = None) -> bytes:
            obj = {**prefix, "choices": [choice(text, finish_reason)]}
            if include_usage:
                obj["usage"] = None
            return b"data: " + orjson.dumps(obj) + b"\n\n"

        tail = [chunk("", finish)]
        if include_usage:
            tail.append(b"data: " + orjson.dumps({**prefix, "choices": [], "usage": usage}) + b"\n\n")
        tail.append(b"data: [DONE]\n\n")
        return await self.send_sse(request, behaviour, [], [chunk(p) for p in plan.pieces], tail)

    # -- embeddings and models

    async def _embeddings(self, request: web.Request, behaviour: Behaviour) -> web.StreamResponse:
        body = await self.read_json(request)
        model, raw = body.get("model"), body.get("input")
        if not isinstance(model, str) or not model:
            raise FakeError(400, "you must provide a model parameter")
        if isinstance(raw, str) or (isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw)):
            inputs: list[Any] = [raw]
        elif isinstance(raw, list) and raw and all(isinstance(i, str | list) for i in raw):
            inputs = raw
        else:
            raise FakeError(400, "'input' must be a non-empty string or array.", param="input")
        semantic = model == SEMANTIC_EMBEDDING_MODEL
        dims = body.get("dimensions", _SEMANTIC_DIMS if semantic else 16)
        if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= 8192:
            raise FakeError(400, "'dimensions' must be an integer between 1 and 8192.", param="dimensions")
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise FakeError(400, "'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
        data = []
        for i, item in enumerate(inputs):
            if semantic and isinstance(item, str):
                vec = semantic_embedding(item, dims)
            else:
                vec = embedding(item.encode() if isinstance(item, str) else orjson.dumps(item), dims)
            value: Any = vec if fmt == "float" else base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
            data.append({"object": "embedding", "index": i, "embedding": value})
        tokens = sum(count_tokens(i) if isinstance(i, str) else len(i) for i in inputs)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return self.json_response({"object": "list", "data": data, "model": model, "usage": usage}, behaviour)

    @staticmethod
    def _model_obj(model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": 1700000000, "owned_by": "openai"}

    async def _models(self, request: web.Request, behaviour: Behaviour) -> web.StreamResponse:
        return self.json_response({"object": "list", "data": [self._model_obj(m) for m in MODELS]}, behaviour)

    async def _model(self, request: web.Request, behaviour: Behaviour) -> web.StreamResponse:
        return self.json_response(self._model_obj(request.match_info["model"]), behaviour)
