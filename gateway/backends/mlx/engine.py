"""The engine thread: one per loaded model, owning mlx-lm's BatchGenerator (continuous batching).

The asyncio side calls `submit` and `cancel` (thread-safe, never blocking the event loop); the
thread moves jobs into the running batch between decode steps, decodes one step for every active
sequence, detokenizes (UTF-8 safe across token boundaries), applies text stop sequences, and posts
each job's events back to its event loop. A cancelled job leaves the batch at the next step.

Two things keep a burst of requests cheap:
- prompt caching: the KV cache of every finished sequence goes into an LRU of prompt caches (mlx-lm's
  `LRUPromptCache`, as in `mlx_lm.server`); a new prompt that shares a prefix with one of them (a
  system prompt, the chat template's header, an earlier turn of the same conversation) starts from a
  copy of that cache and prefills only the rest;
- burst admission: when the batch is empty, arrivals are gathered until the queue has been quiet for
  `ADMIT_QUIET_S` (at most `ADMIT_WINDOW_S`), so a burst is prefilled together instead of the first
  request alone and the others behind it.

Embedding requests (`submit_embedding`) share the thread and the queue: between two decode steps the
loop runs one step of the current embedding batch (`embeddings.py`), whose rows come from every
embedding request waiting, so neither kind of work holds the other up for long.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.backends.mlx.embeddings import (
    BATCH_TOKENS,
    Embedder,
    EmbeddingBatch,
    EmbeddingFailed,
    EmbeddingJob,
    InputRejected,
)

__all__ = ["Engine", "EngineOverloaded", "Job", "JobEvent"]

log = logging.getLogger("gateway.mlx")

#: Burst admission (empty batch only): wait for this much quiet after the last arrival...
ADMIT_QUIET_S = 0.005
#: ...but never longer than this after the first.
ADMIT_WINDOW_S = 0.05


class EngineOverloaded(Exception):
    """The engine's queue is full."""


@dataclass(slots=True)
class JobEvent:
    """`kind` is "text" (a delta), "done" (finish_reason, stop_sequence, counts) or "error"."""

    kind: str
    text: str = ""
    finish_reason: str | None = None
    stop_sequence: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: Prompt tokens read from the prompt cache instead of being prefilled.
    cached_tokens: int = 0


@dataclass(eq=False)
class Job:
    prompt: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]
    loop: asyncio.AbstractEventLoop
    #: Generate through end-of-sequence tokens (vLLM's `ignore_eos`), e.g. for benchmarks.
    ignore_eos: bool = False
    #: Logits processors of this sequence alone (grammar, logit bias, penalties: see `sampling.py` and
    #: `grammar.py`); none keeps the batch's shared-sampler fast path.
    processors: list[Any] = field(default_factory=list)
    #: Sample among the k likeliest tokens only (0: all).
    top_k: int = 0
    events: asyncio.Queue[JobEvent] = field(default_factory=asyncio.Queue)
    submitted_at: float = field(default_factory=time.monotonic)
    # Engine-thread state.
    uid: int | None = None
    generated: int = 0
    cached: int = 0
    held: str = ""
    detokenizer: Any = None
    cancelled: bool = False
    #: The engine's per-step event list while the job is in the batch (None: post directly).
    outbox: list[tuple[Job, JobEvent]] | None = None

    def post(self, event: JobEvent) -> None:
        """Hand an event to the job's event loop: at once, or (inside a decode step) with the step's
        other events in one wake-up of the loop (see `Engine._flush`)."""
        if self.outbox is not None:
            self.outbox.append((self, event))
        else:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)


