"""OpenAI Responses API (`POST /v1/responses`) ⇄ canonical form: the response object and the event
stream written for Responses clients from canonical answers. Requests are parsed in
`responses_request`.

Mapping rules:

* `input` (a string: one user message; or items) ⇄ `messages`: message items (roles user, assistant,
  system, developer; `input_text`/`output_text` parts ⇄ `TextPart`, `input_image` by URL or data URL ⇄
  `ImagePart`), `function_call` items ⇄ an assistant turn's `ToolCallPart`s (`call_id` is the call's id),
  `function_call_output` items ⇄ a "tool" message's `ToolResultPart`s, `reasoning` items the gateway
  wrote (`encrypted_content` starting `REASONING_MARKER`) ⇄ an assistant turn's `ReasoningPart`s. Other
  items (OpenAI's own reasoning, item_reference, built-in tool calls) and parts (input_file, images by
  file_id) are native: only OpenAI itself, which gets the client's body, can take them.
* `instructions` ⇄ `system`; `max_output_tokens` ⇄ `max_tokens`; `temperature`, `top_p`, `user`,
  `parallel_tool_calls` one to one; function `tools` ⇄ `Tool`s (built-in tools are native);
  `tool_choice` modes and `{"type": "function", "name"}` ⇄ `ToolChoice`; `text.format` ⇄ the chat
  API's `response_format` in `extra` (json_object / json_schema: the structured-output capabilities).
* `reasoning.effort` low / medium / high ⇄ `ChatRequest.reasoning` (`gateway.protocol.reasoning`); none
  or no effort asks for nothing; `summary` is accepted (the thinking itself is returned, not a summary);
  other values are native.
* `store: false` is what the gateway does anyway (it stores nothing); `store: true`,
  `previous_response_id`, `include`, `conversation`, `background`, ... are native.
  `metadata` changes no answer: it is echoed back in the response object.
* Answers: one `reasoning` item per `ReasoningPart` (the thinking as `reasoning_text` content, `summary`
  empty, the provider's block in `encrypted_content`), one `message` output item per run of text
  (`output_text` content), one `function_call` item per tool call (arguments as JSON text). Finish
  `length` ⇄ status `incomplete` with `incomplete_details.reason` `max_output_tokens` (`content_filter`
  likewise); usage as
  `input_tokens` / `output_tokens` / `input_tokens_details.cached_tokens` /
  `output_tokens_details.reasoning_tokens` (`gateway.protocol.usage`).
* Streams: `response.created`, `response.in_progress`, then per output item `output_item.added`,
  (`content_part.added`, `output_text.delta`…, `output_text.done`, `content_part.done`) or
  (`content_part.added`, `reasoning_text.delta`…, `reasoning_text.done`, `content_part.done`) or
  (`function_call_arguments.delta`…, `function_call_arguments.done`), `output_item.done`; last
  `response.completed` (`response.incomplete` when cut by max tokens) with the usage, or
  `response.failed` when the backend fails mid-stream: nothing follows it. Every event carries its
  `sequence_number`, counted from 0.

`RESPONSES` is how the Responses surface writes canonical answers; it is bound to each request's body
(`ClientEncoding.bind`), because a response object repeats the request's settings.
"""

from __future__ import annotations

import base64
import re
import time
from typing import Any

import orjson

from gateway.protocol._maps import error_type_to_openai, new_id
from gateway.protocol.canonical import (
    ChatResponse,
    FinishReason,
    ReasoningBlock,
    ReasoningDelta,
    ReasoningPart,
    StreamEnd,
    StreamError,
    StreamEvent,
    StreamStart,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallPart,
    ToolCallStart,
    Usage,
    UsageEvent,
)
from gateway.protocol.encoding import ClientEncoding, WholeAnswer
from gateway.protocol.reasoning import thinking_text
from gateway.protocol.responses_request import REASONING_MARKER, parse_responses_request
from gateway.protocol.usage import responses_usage, usage_to_responses

__all__ = [
    "RESPONSES",
    "ResponsesStreamEncoder",
    "encode_response",
    "error_after",
    "parse_responses_request",
    "request_echo",
    "responses_usage",
    "stream_error_event",
]

_INCOMPLETE: dict[str, str] = {"length": "max_output_tokens", "content_filter": "content_filter"}


