"""The `bedrock` backend against the fake Bedrock Runtime over real loopback HTTP: requests signed
with SigV4 from the AWS credential chain (the fake recomputes each signature with botocore), the
answer and the stream in the canonical form, each error the API names classified for failover, an
exception frame before the stream's first event failing over like its status, a broken frame failing
mid-stream, and what Converse cannot express refused before anything is sent.

Credentials are the fake's test keys, given through the environment as the AWS chain reads them; no
file, profile or instance metadata is consulted (`aws_env`)."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.credentials import RefreshableCredentials

from gateway.backends.aws_signing import AWSSigner
from gateway.backends.bedrock import BedrockBackend
from gateway.backends.upstream import AttemptLimits, EventStream, UpstreamCall, UpstreamFailure
from gateway.protocol import anthropic as anthropic_protocol
from gateway.protocol import openai as openai_protocol
from gateway.protocol.canonical import (
    ChatResponse,
    EmbeddingResponse,
    StreamEnd,
    StreamError,
    StreamStart,
    TextDelta,
    TokenCount,
    Usage,
)
from gateway.protocol.openai_legacy import parse_embedding_request
from gateway.runtime.live import LiveRuntime
from gateway.testing import Behaviour
from gateway.testing.behaviour import plan_text, reply_words
from gateway.testing.fake_bedrock import TEST_CREDENTIALS, FakeBedrock
from tests.conftest import wait_for

PROFILE_ARN = (
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0"
)
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
PROMPT = "hello there friend"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The fake's test keys in the environment, and nothing else of AWS's: no config or credentials
    file, no profile, no instance metadata (which botocore would otherwise try on loopback's behalf)."""
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", TEST_CREDENTIALS[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", TEST_CREDENTIALS[1])
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture
async def fake(aws_env: None) -> AsyncIterator[FakeBedrock]:
    async with FakeBedrock() as server:
        yield server