class Engine:
    """A loaded model and the thread that runs it."""

    def __init__(
        self,
        path: Path,
        *,
        batching: bool = True,
        max_batch_size: int = 16,
        max_queue: int = 256,
        prompt_cache_size: int = 10,
        blas_threads: int | None = None,
    ) -> None:
        self.path = path
        #: OpenBLAS threads to set while loading (process-wide; 0: its default count; None: leave it as
        #: it is). See `blas.set_threads`.
        self.blas_threads = blas_threads
        self.batching = batching
        self.max_batch_size = max_batch_size if batching else 1
        self.max_queue = max_queue
        self.prompt_cache_size = prompt_cache_size
        self._prompt_cache: Any = None
        #: Test-only scripted output (`scripted.py`); None unless GATEWAY_TESTING_MLX_SCRIPT is set.
        self._script: Any = None
        self.model: Any = None
        self.tokenizer: Any = None
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._pending: deque[Job] = deque()
        self._jobs: dict[int, Job] = {}
        #: Embedding requests with rows not yet in a batch, and the batch being computed.
        self._embed_queue: deque[EmbeddingJob] = deque()
        self._embedding: EmbeddingBatch | None = None
        #: Set once the model is loaded.
        self.embedder: Embedder | None = None
        #: Events posted during the current decode step, delivered together by `_flush`.
        self._outbox: list[tuple[Job, JobEvent]] = []
        # Submitted but not yet in the batch = submitted - taken; each counter has one writing thread.
        self._submitted = 0
        self._taken = 0
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._samplers: dict[tuple[float, float, int], Callable[[Any], Any]] = {}
        self.loaded_bytes = 0
        self.last_used = time.monotonic()
        self.blas = ""
        #: The problem and its fix when mlx runs on its slow bundled BLAS (None otherwise).
        self.blas_warning: str | None = None

    # -- asyncio side -----------------------------------------------------------------------------

    @property
    def active(self) -> int:
        """Sequences in the running batch (prefilling or decoding), embedding rows included."""
        embedding = self._embedding
        return len(self._jobs) + (len(embedding.rows) if embedding is not None else 0)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    @property
    def queued(self) -> int:
        """Requests waiting to join the batch."""
        return self._submitted - self._taken

    async def start(self) -> None:
        """Load the model in the engine thread and start its loop; returns once it is ready."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def signal(error: BaseException | None) -> None:
            if error is None:
                loop.call_soon_threadsafe(lambda: ready.done() or ready.set_result(None))
            else:
                loop.call_soon_threadsafe(lambda: ready.done() or ready.set_exception(error))

        self._thread = threading.Thread(
            target=self._run, args=(signal,), name=f"mlx-{self.path.name}", daemon=True
        )
        self._thread.start()
        await ready

    def submit(self, job: Job) -> None:
        if self.queued >= self.max_queue:
            raise EngineOverloaded(f"{self.queued} requests already wait for this model (max_queue)")
        self._submitted += 1
        self.last_used = time.monotonic()
        self._inbox.put(("submit", job))
        self._wake.set()

    def cancel(self, job: Job) -> None:
        job.cancelled = True
        self._inbox.put(("cancel", job))
        self._wake.set()

    def submit_embedding(self, job: EmbeddingJob) -> None:
        """Queue an embedding request; it waits in the same queue (and `max_queue`) as generation."""
        if self.queued >= self.max_queue:
            raise EngineOverloaded(f"{self.queued} requests already wait for this model (max_queue)")
        self._submitted += 1
        self.last_used = time.monotonic()
        self._inbox.put(("embed", job))
        self._wake.set()

    def cancel_embedding(self, job: EmbeddingJob) -> None:
        """Stop computing `job` (its rows still in a batch finish with the batch's other rows)."""
        job.cancelled = True
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    # -- engine thread ----------------------------------------------------------------------------

    def _run(self, signal: Callable[[BaseException | None], None]) -> None:
        try:
            generator = self._load()
        except BaseException as error:  # reported to the awaiting start()
            signal(error)
            return
        signal(None)
        try:
            self._loop(generator)
        except BaseException:
            log.exception("engine for %s stopped on an error", self.path)
            for job in [*self._jobs.values(), *self._pending]:
                job.post(JobEvent("error", text="the local engine failed; see the gateway log"))
            self._flush()
        finally:
            self._drop_embeddings(EmbeddingFailed("the local model stopped before answering"))
            generator.close()

    def _load(self) -> Any:
        from gateway.blas import ensure_fast_blas, set_threads  # before mlx.core

        info = ensure_fast_blas()
        self.blas = info.description
        self.blas_warning = info.warning
        if info.warning:
            # Not info: a model on the reference BLAS answers about 30x slower, and the fix is one package.
            log.warning(
                "local model %s: %s",
                self.path,
                info.warning,
                extra={"event": "slow_blas", "model_path": str(self.path), "blas": info.description},
            )
        if self.blas_threads is not None and info.threads is not None:
            self.blas = info.with_threads(set_threads(self.blas_threads or info.threads))
        import mlx.core as mx
        from mlx_lm import load
        from mlx_lm.generate import BatchGenerator

        started = time.perf_counter()
        self.model, self.tokenizer = load(str(self.path))
        self.embedder = Embedder(self.model, self.tokenizer)
        from gateway.backends.mlx.scripted import load_script

        self._script = load_script(self.tokenizer)
        from mlx.utils import tree_flatten

        self.loaded_bytes = sum(v.nbytes for _, v in tree_flatten(self.model.parameters()))
        log.info(
            "loaded local model %s (%.1f MB) in %.2f s on %s",
            self.path,
            self.loaded_bytes / 1e6,
            time.perf_counter() - started,
            self.blas,
            extra={"event": "model_loaded", "model_path": str(self.path), "blas": self.blas},
        )
        from mlx_lm.generate import StopSequences

        self._mx = mx
        if self.prompt_cache_size:
            from mlx_lm.models.cache import LRUPromptCache

            self._prompt_cache = LRUPromptCache(max_size=self.prompt_cache_size)
        self._eos_stops = StopSequences([[t] for t in self.tokenizer.eos_token_ids])
        self._no_stops = StopSequences(None)
        return BatchGenerator(
            self.model,
            stop_tokens=[[t] for t in self.tokenizer.eos_token_ids],
            completion_batch_size=self.max_batch_size,
            prefill_batch_size=min(8, self.max_batch_size),
        )

    def _loop(self, generator: Any) -> None:
        while not self._stopping:
            self._drain_inbox(generator)
            if not self._jobs and self._pending and self.batching:
                self._gather_burst(generator)
            self._admit(generator)
            embedding = self._embedding is not None or bool(self._embed_queue)
            if embedding:
                self._embed_step()
            if not self._jobs:
                if not embedding:
                    self._wake.wait(timeout=1.0)
                    self._wake.clear()
                continue
            try:
                for response in generator.next_generated():
                    job = self._jobs.get(response.uid)
                    if job is not None:
                        self._on_token(generator, job, response.token, response.finish_reason)
                    if response.finish_reason is not None and self._prompt_cache is not None:
                        tokens = list(response.all_tokens)
                        self._prompt_cache.insert_cache(None, tokens, response.prompt_cache)
            finally:
                self._flush()

    def _flush(self) -> None:
        """Deliver the step's events: one `call_soon_threadsafe` (one wake-up of the event loop) per
        loop instead of one per token."""
        if not self._outbox:
            return
        events, self._outbox[:] = list(self._outbox), []
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Job, JobEvent]]] = {}
        for job, event in events:
            by_loop.setdefault(job.loop, []).append((job, event))
        for loop, items in by_loop.items():
            loop.call_soon_threadsafe(_deliver, items)

    def _gather_burst(self, generator: Any) -> None:
        """The batch is empty and requests wait: let the rest of a burst arrive, so it is prefilled as
        one batch. Returns after `ADMIT_QUIET_S` without an arrival, `ADMIT_WINDOW_S` in all, or
        when the batch would be full."""
        started = last = time.monotonic()
        while len(self._pending) < self.max_batch_size and not self._stopping:
            now = time.monotonic()
            wait = min(last + ADMIT_QUIET_S, started + ADMIT_WINDOW_S) - now
            if wait <= 0:
                return
            self._wake.clear()
            if self._wake.wait(timeout=wait):
                before = len(self._pending)
                self._drain_inbox(generator)
                if len(self._pending) > before:
                    last = time.monotonic()

    def _drain_inbox(self, generator: Any) -> None:
        while True:
            try:
                command, job = self._inbox.get_nowait()
            except queue.Empty:
                return
            if command == "submit":
                if not job.cancelled:
                    self._pending.append(job)
                else:
                    self._taken += 1
            elif command == "embed":
                self._embed_queue.append(job)
            elif command == "cancel":
                if job.uid is not None and job.uid in self._jobs:
                    generator.remove([job.uid])
                    del self._jobs[job.uid]
                elif job in self._pending:
                    self._pending.remove(job)
                    self._taken += 1

    def _admit(self, generator: Any) -> None:
        """Move waiting jobs into the batch, up to its size (one at a time without batching)."""
        room = self.max_batch_size - len(self._jobs)
        batch: list[Job] = []
        while room > 0 and self._pending:
            job = self._pending.popleft()
            self._taken += 1
            if job.cancelled:
                continue
            batch.append(job)
            room -= 1
        if not batch:
            return
        caches: list[Any] = []
        rests: list[list[int]] = []
        for job in batch:
            cache, rest = self._cached_prefix(job.prompt)
            job.cached = len(job.prompt) - len(rest)
            caches.append(cache)
            rests.append(rest)
        processors = [job.processors for job in batch]
        if self._script is not None:
            # Test-only: the scripted text's tokens forced last, over any other processor.
            forced = [self._script.processor(job.prompt) for job in batch]
            processors = [[*p, f] if f is not None else p for p, f in zip(processors, forced, strict=True)]
        uids = generator.insert(
            rests,
            caches=caches,
            all_tokens=[job.prompt[: job.cached] for job in batch],
            max_tokens=[job.max_tokens for job in batch],
            samplers=[self._sampler(job) for job in batch],
            logits_processors=processors,
            stop_sequences=[self._no_stops if job.ignore_eos else self._eos_stops for job in batch],
        )
        for uid, job in zip(uids, batch, strict=True):
            job.uid = uid
            job.outbox = self._outbox
            job.detokenizer = self.tokenizer.detokenizer
            self._jobs[uid] = job

    def _embed_step(self) -> None:
        """One step of the current embedding batch (a new batch first, if there is none)."""
        batch = self._embedding
        try:
            if batch is None or batch.abandoned:
                batch = self._embedding = self._next_embedding_batch()
                if batch is None:
                    return
            if batch.step():
                self._embedding = None
                batch.finish()
        except Exception:
            log.exception("embedding on %s failed", self.path)
            self._embedding = None
            if batch is not None:
                for job, _ in batch.rows:
                    if not job.cancelled:
                        job.fail(EmbeddingFailed("the local engine failed to embed; see the gateway log"))

    def _next_embedding_batch(self) -> EmbeddingBatch | None:
        """Rows from the waiting embedding requests, in arrival order, up to `max_batch_size` rows and
        `BATCH_TOKENS` padded tokens (a longer row goes alone)."""
        embedder = self.embedder
        assert embedder is not None
        rows: list[tuple[EmbeddingJob, int]] = []
        width = 0
        full = False
        while self._embed_queue and not full:
            job = self._embed_queue[0]
            if not job.started:
                job.started = True
                self._taken += 1
                if not job.cancelled:
                    try:
                        embedder.prepare(job)
                    except InputRejected as error:
                        job.fail(error)
                    except Exception:
                        log.exception("preparing an embedding request on %s failed", self.path)
                        job.fail(EmbeddingFailed("the local engine failed to embed; see the gateway log"))
            while not job.cancelled and job.scheduled < len(job.order):
                i = job.order[job.scheduled]
                n = len(job.tokens[i])
                if len(rows) >= self.max_batch_size or (
                    rows and (len(rows) + 1) * max(width, n) > BATCH_TOKENS
                ):
                    full = True
                    break
                rows.append((job, i))
                width = max(width, n)
                job.scheduled += 1
            if not full:
                self._embed_queue.popleft()
        if not rows:
            return None
        try:
            return EmbeddingBatch(embedder, rows)
        except Exception:
            log.exception("embedding on %s failed", self.path)
            for job in dict.fromkeys(job for job, _ in rows):
                job.fail(EmbeddingFailed("the local engine failed to embed; see the gateway log"))
            return None

    def _drop_embeddings(self, error: Exception) -> None:
        """Fail every embedding request still waiting or computing (the engine stops)."""
        jobs = list(self._embed_queue)
        while True:
            try:
                command, job = self._inbox.get_nowait()
            except queue.Empty:
                break
            if command == "embed":
                jobs.append(job)
        if self._embedding is not None:
            jobs += [job for job, _ in self._embedding.rows]
        self._embed_queue.clear()
        self._embedding = None
        for job in dict.fromkeys(jobs):
            if not job.cancelled:
                job.fail(error)

    def _cached_prefix(self, prompt: list[int]) -> tuple[Any, list[int]]:
        """The KV cache of the longest cached prefix of `prompt` (a copy) and the tokens still to
        prefill; (None, prompt) when nothing is cached. At least one token is always left to prefill,
        since the first sampled token needs its logits."""
        if self._prompt_cache is None:
            return None, prompt
        cache, rest = self._prompt_cache.fetch_nearest_cache(None, prompt)
        if cache is None:
            return None, prompt
        if not rest:
            from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

            if not can_trim_prompt_cache(cache):
                return None, prompt
            trim_prompt_cache(cache, 1)
            rest = prompt[-1:]
        return cache, rest

    def _sampler(self, job: Job) -> Callable[[Any], Any]:
        from mlx_lm.sample_utils import apply_top_k, apply_top_p, make_sampler

        mx = self._mx
        if job.seed is not None and job.temperature > 0:
            # Its own PRNG key, so a seeded request is reproducible whatever else is in the batch.
            key = mx.random.key(job.seed)
            temperature, top_p, top_k = job.temperature, job.top_p, job.top_k

            def seeded(logprobs: Any) -> Any:
                nonlocal key
                key, sub = mx.random.split(key)
                if top_k > 0:
                    logprobs = apply_top_k(logprobs, top_k)
                if top_p < 1.0:
                    logprobs = apply_top_p(logprobs, top_p)
                return mx.random.categorical(logprobs * (1.0 / temperature), key=sub)

            return seeded
        # Shared sampler objects let the generator sample the whole batch in one call.
        warm = job.temperature > 0
        setting = (job.temperature, job.top_p if warm else 1.0, job.top_k if warm else 0)
        sampler = self._samplers.get(setting)
        if sampler is None:
            sampler = make_sampler(temp=setting[0], top_p=setting[1], top_k=setting[2])
            self._samplers[setting] = sampler
        return sampler

    def _on_token(self, generator: Any, job: Job, token: int, finish_reason: str | None) -> None:
        if finish_reason == "stop":  # an end-of-sequence token: not part of the text
            self._finish(generator, job, "stop", None, remove=False)
            return
        job.generated += 1
        job.detokenizer.add_token(token)
        text = job.held + job.detokenizer.last_segment
        if job.stop:
            for stop in job.stop:
                at = text.find(stop)
                if at >= 0:
                    if at:
                        job.post(JobEvent("text", text=text[:at]))
                    job.held = ""
                    self._finish(generator, job, "stop", stop, remove=True)
                    return
            # Hold back a tail that could be the start of a stop sequence split across tokens.
            keep = _partial_stop_suffix(text, job.stop)
            job.held = text[len(text) - keep :] if keep else ""
            text = text[: len(text) - keep] if keep else text
        if text:
            job.post(JobEvent("text", text=text))
        if finish_reason is not None:  # "length"
            job.detokenizer.finalize()
            tail = job.held + job.detokenizer.last_segment
            if tail:
                job.post(JobEvent("text", text=tail))
            job.held = ""
            self._finish(generator, job, "length", None, remove=False)

    def _finish(self, generator: Any, job: Job, reason: str, stop: str | None, *, remove: bool) -> None:
        if reason == "stop" and stop is None:
            job.detokenizer.finalize()
            tail = job.held + job.detokenizer.last_segment
            if tail:
                job.post(JobEvent("text", text=tail))
        if remove:
            generator.remove([job.uid])
        self._jobs.pop(job.uid, None)
        job.post(
            JobEvent(
                "done",
                finish_reason=reason,
                stop_sequence=stop,
                prompt_tokens=len(job.prompt),
                completion_tokens=job.generated,
                cached_tokens=job.cached,
            )
        )


def _deliver(items: list[tuple[Job, JobEvent]]) -> None:
    """On the event loop: put each event in its job's queue, in the order posted."""
    for job, event in items:
        job.events.put_nowait(event)


def _partial_stop_suffix(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest end of `text` that is a proper prefix of some stop sequence."""
    best = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), best, -1):
            if stop.startswith(text[-size:]):
                best = size
                break
    return best
