"""The fake Anthropic server over real loopback HTTP: the official SDK for messages, streaming, tools,
count_tokens and errors; raw aiohttp for the exact SSE sequence and the injected faults.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import anthropic
import orjson
import pytest

from gateway.testing import Behaviour, FakeAnthropic, count_tokens

MODEL = "claude-fake-1"
SYSTEM = "You are terse."
MESSAGES = [{"role": "user", "content": "Tell me about the weather in Paris"}]
HEADERS = {"anthropic-version": "2023-06-01"}
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "number"}, "metric": {"type": "boolean"}},
        "required": ["city", "days", "metric"],
    },
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as server:
        yield server


@pytest.fixture
async def client(fake: FakeAnthropic) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=fake.base_url, api_key="sk-ant-test", max_retries=0) as c:
        yield c


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def sse_events(raw: str) -> list[tuple[str, dict]]:
    """(event name, parsed data) for each SSE frame; asserts the name matches the data's type."""
    events = []
    for frame in filter(None, raw.split("\n\n")):
        event_line, data_line = frame.split("\n")
        name, data = event_line.removeprefix("event: "), orjson.loads(data_line.removeprefix("data: "))
        assert data["type"] == name
        events.append((name, data))
    return events


async def test_message_non_streaming(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    assert fake.base_url == f"http://127.0.0.1:{fake.port}"
    msg = await client.messages.create(model=MODEL, max_tokens=100, system=SYSTEM, messages=MESSAGES)
    assert msg.id.startswith("msg_")
    assert (msg.type, msg.role, msg.model) == ("message", "assistant", MODEL)
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    (block,) = msg.content
    assert block.type == "text" and count_tokens(block.text) == 16
    assert msg.usage.input_tokens == count_tokens(SYSTEM + " " + MESSAGES[0]["content"])
    assert msg.usage.output_tokens == 16
    again = await client.messages.create(model=MODEL, max_tokens=100, system=SYSTEM, messages=MESSAGES)
    assert again.content[0].text == block.text


async def test_max_tokens_and_stop_sequences(client: anthropic.AsyncAnthropic) -> None:
    full = (await client.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES)).content[0].text
    words = full.split()
    short = await client.messages.create(model=MODEL, max_tokens=4, messages=MESSAGES)
    assert short.stop_reason == "max_tokens"
    assert short.content[0].text == " ".join(words[:4]) and short.usage.output_tokens == 4
    stop = f" {words[3]}"
    cut = await client.messages.create(
        model=MODEL, max_tokens=100, messages=MESSAGES, stop_sequences=["qq", stop]
    )
    assert (cut.stop_reason, cut.stop_sequence) == ("stop_sequence", stop)
    assert cut.content[0].text == " ".join(words[:3])


async def test_missing_max_tokens_and_version(fake: FakeAnthropic, http: aiohttp.ClientSession) -> None:
    url = f"{fake.base_url}/v1/messages"
    async with http.post(url, json={"model": MODEL, "messages": MESSAGES}, headers=HEADERS) as resp:
        assert resp.status == 400
        body = await resp.json()
        assert body["type"] == "error"
        assert body["error"] == {"type": "invalid_request_error", "message": "max_tokens: Field required"}
        assert resp.headers["request-id"] == body["request_id"]
    async with http.post(url, json={"model": MODEL, "messages": MESSAGES, "max_tokens": 5}) as resp:
        assert resp.status == 400
        assert "anthropic-version" in (await resp.json())["error"]["message"]


async def test_stream_event_sequence(fake: FakeAnthropic, http: aiohttp.ClientSession) -> None:
    body = {"model": MODEL, "max_tokens": 100, "messages": MESSAGES, "stream": True}
    async with http.post(f"{fake.base_url}/v1/messages", json=body, headers=HEADERS) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["request-id"].startswith("req_")
        events = sse_events(await resp.text())
    names = [name for name, _ in events]
    expected = ["message_start", "content_block_start", "ping"] + ["content_block_delta"] * 16
    assert names == [*expected, "content_block_stop", "message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["input_tokens"] == count_tokens(MESSAGES[0]["content"])
    assert events[1][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert all(
        data["delta"]["type"] == "text_delta" for name, data in events if name == "content_block_delta"
    )
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 16},
    }


async def test_stream_with_sdk_matches_non_streaming(client: anthropic.AsyncAnthropic) -> None:
    full = await client.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES)
    async with client.messages.stream(model=MODEL, max_tokens=100, messages=MESSAGES) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert len(pieces) == 16
    assert "".join(pieces) == full.content[0].text == final.content[0].text
    assert final.usage.output_tokens == 16 and final.stop_reason == "end_turn"


