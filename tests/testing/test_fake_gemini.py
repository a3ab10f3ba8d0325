"""The fake Gemini API over real loopback HTTP: Google's own SDK (google-genai) for content, streaming,
function calls, embeddings, token counts and errors, so the fake's wire shapes are the ones the SDK
reads; raw aiohttp for the exact SSE framing and the injected faults."""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import orjson
import pytest
from google import genai
from google.genai import errors, types

from gateway.testing import Behaviour, FakeGemini
from gateway.testing.behaviour import plan_text, reply_words

KEY = "gemini-fake-key"
PROMPT = "Tell me about the weather in Paris"


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with FakeGemini.in_thread(Behaviour(api_key=KEY)) as server:
        yield server


def client(fake: FakeGemini, key: str = KEY) -> genai.Client:
    """Keep the client in a variable while using it: a dropped one closes its connection pool."""
    options = types.HttpOptions(base_url=fake.url, retry_options=types.HttpRetryOptions(attempts=1))
    return genai.Client(api_key=key, http_options=options)


def test_content_with_system_instruction_and_limits(fake: FakeGemini) -> None:
    config = types.GenerateContentConfig(system_instruction="You are terse.", max_output_tokens=4)
    sdk = client(fake)
    answer = sdk.models.generate_content(model="gemini-2.5-flash", contents=PROMPT, config=config)
    assert answer.text == plan_text(reply_words(PROMPT, 16), 4).text
    assert (
        answer.candidates is not None and answer.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    )
    assert answer.usage_metadata is not None
    assert (answer.usage_metadata.prompt_token_count, answer.usage_metadata.candidates_token_count) == (10, 4)


def test_a_stream_is_whole_response_chunks_ending_with_a_finish_reason(fake: FakeGemini) -> None:
    sdk = client(fake)
    chunks = list(sdk.models.generate_content_stream(model="gemini-2.5-flash", contents=PROMPT))
    assert "".join(c.text or "" for c in chunks) == plan_text(reply_words(PROMPT, 16), None).text
    assert len(chunks) == 16
    finishes = [c.candidates[0].finish_reason for c in chunks if c.candidates]
    assert finishes[-1] == types.FinishReason.STOP and not any(finishes[:-1])


def test_a_function_declaration_is_called(fake: FakeGemini) -> None:
    declaration = types.FunctionDeclaration(
        name="get_weather",
        parameters_json_schema={
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    )
    config = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[declaration])])
    sdk = client(fake)
    answer = sdk.models.generate_content(model="gemini-2.5-flash", contents=PROMPT, config=config)
    assert answer.function_calls is not None
    (call,) = answer.function_calls
    assert (call.name, call.args) == ("get_weather", {"city": "fake", "days": 1})


def test_embeddings_and_token_counts(fake: FakeGemini) -> None:
    sdk = client(fake)
    config = types.EmbedContentConfig(output_dimensionality=4)
    embedded = sdk.models.embed_content(model="text-embedding-004", contents=["a", "b"], config=config)
    assert embedded.embeddings is not None and [len(e.values or ()) for e in embedded.embeddings] == [4, 4]
    assert sdk.models.count_tokens(model="gemini-2.5-flash", contents=PROMPT).total_tokens == 7


def test_errors_are_in_the_apis_shape(fake: FakeGemini) -> None:
    stranger, sdk = client(fake, "not-the-key"), client(fake)
    with pytest.raises(errors.ClientError) as wrong_key:
        stranger.models.generate_content(model="gemini-2.5-flash", contents=PROMPT)
    assert (wrong_key.value.code, wrong_key.value.status) == (400, "INVALID_ARGUMENT")
    assert "API key not valid" in str(wrong_key.value.message)
    fake.behaviour = Behaviour(api_key=KEY, status=503)
    with pytest.raises(errors.ServerError) as unavailable:
        sdk.models.generate_content(model="gemini-2.5-flash", contents=PROMPT)
    assert (unavailable.value.code, unavailable.value.status) == (503, "UNAVAILABLE")


async def test_the_sse_framing_and_a_stream_cut_short(fake: FakeGemini) -> None:
    url = f"{fake.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    body = {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}
    headers = {"x-goog-api-key": KEY}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=body, headers=headers) as response:
            assert response.content_type == "text/event-stream"
            raw = (await response.read()).decode()
        events = [e for e in raw.split("\r\n\r\n") if e]
        assert all(e.startswith("data: ") for e in events)
        chunks = [orjson.loads(e.removeprefix("data: ")) for e in events]
        assert all(c["usageMetadata"]["promptTokenCount"] == 7 for c in chunks)
        assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"

        cut = {"x-fake-behaviour": '{"drop_after_chunks": 2}', **headers}
        async with session.post(url, json=body, headers=cut) as response:
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
