"""Per-request sampling fields on local models: `logit_bias`, `presence_penalty`, `frequency_penalty`
(OpenAI) and `top_k` (Anthropic, and vLLM's extra member for OpenAI clients).

The penalties and the bias are logits processors, called by mlx-lm's `GenerationBatch` once per
decode step for the one sequence they belong to; `top_k` goes to the job's sampler. A request that
sets none of them gets no processor, so its sequence keeps the batch's shared-sampler fast path
(one sampling call for the whole batch).

Penalties follow OpenAI's definition, over the tokens generated so far (not the prompt):
`logit[j] -= frequency_penalty * count[j] + presence_penalty * (count[j] > 0)`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.backends.upstream import UpstreamFailure

__all__ = ["LogitBias", "Penalties", "SamplingFields", "sampling_fields", "vocab_size"]


@dataclass(frozen=True, slots=True)
class SamplingFields:
    """The sampling members of one request, checked against the model's vocabulary."""

    logit_bias: tuple[tuple[int, float], ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    #: 0: off (every token stays a candidate).
    top_k: int = 0

    def processors(self) -> list[Any]:
        """New logits processors for one sequence (each keeps its own state)."""
        out: list[Any] = []
        if self.logit_bias:
            out.append(LogitBias(self.logit_bias))
        if self.presence_penalty or self.frequency_penalty:
            out.append(Penalties(self.presence_penalty, self.frequency_penalty))
        return out


def vocab_size(engine: Any) -> int:
    """The width of the model's logits: the ids a `logit_bias` may name."""
    size = getattr(getattr(engine.model, "args", None), "vocab_size", None)
    if isinstance(size, int):
        return size
    return len(engine.tokenizer._tokenizer)


def _number(extra: Mapping[str, Any], key: str) -> float:
    value = extra.get(key)
    if value is None:
        return 0.0
    if type(value) is bool or not isinstance(value, int | float) or not -2.0 <= value <= 2.0:
        raise UpstreamFailure("client_error", f"{key}: must be a number from -2 to 2", param=key)
    return float(value)


def sampling_fields(extra: Mapping[str, Any], vocab_size: int) -> SamplingFields:
    """The request's sampling members (from `ChatRequest.extra`); a value the model cannot honour (a
    token id outside its vocabulary, a malformed `top_k`) is a client error."""
    if not extra:
        return SamplingFields()
    bias: list[tuple[int, float]] = []
    raw_bias = extra.get("logit_bias")
    if raw_bias:
        if not isinstance(raw_bias, Mapping):
            raise UpstreamFailure("client_error", "logit_bias: must be an object", param="logit_bias")
        for token, weight in raw_bias.items():
            try:
                token_id = int(token)
            except ValueError:
                token_id = -1
            if not 0 <= token_id < vocab_size:
                raise UpstreamFailure(
                    "client_error",
                    f"logit_bias: {str(token)[:40]} is not a token id of this model (0 to {vocab_size - 1})",
                    param=f"logit_bias.{str(token)[:40]}",
                )
            if type(weight) is bool or not isinstance(weight, int | float) or not -100 <= weight <= 100:
                raise UpstreamFailure(
                    "client_error",
                    "logit_bias: each bias must be a number from -100 to 100",
                    param="logit_bias",
                )
            bias.append((token_id, float(weight)))
    top_k = extra.get("top_k")
    if top_k is None or top_k == -1:  # vLLM spells "off" -1
        top_k = 0
    if type(top_k) is not int or top_k < 0:
        raise UpstreamFailure("client_error", "top_k: must be a non-negative integer", param="top_k")
    return SamplingFields(
        logit_bias=tuple(bias),
        presence_penalty=_number(extra, "presence_penalty"),
        frequency_penalty=_number(extra, "frequency_penalty"),
        top_k=top_k if top_k < vocab_size else 0,
    )


class LogitBias:
    """Adds a fixed bias to some tokens' logits (OpenAI `logit_bias`)."""

    __slots__ = ("_bias", "_ids", "_values")

    def __init__(self, bias: tuple[tuple[int, float], ...]) -> None:
        import mlx.core as mx

        self._ids = mx.array([token for token, _ in bias], dtype=mx.int32)
        self._values = mx.array([value for _, value in bias], dtype=mx.float32)
        self._bias: Any = None

    def __call__(self, tokens: Any, logits: Any) -> Any:
        import mlx.core as mx

        if self._bias is None or self._bias.shape[-1] != logits.shape[-1]:
            bias = mx.zeros((logits.shape[-1],), dtype=mx.float32)
            self._bias = bias.at[self._ids].add(self._values)
        return logits + self._bias.astype(logits.dtype)


class Penalties:
    """OpenAI's presence and frequency penalties over the tokens this sequence generated. The counts
    stay an mlx array updated lazily (no sync with the device, no Python loop over the vocabulary)."""

    __slots__ = ("_counts", "frequency", "presence")

    def __init__(self, presence: float, frequency: float) -> None:
        self.presence = presence
        self.frequency = frequency
        self._counts: Any = None

    def __call__(self, tokens: Any, logits: Any) -> Any:
        import mlx.core as mx

        if self._counts is None:  # first step: tokens[-1] is the prompt's last token
            self._counts = mx.zeros((logits.shape[-1],), dtype=mx.float32)
            return logits
        self._counts = self._counts.at[tokens[-1:]].add(1.0)
        penalty = self._counts * self.frequency + (self._counts > 0) * self.presence
        return logits - penalty.astype(logits.dtype)
