"""OpenAI legacy `/v1/completions` and `/v1/embeddings` requests ⇄ canonical form, and the canonical
answers written for an OpenAI client. The prompt and input are validated but kept as sent (an
OpenAI-compatible backend gets them as they came, a local model reads them itself), and unknown
members ride in `extra`."""

from __future__ import annotations

import base64
import time
from array import array
from typing import Any

import orjson

from gateway.protocol._fields import (
    INT64_MAX,
    INT64_MIN,
    FieldError,
    check_members,
    logit_bias,
    opt_bool,
    opt_dict,
    opt_int,
    opt_number,
    opt_str,
    req_dict,
    req_str,
    stop_list,
)
from gateway.protocol._maps import finish_to_openai, new_id
from gateway.protocol.canonical import (
    ChatResponse,
    ChoiceEnd,
    CompletionRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    StreamEnd,
    StreamError,
    StreamEvent,
    StreamStart,
    TextDelta,
    Usage,
    UsageEvent,
    join_text,
)
from gateway.protocol.openai_stream import stream_error_event
from gateway.protocol.usage import embedding_usage_to_openai, usage_to_openai

__all__ = [
    "CompletionStreamEncoder",
    "completion_request_to_body",
    "embedding_request_to_body",
    "encode_completion_response",
    "encode_embedding_response",
    "parse_completion_request",
    "parse_embedding_request",
]

_COMPLETION_KNOWN = frozenset(
    {
        "model",
        "prompt",
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "stream",
        "stream_options",
        "seed",
        "user",
    }
)
_EMBEDDING_KNOWN = frozenset({"model", "input", "dimensions", "encoding_format", "user"})
#: Forwarded members whose types and ranges are checked here (OpenAI's documented bounds).
_COMPLETION_INTS = {"n": (1, 128), "best_of": (1, 20), "logprobs": (0, 5)}
_COMPLETION_NUMBERS = {"presence_penalty": (-2.0, 2.0), "frequency_penalty": (-2.0, 2.0)}
_COMPLETION_BOOLS = frozenset({"echo"})
#: The largest token id in a prompt given as token ids (what an unsigned 32-bit integer holds).
MAX_TOKEN_ID = 2**32 - 1
#: The most dimensions an embedding may be asked for (OpenAI's largest model has 3072).
MAX_DIMENSIONS = 65536
#: The most inputs one embeddings request may hold (OpenAI's documented bound).
MAX_EMBEDDING_INPUTS = 2048
_PROMPT_SHAPES = "a string, an array of strings, an array of token ids, or an array of token-id arrays"


def _check_items(items: list[Any], path: str, wanted: type, what: str) -> None:
    # map(type), min and max run in C, so a long token array costs microseconds; find the culprit only
    # on failure.
    if set(map(type, items)) != {wanted}:
        for i, item in enumerate(items):
            if type(item) is not wanted:
                raise FieldError(f"{path}[{i}]", f"must be {what}")
    if wanted is int:
        try:
            array("I", items)  # 32-bit unsigned: one C pass, a quarter of what min() and max() cost
        except OverflowError:
            for i, item in enumerate(items):
                if not 0 <= item <= MAX_TOKEN_ID:
                    raise FieldError(
                        f"{path}[{i}]", f"must be a token id from 0 to {MAX_TOKEN_ID}, got {item}"
                    ) from None


def _prompt(value: Any, path: str) -> Any:
    if isinstance(value, str):
        return value
    if value is None:
        raise FieldError(path, "is required")
    if not isinstance(value, list):
        raise FieldError(path, f"must be {_PROMPT_SHAPES}")
    if not value:
        raise FieldError(path, "must not be empty")
    first = type(value[0])
    if first is str:
        _check_items(value, path, str, "a string like the other items")
    elif first is int:
        _check_items(value, path, int, "a token id (an integer) like the other items")
    elif first is list:
        _check_items(value, path, list, "an array of token ids like the other items")
        for i, tokens in enumerate(value):
            if not tokens:
                raise FieldError(f"{path}[{i}]", "must not be empty")
            _check_items(tokens, f"{path}[{i}]", int, "a token id (an integer)")
    else:
        raise FieldError(
            f"{path}[0]",
            f"must be a string, a token id or a token-id array ({path} must be {_PROMPT_SHAPES})",
        )
    return value


