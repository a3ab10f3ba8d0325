"""Several choices (OpenAI `n` > 1) in the canonical form and how the OpenAI encoders write them: the
body's `choices` with indexes, usage once for all, and streams whose chunks carry each choice's index."""

from __future__ import annotations

import openai.types
import orjson

from gateway.protocol import (
    ChatResponse,
    Choice,
    ChoiceEnd,
    StreamEnd,
    StreamStart,
    TextDelta,
    TextPart,
    Usage,
    UsageEvent,
)
from gateway.protocol.openai import CompletionStreamEncoder, OpenAIStreamEncoder, encode_chat_response
from gateway.protocol.openai_legacy import encode_completion_response

RESPONSE = ChatResponse(
    id="",
    model="m",
    content=(TextPart("zero"),),
    finish_reason="length",
    usage=Usage(10, 7),
    extra_choices=(Choice((TextPart("one"),), "stop"), Choice((), "length")),
)


def test_choices_lists_choice_zero_first() -> None:
    assert [c.content for c in RESPONSE.choices] == [(TextPart("zero"),), (TextPart("one"),), ()]


def test_the_chat_body_has_every_choice_and_one_usage() -> None:
    body = encode_chat_response(RESPONSE, "m")
    parsed = openai.types.chat.ChatCompletion.model_validate(body)
    assert [(c.index, c.message.content, c.finish_reason) for c in parsed.choices] == [
        (0, "zero", "length"),
        (1, "one", "stop"),
        (2, "", "length"),
    ]
    assert parsed.usage.prompt_tokens == 10 and parsed.usage.completion_tokens == 7


def test_the_completion_body_has_every_choice() -> None:
    body = encode_completion_response(RESPONSE, "m")
    assert [(c["index"], c["text"]) for c in body["choices"]] == [(0, "zero"), (1, "one"), (2, "")]


def _chunks(raw: bytes) -> list[dict]:
    lines = [line[6:] for line in raw.split(b"\n") if line.startswith(b"data: ")]
    assert lines[-1] == b"[DONE]"
    return [orjson.loads(line) for line in lines[:-1]]


EVENTS = [
    StreamStart("", "m"),
    TextDelta("ze"),
    TextDelta("o", 1),
    ChoiceEnd(1, "stop"),
    TextDelta("ro"),
    ChoiceEnd(0, "length"),
    UsageEvent(Usage(10, 3)),
    StreamEnd("length"),
]


def test_the_chat_stream_writes_each_choice_with_its_index() -> None:
    encoder = OpenAIStreamEncoder("m", include_usage=True)
    chunks = _chunks(encoder.encode_all(EVENTS))
    texts: dict[int, str] = {}
    finishes: dict[int, list[str]] = {}
    roles: dict[int, int] = {}
    for chunk in chunks:
        parsed = openai.types.chat.ChatCompletionChunk.model_validate(chunk)
        for choice in parsed.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.delta.role:
                roles[choice.index] = roles.get(choice.index, 0) + 1
            if choice.finish_reason:
                finishes.setdefault(choice.index, []).append(choice.finish_reason)
    assert texts == {0: "zero", 1: "o"}
    assert roles == {0: 1, 1: 1}
    assert finishes == {0: ["length"], 1: ["stop"]}  # choice 0's finish once, though StreamEnd repeats it
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3


def test_the_completion_stream_writes_each_choice_with_its_index() -> None:
    chunks = _chunks(CompletionStreamEncoder("m").encode_all(EVENTS))
    pairs = [(c["index"], c["text"], c["finish_reason"]) for chunk in chunks for c in chunk["choices"]]
    assert pairs == [(0, "ze", None), (1, "o", None), (1, "", "stop"), (0, "ro", None), (0, "", "length")]