@pytest.fixture
async def build(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """`await build(base_url, extra="", env=None, region=...)`: the backend the gateway builds from a
    config (`extra`: more settings of the backend's flow mapping)."""
    lives: list[LiveRuntime] = []

    async def make(
        base_url: str, extra: str = "", env: dict[str, str] | None = None, region: str = "us-east-1"
    ) -> BedrockBackend:
        path = tmp_path / f"gateway-{len(lives)}.yaml"
        path.write_text(
            f'backends:\n  b: {{type: bedrock, base_url: "{base_url}", region: {region}{extra}}}\n'
            "models:\n  m: {chain: [{backend: b, model: up}]}\nreload: {watch: false}\n"
        )
        live = LiveRuntime(path, env=env or {})
        lives.append(live)
        runtime = await live.start()
        backend = runtime.routes["m"].chain[0].backend
        assert isinstance(backend, BedrockBackend)
        return backend

    yield make
    for live in lives:
        await live.close()


def call(client: str = "openai", *, stream: bool = False, **extra: Any) -> UpstreamCall:
    messages = [{"role": "user", "content": PROMPT}]
    if client == "openai":
        body: dict[str, Any] = {"model": "m", "messages": messages, "stream": stream, **extra}
        request = openai_protocol.parse_chat_request(body)
    else:
        body = {"model": "m", "max_tokens": 50, "messages": messages, "stream": stream, **extra}
        request = anthropic_protocol.parse_messages_request(body)
    return UpstreamCall("chat", client, body, request, stream, "req_test", "m")  # type: ignore[arg-type]


def limits(first_byte: float = 10) -> AttemptLimits:
    return AttemptLimits(connect=5, first_byte=first_byte, deadline=time.monotonic() + 30)


async def read_all(stream: EventStream) -> list[Any]:
    events = list(stream.first)
    try:
        async for event in stream.rest:
            events.append(event)
    finally:
        await stream.aclose()
    return events


EXPECTED = plan_text(reply_words(PROMPT, 16), None).text


@pytest.mark.parametrize("client", ["openai", "anthropic"])
@pytest.mark.parametrize("model", [MODEL, PROFILE_ARN], ids=["model-id", "profile-arn"])
async def test_a_signed_request_is_answered_whole_and_streamed(
    fake: FakeBedrock, build: Callable[..., Any], client: str, model: str
) -> None:
    fake.behaviour = Behaviour(cached_tokens=1, cache_creation_tokens=1)
    backend = await build(fake.base_url)
    whole = await backend.send(call(client), model, limits())
    assert type(whole) is ChatResponse and whole.text == EXPECTED and whole.finish_reason == "stop"
    assert whole.usage == Usage(3, 16, cached_tokens=1, cache_creation_tokens=1)
    assert whole.id  # the request id the service answered with

    stream = await backend.send(call(client, stream=True), model, limits())
    assert type(stream) is EventStream and type(stream.first[0]) is StreamStart
    events = await read_all(stream)
    assert "".join(e.text for e in events if type(e) is TextDelta) == EXPECTED
    assert events[-1] == StreamEnd("stop")
    assert stream.usage == Usage(3, 16, cached_tokens=1, cache_creation_tokens=1)
    # The path went out percent-encoded, as signed: the fake recomputed the same signature.
    assert fake.stats.total == 2


async def test_temporary_credentials_sign_their_session_token(
    fake: FakeBedrock, build: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token-from-sts")
    backend = await build(fake.base_url)
    assert type(await backend.send(call(), MODEL, limits())) is ChatResponse


@pytest.mark.parametrize(
    ("variable", "value", "error_type"),
    [
        ("AWS_SECRET_ACCESS_KEY", "not-the-secret", "InvalidSignatureException"),
        ("AWS_ACCESS_KEY_ID", "AKIDUNKNOWN000000000", "UnrecognizedClientException"),
    ],
)
async def test_credentials_the_service_refuses_are_an_auth_failure(
    fake: FakeBedrock,
    build: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    error_type: str,
) -> None:
    monkeypatch.setenv(variable, value)
    backend = await build(fake.base_url)
    with pytest.raises(UpstreamFailure) as failure:
        await backend.send(call(), MODEL, limits())
    assert (failure.value.kind, failure.value.status) == ("auth", 403)
    assert error_type in failure.value.detail and value not in failure.value.detail


async def test_a_region_the_signature_is_not_scoped_to_is_refused(
    fake: FakeBedrock, build: Callable[..., Any]
) -> None:
    backend = await build(fake.base_url, region="eu-west-1")
    with pytest.raises(UpstreamFailure, match="scoped to a valid region") as failure:
        await backend.send(call(), MODEL, limits())
    assert failure.value.kind == "auth"


async def test_without_credentials_each_request_fails_before_anything_is_sent(
    fake: FakeBedrock, build: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    backend = await build(fake.base_url)  # starts: the reload does not depend on the credentials
    with pytest.raises(UpstreamFailure, match="no AWS credentials found") as failure:
        await backend.send(call(), MODEL, limits())
    assert failure.value.kind == "auth" and fake.stats.total == 0


async def test_a_bedrock_api_key_is_sent_as_a_bearer_token_instead_of_a_signature(
    fake: FakeBedrock, build: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    fake.behaviour = Behaviour(api_key="bedrock-api-key-1")
    backend = await build(fake.base_url, ', api_key: "${BR_KEY}"', env={"BR_KEY": "bedrock-api-key-1"})
    assert backend.signer is None
    assert type(await backend.send(call(), MODEL, limits())) is ChatResponse
    fake.behaviour = Behaviour(api_key="another-key")
    with pytest.raises(UpstreamFailure) as failure:
        await backend.send(call(), MODEL, limits())
    assert failure.value.kind == "auth"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, "http_429"),  # ThrottlingException
        (500, "http_5xx"),  # InternalServerException
        (503, "http_5xx"),  # ServiceUnavailableException
        (424, "http_5xx"),  # ModelErrorException
        (408, "timeout"),  # ModelTimeoutException
        (404, "unsupported"),  # ResourceNotFoundException
        (403, "auth"),  # AccessDeniedException
        (400, "client_error"),  # ValidationException
    ],
)
async def test_each_error_the_api_names_is_classified_for_failover(
    fake: FakeBedrock, build: Callable[..., Any], status: int, kind: str
) -> None:
    fake.behaviour = Behaviour(status=status)
    backend = await build(fake.base_url)
    for stream in (False, True):
        with pytest.raises(UpstreamFailure) as failure:
            await backend.send(call(stream=stream), MODEL, limits())
        assert (failure.value.kind, failure.value.status) == (kind, status)


async def test_a_validation_error_relays_the_services_message(
    fake: FakeBedrock, build: Callable[..., Any]
) -> None:
    backend = await build(fake.base_url)
    bad = call(messages=[{"role": "assistant", "content": "I start"}])
    with pytest.raises(UpstreamFailure) as failure:
        await backend.send(bad, MODEL, limits())
    assert failure.value.kind == "client_error" and failure.value.status == 400
    assert "must start with a user message" in failure.value.detail


async def test_an_exception_frame_before_the_answer_fails_over_like_its_status(
    fake: FakeBedrock, build: Callable[..., Any]
) -> None:
    fake.stream_exception = "throttlingException"
    backend = await build(fake.base_url)
    with pytest.raises(UpstreamFailure) as failure:
        await backend.send(call(stream=True), MODEL, limits())
    assert failure.value.kind == "http_429" and "throttlingException" in failure.value.detail


async def test_an_exception_frame_mid_stream_ends_it_with_an_error(
    fake: FakeBedrock, build: Callable[..., Any]
) -> None:
    fake.stream_exception, fake.stream_exception_after = "modelStreamErrorException", 3
    backend = await build(fake.base_url)
    events = await read_all(await backend.send(call(stream=True), MODEL, limits()))
    assert type(events[0]) is StreamStart and type(events[-1]) is StreamError
    assert "modelStreamErrorException" in events[-1].message


@pytest.mark.parametrize(
    ("behaviour", "detail"),
    [(Behaviour(malformed=True), "CRC mismatch"), (Behaviour(drop_after_chunks=3), "ended inside|dropped")],
    ids=["bad-crc", "cut"],
)
async def test_a_broken_or_cut_stream_fails_mid_stream(
    fake: FakeBedrock, build: Callable[..., Any], behaviour: Behaviour, detail: str
) -> None:
    fake.behaviour = behaviour
    backend = await build(fake.base_url)
    stream = await backend.send(call(stream=True), MODEL, limits())
    with pytest.raises(UpstreamFailure, match=detail) as failure:
        await read_all(stream)  # type: ignore[arg-type]
    assert failure.value.kind == "http_5xx"


async def test_the_first_frame_is_awaited_within_the_first_byte_limit(
    fake: FakeBedrock, build: Callable[..., Any]
) -> None:
    fake.behaviour = Behaviour(hang=True)
    backend = await build(fake.base_url)
    with pytest.raises(UpstreamFailure) as failure:
        await backend.send(call(stream=True), MODEL, limits(first_byte=0.3))
    assert failure.value.kind == "timeout"


async def test_what_converse_cannot_express_is_refused_before_any_request(
    fake: FakeBedrock, build: Callable[..., Any]
) -> None:
    backend = await build(fake.base_url)
    image = [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]}
    ]
    with pytest.raises(UpstreamFailure) as failure:
        await backend.send(call(messages=image), MODEL, limits())
    assert failure.value.kind == "unsupported" and failure.value.status is None
    assert failure.value.param == "messages[0]" and "by URL" in failure.value.detail
    assert fake.stats.total == 0


