"""The `vertex` backend against the fake Vertex AI over real loopback HTTP: Gemini models (publisher
google) and Claude models (publisher anthropic), whole and streamed, tool calls, token counts, what each
error means for failover, and Google auth: a service account's signed JWT exchanged at the fake's
token endpoint, the token refreshed before it expires (one refresh at a time), a refused token dropped,
and no credentials at all failing requests as `auth`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.backends.base import Backend
from gateway.backends.upstream import (
    AttemptLimits,
    EventStream,
    PassThroughReply,
    PassThroughStream,
    UpstreamCall,
    UpstreamFailure,
)
from gateway.protocol import anthropic as anthropic_protocol
from gateway.protocol import openai as openai_protocol
from gateway.protocol.canonical import (
    ChatResponse,
    EmbeddingResponse,
    StreamEnd,
    StreamStart,
    TextDelta,
    TokenCount,
    ToolCallPart,
    Usage,
)
from gateway.runtime.live import LiveRuntime
from gateway.testing import Behaviour, FakeVertex
from gateway.testing.behaviour import TOOL_TOKENS, plan_text, reply_words

GEMINI = "gemini-2.5-flash"
CLAUDE = "claude-sonnet-4-5@20250929"
PREFIX = "/v1/projects/test-project/locations/us-central1/publishers"
HELLO = {"messages": [{"role": "user", "content": "hello there"}]}
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


@pytest.fixture
async def fake() -> AsyncIterator[FakeVertex]:
    async with FakeVertex() as server:
        yield server


@pytest.fixture
def no_ambient_google(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credentials but the test's own: no gcloud login, no metadata server probe."""
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)


async def _backend(tmp_path: Path, fake: FakeVertex) -> AsyncIterator[Backend]:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "backends:\n"
        f'  v: {{type: vertex, project: test-project, region: us-central1, base_url: "{fake.base_url}"}}\n'
        f"models:\n  m: {{chain: [{{backend: v, model: {GEMINI}}}]}}\nreload: {{watch: false}}\n"
    )
    live = LiveRuntime(path)
    runtime = await live.start()
    yield runtime.routes["m"].chain[0].backend
    await live.close()


@pytest.fixture
async def vertex(
    tmp_path: Path, fake: FakeVertex, monkeypatch: pytest.MonkeyPatch, no_ambient_google: None
) -> AsyncIterator[Backend]:
    """The backend the gateway builds from a `type: vertex` config pointing at the fake, with a
    service account whose token endpoint is the fake."""
    account = fake.service_account(tmp_path / "service-account.json")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(account))
    async for backend in _backend(tmp_path, fake):
        yield backend


def chat(body: dict[str, Any], client: str = "openai") -> UpstreamCall:
    body = {"model": "m", **body}
    if client == "openai":
        request = openai_protocol.parse_chat_request(body)
    else:
        request = anthropic_protocol.parse_messages_request(body)
    return UpstreamCall("chat", client, body, request, bool(body.get("stream")), "req_test", "m")  # type: ignore[arg-type]


def limits() -> AttemptLimits:
    return AttemptLimits(connect=5, first_byte=10, deadline=time.monotonic() + 30)


async def events_of(stream: EventStream) -> list[Any]:
    events = list(stream.first)
    async for event in stream.rest:
        events.append(event)
    await stream.aclose()
    return events


async def test_a_gemini_model_answers_at_its_publisher_path(vertex: Backend, fake: FakeVertex) -> None:
    reply = await vertex.send(chat(HELLO), GEMINI, limits())
    assert isinstance(reply, ChatResponse)
    assert reply.text == plan_text(reply_words("hello there", 16), None).text
    assert reply.usage == Usage(2, 16)
    assert fake.stats.requests == {f"{PREFIX}/google/models/{GEMINI}:generateContent": 1}
    assert fake.tokens_issued == 1


async def test_a_gemini_stream_is_decoded_into_canonical_events(vertex: Backend, fake: FakeVertex) -> None:
    stream = await vertex.send(chat({**HELLO, "stream": True}), GEMINI, limits())
    assert isinstance(stream, EventStream)
    events = await events_of(stream)
    assert type(events[0]) is StreamStart
    text = "".join(e.text for e in events if type(e) is TextDelta)
    assert text == plan_text(reply_words("hello there", 16), None).text
    assert events[-1] == StreamEnd("stop")
    assert fake.stats.requests == {f"{PREFIX}/google/models/{GEMINI}:streamGenerateContent": 1}


