"""The `gemini` backend against the fake Gemini API over real loopback HTTP: chat whole and streamed,
tool calls and results, images, embeddings, the request refusals, and what each Gemini error means for
failover (retryable, the client's fault, or the gateway's credentials)."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.backends.base import Backend
from gateway.backends.upstream import AttemptLimits, EventStream, UpstreamCall, UpstreamFailure
from gateway.protocol import anthropic as anthropic_protocol
from gateway.protocol import openai as openai_protocol
from gateway.protocol.canonical import (
    ChatResponse,
    EmbeddingResponse,
    StreamEnd,
    StreamStart,
    TextDelta,
    TextPart,
    TokenCount,
    ToolCallDelta,
    ToolCallPart,
    ToolCallStart,
    Usage,
    UsageEvent,
)
from gateway.runtime.live import LiveRuntime
from gateway.testing import Behaviour, FakeGemini
from gateway.testing.behaviour import TOOL_TOKENS, plan_text, reply_words

KEY = "gemini-test-key"
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}
PIXEL = base64.b64encode(b"\x89PNG\r\n\x1a\n fake image bytes").decode()


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    async with FakeGemini(Behaviour(api_key=KEY)) as server:
        yield server


@pytest.fixture
async def gemini(tmp_path: Path, fake: FakeGemini) -> AsyncIterator[Backend]:
    """The backend the gateway builds from a `type: gemini` config pointing at the fake."""
    path = tmp_path / "gateway.yaml"
    path.write_text(
        f'backends:\n  g: {{type: gemini, base_url: "{fake.base_url}", api_key: "${{G_KEY}}"}}\n'
        "models:\n  m: {chain: [{backend: g, model: gemini-2.5-flash}]}\nreload: {watch: false}\n"
    )
    live = LiveRuntime(path, env={"G_KEY": KEY})
    runtime = await live.start()
    yield runtime.routes["m"].chain[0].backend
    await live.close()


def chat(body: dict[str, Any], client: str = "openai") -> UpstreamCall:
    body = {"model": "m", **body}
    if client == "openai":
        request = openai_protocol.parse_chat_request(body)
    else:
        request = anthropic_protocol.parse_messages_request(body)
    stream = bool(body.get("stream"))
    return UpstreamCall("chat", client, body, request, stream, "req_test", "m")  # type: ignore[arg-type]


def limits() -> AttemptLimits:
    return AttemptLimits(connect=5, first_byte=10, deadline=time.monotonic() + 30)


HELLO = {"messages": [{"role": "user", "content": "hello there"}]}


async def test_a_chat_request_is_answered_in_the_canonical_form(gemini: Backend, fake: FakeGemini) -> None:
    reply = await gemini.send(chat(HELLO), "gemini-2.5-flash", limits())
    assert isinstance(reply, ChatResponse)
    assert reply.text == plan_text(reply_words("hello there", 16), None).text
    assert reply.finish_reason == "stop"
    assert reply.model == "gemini-2.5-flash"
    assert reply.usage == Usage(2, 16)
    assert fake.stats.requests == {"/v1beta/models/gemini-2.5-flash:generateContent": 1}


async def test_the_system_prompt_and_generation_settings_reach_the_api(gemini: Backend) -> None:
    body = {
        "messages": [{"role": "system", "content": "be brief"}, *HELLO["messages"]],
        "max_tokens": 3,
        "temperature": 0.5,
        "stop": ["zzz"],
    }
    reply = await gemini.send(chat(body), "gemini-2.5-flash", limits())
    assert isinstance(reply, ChatResponse)
    assert reply.finish_reason == "length"
    assert reply.usage == Usage(4, 3)  # "be brief" + "hello there"


async def test_a_stream_is_decoded_into_canonical_events(gemini: Backend) -> None:
    stream = await gemini.send(chat({**HELLO, "stream": True}), "gemini-2.5-flash", limits())
    assert isinstance(stream, EventStream)
    events = list(stream.first)
    async for event in stream.rest:
        events.append(event)
    await stream.aclose()
    assert type(events[0]) is StreamStart
    assert (
        "".join(e.text for e in events if type(e) is TextDelta)
        == plan_text(reply_words("hello there", 16), None).text
    )
    assert events[-1] == StreamEnd("stop")
    assert [e for e in events if type(e) is UsageEvent][-1].usage == Usage(2, 16)
    assert stream.usage == Usage(2, 16)


async def test_a_tool_call_and_its_result_make_a_round_trip(gemini: Backend) -> None:
    asked = {"messages": [{"role": "user", "content": "weather in Paris?"}], "tools": [WEATHER]}
    reply = await gemini.send(chat(asked), "gemini-2.5-flash", limits())
    assert isinstance(reply, ChatResponse)
    assert reply.finish_reason == "tool_calls"
    (call,) = reply.content
    assert isinstance(call, ToolCallPart)
    assert (call.name, orjson.loads(call.arguments)) == ("weather", {"city": "fake", "days": 1})
    assert reply.usage is not None and reply.usage.prompt_tokens == 3 + TOOL_TOKENS

    history = [
        *asked["messages"],
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    answer = await gemini.send(chat({"messages": history, "tools": [WEATHER]}), "gemini-2.5-flash", limits())
    assert isinstance(answer, ChatResponse)
    assert answer.finish_reason == "stop"
    assert answer.text.startswith("Tool result received:")


async def test_a_streamed_tool_call_starts_and_carries_its_arguments(gemini: Backend) -> None:
    body = {"messages": [{"role": "user", "content": "weather?"}], "tools": [WEATHER], "stream": True}
    stream = await gemini.send(chat(body), "gemini-2.5-flash", limits())
    assert isinstance(stream, EventStream)
    events = list(stream.first)
    async for event in stream.rest:
        events.append(event)
    await stream.aclose()
    starts = [e for e in events if type(e) is ToolCallStart]
    assert [s.name for s in starts] == ["weather"]
    arguments = "".join(e.arguments for e in events if type(e) is ToolCallDelta)
    assert orjson.loads(arguments) == {"city": "fake", "days": 1}
    assert events[-1] == StreamEnd("tool_calls")


async def test_an_anthropic_client_reaches_gemini_too(gemini: Backend) -> None:
    body = {"max_tokens": 50, "system": "be brief", "top_k": 5, **HELLO}
    reply = await gemini.send(chat(body, "anthropic"), "gemini-2.5-flash", limits())
    assert isinstance(reply, ChatResponse)
    assert reply.usage == Usage(4, 16)


async def test_an_inline_image_goes_as_inline_data(gemini: Backend) -> None:
    content = [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
    ]
    reply = await gemini.send(chat({"messages": [{"role": "user", "content": content}]}), "g", limits())
    assert isinstance(reply, ChatResponse)
    assert reply.content and type(reply.content[0]) is TextPart


async def test_an_image_by_url_is_refused_naming_the_part(gemini: Backend, fake: FakeGemini) -> None:
    content = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    with pytest.raises(UpstreamFailure) as failure:
        await gemini.send(chat({"messages": [{"role": "user", "content": content}]}), "g", limits())
    assert failure.value.kind == "unsupported"
    assert failure.value.param == "messages[0].content[0]"
    assert "inline" in failure.value.detail
    assert fake.stats.total == 0


async def test_one_tool_call_at_a_time_is_refused(gemini: Backend) -> None:
    body = {**HELLO, "tools": [WEATHER], "parallel_tool_calls": False}
    with pytest.raises(UpstreamFailure) as failure:
        await gemini.send(chat(body), "g", limits())
    assert (failure.value.kind, failure.value.param) == ("unsupported", "parallel_tool_calls")


async def test_json_mode_asks_for_json(gemini: Backend) -> None:
    body = {**HELLO, "response_format": {"type": "json_object"}}
    reply = await gemini.send(chat(body), "g", limits())
    assert isinstance(reply, ChatResponse)
    assert isinstance(orjson.loads(reply.text), dict)


async def test_embeddings_come_back_one_vector_per_input(gemini: Backend, fake: FakeGemini) -> None:
    body = {"model": "m", "input": ["one", "two", "three"], "dimensions": 8}
    request = openai_protocol.parse_embedding_request(body)
    call = UpstreamCall("embeddings", "openai", body, request, False, "req_test", "m")
    reply = await gemini.send(call, "text-embedding-004", limits())
    assert isinstance(reply, EmbeddingResponse)
    assert (len(reply.vectors), reply.dimensions) == (3, 8)
    assert len(set(reply.vectors)) == 3
    assert fake.stats.requests == {"/v1beta/models/text-embedding-004:batchEmbedContents": 1}


async def test_token_ids_are_refused_for_embeddings(gemini: Backend) -> None:
    body = {"model": "m", "input": [1, 2, 3]}
    request = openai_protocol.parse_embedding_request(body)
    call = UpstreamCall("embeddings", "openai", body, request, False, "req_test", "m")
    with pytest.raises(UpstreamFailure) as failure:
        await gemini.send(call, "text-embedding-004", limits())
    assert (failure.value.kind, failure.value.param) == ("unsupported", "input")


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, "http_429"),
        (500, "http_5xx"),
        (503, "http_5xx"),
        (401, "auth"),
        (403, "auth"),
        (404, "unsupported"),
    ],
)
async def test_error_statuses_are_classified_for_failover(
    gemini: Backend, fake: FakeGemini, status: int, kind: str
) -> None:
    fake.behaviour = Behaviour(api_key=KEY, status=status)
    with pytest.raises(UpstreamFailure) as failure:
        await gemini.send(chat(HELLO), "g", limits())
    assert (failure.value.kind, failure.value.status) == (kind, status)
    assert "Injected failure" in failure.value.detail
    if status == 429:
        assert failure.value.retry_after == "1"


async def test_an_invalid_argument_is_the_clients_error(gemini: Backend, fake: FakeGemini) -> None:
    fake.behaviour = Behaviour(api_key=KEY, status=400)
    with pytest.raises(UpstreamFailure) as failure:
        await gemini.send(chat(HELLO), "g", limits())
    assert (failure.value.kind, failure.value.status) == ("client_error", 400)


async def test_an_invalid_key_is_the_gateways_fault_not_the_clients(
    gemini: Backend, fake: FakeGemini
) -> None:
    # The real API answers a wrong key with 400 INVALID_ARGUMENT and reason API_KEY_INVALID.
    fake.behaviour = Behaviour(api_key="another-key")
    with pytest.raises(UpstreamFailure) as failure:
        await gemini.send(chat(HELLO), "g", limits())
    assert (failure.value.kind, failure.value.status) == ("auth", 400)
    assert "API key not valid" in failure.value.detail


async def test_a_stream_cut_short_fails_mid_stream(gemini: Backend, fake: FakeGemini) -> None:
    fake.behaviour = Behaviour(api_key=KEY, drop_after_chunks=3)
    stream = await gemini.send(chat({**HELLO, "stream": True}), "g", limits())
    assert isinstance(stream, EventStream)
    with pytest.raises(UpstreamFailure) as failure:
        async for _ in stream.rest:
            pass
    await stream.aclose()
    assert failure.value.kind == "http_5xx"
    assert "mid-stream" in failure.value.detail


async def test_a_malformed_answer_is_an_upstream_failure(gemini: Backend, fake: FakeGemini) -> None:
    fake.behaviour = Behaviour(api_key=KEY, malformed=True)
    with pytest.raises(UpstreamFailure) as failure:
        await gemini.send(chat(HELLO), "g", limits())
    assert failure.value.kind == "http_5xx"


async def test_the_fake_refuses_unknown_members_and_wants_the_key(fake: FakeGemini) -> None:
    url = f"{fake.base_url}/v1beta/models/g:generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "n": 2}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=body, headers={"x-goog-api-key": KEY}) as response:
            error = (await response.json())["error"]
            assert (response.status, error["status"]) == (400, "INVALID_ARGUMENT")
            assert 'Unknown name "n"' in error["message"]
        async with session.post(url, json={"contents": body["contents"]}) as response:
            assert (response.status, (await response.json())["error"]["status"]) == (403, "PERMISSION_DENIED")


async def test_an_anthropic_token_count_is_asked_of_count_tokens(gemini: Backend, fake: FakeGemini) -> None:
    body = {"model": "m", "system": "be brief", "messages": [{"role": "user", "content": "hello there"}]}
    request = anthropic_protocol.parse_count_tokens_request(body)
    call = UpstreamCall("count_tokens", "anthropic", body, request, False, "req_test", "m")
    reply = await gemini.send(call, "gemini-2.5-flash", limits())
    assert reply == TokenCount(4)
    assert fake.stats.requests == {"/v1beta/models/gemini-2.5-flash:countTokens": 1}
