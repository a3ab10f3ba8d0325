"""What passes between the failover chain and a backend: the call, the limits of one attempt, the
result (a whole reply or a stream already past its first event), and the ways an attempt fails."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.protocol.canonical import ChatRequest, CompletionRequest, EmbeddingRequest, Usage

__all__ = [
    "AttemptLimits",
    "Endpoint",
    "FailureKind",
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
    #: The protocol the client speaks (its surface): the reply is encoded for it.
    protocol: ClientProtocol
    #: The client's JSON body, for pass-through when the backend speaks the client's protocol.
    body: dict[str, Any]
    request: ChatRequest | CompletionRequest | EmbeddingRequest
    stream: bool
    request_id: str
    #: The public model name the client asked for.
    public_model: str


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


@dataclass(slots=True)
class Reply:
    """A complete, non-streamed answer, already encoded for the client's protocol."""

    body: bytes
    usage: Usage | None
    status: int = 200
    content_type: str = "application/json"


@dataclass(slots=True)
class Stream:
    """A streamed answer whose first event has arrived (so failover is over), encoded for the client.

    Iterate it for the remaining bytes; iteration raises UpstreamFailure if the backend fails
    mid-stream. `usage` is filled in as the backend reports it. Always `aclose()` it.
    """

    first: bytes
    rest: AsyncIterator[bytes]
    close: Callable[[], Awaitable[None]]
    usage: Usage | None = None
    first_token_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    async def aclose(self) -> None:
        await self.close()
