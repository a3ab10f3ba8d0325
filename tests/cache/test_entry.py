"""A cache entry: its bytes, the stream it replays (through the real encoders and decoders), and the
answer assembled from a stream as it passes, canonical or pass-through bytes of either protocol."""

from __future__ import annotations

from gateway.cache import CachedAnswer, PassThroughAssembler, StreamAssembler, storable
from gateway.protocol import anthropic, openai
from gateway.protocol.canonical import ChatResponse, RawPart, StreamError, TextPart, ToolCallPart, Usage

TEXT = "The weather in Lisbon is sunny with a light breeze from the west, around twenty degrees."
ANSWER = ChatResponse(
    id="chatcmpl-1",
    model="gpt-4o",
    content=(TextPart(TEXT), ToolCallPart("call_1", "get_weather", '{"city": "Lisbon"}')),
    finish_reason="tool_calls",
    usage=Usage(prompt_tokens=12, completion_tokens=20, cached_tokens=4),
)


def test_bytes_round_trip_and_foreign_bytes_read_as_a_miss() -> None:
    entry = CachedAnswer(ANSWER, 1_700_000_000.5, "oa", "gpt-4o")
    assert CachedAnswer.from_bytes(entry.to_bytes()) == entry
    assert CachedAnswer.from_bytes(b"not json") is None
    assert CachedAnswer.from_bytes(b'{"v": 99}') is None


def test_only_normal_answers_of_text_and_tool_calls_are_stored() -> None:
    assert storable(ANSWER)
    assert not storable(ChatResponse("x", "m", (TextPart("a"),), "content_filter"))
    assert not storable(ChatResponse("x", "m", (TextPart("a"),), None))
    assert not storable(ChatResponse("x", "m", (RawPart("anthropic", {"type": "thinking"}),), "stop"))


def test_the_replayed_stream_is_chunked_and_assembles_back_to_the_answer() -> None:
    events = CachedAnswer(ANSWER, 0.0, "oa", "gpt-4o").events()
    texts = [e.text for e in events if type(e).__name__ == "TextDelta"]
    assert len(texts) > 2 and "".join(texts) == TEXT
    assembled = StreamAssembler()
    for event in events:
        assembled.feed(event)
    assert assembled.answer() == ANSWER


def _through(encoder: object, protocol: str) -> ChatResponse | None:
    events = CachedAnswer(ANSWER, 0.0, "oa", "gpt-4o").events()
    wire = b"".join(encoder.encode(e) for e in events)  # type: ignore[attr-defined]
    assembler = PassThroughAssembler(protocol)
    # Split anywhere, as network chunks may be.
    for i in range(0, len(wire), 37):
        assembler.feed(wire[i : i + 37])
    return assembler.answer()


def test_pass_through_streams_of_both_protocols_assemble_to_the_answer() -> None:
    got = _through(openai.OpenAIStreamEncoder("gpt-4o", include_usage=True), "openai")
    assert got is not None and got.content == ANSWER.content and got.usage == ANSWER.usage
    got = _through(anthropic.AnthropicStreamEncoder("gpt-4o"), "anthropic")
    assert got is not None and got.text == TEXT and got.finish_reason == "tool_calls"
    assert got.usage is not None and got.usage.completion_tokens == 20


def test_a_stream_that_failed_or_did_not_end_gives_no_answer() -> None:
    assembled = StreamAssembler()
    for event in CachedAnswer(ANSWER, 0.0, "oa", "gpt-4o").events()[:-1]:
        assembled.feed(event)
    assert assembled.answer() is None
    assembled.feed(StreamError("boom"))
    assert assembled.answer() is None
    broken = PassThroughAssembler("openai")
    broken.feed(b"data: {not json\n\n")
    assert broken.answer() is None