def _include_usage(body: dict[str, Any], extra: dict[str, Any]) -> bool:
    options = opt_dict(body, "stream_options")
    if not options:
        return False
    rest = {k: v for k, v in options.items() if k != "include_usage"}
    if rest:
        extra["stream_options"] = rest
    return bool(opt_bool(options, "include_usage", "stream_options"))


def parse_completion_request(body: Any) -> CompletionRequest:
    """Validate a legacy `/v1/completions` body; raises `FieldError`."""
    body = req_dict(body, "body")
    model = req_str(body, "model")
    prompt = _prompt(body.get("prompt"), "prompt")
    extra = {k: v for k, v in body.items() if k not in _COMPLETION_KNOWN}
    if extra:
        check_members(extra, "", _COMPLETION_INTS, _COMPLETION_NUMBERS, _COMPLETION_BOOLS)
        if extra.get("logit_bias") is not None:
            logit_bias(extra["logit_bias"], "logit_bias")
    include_usage = _include_usage(body, extra)
    return CompletionRequest(
        model=model,
        prompt=prompt,
        # 0 is legal here: echo + logprobs with no new tokens scores a prompt (evaluation harnesses do this).
        max_tokens=opt_int(body, "max_tokens", minimum=0),
        temperature=opt_number(body, "temperature", "", 0.0, 2.0),
        top_p=opt_number(body, "top_p", "", 0.0, 1.0),
        stop=stop_list(body.get("stop"), "stop", max_items=4),
        stream=bool(opt_bool(body, "stream")),
        include_usage=include_usage,
        seed=opt_int(body, "seed", minimum=INT64_MIN, maximum=INT64_MAX),
        user=opt_str(body, "user"),
        extra=extra,
    )


def completion_request_to_body(req: CompletionRequest, upstream_model: str) -> dict[str, Any]:
    """The `/v1/completions` body to send an OpenAI-compatible backend."""
    body: dict[str, Any] = dict(req.extra)
    body["model"] = upstream_model
    body["prompt"] = req.prompt
    for key, value in (
        ("max_tokens", req.max_tokens),
        ("temperature", req.temperature),
        ("top_p", req.top_p),
        ("seed", req.seed),
        ("user", req.user),
    ):
        if value is not None:
            body[key] = value
    if req.stop:
        body["stop"] = list(req.stop)
    if req.stream:
        body["stream"] = True
        if req.include_usage:
            options = body.get("stream_options")
            body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return body


def parse_embedding_request(body: Any) -> EmbeddingRequest:
    """Validate an `/v1/embeddings` body; raises `FieldError`."""
    body = req_dict(body, "body")
    model = req_str(body, "model")
    value = body.get("input")
    if value == "":
        raise FieldError("input", "must not be an empty string")
    value = _prompt(value, "input")
    if type(value) is list and type(value[0]) is not int:
        if len(value) > MAX_EMBEDDING_INPUTS:
            raise FieldError("input", f"must hold at most {MAX_EMBEDDING_INPUTS} inputs, got {len(value)}")
        if type(value[0]) is str and "" in value:
            raise FieldError(f"input[{value.index('')}]", "must not be an empty string")
    encoding = body.get("encoding_format")
    if encoding is not None and encoding not in ("float", "base64"):
        raise FieldError("encoding_format", f"must be 'float' or 'base64', got {encoding!r}")
    return EmbeddingRequest(
        model=model,
        input=value,
        dimensions=opt_int(body, "dimensions", minimum=1, maximum=MAX_DIMENSIONS),
        encoding_format=encoding,
        user=opt_str(body, "user"),
        extra={k: v for k, v in body.items() if k not in _EMBEDDING_KNOWN},
    )


