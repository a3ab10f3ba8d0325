"""The fake OpenAI server over real loopback HTTP: the official SDK for the happy paths and errors, raw
aiohttp for the faults (hang, dropped and malformed streams), and the CLI as a subprocess.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import struct
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import openai
import orjson
import pytest

import gateway
from gateway.testing import Behaviour, FakeOpenAI, count_tokens
from tests.conftest import wait_for

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Tell me about the weather in Paris"},
]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "metric": {"type": "boolean"},
                "extra": {"type": "object"},
                "unused": {"type": "string"},
            },
            "required": ["city", "days", "metric", "extra"],
        },
    },
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def client(fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0) as c:
        yield c


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def sse_data(raw: str) -> list[str]:
    """The data payloads of an SSE body, in order."""
    return [frame.removeprefix("data: ") for frame in raw.split("\n\n") if frame]


async def test_chat_non_streaming(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    assert fake.base_url == f"http://127.0.0.1:{fake.port}/v1"
    resp = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert resp.id.startswith("chatcmpl-")
    assert resp.object == "chat.completion"
    assert resp.model == "gpt-4o-mini"
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    assert choice.message.tool_calls is None
    assert count_tokens(choice.message.content) == 16
    assert resp.usage.prompt_tokens == count_tokens("You are terse. Tell me about the weather in Paris")
    assert resp.usage.completion_tokens == 16
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + 16
    again = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert again.choices[0].message.content == choice.message.content  # deterministic


async def test_chat_streaming_matches_non_streaming(client: openai.AsyncOpenAI) -> None:
    full = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    stream = await client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    token_chunks = chunks[1:-2]
    assert len(token_chunks) == 16
    assert "".join(c.choices[0].delta.content for c in token_chunks) == full.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 16
    assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)


async def test_chat_stream_wire_format(fake: FakeOpenAI, http: aiohttp.ClientSession) -> None:
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    async with http.post(f"{fake.base_url}/chat/completions", json=body) as resp:
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        raw = await resp.text()
    data = sse_data(raw)
    assert data[-1] == "[DONE]"
    chunks = [orjson.loads(d) for d in data[:-1]]
    assert len(chunks) == 1 + 16 + 1  # role, tokens, finish; no usage chunk without include_usage
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    texts = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert not texts[0].startswith(" ") and all(t.startswith(" ") for t in texts[1:])


async def test_max_tokens_and_stop(client: openai.AsyncOpenAI) -> None:
    full = (await client.chat.completions.create(model="m", messages=MESSAGES)).choices[0].message.content
    words = full.split()
    short = await client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=3)
    assert short.choices[0].finish_reason == "length"
    assert short.choices[0].message.content == " ".join(words[:3])
    assert short.usage.completion_tokens == 3
    newer = await client.chat.completions.create(model="m", messages=MESSAGES, max_completion_tokens=2)
    assert newer.choices[0].message.content == " ".join(words[:2])

    stop = f" {words[5]} {words[6]}"
    cut = await client.chat.completions.create(model="m", messages=MESSAGES, stop=["zzz", stop])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == " ".join(words[:5])
    assert stop not in cut.choices[0].message.content
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, stop=stop, stream=True)
    pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(pieces) == " ".join(words[:5])


async def test_tool_call_round_trip(client: openai.AsyncOpenAI) -> None:
    resp = await client.chat.completions.create(model="m", messages=MESSAGES, tools=[WEATHER_TOOL])
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"
    expected = {"city": "fake", "days": 1, "metric": True, "extra": None}
    assert orjson.loads(call.function.arguments) == expected

    stream = await client.chat.completions.create(
        model="m", messages=MESSAGES, tools=[WEATHER_TOOL], stream=True
    )
    chunks = [c async for c in stream]
    first = chunks[0].choices[0].delta.tool_calls[0]
    assert (first.index, first.type, first.function.name, first.function.arguments) == (
        0,
        "function",
        "get_weather",
        "",
    )
    assert first.id.startswith("call_")
    args = "".join(c.choices[0].delta.tool_calls[0].function.arguments for c in chunks[1:-1])
    assert orjson.loads(args) == expected
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    follow_up = [
        *MESSAGES,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 24 degrees Celsius all day"},
    ]
    final = await client.chat.completions.create(model="m", messages=follow_up, tools=[WEATHER_TOOL])
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content == "Tool result received: Sunny, 24 degrees Ce"


async def test_legacy_completions(client: openai.AsyncOpenAI) -> None:
    resp = await client.completions.create(
        model="gpt-3.5-turbo-instruct", prompt="Once upon a time", max_tokens=4
    )
    assert resp.object == "text_completion" and resp.id.startswith("cmpl-")
    assert resp.choices[0].finish_reason == "length"
    assert count_tokens(resp.choices[0].text) == 4
    assert resp.usage.prompt_tokens == 4
    stream = await client.completions.create(
        model="gpt-3.5-turbo-instruct",
        prompt="Once upon a time",
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == resp.choices[0].text
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == 4


async def test_embeddings(client: openai.AsyncOpenAI, fake: FakeOpenAI, http: aiohttp.ClientSession) -> None:
    floats = await client.embeddings.create(
        model="text-embedding-3-small", input=["hello world", "bye"], encoding_format="float"
    )
    assert [d.index for d in floats.data] == [0, 1]
    vec = floats.data[0].embedding
    assert len(vec) == 16
    assert abs(sum(v * v for v in vec) - 1.0) < 1e-5
    assert floats.data[0].embedding != floats.data[1].embedding
    assert floats.usage.prompt_tokens == 3
    # The SDK asks for base64 by default and decodes it: the same numbers must come back.
    decoded = await client.embeddings.create(model="text-embedding-3-small", input="hello world")
    assert decoded.data[0].embedding == vec
    wide = await client.embeddings.create(
        model="e", input=[[1, 2, 3]], dimensions=64, encoding_format="float"
    )
    assert len(wide.data[0].embedding) == 64 and wide.usage.prompt_tokens == 3

    body = {"model": "e", "input": "hello world", "encoding_format": "base64"}
    async with http.post(f"{fake.base_url}/embeddings", json=body) as resp:
        raw = (await resp.json())["data"][0]["embedding"]
    assert list(struct.unpack("<16f", base64.b64decode(raw))) == vec


async def test_models(client: openai.AsyncOpenAI) -> None:
    ids = [m.id async for m in client.models.list()]
    assert "gpt-4o-mini" in ids
    assert (await client.models.retrieve("anything")).id == "anything"


@pytest.mark.parametrize(
    ("status", "error"),
    [(429, openai.RateLimitError), (500, openai.InternalServerError), (503, openai.InternalServerError)],
)
async def test_injected_status_errors(
    fake: FakeOpenAI, client: openai.AsyncOpenAI, status: int, error: type[Exception]
) -> None:
    fake.behaviour = Behaviour(status=status)
    with pytest.raises(error) as info:
        await client.chat.completions.create(model="m", messages=MESSAGES)
    assert info.value.status_code == status
    assert set(info.value.body) == {"message", "type", "param", "code"}
    assert info.value.response.headers.get("retry-after") == ("1" if status == 429 else None)
    assert fake.stats.injected_failures == 1


async def test_api_key(fake: FakeOpenAI) -> None:
    fake.behaviour = Behaviour(api_key="sk-right")
    async with openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as info:
            await bad.chat.completions.create(model="m", messages=MESSAGES)
    assert info.value.body["code"] == "invalid_api_key"
    async with openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-right", max_retries=0) as good:
        assert (await good.chat.completions.create(model="m", messages=MESSAGES)).choices


async def test_bad_requests(fake: FakeOpenAI, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{fake.base_url}/chat/completions", data=b"{not json") as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["type"] == "invalid_request_error"
    async with http.post(f"{fake.base_url}/chat/completions", json={"model": "m"}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["param"] == "messages"
    async with http.get(f"{fake.base_url}/nope") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["message"] == "Invalid URL (GET /v1/nope)"


async def test_fail_first_n(fake: FakeOpenAI, http: aiohttp.ClientSession) -> None:
    fake.behaviour = Behaviour(fail_first_n=2, status=503)
    body = {"model": "m", "messages": MESSAGES}
    statuses = []
    for _ in range(4):
        async with http.post(f"{fake.base_url}/chat/completions", json=body) as resp:
            statuses.append(resp.status)
    assert statuses == [503, 503, 200, 200]


async def test_hang_until_client_gives_up(fake: FakeOpenAI, http: aiohttp.ClientSession) -> None:
    fake.behaviour = Behaviour(hang=True)
    body = {"model": "m", "messages": MESSAGES}
    timeout = aiohttp.ClientTimeout(total=0.4)
    request = asyncio.create_task(http.post(f"{fake.base_url}/chat/completions", json=body, timeout=timeout))
    await wait_for(lambda: fake.stats.in_flight == 1)
    assert fake.stats.requests["/v1/chat/completions"] == 1
    fake.reset_stats()  # in_flight survives a reset and still drops when the request ends
    with pytest.raises(asyncio.TimeoutError):
        await request
    await wait_for(lambda: fake.stats.in_flight == 0)  # the server notices the client went away


async def test_drop_after_chunks(fake: FakeOpenAI, http: aiohttp.ClientSession) -> None:
    fake.behaviour = Behaviour(drop_after_chunks=3)
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    lines: list[bytes] = []
    async with http.post(f"{fake.base_url}/chat/completions", json=body) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            async for line in resp.content:
                lines.append(line)
    data = [line for line in lines if line.startswith(b"data: ")]
    assert len(data) == 3
    assert b"data: [DONE]\n" not in lines


async def test_malformed(fake: FakeOpenAI, http: aiohttp.ClientSession) -> None:
    fake.behaviour = Behaviour(malformed=True)
    body = {"model": "m", "messages": MESSAGES}
    async with http.post(f"{fake.base_url}/chat/completions", json=body) as resp:
        assert resp.status == 200
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(await resp.read())
    async with http.post(f"{fake.base_url}/chat/completions", json={**body, "stream": True}) as resp:
        data = sse_data(await resp.text())
    orjson.loads(data[0])  # the first frame is intact, the second is cut mid-JSON
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(data[1])


async def test_per_request_header_override(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(
            model="m", messages=MESSAGES, extra_headers={"x-fake-behaviour": '{"status": 500}'}
        )
    short = await client.chat.completions.create(
        model="m", messages=MESSAGES, extra_headers={"x-fake-behaviour": '{"reply_tokens": 2}'}
    )
    assert short.usage.completion_tokens == 2
    assert (await client.chat.completions.create(model="m", messages=MESSAGES)).usage.completion_tokens == 16
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(
            model="m", messages=MESSAGES, extra_headers={"x-fake-behaviour": '{"nope": 1}'}
        )


async def test_runtime_behaviour_endpoint(fake: FakeOpenAI, http: aiohttp.ClientSession) -> None:
    async with http.put(f"{fake.url}/_fake/behaviour", json={"status": 429, "latency_ms": 1}) as resp:
        assert resp.status == 200
        assert (await resp.json())["status"] == 429
    assert fake.behaviour == Behaviour(status=429, latency_ms=1)
    async with http.patch(f"{fake.url}/_fake/behaviour", json={"reply_tokens": 3}) as resp:
        assert (await resp.json()) == {
            **Behaviour().to_dict(),
            "status": 429,
            "latency_ms": 1,
            "reply_tokens": 3,
        }
    async with http.post(
        f"{fake.base_url}/chat/completions", json={"model": "m", "messages": MESSAGES}
    ) as resp:
        assert resp.status == 429
    async with http.put(f"{fake.url}/_fake/behaviour", json={"bogus": True}) as resp:
        assert resp.status == 400
    async with http.put(f"{fake.url}/_fake/behaviour", json={}) as resp:  # PUT {} restores the defaults
        assert (await resp.json()) == Behaviour().to_dict()
    async with http.get(f"{fake.url}/_fake/behaviour") as resp:
        assert (await resp.json()) == Behaviour().to_dict()


async def test_stats_and_reset(
    fake: FakeOpenAI, client: openai.AsyncOpenAI, http: aiohttp.ClientSession
) -> None:
    await client.chat.completions.create(model="m", messages=MESSAGES)
    await client.chat.completions.create(model="m", messages=MESSAGES)
    await client.embeddings.create(model="e", input="x")
    async with http.get(f"{fake.url}/_fake/stats") as resp:
        stats = await resp.json()
    assert stats["requests"] == {"/v1/chat/completions": 2, "/v1/embeddings": 1}
    assert stats["total"] == 3 and stats["in_flight"] == 0
    async with http.post(f"{fake.url}/_fake/reset") as resp:
        assert resp.status == 200
    assert fake.stats.total == 0


async def test_latency_and_token_delay(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.behaviour = Behaviour(latency_ms=150)
    started = time.perf_counter()
    await client.chat.completions.create(model="m", messages=MESSAGES)
    assert time.perf_counter() - started >= 0.15
    fake.behaviour = Behaviour(token_delay_ms=30, reply_tokens=5)
    started = time.perf_counter()
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    stamps = [time.perf_counter() async for _ in stream]
    assert stamps[-1] - started >= 5 * 0.03
    assert stamps[0] - started < 0.03 + 0.1  # the role chunk is not delayed


def test_in_thread_with_sync_client() -> None:
    with FakeOpenAI.in_thread(Behaviour(reply_tokens=4)) as fake:
        client = openai.OpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0)
        resp = client.chat.completions.create(model="m", messages=MESSAGES)
        assert resp.usage.completion_tokens == 4
        fake.behaviour = Behaviour(status=429)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="m", messages=MESSAGES)
        client.close()


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_cli_subprocess(provider: str, http: aiohttp.ClientSession) -> None:
    root = Path(gateway.__file__).resolve().parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "gateway.testing", provider, "--host", "127.0.0.1", "--port", "0"],
        *["--api-key", "k", "--reply-tokens", "3"],
        stdout=asyncio.subprocess.PIPE,
        cwd=root,
        env=env,
    )
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.removeprefix("listening on ")
        assert int(url.rsplit(":", 1)[1]) > 0
        if provider == "openai":
            request = {"url": f"{url}/v1/chat/completions", "headers": {"Authorization": "Bearer k"}}
        else:
            request = {
                "url": f"{url}/v1/messages",
                "headers": {"x-api-key": "k", "anthropic-version": "2023-06-01"},
            }
        body = {"model": "m", "messages": MESSAGES[1:], "max_tokens": 10}
        async with http.post(json=body, **request) as resp:
            assert resp.status == 200
            usage = (await resp.json())["usage"]
        assert usage.get("completion_tokens", usage.get("output_tokens")) == 3
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_prompt_cache_usage_in_the_apis_shape(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    """Cached tokens are part of prompt_tokens; OpenAI reports no cache writes."""
    fake.behaviour = Behaviour(cached_tokens=4, cache_creation_tokens=2)
    prompt = count_tokens("You are terse. Tell me about the weather in Paris")
    whole = (await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)).usage
    assert whole is not None and whole.prompt_tokens == prompt and whole.total_tokens == prompt + 16
    assert whole.prompt_tokens_details is not None and whole.prompt_tokens_details.cached_tokens == 4
    assert (
        whole.completion_tokens_details is not None and whole.completion_tokens_details.reasoning_tokens == 0
    )
    stream = await client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    usages = [chunk.usage async for chunk in stream if chunk.usage is not None]
    assert [u.model_dump() for u in usages] == [whole.model_dump()]
    completion = await client.completions.create(model="gpt-4o", prompt="one two three", max_tokens=2)
    assert completion.usage is not None and completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 3  # capped at the prompt's tokens


async def test_no_answer_reports_usage_without_choices(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    """A 200 the upstream billed but whose answer is missing (what a translating gateway cannot use)."""
    fake.behaviour = Behaviour(no_answer=True)
    reply = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert reply.choices == []
    assert reply.usage is not None and reply.usage.completion_tokens == 16


async def test_reasoning_effort_reports_reasoning_tokens(client: openai.AsyncOpenAI) -> None:
    plain = await client.chat.completions.create(model="o4-mini", messages=MESSAGES)
    assert plain.usage is not None and plain.usage.completion_tokens_details is None
    reasoned = await client.chat.completions.create(
        model="o4-mini", messages=MESSAGES, reasoning_effort="low"
    )
    usage = reasoned.usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 16
    assert usage.completion_tokens == plain.usage.completion_tokens + 16
    assert reasoned.choices[0].message.content == plain.choices[0].message.content
    with pytest.raises(openai.BadRequestError, match="max_completion_tokens") as caught:
        await client.chat.completions.create(
            model="o4-mini", messages=MESSAGES, reasoning_effort="high", max_tokens=100
        )
    assert caught.value.param == "max_tokens"
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(
            model="o4-mini", messages=MESSAGES, extra_body={"reasoning_effort": "lots"}
        )
    assert caught.value.param == "reasoning_effort"


# -- the Responses API


async def test_responses_answer_and_stream_follow_the_sdk_types(client: openai.AsyncOpenAI) -> None:
    from openai.types.responses import Response, ResponseStreamEvent
    from pydantic import TypeAdapter

    whole = await client.responses.with_raw_response.create(
        model="gpt-4o", instructions="You are terse.", input="Tell me about the weather in Paris"
    )
    response = Response.model_validate(whole.http_response.json())
    assert response.status == "completed" and response.output_text
    assert response.usage is not None and response.usage.input_tokens == 10
    stream = await client.responses.create(
        model="gpt-4o", input="Tell me about the weather in Paris", stream=True
    )
    events = [event async for event in stream]
    strict = TypeAdapter(ResponseStreamEvent)
    for event in events:
        strict.validate_python(event.model_dump(exclude_unset=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == response.output_text
    assert events[-1].type == "response.completed"


async def test_responses_function_call_round_trip(client: openai.AsyncOpenAI) -> None:
    tool = {"type": "function", **WEATHER_TOOL["function"]}
    first = await client.responses.create(model="gpt-4o", input="Weather in Paris?", tools=[tool])
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    second = await client.responses.create(
        model="gpt-4o",
        tools=[tool],
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "rainy"},
        ],
    )
    assert second.output_text == "Tool result received: rainy"