async def test_aclose_releases_the_upstream_connection(fake: FakeBedrock, build: Callable[..., Any]) -> None:
    fake.behaviour = Behaviour(reply_tokens=500, token_delay_ms=20)
    backend = await build(fake.base_url)
    stream = await backend.send(call(stream=True), MODEL, limits())
    assert fake.stats.in_flight == 1
    await stream.aclose()
    await wait_for(lambda: fake.stats.in_flight == 0)
    assert fake.stats.in_flight == 0


async def test_expiring_credentials_are_refreshed_off_the_event_loop(aws_env: None) -> None:
    loop_thread = threading.get_ident()
    refreshed_in: list[int] = []

    def refresh() -> dict[str, str]:
        refreshed_in.append(threading.get_ident())
        later = datetime.now(UTC) + timedelta(hours=1)
        return {"access_key": "AKIDNEW", "secret_key": "s", "token": "t", "expiry_time": later.isoformat()}

    soon = datetime.now(UTC) + timedelta(seconds=30)  # inside botocore's refresh window
    signer = AWSSigner(None, "us-east-1")
    signer._credentials = RefreshableCredentials("AKIDOLD", "s", "t", soon, refresh, "test")
    headers = await signer.sign(
        "POST", "https://bedrock-runtime.us-east-1.amazonaws.com/model/m/converse", b"{}", {}
    )
    assert "Credential=AKIDNEW/" in headers["Authorization"]
    assert refreshed_in and refreshed_in[0] != loop_thread
    await signer.sign("POST", "https://bedrock-runtime.us-east-1.amazonaws.com/model/m/converse", b"{}", {})
    assert len(refreshed_in) == 1  # fresh now: no refresh, no thread


