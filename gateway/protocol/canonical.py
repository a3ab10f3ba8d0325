"""The canonical request, response and stream-event form: every surface parses into it and every backend
encodes from it, so any client protocol can reach any backend protocol.

Design notes:

* Everything is a frozen, slotted dataclass; change a request with `dataclasses.replace`.
* Fields that only one protocol can express are kept so that same-protocol traffic loses nothing:
  `ChatRequest.extra` (unrecognised top-level parameters of `ChatRequest.source`'s protocol),
  `RawPart` (content blocks we do not model, e.g. Anthropic `thinking`), `Tool.raw` (provider built-in
  tools), `ChatRequest.system_blocks` and `ToolResultPart.parts` (Anthropic block structure), and
  `cache_control` on parts and tools. Encoders to the *other* protocol drop them.
* Stream events obey one order, which both decoders guarantee and both encoders rely on: `StreamStart`
  first; then `TextDelta` / `ToolCallStart` / `ToolCallDelta` (a `ToolCallDelta` for index i only after
  `ToolCallStart` i); `UsageEvent`s anywhere after the start, each carrying cumulative totals (the last one
  wins); and last either `StreamEnd` or `StreamError`. Decoders hold `StreamEnd` back until the upstream
  is complete, so every usage report precedes it.
* Reasoning (`gateway.protocol.reasoning` holds the mapping between the protocols): a request's
  `ChatRequest.reasoning` says how much the model should think, as an OpenAI effort or an Anthropic
  thinking budget, whichever the client gave; an answer's thinking is a `ReasoningPart` (its readable
  text, and the provider's own block verbatim, signature included, for the multi-turn use that needs it
  back unchanged); in a stream, `ReasoningDelta`s carry the thinking text and a `ReasoningBlock` the
  complete block once it has ended. `Usage.reasoning_tokens` counts the output tokens spent reasoning,
  when the backend reports them. None of it is message metadata: like the text, it never enters the
  audit log, spans or log lines.
* Several choices (OpenAI `n` > 1): a `ChatResponse` holds the first choice in its own fields and the
  others in `extra_choices`; in a stream, `TextDelta.choice` says which choice a delta belongs to, each
  choice's end is a `ChoiceEnd`, and the final `StreamEnd` repeats choice 0's finish reason. Only OpenAI
  clients can ask for several choices; other encoders never see `choice` > 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from gateway.errors import UpstreamError

__all__ = [
    "ChatRequest",
    "ChatResponse",
    "Choice",
    "ChoiceEnd",
    "CompletionRequest",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "FinishReason",
    "ImagePart",
    "Message",
    "Part",
    "Protocol",
    "RawPart",
    "Reasoning",
    "ReasoningBlock",
    "ReasoningDelta",
    "ReasoningEffort",
    "ReasoningPart",
    "Role",
    "StreamEnd",
    "StreamError",
    "StreamEvent",
    "StreamStart",
    "TextDelta",
    "TextPart",
    "TokenCount",
    "Tool",
    "ToolCallDelta",
    "ToolCallPart",
    "ToolCallStart",
    "ToolChoice",
    "ToolResultPart",
    "UpstreamProtocolError",
    "Usage",
    "UsageEvent",
    "join_text",
]

Role: TypeAlias = Literal["system", "user", "assistant", "tool"]
FinishReason: TypeAlias = Literal["stop", "length", "tool_calls", "content_filter", "error"]
Protocol: TypeAlias = Literal["openai", "anthropic"]


class UpstreamProtocolError(UpstreamError, ValueError):
    """A backend answered with a body or stream event that does not follow its protocol.

    It is an `UpstreamError` (HTTP 502 to the client) and a `ValueError` (bad data) at once.
    """

    slug, title = "upstream-protocol-error", "Upstream backend answered malformed data"


# --- content parts -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str
    cache_control: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image given either by `url` (http/https) or inline as base64 `data` with its `media_type`."""

    url: str | None = None
    data: str | None = None
    media_type: str | None = None
    #: OpenAI's `image_url.detail` ("auto" / "low" / "high"); Anthropic has no equivalent.
    detail: str | None = None
    cache_control: Mapping[str, Any] | None = None

    def as_url(self) -> str:
        """The image as one URL: the http URL, or a `data:` URL built from the inline bytes."""
        if self.data is not None:
            return f"data:{self.media_type or 'image/png'};base64,{self.data}"
        return self.url or ""