async def test_tool_use_round_trip(client: anthropic.AsyncAnthropic) -> None:
    msg = await client.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES, tools=[WEATHER_TOOL])
    assert msg.stop_reason == "tool_use"
    (block,) = msg.content
    assert block.type == "tool_use" and block.id.startswith("toolu_") and block.name == "get_weather"
    assert block.input == {"city": "fake", "days": 1, "metric": True}

    async with client.messages.stream(
        model=MODEL, max_tokens=100, messages=MESSAGES, tools=[WEATHER_TOOL]
    ) as s:
        streamed = await s.get_final_message()
    assert streamed.content[0].input == block.input and streamed.stop_reason == "tool_use"

    follow_up = [
        *MESSAGES,
        {"role": "assistant", "content": [block.model_dump()]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": block.id, "content": "Sunny, 24 degrees Celsius"}
            ],
        },
    ]
    final = await client.messages.create(
        model=MODEL, max_tokens=100, messages=follow_up, tools=[WEATHER_TOOL]
    )
    assert final.stop_reason == "end_turn"
    assert final.content[0].text == "Tool result received: Sunny, 24 degrees Ce"


async def test_count_tokens(client: anthropic.AsyncAnthropic) -> None:
    plain = await client.messages.count_tokens(model=MODEL, system=SYSTEM, messages=MESSAGES)
    assert plain.input_tokens == count_tokens(SYSTEM) + count_tokens(MESSAGES[0]["content"])
    with_tools = await client.messages.count_tokens(model=MODEL, messages=MESSAGES, tools=[WEATHER_TOOL])
    assert with_tools.input_tokens > count_tokens(MESSAGES[0]["content"])
    msg = await client.messages.create(model=MODEL, max_tokens=5, system=SYSTEM, messages=MESSAGES)
    assert msg.usage.input_tokens == plain.input_tokens