async def test_an_anthropic_token_count_goes_to_count_tokens(
    fake: FakeBedrock, build: Callable[..., Any]
) -> None:
    body = {"model": "m", "system": "Be brief.", "messages": [{"role": "user", "content": PROMPT}]}
    request = anthropic_protocol.parse_count_tokens_request(body)
    counting = UpstreamCall("count_tokens", "anthropic", body, request, False, "req_test", "m")
    backend = await build(fake.base_url)
    assert await backend.send(counting, MODEL, limits()) == TokenCount(5)
    assert fake.last_body == {
        "input": {
            "converse": {
                "messages": [{"role": "user", "content": [{"text": PROMPT}]}],
                "system": [{"text": "Be brief."}],
            }
        }
    }


TITAN = "amazon.titan-embed-text-v2:0"


async def test_titan_embeddings_are_one_invoke_per_input(
    fake: FakeBedrock, build: Callable[..., Any]
) -> None:
    body = {"model": "m", "input": ["first text", "the second text"], "dimensions": 256}
    request = parse_embedding_request(body)
    embedding = UpstreamCall("embeddings", "openai", body, request, False, "req_test", "m")
    backend = await build(fake.base_url)
    answer = await backend.send(embedding, TITAN, limits())
    assert type(answer) is EmbeddingResponse and answer.dimensions == 256
    assert len(answer.vectors) == 2 and answer.vectors[0] != answer.vectors[1]
    assert answer.usage == Usage(5)  # the token counts of both inputs
    assert fake.stats.requests == {f"/model/{TITAN}/invoke": 2}


async def test_token_id_inputs_are_refused_for_titan(fake: FakeBedrock, build: Callable[..., Any]) -> None:
    body = {"model": "m", "input": [[1, 2, 3]]}
    embedding = UpstreamCall("embeddings", "openai", body, parse_embedding_request(body), False, "r", "m")
    backend = await build(fake.base_url)
    with pytest.raises(UpstreamFailure) as failure:
        await backend.send(embedding, TITAN, limits())
    assert failure.value.kind == "unsupported" and failure.value.param == "input"
    assert fake.stats.total == 0


async def test_one_failed_input_fails_the_embedding_request(
    fake: FakeBedrock, build: Callable[..., Any]
) -> None:
    fake.behaviour = Behaviour(fail_first_n=1, status=429)
    body = {"model": "m", "input": ["a", "b", "c"]}
    embedding = UpstreamCall("embeddings", "openai", body, parse_embedding_request(body), False, "r", "m")
    backend = await build(fake.base_url)
    with pytest.raises(UpstreamFailure) as failure:
        await backend.send(embedding, TITAN, limits())
    assert failure.value.kind == "http_429"
