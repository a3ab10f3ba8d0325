"""Embeddings from a local model: its final hidden states (after the last norm, before the LM head),
mean-pooled over each input's tokens and L2-normalised, in float32.

The engine thread owns the work (`Engine` schedules it between decode steps); this module holds what
it schedules: `EmbeddingJob` (one request's inputs, and the future its answer goes to) and
`EmbeddingBatch` (rows of one or more jobs computed together). A batch is right-padded to its longest
row and run through the model in steps of `STEP_TOKENS` with a KV cache: attention is causal, so the
padding after a row's tokens never reaches them, and only the row's own positions are summed. Inputs
embedded together therefore get the vectors they get alone (to float rounding).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Embedder", "EmbeddingBatch", "EmbeddingFailed", "EmbeddingJob", "InputRejected"]

#: Tokens of a batch's rows run through the model at once: bounds the attention scores' memory
#: (rows × heads × STEP_TOKENS × row length floats) and how long decode steps wait for an embedding.
STEP_TOKENS = 512
#: Padded tokens in one batch (rows × the longest row): bounds its KV cache. A longer row goes alone.
BATCH_TOKENS = 8192
#: The longest input when the model's config names no context length.
DEFAULT_MAX_TOKENS = 8192


class InputRejected(Exception):
    """An input this model cannot embed; `field` names it as the client wrote it (`input[2]`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class EmbeddingFailed(Exception):
    """The engine could not compute a job's embeddings (see the gateway log)."""


@dataclass(eq=False)
class EmbeddingJob:
    """One request's inputs: strings, or token-id lists. Build it on the event loop that awaits `result`,
    which receives one little-endian float32 vector (bytes) per input and the input tokens counted."""

    inputs: list[str] | list[list[int]]
    #: The client sent one input (a string or one token-id array): it is named `input`, not `input[0]`.
    single: bool
    loop: asyncio.AbstractEventLoop
    result: asyncio.Future[tuple[tuple[bytes, ...], int]] = field(init=False)
    #: Set by the asyncio side (the client left, a deadline) or on failure: its remaining rows are skipped.
    cancelled: bool = False
    # Engine-thread state.
    started: bool = False
    tokens: list[list[int]] = field(default_factory=list)
    #: Row indices in the order they are computed (shortest first, so rows of a batch are alike in length).
    order: list[int] = field(default_factory=list)
    #: How many of `order` are in a batch already.
    scheduled: int = 0
    #: Rows not computed yet.
    left: int = 0
    vectors: Any = None

    def __post_init__(self) -> None:
        self.result = self.loop.create_future()

    def name(self, i: int) -> str:
        return "input" if self.single else f"input[{i}]"

    def succeed(self) -> None:
        vectors = tuple(row.astype("<f4", copy=False).tobytes() for row in self.vectors)
        tokens = sum(map(len, self.tokens))
        self.loop.call_soon_threadsafe(_settle, self.result, (vectors, tokens), None)

    def fail(self, error: Exception) -> None:
        self.cancelled = True
        self.loop.call_soon_threadsafe(_settle, self.result, None, error)


def _settle(future: asyncio.Future[Any], value: Any, error: Exception | None) -> None:
    """On the event loop: complete the future, unless its awaiter gave up (it is cancelled then)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class Embedder:
    """What embedding needs of a loaded model: its inner transformer (hidden states out), sizes and
    tokenizer. `hidden_size` is None for an architecture without the inner `model` mlx-lm's llama-style
    models have (the backend then refuses embeddings as unsupported)."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        import mlx.core as mx
        from mlx_lm.models.cache import make_prompt_cache

        self._mx = mx
        self._make_cache = make_prompt_cache
        self.model = model
        self.tokenizer = tokenizer
        args = getattr(model, "args", None)
        inner = getattr(model, "model", None)
        hidden = getattr(args, "hidden_size", None)
        usable = callable(inner) and type(hidden) is int
        self.inner = inner if usable else None
        self.hidden_size: int | None = hidden if usable else None
        vocab = getattr(args, "vocab_size", None)
        self.vocab_size: int | None = vocab if type(vocab) is int else None
        context = getattr(args, "max_position_embeddings", None)
        self.max_tokens: int = context if type(context) is int and context > 0 else DEFAULT_MAX_TOKENS

    def prepare(self, job: EmbeddingJob) -> None:
        """Tokenize and check the job's inputs (raises InputRejected) and set up its rows."""
        import numpy as np

        rows: list[list[int]] = []
        for i, item in enumerate(job.inputs):
            if type(item) is str:
                tokens = list(self.tokenizer.encode(item))
            else:
                tokens = item  # type: ignore[assignment]
                vocab = self.vocab_size
                if vocab is not None and max(tokens) >= vocab:
                    at = next(j for j, t in enumerate(tokens) if t >= vocab)
                    raise InputRejected(
                        f"{job.name(i)}[{at}]",
                        f"must be a token id below this model's vocabulary size {vocab}, got {tokens[at]}",
                    )
            if not tokens:
                raise InputRejected(job.name(i), "holds no token")
            if len(tokens) > self.max_tokens:
                raise InputRejected(
                    job.name(i), f"is {len(tokens)} tokens long; this model embeds at most {self.max_tokens}"
                )
            rows.append(tokens)
        job.tokens = rows
        job.order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        job.left = len(rows)
        job.vectors = np.empty((len(rows), self.hidden_size or 0), dtype=np.float32)


class EmbeddingBatch:
    """Rows (job, input index) computed together, one `step()` at a time."""

    def __init__(self, embedder: Embedder, rows: list[tuple[EmbeddingJob, int]]) -> None:
        mx = embedder._mx
        self._mx = mx
        self.embedder = embedder
        self.rows = rows
        lengths = [len(job.tokens[i]) for job, i in rows]
        self.width = max(lengths)
        padded = [job.tokens[i] + [0] * (self.width - n) for (job, i), n in zip(rows, lengths, strict=True)]
        self.tokens = mx.array(padded, dtype=mx.int32)
        self.lengths = mx.array(lengths, dtype=mx.float32)[:, None]
        # One step needs no cache; longer rows carry their keys and values from step to step.
        self.cache = embedder._make_cache(embedder.model) if self.width > STEP_TOKENS else None
        self.offset = 0
        self.sums = mx.zeros((len(rows), embedder.hidden_size or 0), dtype=mx.float32)

    @property
    def abandoned(self) -> bool:
        return all(job.cancelled for job, _ in self.rows)

    def step(self) -> bool:
        """Run the next `STEP_TOKENS` positions of every row; True once the rows are done."""
        mx = self._mx
        end = min(self.offset + STEP_TOKENS, self.width)
        hidden = self.embedder.inner(self.tokens[:, self.offset : end], cache=self.cache)  # type: ignore[misc]
        own = (mx.arange(self.offset, end, dtype=mx.float32)[None, :] < self.lengths)[..., None]
        self.sums = self.sums + mx.where(own, hidden.astype(mx.float32), 0.0).sum(axis=1)
        if self.cache is None:
            mx.eval(self.sums)
        else:
            mx.eval(self.sums, [c.state for c in self.cache])
        self.offset = end
        return end >= self.width

    def finish(self) -> None:
        """Hand each row's vector to its job; answer the jobs whose last row this was."""
        import numpy as np

        mx = self._mx
        mean = self.sums / self.lengths
        norm = mx.sqrt((mean * mean).sum(axis=1, keepdims=True))
        vectors = np.array(mean / mx.maximum(norm, 1e-12), dtype=np.float32)
        for r, (job, i) in enumerate(self.rows):
            if job.cancelled:
                continue
            job.vectors[i] = vectors[r]
            job.left -= 1
            if job.left == 0:
                job.succeed()
