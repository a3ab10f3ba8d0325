"""`gateway.backends.upstream`, what passes between the failover chain and a backend, without a network:
the limits of one attempt against a fixed clock, the failure kinds (which move failover on, which count
against a backend's health, which never retry), a failure's details, the content filter's refusal, and
the stream and reply forms' defaults and closing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gateway.backends import upstream as upstream_module
from gateway.backends.upstream import (
    ALWAYS_NEXT,
    BACKEND_FAULTS,
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
from gateway.protocol.canonical import Usage

NOW = 1000.0


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """`time.monotonic()` reads NOW inside `gateway.backends.upstream` (and nowhere else)."""
    monkeypatch.setattr(upstream_module, "time", SimpleNamespace(monotonic=lambda: NOW))


# ---------------------------------------------------------------- the limits of one attempt


@pytest.mark.usefixtures("clock")
@pytest.mark.parametrize(
    ("first_byte", "deadline_in", "remaining", "until_first_byte"),
    [
        (10.0, 30.0, 30.0, 10.0),  # the first-byte limit is the shorter
        (60.0, 30.0, 30.0, 30.0),  # the request's deadline comes first
        (30.0, 30.0, 30.0, 30.0),
        (10.0, -5.0, -5.0, 0.0),  # the deadline has passed: no wait at all, never a negative one
        (0.0, 30.0, 30.0, 0.0),
    ],
)
def test_the_wait_for_a_first_byte_is_the_nearer_of_its_limit_and_the_deadline(
    first_byte: float, deadline_in: float, remaining: float, until_first_byte: float
) -> None:
    limits = AttemptLimits(connect=5.0, first_byte=first_byte, deadline=NOW + deadline_in)
    assert limits.remaining() == remaining
    assert limits.until_first_byte() == until_first_byte


def test_limits_read_the_clock_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not when built: an attempt that starts later has less of the request's time left."""
    now = [NOW]
    monkeypatch.setattr(upstream_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    limits = AttemptLimits(connect=5.0, first_byte=10.0, deadline=NOW + 12.0)
    assert limits.until_first_byte() == 10.0
    now[0] = NOW + 8.0
    assert (limits.remaining(), limits.until_first_byte()) == (4.0, 4.0)


def test_limits_are_plain_frozen_data() -> None:
    limits = AttemptLimits(connect=1.0, first_byte=2.0, deadline=3.0)
    assert limits == AttemptLimits(connect=1.0, first_byte=2.0, deadline=3.0)
    with pytest.raises(AttributeError):
        limits.first_byte = 5.0  # type: ignore[misc]


# ---------------------------------------------------------------- failure kinds


def test_auth_and_unsupported_always_move_on_and_nothing_else_does() -> None:
    assert {"auth", "unsupported"} == ALWAYS_NEXT


def test_a_backends_health_counts_its_own_faults_not_the_requests() -> None:
    """A refused credential or an overloaded backend is the backend's fault; a bad request or an
    endpoint it does not serve is not (a breaker that counted those would open on clients' mistakes)."""
    assert {"connect_error", "timeout", "http_429", "http_5xx", "overloaded", "auth"} == BACKEND_FAULTS
    assert "client_error" not in BACKEND_FAULTS and "unsupported" not in BACKEND_FAULTS


def test_a_failure_carries_its_kind_detail_and_what_the_upstream_said() -> None:
    usage = Usage(3, 4)
    failure = UpstreamFailure(
        "http_429",
        "HTTP 429: slow down",
        status=429,
        retry_after="7",
        error_type="rate_limit_error",
        param="model",
        usage=usage,
    )
    assert str(failure) == "HTTP 429: slow down"
    assert (failure.kind, failure.detail, failure.status, failure.retry_after) == (
        "http_429",
        "HTTP 429: slow down",
        429,
        "7",
    )
    assert (failure.error_type, failure.param, failure.usage) == ("rate_limit_error", "model", usage)


def test_a_failure_says_nothing_it_was_not_told() -> None:
    failure = UpstreamFailure("connect_error", "connection failed: ConnectionRefusedError")
    assert str(failure) == failure.detail == "connection failed: ConnectionRefusedError"
    assert (failure.status, failure.retry_after, failure.error_type, failure.param, failure.usage) == (
        None,
        None,
        None,
        None,
        None,
    )


def test_a_content_filter_refusal_is_the_requests_fault_and_names_only_categories() -> None:
    refusal = ContentFilterRefusal("the prompt was filtered", ("hate", "violence"), status=400)
    assert isinstance(refusal, UpstreamFailure)
    assert refusal.kind == "client_error"
    assert refusal.kind not in ALWAYS_NEXT and refusal.kind not in BACKEND_FAULTS
    assert (refusal.status, refusal.error_type, refusal.categories) == (
        400,
        "invalid_request_error",
        ("hate", "violence"),
    )
    assert str(refusal) == refusal.detail == "the prompt was filtered"
    assert ContentFilterRefusal("filtered", ()).status is None


# ---------------------------------------------------------------- the call


def test_a_call_computes_what_its_request_needs_once() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "weather?"}],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
    }
    call = UpstreamCall("chat", "openai", body, openai_protocol.parse_chat_request(body), True, "r1", "m")
    assert call.needs.endpoint == "chat" and call.needs.protocol == "openai"
    assert {"chat", "tools"} <= call.needs.capabilities
    assert (call.stream, call.request_id, call.public_model, call.body) == (True, "r1", "m", body)


def test_a_plain_call_needs_only_its_endpoint() -> None:
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    request = anthropic_protocol.parse_messages_request(body)
    call = UpstreamCall("chat", "anthropic", body, request, False, "r2", "m")
    assert call.needs.capabilities == {"chat"}
    assert call.needs.protocol == "anthropic" and call.needs.native == ()


# ---------------------------------------------------------------- replies and streams


def test_a_pass_through_reply_is_json_with_status_200_unless_told() -> None:
    reply = PassThroughReply(b"{}", None)
    assert (reply.status, reply.content_type) == (200, "application/json")
    assert PassThroughReply(b"x", Usage(1, 2), 201, "text/plain").content_type == "text/plain"


@pytest.mark.parametrize("form", [PassThroughStream, EventStream])
async def test_a_stream_closes_through_its_close_callback_each_time(
    form: type[PassThroughStream] | type[EventStream],
) -> None:
    closed: list[str] = []

    async def close() -> None:
        closed.append("closed")

    stream = form(close=close)
    assert closed == []
    await stream.aclose()
    await stream.aclose()
    assert closed == ["closed", "closed"]


async def test_a_streams_defaults_are_empty() -> None:
    async def close() -> None:
        return None

    passing = PassThroughStream(close=close)
    events = EventStream(close=close)
    assert (passing.first, passing.usage, events.first, events.usage) == (b"", None, (), None)
    assert [item async for item in passing.rest] == []
    assert [item async for item in events.rest] == []
    # Each stream has its own (empty) rest, not one shared, already exhausted iterator.
    assert PassThroughStream(close=close).rest is not passing.rest