async def test_a_gemini_tool_call_comes_back(vertex: Backend) -> None:
    asked = {"messages": [{"role": "user", "content": "weather in Paris?"}], "tools": [WEATHER]}
    reply = await vertex.send(chat(asked), GEMINI, limits())
    assert isinstance(reply, ChatResponse)
    (call,) = reply.content
    assert isinstance(call, ToolCallPart)
    assert (call.name, orjson.loads(call.arguments)) == ("weather", {"city": "fake", "days": 1})
    assert reply.usage is not None and reply.usage.prompt_tokens == 3 + TOOL_TOKENS


async def test_a_gemini_token_count_goes_to_count_tokens(vertex: Backend, fake: FakeVertex) -> None:
    body = {"model": "m", "system": "be brief", "messages": [{"role": "user", "content": "hello there"}]}
    request = anthropic_protocol.parse_count_tokens_request(body)
    call = UpstreamCall("count_tokens", "anthropic", body, request, False, "req_test", "m")
    assert await vertex.send(call, GEMINI, limits()) == TokenCount(4)
    assert fake.stats.requests == {f"{PREFIX}/google/models/{GEMINI}:countTokens": 1}


async def test_an_openai_client_reaches_claude_through_raw_predict(vertex: Backend, fake: FakeVertex) -> None:
    reply = await vertex.send(chat({**HELLO, "max_tokens": 50}), CLAUDE, limits())
    assert isinstance(reply, ChatResponse)
    assert reply.text == plan_text(reply_words("hello there", 16), 50).text
    assert reply.model == CLAUDE  # the fake answers with the model of the path
    assert fake.stats.requests == {f"{PREFIX}/anthropic/models/{CLAUDE}:rawPredict": 1}


async def test_an_anthropic_client_is_forwarded_to_claude_untouched(
    vertex: Backend, fake: FakeVertex
) -> None:
    body = {"max_tokens": 50, "top_k": 5, **HELLO}
    reply = await vertex.send(chat(body, "anthropic"), CLAUDE, limits())
    assert isinstance(reply, PassThroughReply)
    answer = orjson.loads(reply.body)
    assert (answer["type"], answer["model"]) == ("message", CLAUDE)
    assert reply.usage == Usage(2, 16)


async def test_a_claude_stream_passes_through_or_is_decoded(vertex: Backend, fake: FakeVertex) -> None:
    body = {"max_tokens": 50, "stream": True, **HELLO}
    through = await vertex.send(chat(body, "anthropic"), CLAUDE, limits())
    assert isinstance(through, PassThroughStream)
    raw = through.first + b"".join([chunk async for chunk in through.rest])
    await through.aclose()
    assert b"event: message_stop" in raw
    decoded = await vertex.send(chat(body), CLAUDE, limits())
    assert isinstance(decoded, EventStream)
    events = await events_of(decoded)
    assert events[-1] == StreamEnd("stop")
    assert fake.stats.requests == {f"{PREFIX}/anthropic/models/{CLAUDE}:streamRawPredict": 2}


async def test_a_claude_tool_call_comes_back(vertex: Backend) -> None:
    asked = {"messages": [{"role": "user", "content": "weather?"}], "tools": [WEATHER], "max_tokens": 50}
    reply = await vertex.send(chat(asked), CLAUDE, limits())
    assert isinstance(reply, ChatResponse)
    assert reply.finish_reason == "tool_calls"
    (call,) = reply.content
    assert isinstance(call, ToolCallPart) and call.name == "weather"


async def test_a_claude_token_count_goes_to_the_count_tokens_model(vertex: Backend, fake: FakeVertex) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}
    request = anthropic_protocol.parse_count_tokens_request(body)
    call = UpstreamCall("count_tokens", "anthropic", body, request, False, "req_test", "m")
    reply = await vertex.send(call, CLAUDE, limits())
    assert isinstance(reply, PassThroughReply)
    assert orjson.loads(reply.body) == {"input_tokens": 2}
    assert fake.stats.requests == {f"{PREFIX}/anthropic/models/count-tokens:rawPredict": 1}


