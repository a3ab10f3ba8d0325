"""What passes between the failover chain and a backend: the call, the limits of one attempt, the
result, and the ways an attempt fails.

The result is a whole reply or a stream already past its first event, each in one of two forms: pass-through
(bytes in the client's own protocol, when the backend speaks it: forwarded untouched, usage read on the way)
or canonical (`gateway.protocol.canonical` responses and stream events, which the surface encodes for the
client). A backend never encodes for a protocol other than its own.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from gateway.protocol.canonical import (
    ChatRequest,
    ChatResponse,
    CompletionRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    StreamEvent,
    TokenCount,
    Usage,
)
from gateway.protocol.requirements import Requirements, requirements

__all__ = [
    "AttemptLimits",
    "CanonicalReply",
    "ContentFilterRefusal",
    "Endpoint",
    "EventStream",
    "FailureKind",
    "PassThroughReply",
    "PassThroughStream",
    "Reply",
    "Stream",
    "UpstreamCall",
    "UpstreamFailure",
]

Endpoint = Literal["chat", "completions", "embeddings", "count_tokens"]
ClientProtocol = Literal["openai", "anthropic"]
#: Failure classes. The first five are the config's `failover.retry_on` values; `auth` (the backend
#: refused the gateway's credentials) and `unsupported` (the backend cannot serve this endpoint)
#: always move on; `client_error` (the request itself is wrong) never does.
FailureKind = Literal[
    "connect_error", "timeout", "http_429", "http_5xx", "overloaded", "auth", "unsupported", "client_error"
]
ALWAYS_NEXT: frozenset[str] = frozenset({"auth", "unsupported"})
#: Failures that say something about the backend's health (and so count for its circuit breaker).
BACKEND_FAULTS: frozenset[str] = frozenset(
    {"connect_error", "timeout", "http_429", "http_5xx", "overloaded", "auth"}
)


@dataclass(slots=True)
class UpstreamCall:
    """One client request, as every backend of the chain sees it."""

    endpoint: Endpoint
    #: The protocol the client speaks: a backend that speaks it too may answer in pass-through form.
    protocol: ClientProtocol
    #: The client's JSON body, for pass-through when the backend speaks the client's protocol.
    body: dict[str, Any]
    request: ChatRequest | CompletionRequest | EmbeddingRequest
    stream: bool
    request_id: str
    #: The public model name the client asked for.
    public_model: str
    #: The capabilities and native fields the request needs, computed once here; failover skips the
    #: targets that cannot serve it.
    needs: Requirements = field(init=False)

    def __post_init__(self) -> None:
        self.needs = requirements(self.endpoint, self.protocol, self.request)


@dataclass(frozen=True, slots=True)
class AttemptLimits:
    """Time limits of one attempt; `deadline` (time.monotonic) is the whole request's."""

    connect: float
    first_byte: float
    deadline: float

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def until_first_byte(self) -> float:
        return max(0.0, min(self.first_byte, self.remaining()))


class UpstreamFailure(Exception):
    """An attempt failed before anything reached the client. `kind` decides whether to fail over."""

    def __init__(
        self,
        kind: FailureKind,
        detail: str,
        *,
        status: int | None = None,
        retry_after: str | None = None,
        error_type: str | None = None,
        param: str | None = None,
        usage: Usage | None = None,
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.status = status
        self.retry_after = retry_after
        #: The upstream's own error type (e.g. "invalid_request_error"), relayed for client errors.
        self.error_type = error_type
        #: The request member the upstream blamed, relayed for client errors.
        self.param = param
        #: The usage the upstream reported before the attempt failed (it billed the attempt), e.g. a
        #: whole answer that could not be translated; None when it reported none.
        self.usage = usage


class ContentFilterRefusal(UpstreamFailure):
    """The provider's content filter refused the prompt (Azure OpenAI's `content_filter` error): the
    request's own fault, so never failed over. `categories` names what tripped, never the content."""

    def __init__(self, detail: str, categories: tuple[str, ...], *, status: int | None = None) -> None:
        super().__init__("client_error", detail, status=status, error_type="invalid_request_error")
        self.categories = categories


@dataclass(slots=True)
class PassThroughReply:
    """A complete answer in the client's own protocol (the backend speaks it too): `body` goes out as is."""

    body: bytes
    usage: Usage | None
    status: int = 200
    content_type: str = "application/json"


#: A complete answer in the canonical form; the surface encodes it for the client.
CanonicalReply: TypeAlias = ChatResponse | TokenCount | EmbeddingResponse
#: A complete, non-streamed answer.
Reply: TypeAlias = PassThroughReply | CanonicalReply


@dataclass(slots=True)
class _StreamBase:
    close: Callable[[], Awaitable[None]]
    #: The usage reported so far; final once the stream has been read to its end.
    usage: Usage | None = None

    async def aclose(self) -> None:
        """Release the upstream connection (or, for a local model, stop the generation). Always call it,
        whether the stream was read to its end or not."""
        await self.close()


@dataclass(slots=True)
class PassThroughStream(_StreamBase):
    """A stream in the client's own protocol whose first event has arrived (so failover is over).

    `first` and then each item of `rest` are raw SSE bytes to forward unchanged. Iterating `rest`
    raises UpstreamFailure if the stream breaks off or is malformed (never a silent end)."""

    first: bytes = b""
    rest: AsyncIterator[bytes] = field(default_factory=lambda: _nothing())


@dataclass(slots=True)
class EventStream(_StreamBase):
    """A stream of canonical events whose first event has arrived (so failover is over); the surface
    encodes them for the client.

    `first` holds the events that arrived first (a `StreamStart`, or a `StreamError` if the upstream
    failed at once), `rest` yields the others, in the order `gateway.protocol.canonical` guarantees, up
    to a `StreamEnd` or `StreamError`. Iterating
    `rest` raises UpstreamFailure if the stream breaks off or is malformed (never a silent end)."""

    first: tuple[StreamEvent, ...] = ()
    rest: AsyncIterator[StreamEvent] = field(default_factory=lambda: _nothing())


#: A streamed answer, past its first event.
Stream: TypeAlias = PassThroughStream | EventStream


async def _nothing() -> AsyncIterator[Any]:
    return
    yield  # pragma: no cover