def request_echo(body: dict[str, Any]) -> dict[str, Any]:
    """The request settings a response object repeats, with OpenAI's defaults for those not sent."""

    def given(name: str, default: Any) -> Any:
        value = body.get(name)
        return default if value is None else value

    return {
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "parallel_tool_calls": given("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": _reasoning_echo(body.get("reasoning")),
        "store": False,
        "temperature": given("temperature", 1.0),
        "text": given("text", {"format": {"type": "text"}}),
        "tool_choice": given("tool_choice", "auto"),
        "tools": given("tools", []),
        "top_p": given("top_p", 1.0),
        "truncation": "disabled",
        "user": body.get("user"),
        "metadata": given("metadata", {}),
    }


def _reasoning_echo(value: Any) -> dict[str, Any]:
    given = value if isinstance(value, dict) else {}
    return {"effort": given.get("effort"), "summary": given.get("summary", given.get("generate_summary"))}


_NO_ECHO = request_echo({})


def _response(
    rid: str,
    created: int,
    model: str,
    echo: dict[str, Any],
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None,
    *,
    incomplete: str | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "model": model,
        "output": output,
        **echo,
        "usage": usage_to_responses(usage) if usage is not None else None,
    }
    return obj


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [part] if status != "in_progress" else [],
    }


def _reasoning_item(
    item_id: str, text: str, block: Any, status: str, *, has_text: bool = True
) -> dict[str, Any]:
    """A reasoning item: the thinking as `reasoning_text` content (none for a redacted block), no summary
    (the provider gives its thinking, not a summary of it), and in `encrypted_content` the provider's block,
    which the client sends back for the gateway to restore (`REASONING_MARKER`)."""
    item: dict[str, Any] = {
        "id": item_id,
        "type": "reasoning",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}] if has_text else [],
        "status": status,
    }
    if block is not None:
        data = base64.urlsafe_b64encode(orjson.dumps(block)).rstrip(b"=").decode()
        item["encrypted_content"] = REASONING_MARKER + data
    return item


def _has_text(block: Any) -> bool:
    return block.get("type") != "redacted_thinking"


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    }


def _status(finish: FinishReason | None) -> tuple[str, str | None]:
    incomplete = _INCOMPLETE.get(finish or "stop")
    return ("incomplete" if incomplete else "completed"), incomplete


def encode_response(resp: ChatResponse, model: str, echo: dict[str, Any] | None = None) -> dict[str, Any]:
    """The response object for a Responses client; `model` is the name to report, `echo` the request's
    settings (`request_echo`)."""
    status, incomplete = _status(resp.finish_reason)
    output: list[dict[str, Any]] = []
    texts: list[str] = []

    def flush() -> None:
        if texts:
            output.append(_message_item(new_id("msg_"), "".join(texts), status))
            texts.clear()

    for part in resp.content:
        kind = type(part)
        if kind is TextPart:
            texts.append(part.text)  # type: ignore[union-attr]
        elif kind is ToolCallPart:
            flush()
            output.append(_call_item(new_id("fc_"), part.id, part.name, part.arguments, "completed"))  # type: ignore[union-attr]
        elif kind is ReasoningPart:
            flush()
            block = part.block  # type: ignore[union-attr]
            output.append(
                _reasoning_item(
                    new_id("rs_"),
                    part.text,
                    block,
                    "completed",
                    has_text=_has_text(block),  # type: ignore[union-attr]
                )
            )
        # Other parts (another protocol's blocks) have no Responses item of their own.
    flush()
    return _response(
        new_id("resp_"),
        int(time.time()),
        model,
        echo or _NO_ECHO,
        status,
        output,
        resp.usage,
        incomplete=incomplete,
    )


def _sse(obj: dict[str, Any]) -> bytes:
    return b"event: " + obj["type"].encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def stream_error_event(message: str, error_type: str = "server_error", sequence_number: int = 0) -> bytes:
    """An `error` event, for a stream that fails where no encoder holds its state (pass-through); the
    OpenAI SDK yields it as a `ResponseErrorEvent`. Nothing may follow it."""
    return _sse(
        {
            "type": "error",
            "code": error_type_to_openai(error_type),
            "message": message,
            "param": None,
            "sequence_number": sequence_number,
        }
    )


_SEQUENCE = re.compile(rb'"sequence_number":\s*(\d+)')


def error_after(last: bytes, message: str, error_type: str = "server_error") -> bytes:
    """The `error` event that ends a relayed stream whose last forwarded bytes were `last`: numbered
    after the last event's `sequence_number`."""
    found = _SEQUENCE.findall(last)
    return stream_error_event(message, error_type, int(found[-1]) + 1 if found else 0)