@pytest.mark.parametrize(
    ("status", "error", "kind"),
    [
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
async def test_injected_status_errors(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic, status: int, error: type[Exception], kind: str
) -> None:
    fake.behaviour = Behaviour(status=status)
    with pytest.raises(error) as info:
        await client.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
    assert info.value.status_code == status
    assert info.value.body["type"] == "error" and info.value.body["error"]["type"] == kind
    assert info.value.response.headers["request-id"].startswith("req_")
    assert info.value.response.headers.get("retry-after") == ("1" if status == 429 else None)


async def test_api_key(fake: FakeAnthropic, http: aiohttp.ClientSession) -> None:
    fake.behaviour = Behaviour(api_key="sk-ant-right")
    url, body = f"{fake.base_url}/v1/messages", {"model": MODEL, "max_tokens": 5, "messages": MESSAGES}
    for key, status in [(None, 401), ("sk-ant-wrong", 401), ("sk-ant-right", 200)]:
        headers = HEADERS if key is None else {**HEADERS, "x-api-key": key}
        async with http.post(url, json=body, headers=headers) as resp:
            assert resp.status == status
    # The SDK (2.x) sends its api_key as a bearer token, which the fake accepts too.
    async with anthropic.AsyncAnthropic(base_url=fake.base_url, api_key="sk-ant-wrong", max_retries=0) as bad:
        with pytest.raises(anthropic.AuthenticationError) as info:
            await bad.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
    assert info.value.body["error"]["type"] == "authentication_error"
    async with anthropic.AsyncAnthropic(
        base_url=fake.base_url, api_key="sk-ant-right", max_retries=0
    ) as good:
        assert (await good.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)).content


async def test_per_request_header_override(client: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.InternalServerError):
        await client.messages.create(
            model=MODEL,
            max_tokens=10,
            messages=MESSAGES,
            extra_headers={"x-fake-behaviour": '{"status": 503}'},
        )
    ok = await client.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
    assert ok.stop_reason == "max_tokens"  # 16-word reply capped at 10


async def test_drop_after_chunks(fake: FakeAnthropic, http: aiohttp.ClientSession) -> None:
    fake.behaviour = Behaviour(drop_after_chunks=4)
    body = {"model": MODEL, "max_tokens": 100, "messages": MESSAGES, "stream": True}
    lines: list[bytes] = []
    async with http.post(f"{fake.base_url}/v1/messages", json=body, headers=HEADERS) as resp:
        with pytest.raises(aiohttp.ClientPayloadError):
            async for line in resp.content:
                lines.append(line)
    events = [line for line in lines if line.startswith(b"event: ")]
    head = [b"event: message_start\n", b"event: content_block_start\n", b"event: ping\n"]
    assert events == [*head, b"event: content_block_delta\n"]


async def test_malformed_stream(fake: FakeAnthropic, http: aiohttp.ClientSession) -> None:
    fake.behaviour = Behaviour(malformed=True)
    body = {"model": MODEL, "max_tokens": 100, "messages": MESSAGES, "stream": True}
    async with http.post(f"{fake.base_url}/v1/messages", json=body, headers=HEADERS) as resp:
        assert resp.status == 200
        frames = (await resp.text()).split("\n\n")
    assert frames[1].startswith("event: content_block_start\ndata: {")
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(frames[1].split("\n")[1].removeprefix("data: "))


async def test_hang(fake: FakeAnthropic, http: aiohttp.ClientSession) -> None:
    fake.behaviour = Behaviour(hang=True)
    body = {"model": MODEL, "max_tokens": 100, "messages": MESSAGES}
    with pytest.raises(asyncio.TimeoutError):
        await http.post(
            f"{fake.base_url}/v1/messages",
            json=body,
            headers=HEADERS,
            timeout=aiohttp.ClientTimeout(total=0.2),
        )


def test_in_thread_with_sync_client() -> None:
    with FakeAnthropic.in_thread() as fake:
        client = anthropic.Anthropic(base_url=fake.base_url, api_key="sk-ant-test", max_retries=0)
        with client.messages.stream(model=MODEL, max_tokens=3, messages=MESSAGES) as stream:
            text = "".join(stream.text_stream)
        assert count_tokens(text) == 3
        assert fake.stats.requests == {"/v1/messages": 1}
        client.close()


async def test_prompt_cache_usage_in_the_apis_shape(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    """input_tokens is what was neither read from nor written to the cache; the stream reports the input
    counts in message_start and only the output count in message_delta."""
    fake.behaviour = Behaviour(cached_tokens=4, cache_creation_tokens=2)
    prompt = count_tokens(MESSAGES[0]["content"])
    msg = await client.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES)
    usage = msg.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (
        prompt - 6,
        4,
        2,
    )
    assert usage.cache_creation is not None and usage.cache_creation.ephemeral_5m_input_tokens == 2
    async with client.messages.stream(model=MODEL, max_tokens=100, messages=MESSAGES) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_message()
    assert final.usage.model_dump() == usage.model_dump()
    [delta] = [e for e in events if e.type == "message_delta"]
    assert delta.usage.output_tokens == 16 and delta.usage.input_tokens is None
    fake.behaviour = Behaviour(cached_tokens=1000)  # more than the prompt: all of it
    capped = (await client.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES)).usage
    assert (capped.input_tokens, capped.cache_read_input_tokens, capped.cache_creation_input_tokens) == (
        0,
        prompt,
        0,
    )


