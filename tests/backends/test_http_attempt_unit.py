"""The HTTP side of one attempt (`gateway.backends.http`), in process against a recording loopback
upstream and the fake OpenAI and Anthropic servers: the pool (opened once, reopened after close, its
connection limit), the headers every request carries (credentials, configured headers), no credential in
what a failure says, and reading a whole body (cut off, too late, not JSON)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.backends.anthropic import AnthropicBackend
from gateway.backends.http import HTTPBackend
from gateway.backends.openai import OpenAICompatibleBackend
from gateway.backends.upstream import (
    AttemptLimits,
    PassThroughReply,
    PassThroughStream,
    UpstreamCall,
    UpstreamFailure,
)
from gateway.config.load import parse_config
from gateway.protocol import anthropic as anthropic_protocol
from gateway.protocol import openai as openai_protocol
from gateway.testing import Behaviour, FakeAnthropic, FakeOpenAI
from tests.backends.loopback import serving

KEY = "sk-test-0123456789abcdef"
TEAM = "team-secret-42"


def build(kind: str, base_url: str, **options: str) -> HTTPBackend:
    extra = "".join(f", {name}: {value}" for name, value in options.items())
    text = (
        f'backends:\n  b: {{type: {kind}, base_url: "{base_url}", api_key: "${{B_KEY}}"{extra}}}\n'
        "models:\n  m: {chain: [{backend: b, model: up}]}\n"
    )
    settings = parse_config(
        text.encode(), Path("/tmp/gateway.yaml"), env={"B_KEY": KEY, "TEAM": TEAM}
    ).backends[0]
    cls = AnthropicBackend if kind == "anthropic" else OpenAICompatibleBackend
    return cls(settings)  # type: ignore[arg-type]


@pytest.fixture
async def backends() -> AsyncIterator[Callable[..., HTTPBackend]]:
    """`backend(kind, base_url, **options)`: a backend from a config, closed after the test."""
    made: list[HTTPBackend] = []

    def backend(kind: str, base_url: str, **options: str) -> HTTPBackend:
        made.append(build(kind, base_url, **options))
        return made[-1]

    yield backend
    for one in made:
        await one.close()


def chat(stream: bool = False) -> UpstreamCall:
    body: dict[str, Any] = {
        "model": "m",
        "messages": [{"role": "user", "content": "hello"}],
        "stream": stream,
    }
    return UpstreamCall("chat", "openai", body, openai_protocol.parse_chat_request(body), stream, "r", "m")


def limits(first_byte: float = 10, deadline: float = 30) -> AttemptLimits:
    return AttemptLimits(connect=5, first_byte=first_byte, deadline=time.monotonic() + deadline)


class Upstream:
    """A loopback upstream that records each request's headers and answers with `status` and `body`
    (the body's second half held back until `rest` is set, when `hold` is on)."""

    def __init__(self) -> None:
        self.status = 200
        self.body = b'{"id":"x","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}'
        self.hold = False
        self.cut = False
        self.rest = asyncio.Event()
        self.headers: list[dict[str, str]] = []
        self.url = ""

    async def answer(self, request: web.Request) -> web.StreamResponse:
        self.headers.append({name.lower(): value for name, value in request.headers.items()})
        response = web.StreamResponse(status=self.status, headers={"content-type": "application/json"})
        response.content_length = len(self.body)
        await response.prepare(request)
        half = len(self.body) // 2
        await response.write(self.body[:half] if self.hold or self.cut else self.body)
        if self.cut:
            assert request.transport is not None
            request.transport.close()
            return response
        if self.hold:
            await self.rest.wait()
            await response.write(self.body[half:])
        await response.write_eof()
        return response


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    recording = Upstream()
    async with serving(recording.answer) as base:
        recording.url = f"{base}/v1"
        yield recording


# ---------------------------------------------------------------- the pool


async def test_the_pool_opens_once_and_reopens_after_close(
    backends: Callable[..., HTTPBackend], upstream: Upstream
) -> None:
    backend = backends("openai_compatible", upstream.url)
    assert backend.session is None
    await backend.start()
    session = backend.session
    assert session is not None
    await backend.start()
    assert backend.session is session  # a second start keeps the pool
    await backend.close()
    assert backend.session is None and session.closed
    # A request after close opens a new pool rather than failing on the closed one.
    assert isinstance(await backend.send(chat(), "up", limits()), PassThroughReply)
    assert backend.session is not None and backend.session is not session


async def test_the_pool_holds_at_most_max_connections(backends: Callable[..., HTTPBackend]) -> None:
    """One connection, held by an open stream: a second request waits for it (here past its first-byte
    limit) and never reaches the upstream; once the stream is closed, the next one goes through."""
    async with FakeOpenAI(Behaviour(reply_tokens=500, token_delay_ms=20)) as fake:
        backend = backends("openai_compatible", fake.base_url, max_connections="1")
        stream = await backend.send(chat(stream=True), "up", limits())
        assert isinstance(stream, PassThroughStream)
        with pytest.raises(UpstreamFailure) as failure:
            await backend.send(chat(), "up", limits(first_byte=0.3))
        assert failure.value.kind == "timeout"
        assert fake.stats.total == 1
        await stream.aclose()
        assert isinstance(await backend.send(chat(), "up", limits()), PassThroughReply)
        assert fake.stats.total == 2


# ---------------------------------------------------------------- headers and credentials


async def test_every_request_carries_the_credential_and_the_configured_headers(
    backends: Callable[..., HTTPBackend], upstream: Upstream
) -> None:
    backend = backends("openai_compatible", upstream.url, headers='{x-team: "${TEAM}"}')
    await backend.send(chat(), "up", limits())
    await backend.send(chat(), "up", limits())
    assert len(upstream.headers) == 2
    for headers in upstream.headers:
        assert headers["authorization"] == f"Bearer {KEY}"
        assert headers["x-team"] == TEAM
        assert headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("fake_class", "kind"), [(FakeOpenAI, "openai_compatible"), (FakeAnthropic, "anthropic")]
)
async def test_a_fake_provider_accepts_the_gateways_key_and_refuses_another(
    backends: Callable[..., HTTPBackend], fake_class: type[FakeOpenAI | FakeAnthropic], kind: str
) -> None:
    async with fake_class(Behaviour(api_key=KEY)) as fake:
        backend = backends(kind, fake.base_url)
        call = chat()
        if kind == "anthropic":
            body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
            call = UpstreamCall(
                "chat", "anthropic", body, anthropic_protocol.parse_messages_request(body), False, "r", "m"
            )
        assert isinstance(await backend.send(call, "up", limits()), PassThroughReply)
        fake.behaviour = Behaviour(api_key="another-key")
        with pytest.raises(UpstreamFailure) as failure:
            await backend.send(call, "up", limits())
        assert (failure.value.kind, failure.value.status) == ("auth", 401)