@dataclass(frozen=True, slots=True)
class ToolCallPart:
    id: str
    name: str
    #: The arguments as JSON *text*, exactly as the model produced it (it may be invalid JSON).
    arguments: str
    cache_control: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ToolResultPart:
    tool_call_id: str
    #: The result as plain text; always set, and what cross-protocol encoders send.
    content: str
    is_error: bool = False
    #: The Anthropic block form of the result when it was a block list (images, cache_control); else None.
    parts: tuple[Part, ...] | None = None
    cache_control: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RawPart:
    """A content block the canonical form does not model, kept verbatim for its own protocol only."""

    protocol: Protocol
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ReasoningPart:
    """The model's thinking before its answer (Anthropic `thinking` / `redacted_thinking` blocks).

    `text` is the readable thinking ("" for a redacted block); `block` is the provider's block exactly as
    it came (the signature or encrypted data included), which a later turn must send back unchanged:
    Anthropic checks the signature, and with thinking on it requires the block before the tool calls of
    the turn whose results follow. Only a backend of `protocol` can take it back.
    """

    text: str
    block: Mapping[str, Any]
    protocol: Protocol = "anthropic"
    cache_control: Mapping[str, Any] | None = None


Part: TypeAlias = TextPart | ImagePart | ToolCallPart | ToolResultPart | RawPart | ReasoningPart


def join_text(parts: tuple[Part, ...], sep: str = "") -> str:
    """The text of the `TextPart`s in `parts`, joined by `sep`."""
    texts = [p.text for p in parts if type(p) is TextPart]
    return texts[0] if len(texts) == 1 else sep.join(texts)


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: tuple[Part, ...]
    name: str | None = None

    @property
    def text(self) -> str:
        return join_text(self.content)


# --- requests ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str | None = None
    #: JSON schema of the arguments object.
    parameters: Mapping[str, Any] = field(default_factory=dict)
    strict: bool | None = None
    cache_control: Mapping[str, Any] | None = None
    #: The provider-native definition of a built-in tool (Anthropic `web_search_...`, OpenAI `custom`);
    #: sent verbatim to `ChatRequest.source`'s protocol and dropped for the other.
    raw: Mapping[str, Any] | None = None


#: The efforts with a faithful mapping to an Anthropic thinking budget (`gateway.protocol.reasoning`).
ReasoningEffort: TypeAlias = Literal["low", "medium", "high"]


@dataclass(frozen=True, slots=True)
class Reasoning:
    """How much the model should reason before answering, in the terms the client used: an OpenAI
    `reasoning_effort` (`effort`) or an Anthropic `thinking` budget (`budget_tokens`); exactly one is set.
    Each encoder writes its own protocol's form, mapped by `gateway.protocol.reasoning` when the client
    spoke the other. Values with no faithful mapping (OpenAI `minimal`/`xhigh`, Anthropic `adaptive`) are
    not held here: they stay native fields of the client's protocol, refused elsewhere."""

    effort: ReasoningEffort | None = None
    budget_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """`auto`, `required` (Anthropic `any`), `none`, or `tool` with `name` (one named function)."""

    mode: Literal["auto", "required", "none", "tool"]
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    messages: tuple[Message, ...]
    #: Leading system instructions as text (OpenAI leading system/developer messages, Anthropic `system`).
    #: System messages later in an OpenAI conversation stay in `messages` with role "system".
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    stream: bool = False
    #: Whether the client wants token usage reported in the stream (always true for Anthropic clients).
    include_usage: bool = False
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    #: OpenAI `parallel_tool_calls`; the inverse of Anthropic `tool_choice.disable_parallel_tool_use`.
    parallel_tool_calls: bool | None = None
    seed: int | None = None
    #: End-user id: OpenAI `user`, Anthropic `metadata.user_id`.
    user: str | None = None
    #: The protocol the client spoke; `extra`, `RawPart`s and raw tools belong to it.
    source: Protocol = "openai"
    #: Unrecognised top-level parameters of `source`'s protocol, passed through to a backend of that protocol.
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: Anthropic `system` as blocks, when given as a block list (keeps cache_control); `system` holds their
    #: text. Code that rewrites `system` must also set this to None.
    system_blocks: tuple[TextPart, ...] | None = None
    #: Which OpenAI spelling carried `max_tokens`, kept because reasoning models accept only the newer one.
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    #: The reasoning the client asked for (OpenAI `reasoning_effort`, Anthropic `thinking`), or None.
    reasoning: Reasoning | None = None


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """A legacy `/v1/completions` request. `prompt` is kept as the client sent it (no copying)."""

    model: str
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False
    seed: int | None = None
    user: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """An `/v1/embeddings` request. `input` is kept as the client sent it (no copying)."""

    model: str
    input: str | list[str] | list[int] | list[list[int]]
    dimensions: int | None = None
    encoding_format: Literal["float", "base64"] | None = None
    user: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


