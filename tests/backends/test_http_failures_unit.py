"""How the HTTP backends classify an upstream's failure (the failure kind decides failover), in process
against the fake OpenAI and Anthropic servers on free loopback ports: every status class, a refused
connection, no first byte within the limit, a malformed body; then the classification itself on
error bodies (no network), and the registry of backend classes."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.backends.anthropic import AnthropicBackend
from gateway.backends.http import HTTPBackend
from gateway.backends.openai import OpenAICompatibleBackend
from gateway.backends.registry import BACKEND_CLASSES
from gateway.backends.upstream import AttemptLimits, PassThroughReply, UpstreamCall, UpstreamFailure
from gateway.config.backends import SETTINGS_BY_TYPE
from gateway.config.load import parse_config
from gateway.protocol import anthropic as anthropic_protocol
from gateway.protocol import openai as openai_protocol
from gateway.testing import Behaviour, FakeAnthropic, FakeOpenAI

MESSAGES = [{"role": "user", "content": "hello"}]


def openai_call() -> UpstreamCall:
    body = {"model": "m", "messages": MESSAGES}
    return UpstreamCall("chat", "openai", body, openai_protocol.parse_chat_request(body), False, "r", "m")


def anthropic_call() -> UpstreamCall:
    body = {"model": "m", "max_tokens": 20, "messages": MESSAGES}
    request = anthropic_protocol.parse_messages_request(body)
    return UpstreamCall("chat", "anthropic", body, request, False, "r", "m")


def limits(first_byte: float = 10) -> AttemptLimits:
    return AttemptLimits(connect=5, first_byte=first_byte, deadline=time.monotonic() + 30)


def backend(kind: str, base_url: str) -> HTTPBackend:
    text = (
        f'backends:\n  b: {{type: {kind}, base_url: "{base_url}", api_key: "${{B_KEY}}"}}\n'
        "models:\n  m: {chain: [{backend: b, model: up}]}\n"
    )
    settings = parse_config(text.encode(), Path("/tmp/gateway.yaml"), env={"B_KEY": "k"}).backends[0]
    cls = OpenAICompatibleBackend if kind == "openai_compatible" else AnthropicBackend
    return cls(settings)  # type: ignore[arg-type]


@pytest.fixture
async def openai_fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def anthropic_fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
async def pair(
    request: pytest.FixtureRequest, openai_fake: FakeOpenAI, anthropic_fake: FakeAnthropic
) -> AsyncIterator[tuple[FakeOpenAI | FakeAnthropic, HTTPBackend, UpstreamCall]]:
    if request.param == "openai":
        fake, made, call = openai_fake, backend("openai_compatible", openai_fake.base_url), openai_call()
    else:
        fake, made, call = anthropic_fake, backend("anthropic", anthropic_fake.base_url), anthropic_call()
    await made.start()
    yield fake, made, call
    await made.close()


STATUS_KINDS = [
    (429, "http_429"),
    (500, "http_5xx"),
    (503, "http_5xx"),
    (401, "auth"),
    (403, "auth"),
    (404, "unsupported"),
    (408, "timeout"),
    (400, "client_error"),
    (422, "client_error"),
]


@pytest.mark.parametrize("pair", ["openai", "anthropic"], indirect=True)
@pytest.mark.parametrize(("status", "kind"), STATUS_KINDS)
async def test_an_error_status_is_its_failure_kind(pair, status: int, kind: str) -> None:  # type: ignore[no-untyped-def]
    fake, made, call = pair
    fake.behaviour = Behaviour(status=status)
    with pytest.raises(UpstreamFailure) as failed:
        await made.send(call, "up", limits())
    assert (failed.value.kind, failed.value.status) == (kind, status)


@pytest.mark.parametrize("pair", ["openai", "anthropic"], indirect=True)
async def test_a_success_is_a_reply(pair) -> None:  # type: ignore[no-untyped-def]
    _, made, call = pair
    reply = await made.send(call, "up", limits())
    assert isinstance(reply, PassThroughReply)


@pytest.mark.parametrize("pair", ["openai", "anthropic"], indirect=True)
async def test_a_malformed_body_is_a_server_fault(pair) -> None:  # type: ignore[no-untyped-def]
    fake, made, call = pair
    fake.behaviour = Behaviour(malformed=True)
    with pytest.raises(UpstreamFailure) as failed:
        await made.send(call, "up", limits())
    assert failed.value.kind == "http_5xx"


@pytest.mark.parametrize("pair", ["openai", "anthropic"], indirect=True)
async def test_no_first_byte_within_the_limit_is_a_timeout(pair) -> None:  # type: ignore[no-untyped-def]
    fake, made, call = pair
    fake.behaviour = Behaviour(hang=True)
    with pytest.raises(UpstreamFailure) as failed:
        await made.send(call, "up", limits(first_byte=0.2))
    assert failed.value.kind == "timeout"
    assert "first-byte limit" in failed.value.detail


async def test_a_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as sock:  # a port nothing listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        made = backend("openai_compatible", f"http://127.0.0.1:{port}/v1")
        await made.start()
        try:
            with pytest.raises(UpstreamFailure) as failed:
                await made.send(openai_call(), "up", limits())
        finally:
            await made.close()
    assert failed.value.kind == "connect_error"
    assert failed.value.status is None


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "detail", "error_type", "param"),
    [
        (429, b"", {"retry-after": "7"}, "http_429", "HTTP 429", None, None),
        (529, b"", {}, "overloaded", "HTTP 529", None, None),
        (
            400,
            b'{"error": {"type": "overloaded_error", "message": "busy"}}',
            {},
            "overloaded",
            "HTTP 400: busy",
            "overloaded_error",
            None,
        ),
        (
            400,
            b'{"error": {"message": "bad max_tokens", "type": "invalid_request_error", "param": "max_tokens"}}',  # noqa: E501
            {},
            "client_error",
            "bad max_tokens",
            "invalid_request_error",
            "max_tokens",
        ),
        (400, b'{"type": "error", "message": "flat shape"}', {}, "client_error", "flat shape", "error", None),
        (400, b"not json", {}, "client_error", "HTTP 400", None, None),
        (400, b"[1]", {}, "client_error", "HTTP 400", None, None),
        (400, b'{"error": {"message": "m", "type": 5, "param": 6}}', {}, "client_error", "m", None, None),
        (405, b"", {}, "unsupported", "HTTP 405", None, None),
        (501, b"", {}, "http_5xx", "HTTP 501", None, None),
        (599, b"", {}, "http_5xx", "HTTP 599", None, None),
        (499, b"", {}, "client_error", "HTTP 499", None, None),
    ],
)
def test_status_failure(
    status: int, body: bytes, headers: dict[str, str], kind: str, detail: str, error_type: str | None,
    param: str | None,
) -> None:  # fmt: skip
    made = backend("openai_compatible", "http://127.0.0.1:9/v1")
    failure = made.status_failure(status, body, headers)
    assert (failure.kind, failure.status) == (kind, status)
    assert failure.detail.endswith(detail)
    if kind == "client_error":
        assert (failure.error_type, failure.param) == (error_type, param)
    if kind in ("http_429", "overloaded"):
        assert failure.retry_after == headers.get("retry-after")


def test_every_backend_type_has_a_class() -> None:
    assert set(BACKEND_CLASSES) == set(SETTINGS_BY_TYPE)