def embedding_request_to_body(req: EmbeddingRequest, upstream_model: str) -> dict[str, Any]:
    """The `/v1/embeddings` body to send an OpenAI-compatible backend."""
    body: dict[str, Any] = dict(req.extra)
    body["model"] = upstream_model
    body["input"] = req.input
    if req.dimensions is not None:
        body["dimensions"] = req.dimensions
    if req.encoding_format is not None:
        body["encoding_format"] = req.encoding_format
    if req.user is not None:
        body["user"] = req.user
    return body


# --- answers for an OpenAI client, written from the canonical form --------------------------------------


def encode_completion_response(resp: ChatResponse, model: str) -> dict[str, Any]:
    """A `text_completion` object for an OpenAI client; `model` is the name to report. Several
    choices (`n`) are written with their indexes 0, 1, ..."""
    body: dict[str, Any] = {
        "id": resp.id or new_id("cmpl-"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": index,
                "text": join_text(choice.content),
                "logprobs": None,
                "finish_reason": finish_to_openai(choice.finish_reason),
            }
            for index, choice in enumerate(resp.choices)
        ],
    }
    if resp.usage is not None:
        body["usage"] = usage_to_openai(resp.usage)
    return body


def encode_embedding_response(resp: EmbeddingResponse, model: str) -> dict[str, Any]:
    """An embeddings `list` object for an OpenAI client, each vector written as the client asked: JSON
    numbers (float32's shortest form, so they read back as the same float32) or base64 of the
    little-endian float32 bytes. Write it with `orjson.OPT_SERIALIZE_NUMPY`."""
    if resp.encoding_format == "base64":
        vectors: list[Any] = [base64.b64encode(v).decode("ascii") for v in resp.vectors]
    else:
        import numpy as np

        vectors = [np.frombuffer(v, dtype="<f4").astype(np.float32, copy=False) for v in resp.vectors]
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
        "model": model,
        "usage": embedding_usage_to_openai(resp.usage),
    }


class CompletionStreamEncoder:
    """Canonical stream events → `text_completion` SSE chunks, ending with `data: [DONE]` (or, after a
    `StreamError` or `error()`, with an error chunk and no `[DONE]`)."""

    __slots__ = ("closed", "created", "ended_first", "id", "include_usage", "model", "usage")

    def __init__(self, model: str, *, include_usage: bool = False) -> None:
        self.model = model
        self.include_usage = include_usage
        self.id = ""
        self.created = int(time.time())
        self.usage: Usage | None = None
        self.closed = False
        #: Whether choice 0's finish chunk went out with its `ChoiceEnd` (OpenAI `n`).
        self.ended_first = False

    def _chunk(self, text: str, finish_reason: str | None, index: int = 0) -> bytes:
        if not self.id:
            self.id = new_id("cmpl-")
        chunk = {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}],
        }
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def encode(self, event: StreamEvent) -> bytes:
        if self.closed:
            return b""
        kind = type(event)
        if kind is TextDelta:
            return self._chunk(event.text, None, event.choice) if event.text else b""
        if kind is ChoiceEnd:
            self.ended_first = self.ended_first or event.choice == 0
            return self._chunk("", finish_to_openai(event.finish_reason), event.choice)
        if kind is StreamStart:
            self.id = event.id.replace("chatcmpl-", "cmpl-")
            return b""
        if kind is UsageEvent:
            self.usage = event.usage
            return b""
        if kind is StreamEnd:
            self.closed = True
            out = b"" if self.ended_first else self._chunk("", finish_to_openai(event.finish_reason))
            if self.include_usage and self.usage is not None:
                usage_chunk = {
                    "id": self.id,
                    "object": "text_completion",
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": usage_to_openai(self.usage),
                }
                out += b"data: " + orjson.dumps(usage_chunk) + b"\n\n"
            return out + b"data: [DONE]\n\n"
        if kind is StreamError:
            return self.error(event.message, event.type)
        return b""

    def encode_all(self, events: list[StreamEvent]) -> bytes:
        return b"".join([self.encode(e) for e in events])

    def error(self, message: str, type: str = "server_error") -> bytes:
        """An error chunk that ends the stream (no `[DONE]` follows)."""
        self.closed = True
        return stream_error_event(message, type)