def embed(body: dict[str, Any]) -> UpstreamCall:
    body = {"model": "m", **body}
    request = openai_protocol.parse_embedding_request(body)
    return UpstreamCall("embeddings", "openai", body, request, False, "req_test", "m")


async def test_embeddings_go_to_predict_in_one_request(vertex: Backend, fake: FakeVertex) -> None:
    reply = await vertex.send(
        embed({"input": ["one", "two words", "three"], "dimensions": 8}), "text-embedding-005", limits()
    )
    assert isinstance(reply, EmbeddingResponse)
    assert (len(reply.vectors), reply.dimensions, len(set(reply.vectors))) == (3, 8, 3)
    assert reply.usage == Usage(4)  # the token counts Vertex reports per instance, summed
    assert fake.stats.requests == {f"{PREFIX}/google/models/text-embedding-005:predict": 1}


async def test_a_gemini_embedding_model_gets_one_input_per_request(vertex: Backend, fake: FakeVertex) -> None:
    reply = await vertex.send(embed({"input": ["one", "two", "three"]}), "gemini-embedding-001", limits())
    assert isinstance(reply, EmbeddingResponse)
    assert len(reply.vectors) == 3 and reply.dimensions == 768
    assert fake.stats.requests == {f"{PREFIX}/google/models/gemini-embedding-001:predict": 3}


async def test_token_ids_are_refused_for_embeddings(vertex: Backend, fake: FakeVertex) -> None:
    with pytest.raises(UpstreamFailure) as failure:
        await vertex.send(embed({"input": [1, 2, 3]}), "text-embedding-005", limits())
    assert (failure.value.kind, failure.value.param) == ("unsupported", "input")
    assert fake.stats.total == 0


@pytest.mark.parametrize("model", [GEMINI, CLAUDE])
@pytest.mark.parametrize(
    ("status", "kind"),
    [(429, "http_429"), (500, "http_5xx"), (503, "http_5xx"), (400, "client_error"), (403, "auth")],
)
async def test_error_statuses_are_classified_for_failover(
    vertex: Backend, fake: FakeVertex, model: str, status: int, kind: str
) -> None:
    fake.behaviour = Behaviour(status=status)
    with pytest.raises(UpstreamFailure) as failure:
        await vertex.send(chat({**HELLO, "max_tokens": 5}), model, limits())
    assert (failure.value.kind, failure.value.status) == (kind, status)
    assert "Injected failure" in failure.value.detail


async def test_a_claude_stream_cut_short_fails_mid_stream(vertex: Backend, fake: FakeVertex) -> None:
    fake.behaviour = Behaviour(drop_after_chunks=3)
    stream = await vertex.send(chat({**HELLO, "max_tokens": 50, "stream": True}), CLAUDE, limits())
    assert isinstance(stream, EventStream)
    with pytest.raises(UpstreamFailure) as failure:
        async for _ in stream.rest:
            pass
    await stream.aclose()
    assert failure.value.kind == "http_5xx"


async def test_concurrent_requests_share_one_token(vertex: Backend, fake: FakeVertex) -> None:
    replies = await asyncio.gather(*(vertex.send(chat(HELLO), GEMINI, limits()) for _ in range(5)))
    assert all(isinstance(reply, ChatResponse) for reply in replies)
    assert fake.tokens_issued == 1


async def test_a_token_near_its_expiry_is_refreshed_before_use(vertex: Backend, fake: FakeVertex) -> None:
    # google-auth refreshes a few minutes before the expiry: a token issued for 2 minutes is due already.
    fake.token_lifetime = 120
    for _ in range(3):
        assert isinstance(await vertex.send(chat(HELLO), GEMINI, limits()), ChatResponse)
    assert fake.tokens_issued == 3


async def test_a_refused_token_is_dropped_and_the_next_request_gets_a_new_one(
    vertex: Backend, fake: FakeVertex
) -> None:
    assert isinstance(await vertex.send(chat(HELLO), GEMINI, limits()), ChatResponse)
    fake.revoke_tokens()
    with pytest.raises(UpstreamFailure) as failure:
        await vertex.send(chat(HELLO), GEMINI, limits())
    assert (failure.value.kind, failure.value.status) == ("auth", 401)
    assert isinstance(await vertex.send(chat(HELLO), GEMINI, limits()), ChatResponse)
    assert fake.tokens_issued == 2


