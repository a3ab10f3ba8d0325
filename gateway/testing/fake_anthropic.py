"""A fake Anthropic Messages API server (messages, streaming, count_tokens) on loopback, with
deterministic replies and the fault injection of `Behaviour`, for tests and benchmarks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
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
    split_fragments,
    tool_arguments,
)

__all__ = ["FakeAnthropic"]

_STOP_REASONS = {"end": "end_turn", "length": "max_tokens", "stop_sequence": "stop_sequence"}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def _text(content: Any) -> str:
    """The text of a content value: a string, or the text blocks (and tool results) of a block list."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            parts.append(block.get("text", ""))
        elif block.get("type") == "tool_result":
            parts.append(_text(block.get("content")))
    return " ".join(parts)


def _tool_result(message: dict[str, Any]) -> dict[str, Any] | None:
    content = message.get("content")
    if message.get("role") != "user" or not isinstance(content, list):
        return None
    return next((b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"), None)


def _pick_tool(tools: Any, choice: Any) -> dict[str, Any] | None:
    """The tool to call: the one `tool_choice` names, else the first; None if tool_choice is "none"."""
    if not isinstance(tools, list) or (isinstance(choice, dict) and choice.get("type") == "none"):
        return None
    named = [t for t in tools if isinstance(t, dict) and t.get("name")]
    if isinstance(choice, dict) and choice.get("type") == "tool":
        for tool in named:
            if tool["name"] == choice.get("name"):
                return tool
    return named[0] if named else None


def _usage(input_tokens: int, output_tokens: int, behaviour: Behaviour) -> dict[str, Any]:
    """Anthropic's usage object. With a prompt cache, `input_tokens` counts only what was neither read
    from nor written to the cache, and the cache members say the rest, as the API does."""
    if not (behaviour.cached_tokens or behaviour.cache_creation_tokens):
        return {"input_tokens": input_tokens, "output_tokens": output_tokens}
    read, written = behaviour.prompt_cache(input_tokens)
    return {
        "input_tokens": input_tokens - read - written,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
        "cache_creation": {"ephemeral_5m_input_tokens": written, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


#: Anthropic's documented test string: a prompt containing it gets a `redacted_thinking` block.
REDACTED_TRIGGER = "ANTHROPIC_MAGIC_STRING_TRIGGER_REDACTED_THINKING_46C9A13E193C177646C7398A98432ECCCE4C1253"
_DOCS = (
    "Please consult our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
)
# One key for every fake, as Claude's signatures verify on any platform serving the model: a block one
# fake signed is accepted by another (failover), and any change to it is not.
_SIGNING_KEY = b"fake-anthropic-thinking-signatures"


def _sign(kind: bytes, content: str) -> str:
    """An opaque base64 signature over a thinking block's content (the real API's are opaque too)."""
    mac = hmac.new(_SIGNING_KEY, kind + b"\0" + content.encode(), hashlib.sha256).digest()
    return base64.b64encode(b"\x12\x40" + mac + mac).decode()


def _redacted_data(seed: str) -> str:
    """A redacted_thinking block's `data`: an opaque nonce with its signature, verifiable when sent back."""
    nonce = hashlib.sha256(seed.encode()).hexdigest()[:32]
    return base64.b64encode(nonce.encode() + b"." + _sign(b"redacted", nonce).encode()).decode()


def _redacted_valid(data: Any) -> bool:
    try:
        nonce, _, sig = base64.b64decode(data, validate=True).decode().partition(".")
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(sig, _sign(b"redacted", nonce))


def _check_thinking(body: dict[str, Any], max_tokens: int) -> int | None:
    """The thinking budget a request enables (None: thinking off), refusing what the API refuses."""
    thinking = body.get("thinking")
    if thinking is None:
        return None
    if not isinstance(thinking, dict):
        raise FakeError(400, "thinking: Input should be a valid dictionary")
    kind = thinking.get("type")
    if kind == "disabled":
        return None
    if kind == "adaptive":
        budget = max_tokens - 1
    elif kind == "enabled":
        budget = thinking.get("budget_tokens")
        if isinstance(budget, bool) or not isinstance(budget, int):
            raise FakeError(400, "thinking.enabled.budget_tokens: Field required")
        if budget < 1024:
            raise FakeError(
                400, "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
            )
        if max_tokens <= budget:
            raise FakeError(400, f"`max_tokens` must be greater than `thinking.budget_tokens`. {_DOCS}")
    else:
        raise FakeError(
            400,
            "thinking: Input tag does not match any of the expected tags: 'enabled', 'disabled', 'adaptive'",
        )
    temperature = body.get("temperature")
    if temperature is not None and temperature != 1:
        raise FakeError(400, f"`temperature` may only be set to 1 when thinking is enabled. {_DOCS}")
    if body.get("top_k") is not None:
        raise FakeError(400, f"`top_k` may not be set when thinking is enabled. {_DOCS}")
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") in ("any", "tool"):
        raise FakeError(400, "Thinking may not be enabled when tool_choice forces tool use.")
    return budget


def _check_history(messages: list[dict[str, Any]], thinking: bool) -> None:
    """As the API: thinking blocks sent back must be exactly as it wrote them (signature intact), and with
    thinking on, the assistant turn that called the tools being answered must start with its thinking."""
    for i, message in enumerate(messages):
        content = message.get("content")
        if message.get("role") != "assistant" or not isinstance(content, list):
            continue
        for j, block in enumerate(content):
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "thinking":
                text, signature = block.get("thinking"), block.get("signature")
                if (
                    not isinstance(text, str)
                    or not isinstance(signature, str)
                    or not hmac.compare_digest(signature, _sign(b"thinking", text))
                ):
                    raise FakeError(400, f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block")
            elif kind == "redacted_thinking" and not _redacted_valid(block.get("data")):
                raise FakeError(400, f"messages.{i}.content.{j}: Invalid `data` in `redacted_thinking` block")
    last = messages[-1]
    if not thinking or _tool_result(last) is None or len(messages) < 2:
        return
    i = len(messages) - 2
    content = messages[i].get("content")
    first = content[0] if isinstance(content, list) and content and isinstance(content[0], dict) else {}
    if messages[i].get("role") == "assistant" and first.get("type") not in ("thinking", "redacted_thinking"):
        raise FakeError(
            400,
            f"messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
            f"`{first.get('type')}`. When `thinking` is enabled, a final `assistant` message must start with "
            "a thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks). We "
            "recommend you include thinking blocks from previous turns. To avoid this requirement, disable "
            f"`thinking`. {_DOCS}",
        )


def _event(name: str, obj: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


class FakeAnthropic(FakeServer):
    """Fake Anthropic API. `base_url` has no /v1, as the Anthropic SDK expects."""

    provider: ClassVar[str] = "anthropic"
    request_id_header: ClassVar[str] = "request-id"
    request_id_prefix: ClassVar[str] = "req_011C"

    #: The body of the last `/v1/messages` request (for tests that check what the gateway sent).
    last_body: dict[str, Any] | None = None

    def api_routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("POST", "/v1/messages", self._messages),
            ("POST", "/v1/messages/count_tokens", self._count_tokens),
        ]

    def check_auth(self, request: web.Request, behaviour: Behaviour) -> web.Response | None:
        if behaviour.api_key is None:
            return None
        key = request.headers.get("x-api-key")
        if key is None:
            # anthropic SDK 2.x sends the API key as a bearer token; the gateway sends x-api-key.
            bearer = request.headers.get("Authorization", "")
            if not bearer.startswith("Bearer "):
                return self.error_response(401, "x-api-key header is required")
            key = bearer.removeprefix("Bearer ")
        if key != behaviour.api_key:
            return self.error_response(401, "invalid x-api-key")
        return None

    def error_response(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> web.Response:
        kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        request_id = self.new_request_id()
        body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}
        return self.make_response(body, status, request_id=request_id)

    def api_version(self, request: web.Request) -> str | None:
        """The API version the request asks for (the `anthropic-version` header)."""
        return request.headers.get("anthropic-version")

    async def _read(self, request: web.Request) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
        """Validate the parts shared by messages and count_tokens; return body, messages, prompt tokens."""
        if not self.api_version(request):
            raise FakeError(400, "anthropic-version: header is required")
        body = await self.read_json(request)
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise FakeError(400, "model: Field required")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise FakeError(400, "messages: Field required")
        tools = body.get("tools") or []
        tokens = count_tokens(_text(body.get("system")))
        tokens += sum(count_tokens(_text(m.get("content"))) for m in messages)
        tokens += TOOL_TOKENS * (len(tools) if isinstance(tools, list) else 0)
        return body, messages, tokens

    async def _count_tokens(self, request: web.Request, behaviour: Behaviour) -> web.StreamResponse:
        _, _, tokens = await self._read(request)
        return self.json_response({"input_tokens": tokens}, behaviour)

    async def _messages(self, request: web.Request, behaviour: Behaviour) -> web.StreamResponse:
        body, messages, input_tokens = await self._read(request)
        self.last_body = body
        max_tokens = body.get("max_tokens")
        if max_tokens is None:
            raise FakeError(400, "max_tokens: Field required")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise FakeError(400, "max_tokens: Input should be greater than or equal to 1")
        stops = body.get("stop_sequences") or []
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise FakeError(400, "stop_sequences: Input should be a valid list of strings")
        budget = _check_thinking(body, max_tokens)
        _check_history(messages, budget is not None)
        last = messages[-1]
        result = _tool_result(last)
        tool = None
        if result is None and last.get("role") == "user":
            tool = _pick_tool(body.get("tools"), body.get("tool_choice"))
        seed = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")

        # Thinking first (a thinking block, and a redacted one when the prompt asks for it), then the
        # answer: each block is (its full form, its content_block_start form, its deltas).
        blocks: list[tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]] = []
        thinking_tokens = 0
        if budget is not None:
            # It opens on the prompt's first words, as a model's thinking restates the question (so tests
            # can follow a marker through the thinking).
            words = [
                "Thinking",
                "about",
                *seed.split()[:3],
                *reply_words("think " + seed, behaviour.reply_tokens),
            ]
            thought = plan_text(words, min(budget, max_tokens - 1))
            thinking_tokens = thought.tokens
            signature = _sign(b"thinking", thought.text)
            blocks.append(
                (
                    {"type": "thinking", "thinking": thought.text, "signature": signature},
                    {"type": "thinking", "thinking": "", "signature": ""},
                    [{"type": "thinking_delta", "thinking": piece} for piece in thought.pieces]
                    + [{"type": "signature_delta", "signature": signature}],
                )
            )
            if REDACTED_TRIGGER in seed:
                redacted = {"type": "redacted_thinking", "data": _redacted_data(seed)}
                blocks.append((redacted, redacted, []))

        if tool is not None:
            args = tool_arguments(tool.get("input_schema"))
            fragments = split_fragments(orjson.dumps(args).decode())
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": "toolu_" + secrets.token_hex(12),
                "name": tool["name"],
            }
            start_block = {**block, "input": {}}
            block["input"] = args
            deltas = [{"type": "input_json_delta", "partial_json": f} for f in fragments]
            output_tokens, stop_reason, stop_sequence = len(fragments), "tool_use", None
        else:
            if result is not None:
                words = f"Tool result received: {_text(result.get('content'))[:20]}".split()
            else:
                words = reply_words(seed, behaviour.reply_tokens)
            plan = plan_text(words, max_tokens - thinking_tokens, stops)
            block = {"type": "text", "text": plan.text}
            start_block = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": piece} for piece in plan.pieces]
            output_tokens, stop_sequence = plan.tokens, plan.stop_sequence
            stop_reason = _STOP_REASONS[plan.finish]
        blocks.append((block, start_block, deltas))
        output_tokens += thinking_tokens

        message = {
            "id": "msg_" + secrets.token_hex(12),
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [full for full, _, _ in blocks],
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": _usage(input_tokens, output_tokens, behaviour),
        }
        if body.get("stream") is not True:
            if behaviour.no_answer:
                del message["content"]
            return self.json_response(message, behaviour)

        # As the real API: message_start carries the input counts (and output_tokens 1), message_delta
        # only the final output count; a thinking block's signature comes in a signature_delta just
        # before its content_block_stop.
        started = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
        started["usage"] = _usage(input_tokens, 1, behaviour)
        frames: list[bytes] = []
        for index, (_, start, block_deltas) in enumerate(blocks):
            frames.append(
                _event(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": start},
                )
            )
            if index == 0:
                frames.append(_event("ping", {"type": "ping"}))
            frames += [
                _event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
                for d in block_deltas
            ]
            frames.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
        head = [_event("message_start", {"type": "message_start", "message": started}), *frames[:2]]
        tokens = frames[2:-1]
        final_delta = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
        tail = [
            frames[-1],
            _event(
                "message_delta",
                {"type": "message_delta", "delta": final_delta, "usage": {"output_tokens": output_tokens}},
            ),
            _event("message_stop", {"type": "message_stop"}),
        ]
        return await self.send_sse(request, behaviour, head, tokens, tail)
