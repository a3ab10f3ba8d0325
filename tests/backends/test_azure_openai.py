"""The `azure_openai` backend against the fake Azure OpenAI resource over real loopback HTTP: the
deployment URL and api-version the official SDK uses, the `api-key` header or an Entra ID bearer
token, OpenAI pass-through (replies, streams, embeddings) and translation for Anthropic clients, and
Azure's own failures: the content filter's refusal (named categories, a client error) and a 429's
`retry-after-ms`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.backends.azure_openai import AzureStreamDecoder, content_filter_categories
from gateway.backends.base import Backend
from gateway.backends.upstream import (
    AttemptLimits,
    ContentFilterRefusal,
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
    EmbeddingRequest,
    StreamEnd,
    StreamStart,
    TextDelta,
    UsageEvent,
)
from gateway.runtime.live import LiveRuntime
from gateway.testing import Behaviour, FakeAzureOpenAI
from gateway.testing.fake_azure_openai import AZURE_API_VERSION

KEY = "azure-test-key"
USER = [{"role": "user", "content": "hello there"}]


@pytest.fixture
async def fake() -> AsyncIterator[FakeAzureOpenAI]:
    async with FakeAzureOpenAI(Behaviour(api_key=KEY)) as server:
        yield server


@pytest.fixture
async def azure(tmp_path: Path, fake: FakeAzureOpenAI) -> AsyncIterator[Callable[..., Any]]:
    """`await azure(**settings)`: the azure_openai backend the gateway builds for the fake, serving
    deployment `dep-1`."""
    lives: list[LiveRuntime] = []

    async def build(**settings: str | None) -> Backend:
        """`name=None` leaves a setting out."""
        fields = {"base_url": fake.base_url, "api_version": AZURE_API_VERSION, "api_key": "${AZ_KEY}"}
        fields.update(settings)
        written = ", ".join(f'{name}: "{value}"' for name, value in fields.items() if value is not None)
        path = tmp_path / f"gateway-{len(lives)}.yaml"
        path.write_text(
            f"backends:\n  az: {{type: azure_openai, {written}}}\n"
            "models:\n  m: {chain: [{backend: az, model: dep-1}]}\nreload: {watch: false}\n"
        )
        live = LiveRuntime(path, env={"AZ_KEY": KEY, "AZ_TOKEN": KEY})
        lives.append(live)
        runtime = await live.start()
        return runtime.routes["m"].chain[0].backend

    yield build
    for live in lives:
        await live.close()


def chat(client: str = "openai", *, stream: bool = False) -> UpstreamCall:
    if client == "openai":
        body: dict[str, Any] = {"model": "m", "messages": USER, "stream": stream}
        request = openai_protocol.parse_chat_request(body)
    else:
        body = {"model": "m", "max_tokens": 50, "messages": USER, "stream": stream}
        request = anthropic_protocol.parse_messages_request(body)
    return UpstreamCall("chat", client, body, request, stream, "req_test", "m")  # type: ignore[arg-type]


def limits() -> AttemptLimits:
    return AttemptLimits(connect=5, first_byte=10, deadline=time.monotonic() + 30)


async def read_all(stream: PassThroughStream | EventStream) -> list[Any]:
    items = [stream.first]
    try:
        async for item in stream.rest:
            items.append(item)
    finally:
        await stream.aclose()
    return items


async def test_chat_goes_to_the_deployment_with_the_api_version_and_api_key(
    azure: Callable[..., Any], fake: FakeAzureOpenAI
) -> None:
    backend = await azure()
    reply = await backend.send(chat(), "dep-1", limits())
    assert isinstance(reply, PassThroughReply)
    answer = orjson.loads(reply.body)
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["choices"][0]["message"]["content"]
    assert reply.usage is not None and reply.usage.prompt_tokens == answer["usage"]["prompt_tokens"]
    [seen] = fake.seen
    assert seen.path == "/openai/deployments/dep-1/chat/completions"
    assert (seen.api_version, seen.credential, seen.body_model) == (AZURE_API_VERSION, "api-key", "dep-1")


async def test_the_resource_name_builds_the_endpoint(azure: Callable[..., Any]) -> None:
    backend = await azure(base_url=None, resource="contoso")
    assert backend.config.base_url == "https://contoso.openai.azure.com"


async def test_entra_id_sends_the_token_as_bearer(azure: Callable[..., Any], fake: FakeAzureOpenAI) -> None:
    fake.auth = "entra"
    backend = await azure(api_key="", auth="entra", azure_ad_token="${AZ_TOKEN}")
    reply = await backend.send(chat(), "dep-1", limits())
    assert isinstance(reply, PassThroughReply)
    assert fake.seen[-1].credential == "bearer"


async def test_a_wrong_credential_is_an_auth_failure(
    azure: Callable[..., Any], fake: FakeAzureOpenAI
) -> None:
    fake.auth = "entra"  # the fake wants a bearer token: the api-key header is refused
    backend = await azure()
    with pytest.raises(UpstreamFailure) as failed:
        await backend.send(chat(), "dep-1", limits())
    assert (failed.value.kind, failed.value.status) == ("auth", 401)


async def test_an_unknown_api_version_is_refused_by_the_resource(
    azure: Callable[..., Any], fake: FakeAzureOpenAI
) -> None:
    backend = await azure(api_version="1999-01-01")
    with pytest.raises(UpstreamFailure) as failed:
        await backend.send(chat(), "dep-1", limits())
    assert failed.value.status == 404
    assert fake.seen[-1].api_version == "1999-01-01"


async def test_a_stream_passes_through_with_its_prompt_filter_chunk(
    azure: Callable[..., Any], fake: FakeAzureOpenAI
) -> None:
    backend = await azure()
    stream = await backend.send(chat(stream=True), "dep-1", limits())
    assert isinstance(stream, PassThroughStream)
    raw = b"".join(await read_all(stream))
    assert raw.startswith(b"data: ") and b"prompt_filter_results" in raw
    assert raw.endswith(b"data: [DONE]\n\n")
    assert b'"usage":{' not in raw  # the client did not ask for usage: the usage chunk is dropped
    assert stream.usage is not None and stream.usage.completion_tokens > 0


async def test_an_anthropic_client_gets_the_canonical_form(azure: Callable[..., Any]) -> None:
    backend = await azure()
    reply = await backend.send(chat("anthropic"), "dep-1", limits())
    assert isinstance(reply, ChatResponse)
    assert reply.finish_reason == "stop"
    stream = await backend.send(chat("anthropic", stream=True), "dep-1", limits())
    assert isinstance(stream, EventStream)
    events = [
        e for batch in await read_all(stream) for e in (batch if isinstance(batch, tuple) else (batch,))
    ]
    start = events[0]
    assert isinstance(start, StreamStart) and start.id.startswith("chatcmpl-")  # not the filter chunk's ""
    assert any(isinstance(e, TextDelta) for e in events)
    assert any(isinstance(e, UsageEvent) for e in events)
    assert isinstance(events[-1], StreamEnd) and events[-1].finish_reason == "stop"


async def test_embeddings_go_to_the_deployment(azure: Callable[..., Any], fake: FakeAzureOpenAI) -> None:
    backend = await azure()
    body = {"model": "m", "input": ["one", "two"]}
    request = EmbeddingRequest(model="m", input=["one", "two"])
    call = UpstreamCall("embeddings", "openai", body, request, False, "req_e", "m")
    reply = await backend.send(call, "dep-1", limits())
    assert isinstance(reply, PassThroughReply)
    assert len(orjson.loads(reply.body)["data"]) == 2
    assert fake.seen[-1].path == "/openai/deployments/dep-1/embeddings"


async def test_the_content_filter_s_refusal_names_the_categories_not_the_prompt(
    azure: Callable[..., Any], fake: FakeAzureOpenAI
) -> None:
    fake.prompt_filter = {"self_harm": "medium", "violence": "high"}
    backend = await azure()
    with pytest.raises(ContentFilterRefusal) as failed:
        await backend.send(chat(), "dep-1", limits())
    refusal = failed.value
    assert refusal.kind == "client_error" and refusal.status == 400
    assert refusal.categories == ("self_harm (medium)", "violence (high)")
    assert "content filter" in refusal.detail and "hello there" not in refusal.detail


async def test_a_filtered_answer_keeps_its_finish_reason(
    azure: Callable[..., Any], fake: FakeAzureOpenAI
) -> None:
    fake.filter_completion = True
    backend = await azure()
    reply = await backend.send(chat(), "dep-1", limits())
    assert isinstance(reply, PassThroughReply)
    assert orjson.loads(reply.body)["choices"][0]["finish_reason"] == "content_filter"
    translated = await backend.send(chat("anthropic"), "dep-1", limits())
    assert isinstance(translated, ChatResponse) and translated.finish_reason == "content_filter"
    stream = await backend.send(chat(stream=True), "dep-1", limits())
    raw = b"".join(await read_all(stream))
    assert b'"finish_reason":"content_filter"' in raw


@pytest.mark.parametrize(("seconds_header", "expected"), [(True, "2"), (False, "2")])
async def test_a_429_is_retryable_with_its_retry_after(
    azure: Callable[..., Any], fake: FakeAzureOpenAI, seconds_header: bool, expected: str
) -> None:
    """Azure sends `retry-after-ms` (1500 here) and usually `retry-after`; without the latter the
    milliseconds count, rounded up to whole seconds."""
    fake.behaviour = Behaviour(api_key=KEY, status=429)
    fake.retry_after_seconds = seconds_header
    backend = await azure()
    with pytest.raises(UpstreamFailure) as failed:
        await backend.send(chat(), "dep-1", limits())
    assert (failed.value.kind, failed.value.retry_after) == ("http_429", expected)


def test_content_filter_categories_reads_only_filtered_ones() -> None:
    body = {
        "error": {
            "code": "content_filter",
            "innererror": {
                "content_filter_result": {
                    "hate": {"filtered": False, "severity": "safe"},
                    "jailbreak": {"filtered": True, "detected": True},
                }
            },
        }
    }
    assert content_filter_categories(orjson.dumps(body)) == ["jailbreak"]
    assert content_filter_categories(b'{"error": {"code": "content_filter"}}') == []
    assert content_filter_categories(b'{"error": {"code": "invalid_value"}}') is None
    assert content_filter_categories(b"not json") is None


def test_the_stream_decoder_skips_only_the_prompt_filter_chunk() -> None:
    decoder = AzureStreamDecoder()
    assert decoder.feed({"id": "", "choices": [], "prompt_filter_results": []}) == []
    events = decoder.feed({"id": "c1", "model": "gpt", "choices": [{"index": 0, "delta": {"content": "x"}}]})
    assert events == [StreamStart("c1", "gpt"), TextDelta("x")]
