"""The legacy `/v1/completions` stream encoder (`CompletionStreamEncoder`): a stream ends with exactly
one `data: [DONE]` (after the usage chunk when asked for), an errored stream with an error chunk and
no `[DONE]`, and nothing is written after the end."""

from __future__ import annotations

import orjson

from gateway.protocol.canonical import (
    ChoiceEnd,
    StreamEnd,
    StreamError,
    StreamStart,
    TextDelta,
    Usage,
    UsageEvent,
)
from gateway.protocol.openai_legacy import CompletionStreamEncoder

DONE = b"data: [DONE]\n\n"


def chunks(raw: bytes) -> list[bytes]:
    return [frame.removeprefix(b"data: ") for frame in raw.split(b"\n\n") if frame]


def test_the_stream_ends_with_one_done() -> None:
    encoder = CompletionStreamEncoder("m")
    raw = encoder.encode_all(
        [StreamStart("chatcmpl-1", "m"), TextDelta("Hi"), TextDelta(""), StreamEnd("stop")]
    )
    assert raw.endswith(DONE) and raw.count(b"[DONE]") == 1
    frames = [orjson.loads(f) for f in chunks(raw)[:-1]]
    assert [f["choices"][0]["text"] for f in frames] == ["Hi", ""]
    assert [f["choices"][0]["finish_reason"] for f in frames] == [None, "stop"]
    assert {f["id"] for f in frames} == {"cmpl-1"}
    assert encoder.encode(TextDelta("late")) == b""  # nothing after the end


def test_usage_comes_before_done_when_asked_for() -> None:
    encoder = CompletionStreamEncoder("m", include_usage=True)
    raw = encoder.encode_all([TextDelta("Hi"), UsageEvent(Usage(3, 1)), StreamEnd("length")])
    frames = chunks(raw)
    assert frames[-1] == b"[DONE]"
    usage = orjson.loads(frames[-2])
    assert usage["choices"] == [] and usage["usage"]["prompt_tokens"] == 3
    assert orjson.loads(frames[-3])["choices"][0]["finish_reason"] == "length"


def test_no_usage_chunk_unless_asked() -> None:
    raw = CompletionStreamEncoder("m").encode_all(
        [TextDelta("Hi"), UsageEvent(Usage(3, 1)), StreamEnd("stop")]
    )
    assert b'"usage"' not in raw and raw.endswith(DONE)


def test_a_choice_end_is_not_repeated_at_the_end() -> None:
    raw = CompletionStreamEncoder("m").encode_all([TextDelta("a"), ChoiceEnd(0, "stop"), StreamEnd("stop")])
    finishes = [orjson.loads(f)["choices"][0]["finish_reason"] for f in chunks(raw)[:-1]]
    assert finishes == [None, "stop"]
    assert raw.endswith(DONE)


def test_an_error_ends_the_stream_without_done() -> None:
    encoder = CompletionStreamEncoder("m")
    raw = encoder.encode_all([TextDelta("a"), StreamError("upstream broke"), StreamEnd("stop")])
    assert b"[DONE]" not in raw
    assert b"upstream broke" in raw