async def test_a_slow_token_endpoint_is_bounded_by_the_first_byte_limit(
    vertex: Backend, fake: FakeVertex
) -> None:
    fake.token_latency = 1.0
    short = AttemptLimits(connect=5, first_byte=0.1, deadline=time.monotonic() + 30)
    with pytest.raises(UpstreamFailure) as failure:
        await vertex.send(chat(HELLO), GEMINI, short)
    assert failure.value.kind == "timeout"
    assert "no Google access token" in failure.value.detail
    assert fake.stats.total == 0


async def test_without_credentials_the_backend_starts_and_requests_fail_as_auth(
    tmp_path: Path, fake: FakeVertex, no_ambient_google: None
) -> None:
    async for backend in _backend(tmp_path, fake):
        with pytest.raises(UpstreamFailure) as failure:
            await backend.send(chat(HELLO), GEMINI, limits())
        assert failure.value.kind == "auth"
        assert "GOOGLE_APPLICATION_CREDENTIALS" in failure.value.detail
    assert fake.stats.total == 0


async def test_a_credentials_file_that_is_not_there_is_named(
    tmp_path: Path, fake: FakeVertex, monkeypatch: pytest.MonkeyPatch, no_ambient_google: None
) -> None:
    missing = tmp_path / "nowhere.json"
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(missing))
    async for backend in _backend(tmp_path, fake):
        with pytest.raises(UpstreamFailure) as failure:
            await backend.send(chat(HELLO), GEMINI, limits())
        assert failure.value.kind == "auth"
        assert str(missing) in failure.value.detail


async def test_a_token_from_another_key_is_refused_by_the_token_endpoint(
    tmp_path: Path, fake: FakeVertex, monkeypatch: pytest.MonkeyPatch, no_ambient_google: None
) -> None:
    async with FakeVertex() as other:
        # A service account the fake never made: its JWT's signature does not check out.
        account = other.service_account(tmp_path / "other.json")
        info = orjson.loads(account.read_bytes())
        account.write_bytes(orjson.dumps({**info, "token_uri": f"{fake.url}/token"}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(account))
    async for backend in _backend(tmp_path, fake):
        with pytest.raises(UpstreamFailure) as failure:
            await backend.send(chat(HELLO), GEMINI, limits())
        assert failure.value.kind == "auth"
        assert "refreshing the Google access token failed" in failure.value.detail
    assert (fake.tokens_issued, fake.stats.total) == (0, 0)


async def test_the_fake_wants_vertex_shapes(vertex: Backend, fake: FakeVertex) -> None:
    """The fake refuses what Vertex refuses: no token, a Claude body naming its model or lacking the
    Vertex anthropic_version, a Gemini content without a role."""
    url = f"{fake.base_url}{PREFIX}"
    token = await vertex.credentials.token()  # type: ignore[attr-defined]
    auth = {"Authorization": f"Bearer {token}"}
    claude = {"anthropic_version": "vertex-2023-10-16", "max_tokens": 5, **HELLO}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/anthropic/models/{CLAUDE}:rawPredict", json=claude) as response:
            error = (await response.json())["error"]
            assert (response.status, error["status"]) == (401, "UNAUTHENTICATED")
        async with session.post(
            f"{url}/anthropic/models/{CLAUDE}:rawPredict", json={**claude, "model": CLAUDE}, headers=auth
        ) as response:
            assert response.status == 400
        del claude["anthropic_version"]
        async with session.post(
            f"{url}/anthropic/models/{CLAUDE}:rawPredict", json=claude, headers=auth
        ) as response:
            assert response.status == 400
        gemini = {"contents": [{"parts": [{"text": "hi"}]}]}
        async with session.post(
            f"{url}/google/models/{GEMINI}:generateContent", json=gemini, headers=auth
        ) as r:
            assert (r.status, (await r.json())["error"]["status"]) == (400, "INVALID_ARGUMENT")