# --- responses -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Usage:
    #: All input tokens, cached ones included (OpenAI's meaning; Anthropic's three input counts summed).
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: Input tokens read from the prompt cache (a subset of `prompt_tokens`).
    cached_tokens: int = 0
    #: Input tokens written to the prompt cache (a subset of `prompt_tokens`; Anthropic's
    #: `cache_creation_input_tokens`, billed above the plain input rate).
    cache_creation_tokens: int = 0
    #: Output tokens spent reasoning (a subset of `completion_tokens`; OpenAI's
    #: `completion_tokens_details.reasoning_tokens`, Gemini's `thoughtsTokenCount`). Anthropic reports
    #: none apart: its thinking is counted in `output_tokens` only.
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Choice:
    """One of several answers to the same request (OpenAI `n`)."""

    content: tuple[Part, ...]
    finish_reason: FinishReason | None
    stop_sequence: str | None = None


@dataclass(frozen=True, slots=True)
class ChatResponse:
    id: str
    model: str
    content: tuple[Part, ...]
    finish_reason: FinishReason | None
    #: For all the choices together: the prompt counted once, the completions summed (as OpenAI's).
    usage: Usage | None = None
    #: The stop sequence that ended generation, when the backend reports it.
    stop_sequence: str | None = None
    #: Choices 1, 2, ... when the client asked for several (OpenAI `n`); the fields above are choice 0.
    extra_choices: tuple[Choice, ...] = ()

    @property
    def text(self) -> str:
        return join_text(self.content)

    @property
    def choices(self) -> tuple[Choice, ...]:
        """Every choice, choice 0 first."""
        return (Choice(self.content, self.finish_reason, self.stop_sequence), *self.extra_choices)


@dataclass(frozen=True, slots=True)
class EmbeddingResponse:
    """The answer to an embeddings request: one vector per input, in the order of the inputs."""

    #: Each vector as `dimensions` little-endian float32 values (the bytes OpenAI's base64 form
    #: carries), so a vector is written either way without conversion and compares by value.
    vectors: tuple[bytes, ...]
    dimensions: int
    #: Input tokens only (`completion_tokens` is 0).
    usage: Usage
    #: How the client asked for the vectors to be written (OpenAI's `encoding_format`).
    encoding_format: Literal["float", "base64"] = "float"


@dataclass(frozen=True, slots=True)
class TokenCount:
    """The answer to a token-counting request (Anthropic `count_tokens`). Nothing was generated, so it
    has no usage."""

    input_tokens: int

    @property
    def usage(self) -> None:
        """Beside `ChatResponse.usage`, so a caller reads either the same way."""
        return None


# --- stream events -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamStart:
    id: str
    model: str


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str
    #: Which choice the text belongs to (OpenAI `n` > 1); 0 otherwise.
    choice: int = 0


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """A fragment of the model's readable thinking (Anthropic `thinking_delta`)."""

    text: str


@dataclass(frozen=True, slots=True)
class ReasoningBlock:
    """A thinking block has ended: the provider's whole block (thinking text and signature, or a
    `redacted_thinking` block's data), for the encoders that hand it to the client whole."""

    block: Mapping[str, Any]
    protocol: Protocol = "anthropic"


@dataclass(frozen=True, slots=True)
class ToolCallStart:
    #: Position of this call among the response's tool calls (0, 1, ...), not a content-block index.
    index: int
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    index: int
    #: A fragment of the arguments JSON text; fragments concatenate to the full arguments.
    arguments: str


@dataclass(frozen=True, slots=True)
class UsageEvent:
    usage: Usage


@dataclass(frozen=True, slots=True)
class StreamEnd:
    finish_reason: FinishReason
    stop_sequence: str | None = None


@dataclass(frozen=True, slots=True)
class ChoiceEnd:
    """One choice of several (OpenAI `n` > 1) is complete; the others may go on. The stream still ends
    with a `StreamEnd`."""

    choice: int
    finish_reason: FinishReason
    stop_sequence: str | None = None


@dataclass(frozen=True, slots=True)
class StreamError:
    """The backend reported an error mid-stream; `type` is the backend's error type name."""

    message: str
    type: str = "api_error"


StreamEvent: TypeAlias = (
    StreamStart
    | TextDelta
    | ReasoningDelta
    | ReasoningBlock
    | ToolCallStart
    | ToolCallDelta
    | UsageEvent
    | ChoiceEnd
    | StreamEnd
    | StreamError
)