class ResponsesStreamEncoder:
    """Writes one stream's canonical events as Responses API events (SSE with `event:` names)."""

    def __init__(self, model: str, echo: dict[str, Any] | None = None) -> None:
        self.model = model
        self.echo = echo or _NO_ECHO
        self.id = new_id("resp_")
        self.created = int(time.time())
        self.sequence = 0
        self.usage: Usage | None = None
        #: Every output item so far, in its current state.
        self.items: list[dict[str, Any]] = []
        #: The output index of the open message item, and its text so far.
        self.message: int | None = None
        self.text: list[str] = []
        #: Tool call index -> output index of its open function_call item.
        self.calls: dict[int, int] = {}
        #: The output index of the open reasoning item, its thinking so far, and whether its
        #: reasoning_text part was opened (by a delta).
        self.reasoning: int | None = None
        self.thinking: list[str] = []
        self.thinking_part = False
        self.closed = False

    def _event(self, kind: str, **members: Any) -> bytes:
        obj = {"type": kind, **members, "sequence_number": self.sequence}
        self.sequence += 1
        return _sse(obj)

    def _snapshot(self, status: str, **kw: Any) -> dict[str, Any]:
        return _response(self.id, self.created, self.model, self.echo, status, self.items, self.usage, **kw)

    def encode(self, event: StreamEvent) -> bytes:
        if self.closed:
            return b""
        kind = type(event)
        if kind is TextDelta:
            return self._text(event.text)  # type: ignore[union-attr]
        if kind is ToolCallDelta:
            index = self.calls.get(event.index)  # type: ignore[union-attr]
            if index is None or not event.arguments:  # type: ignore[union-attr]
                return b""
            item = self.items[index]
            item["arguments"] += event.arguments  # type: ignore[union-attr]
            return self._event(
                "response.function_call_arguments.delta",
                item_id=item["id"],
                output_index=index,
                delta=event.arguments,  # type: ignore[union-attr]
            )
        if kind is ReasoningDelta:
            return self._reasoning_delta(event.text)  # type: ignore[union-attr]
        if kind is ReasoningBlock:
            return self._reasoning_block(event.block)  # type: ignore[union-attr]
        if kind is ToolCallStart:
            out = self._close_message() + self._close_reasoning(None, "incomplete")
            index = len(self.items)
            item = _call_item(new_id("fc_"), event.id, event.name, "", "in_progress")  # type: ignore[union-attr]
            self.items.append(item)
            self.calls[event.index] = index  # type: ignore[union-attr]
            return out + self._event("response.output_item.added", output_index=index, item=dict(item))
        if kind is UsageEvent:
            self.usage = event.usage  # type: ignore[union-attr]
            return b""
        if kind is StreamStart:
            response = self._snapshot("in_progress")
            return self._event("response.created", response=response) + self._event(
                "response.in_progress", response=response
            )
        if kind is StreamEnd:
            status, incomplete = _status(event.finish_reason)  # type: ignore[union-attr]
            out = self._close_all(status)
            self.closed = True
            name = "response.incomplete" if incomplete else "response.completed"
            return out + self._event(name, response=self._snapshot(status, incomplete=incomplete))
        if kind is StreamError:
            return self.error(event.message, event.type)  # type: ignore[union-attr]
        return b""  # ChoiceEnd: a Responses client asks for one answer

    def _text(self, text: str) -> bytes:
        out = b""
        if self.message is None:
            # Text after a tool call opens a new message item; nothing stays open behind it.
            out = self._close_reasoning(None, "incomplete") + self._close_calls("completed")
            self.message = len(self.items)
            item = _message_item(new_id("msg_"), "", "in_progress")
            self.items.append(item)
            self.text = []
            out += self._event("response.output_item.added", output_index=self.message, item=dict(item))
            out += self._event(
                "response.content_part.added",
                item_id=item["id"],
                output_index=self.message,
                content_index=0,
                part={"type": "output_text", "annotations": [], "logprobs": [], "text": ""},
            )
        if not text:
            return out
        self.text.append(text)
        return out + self._event(
            "response.output_text.delta",
            item_id=self.items[self.message]["id"],
            output_index=self.message,
            content_index=0,
            delta=text,
            logprobs=[],
        )

    def _open_reasoning(self) -> bytes:
        # Thinking after text or tool calls (interleaved thinking) closes them, as text after a call does.
        out = self._close_message() + self._close_calls("completed")
        self.reasoning = len(self.items)
        item = _reasoning_item(new_id("rs_"), "", None, "in_progress", has_text=False)
        self.items.append(item)
        self.thinking = []
        self.thinking_part = False
        return out + self._event("response.output_item.added", output_index=self.reasoning, item=dict(item))

    def _reasoning_delta(self, text: str) -> bytes:
        out = self._open_reasoning() if self.reasoning is None else b""
        index = self.reasoning
        item_id = self.items[index]["id"]  # type: ignore[index]
        if not self.thinking_part:
            self.thinking_part = True
            out += self._event(
                "response.content_part.added",
                item_id=item_id,
                output_index=index,
                content_index=0,
                part={"type": "reasoning_text", "text": ""},
            )
        if not text:
            return out
        self.thinking.append(text)
        return out + self._event(
            "response.reasoning_text.delta", item_id=item_id, output_index=index, content_index=0, delta=text
        )

    def _reasoning_block(self, block: Any) -> bytes:
        out = self._open_reasoning() if self.reasoning is None else b""
        return out + self._close_reasoning(block, "completed")

    def _close_reasoning(self, block: Any, status: str) -> bytes:
        """Close the open reasoning item: with its provider `block` (its thinking text then comes from the
        block when no delta carried it), or, cut short, without (it cannot be sent back)."""
        index = self.reasoning
        if index is None:
            return b""
        self.reasoning = None
        item_id = self.items[index]["id"]
        text = "".join(self.thinking)
        if not text and block is not None:
            text = thinking_text(block)
        has_text = self.thinking_part or (block is not None and _has_text(block))
        item = _reasoning_item(item_id, text, block, status, has_text=has_text)
        self.items[index] = item
        out = b""
        if self.thinking_part:
            common = {"item_id": item_id, "output_index": index, "content_index": 0}
            out += self._event("response.reasoning_text.done", **common, text=text)
            out += self._event(
                "response.content_part.done", **common, part={"type": "reasoning_text", "text": text}
            )
        return out + self._event("response.output_item.done", output_index=index, item=item)

    def _close_message(self, status: str = "completed") -> bytes:
        index = self.message
        if index is None:
            return b""
        self.message = None
        item_id = self.items[index]["id"]
        text = "".join(self.text)
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
        item = _message_item(item_id, text, status)
        self.items[index] = item
        common = {"item_id": item_id, "output_index": index, "content_index": 0}
        return (
            self._event("response.output_text.done", **common, text=text, logprobs=[])
            + self._event("response.content_part.done", **common, part=part)
            + self._event("response.output_item.done", output_index=index, item=item)
        )

    def _close_calls(self, status: str) -> bytes:
        out = b""
        for index in sorted(self.calls.values()):
            item = self.items[index]
            item["status"] = status
            out += self._event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                arguments=item["arguments"],
            )
            out += self._event("response.output_item.done", output_index=index, item=dict(item))
        self.calls.clear()
        return out

    def _close_all(self, status: str) -> bytes:
        return (
            self._close_reasoning(None, "incomplete")
            + self._close_message(status)
            + self._close_calls(status)
        )

    def error(self, message: str, type: str = "server_error") -> bytes:
        """`response.failed` with the error; nothing follows it (open items stay unfinished)."""
        if self.closed:
            return b""
        self.closed = True
        error = {"code": error_type_to_openai(type), "message": message}
        return self._event("response.failed", response=self._snapshot("failed", error=error))


def _reply(response: WholeAnswer, model: str, echo: dict[str, Any] | None = None) -> bytes:
    if type(response) is not ChatResponse:
        raise TypeError(f"a Responses API response cannot carry {type(response).__name__}")
    return orjson.dumps(encode_response(response, model, echo))


def _bound(body: dict[str, Any]) -> ClientEncoding:
    echo = request_echo(body)
    return ClientEncoding(
        reply=lambda response, model: _reply(response, model, echo),
        stream=lambda model, include_usage: ResponsesStreamEncoder(model, echo),
        error_event=stream_error_event,
    )


RESPONSES = ClientEncoding(
    reply=_reply,
    stream=lambda model, include_usage: ResponsesStreamEncoder(model),
    error_event=stream_error_event,
    bind=_bound,
)