async def test_no_credential_appears_in_what_a_failure_says(
    backends: Callable[..., HTTPBackend], upstream: Upstream
) -> None:
    """An upstream that quotes the credential it refused: the failure (which reaches logs and the
    client's problem detail) says what was refused, never the credential."""
    upstream.status = 401
    upstream.body = (
        b'{"error":{"message":"Incorrect API key provided: '
        + KEY.encode()
        + b" (team "
        + TEAM.encode()
        + b')",'
        b'"type":"invalid_request_error","param":"' + KEY.encode() + b'"}}'
    )
    backend = backends("openai_compatible", upstream.url, headers='{x-team: "${TEAM}"}')
    with pytest.raises(UpstreamFailure) as failure:
        await backend.send(chat(), "up", limits())
    said = " ".join(
        str(part) for part in (failure.value, failure.value.detail, failure.value.param, repr(backend))
    )
    assert failure.value.kind == "auth"
    assert "Incorrect API key provided" in said
    assert KEY not in said and TEAM not in said
    assert KEY not in repr(backend.config) and TEAM not in repr(backend.config)

    upstream.status = 400  # a client error relays the upstream's message and param: redacted too
    with pytest.raises(UpstreamFailure) as failure:
        await backend.send(chat(), "up", limits())
    assert failure.value.kind == "client_error"
    assert KEY not in failure.value.detail and KEY not in str(failure.value.param)


# ---------------------------------------------------------------- reading a whole body


async def test_a_body_cut_off_is_a_server_fault(
    backends: Callable[..., HTTPBackend], upstream: Upstream
) -> None:
    upstream.cut = True
    with pytest.raises(UpstreamFailure) as failure:
        await backends("openai_compatible", upstream.url).send(chat(), "up", limits())
    assert failure.value.kind == "http_5xx" and "cut off" in failure.value.detail


async def test_a_body_that_does_not_arrive_before_the_deadline_is_a_timeout(
    backends: Callable[..., HTTPBackend], upstream: Upstream
) -> None:
    upstream.hold = True  # the headers and half the body come at once, the rest never
    with pytest.raises(UpstreamFailure) as failure:
        await backends("openai_compatible", upstream.url).send(chat(), "up", limits(deadline=0.3))
    assert failure.value.kind == "timeout" and "deadline" in failure.value.detail


async def test_a_body_that_is_not_json_is_a_server_fault(
    backends: Callable[..., HTTPBackend], upstream: Upstream
) -> None:
    upstream.body = b"<html>502 Bad Gateway</html>"
    with pytest.raises(UpstreamFailure) as failure:
        await backends("openai_compatible", upstream.url).send(chat(), "up", limits())
    assert failure.value.kind == "http_5xx" and "invalid JSON" in failure.value.detail