async def test_no_answer_reports_usage_without_content(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    """A 200 the upstream billed but whose answer is missing (what a translating gateway cannot use)."""
    fake.behaviour = Behaviour(no_answer=True)
    raw = await client.messages.with_raw_response.create(model=MODEL, max_tokens=100, messages=MESSAGES)
    body = raw.http_response.json()
    assert "content" not in body
    assert body["usage"]["output_tokens"] == 16


# --- extended thinking -----------------------------------------------------------------------------

THINKING = {"type": "enabled", "budget_tokens": 1024}


async def test_thinking_blocks_with_signatures(client: anthropic.AsyncAnthropic) -> None:
    msg = await client.messages.create(model=MODEL, max_tokens=2048, thinking=THINKING, messages=MESSAGES)
    thinking, text = msg.content
    assert thinking.type == "thinking" and thinking.thinking.startswith("Thinking about Tell me about")
    assert thinking.signature and text.type == "text"
    assert msg.usage.output_tokens == count_tokens(thinking.thinking) + count_tokens(text.text)
    plain = await client.messages.create(model=MODEL, max_tokens=2048, messages=MESSAGES)
    assert [b.type for b in plain.content] == ["text"] and plain.content[0].text == text.text
    off = await client.messages.create(
        model=MODEL, max_tokens=2048, thinking={"type": "disabled"}, messages=MESSAGES
    )
    assert [b.type for b in off.content] == ["text"]


async def test_thinking_streams_thinking_and_signature_deltas(
    client: anthropic.AsyncAnthropic, http: aiohttp.ClientSession, fake: FakeAnthropic
) -> None:
    whole = await client.messages.create(model=MODEL, max_tokens=2048, thinking=THINKING, messages=MESSAGES)
    async with client.messages.stream(
        model=MODEL, max_tokens=2048, thinking=THINKING, messages=MESSAGES
    ) as stream:
        final = await stream.get_final_message()
    assert [b.model_dump() for b in final.content] == [b.model_dump() for b in whole.content]
    body = {"model": MODEL, "max_tokens": 2048, "thinking": THINKING, "messages": MESSAGES, "stream": True}
    async with http.post(f"{fake.base_url}/v1/messages", json=body, headers=HEADERS) as resp:
        events = sse_events(await resp.text())
    deltas = [e["delta"]["type"] for name, e in events if name == "content_block_delta" and e["index"] == 0]
    assert deltas[-1] == "signature_delta" and set(deltas[:-1]) == {"thinking_delta"}
    starts = [e["content_block"] for name, e in events if name == "content_block_start"]
    assert starts[0] == {"type": "thinking", "thinking": "", "signature": ""} and starts[1]["type"] == "text"


async def test_thinking_refusals_as_the_api(client: anthropic.AsyncAnthropic) -> None:
    cases = [
        ({"type": "enabled", "budget_tokens": 1000}, 2048, {}, "greater than or equal to 1024"),
        ({"type": "enabled", "budget_tokens": 2048}, 2048, {}, "`max_tokens` must be greater"),
        (THINKING, 2048, {"extra_body": {"temperature": 0.5}}, "`temperature` may only be set to 1"),
    ]
    for thinking, max_tokens, extra, message in cases:
        with pytest.raises(anthropic.BadRequestError, match=message):
            await client.messages.create(
                model=MODEL, max_tokens=max_tokens, thinking=thinking, messages=MESSAGES, **extra
            )


async def test_thinking_tool_use_needs_the_block_back_intact(client: anthropic.AsyncAnthropic) -> None:
    first = await client.messages.create(
        model=MODEL, max_tokens=2048, thinking=THINKING, tools=[WEATHER_TOOL], messages=MESSAGES
    )
    thinking, call = first.content
    assert (thinking.type, call.type, first.stop_reason) == ("thinking", "tool_use", "tool_use")
    result = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}],
    }

    def turn(blocks: list) -> list:
        return [*MESSAGES, {"role": "assistant", "content": blocks}, result]

    second = await client.messages.create(
        model=MODEL,
        max_tokens=2048,
        thinking=THINKING,
        tools=[WEATHER_TOOL],
        messages=turn([b.model_dump() for b in first.content]),
    )
    assert second.content[-1].text.startswith("Tool result received: sunny")
    tampered = {**thinking.model_dump(), "thinking": thinking.thinking + " (edited)"}
    with pytest.raises(anthropic.BadRequestError, match=r"messages\.1\.content\.0: Invalid `signature`"):
        await client.messages.create(
            model=MODEL,
            max_tokens=2048,
            thinking=THINKING,
            tools=[WEATHER_TOOL],
            messages=turn([tampered, call.model_dump()]),
        )
    with pytest.raises(anthropic.BadRequestError, match="must start with a thinking block"):
        await client.messages.create(
            model=MODEL,
            max_tokens=2048,
            thinking=THINKING,
            tools=[WEATHER_TOOL],
            messages=turn([call.model_dump()]),
        )


async def test_redacted_thinking_on_the_documented_trigger(client: anthropic.AsyncAnthropic) -> None:
    from gateway.testing.fake_anthropic import REDACTED_TRIGGER

    messages = [{"role": "user", "content": REDACTED_TRIGGER}]
    msg = await client.messages.create(model=MODEL, max_tokens=2048, thinking=THINKING, messages=messages)
    assert [b.type for b in msg.content] == ["thinking", "redacted_thinking", "text"]
    history = [*messages, {"role": "assistant", "content": [b.model_dump() for b in msg.content]}]
    again = await client.messages.create(
        model=MODEL, max_tokens=2048, messages=[*history, {"role": "user", "content": "more"}]
    )
    assert again.content[0].type == "text"
    broken = {"type": "redacted_thinking", "data": msg.content[1].data[:-4] + "AAAA"}
    history[1] = {"role": "assistant", "content": [msg.content[0].model_dump(), broken]}
    with pytest.raises(anthropic.BadRequestError, match="Invalid `data` in `redacted_thinking`"):
        await client.messages.create(
            model=MODEL, max_tokens=2048, messages=[*history, {"role": "user", "content": "more"}]
        )
