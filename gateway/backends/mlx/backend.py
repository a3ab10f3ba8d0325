"""The `mlx` backend: a local model served in-process by an engine thread with continuous batching.

Requests arrive in the canonical form; the prompt is built with the tokenizer's chat template, tools
included (`prompt.py`), and the answer goes back canonical (a ChatResponse, or stream events by token;
an EmbeddingResponse for embeddings), tool calls parsed out of the text (`tools.py`), for the surface to
encode in whatever protocol the client speaks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from gateway.backends.base import SharedResources
from gateway.backends.breaker import CircuitBreaker
from gateway.backends.concurrency import ConcurrencyLimit
from gateway.backends.mlx.choices import ChoiceQueue, Choices
from gateway.backends.mlx.embeddings import EmbeddingFailed, EmbeddingJob, InputRejected
from gateway.backends.mlx.engine import Engine, EngineOverloaded, Job, JobEvent
from gateway.backends.mlx.grammar import GrammarProcessor, grammar_tokenizer, response_format_grammar
from gateway.backends.mlx.prompt import ChatPrompt, build_chat_prompt
from gateway.backends.mlx.sampling import SamplingFields, sampling_fields, vocab_size
from gateway.backends.mlx.tools import ToolCallParser
from gateway.backends.upstream import AttemptLimits, EventStream, Reply, Stream, UpstreamCall, UpstreamFailure
from gateway.config.backends import MLXSettings
from gateway.protocol.canonical import (
    ChatRequest,
    ChatResponse,
    CompletionRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    Part,
    StreamEnd,
    StreamEvent,
    StreamStart,
    TextDelta,
    TextPart,
    TokenCount,
    ToolCallDelta,
    ToolCallPart,
    ToolCallStart,
    Usage,
    UsageEvent,
)

__all__ = ["LocalModelBackend"]

log = logging.getLogger("gateway.mlx")


class LocalModelBackend:
    def __init__(self, config: MLXSettings, shared: SharedResources) -> None:
        self.config = config
        self.store = shared.local_models
        self.breaker = CircuitBreaker()
        self.concurrency = ConcurrencyLimit.for_settings(config)
        self._engine: Engine | None = None
        self._loading: asyncio.Lock | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def engine(self) -> Engine | None:
        """The running engine, if the model is loaded."""
        return self._engine

    def describe(self) -> dict[str, Any]:
        engine = self._engine
        return {
            "local": {
                "loaded": engine is not None and engine.running,
                "engine_id": id(engine) if engine is not None else None,
                "active": engine.active if engine is not None else 0,
                "queued": engine.queued if engine is not None else 0,
                "batching": self.config.batching,
                "max_batch_size": self.config.max_batch_size,
                "loaded_bytes": engine.loaded_bytes if engine is not None else 0,
                "blas": engine.blas if engine is not None else "",
                "blas_warning": engine.blas_warning if engine is not None else None,
                "path": str(self.config.path) if self.config.path else self.config.hf_repo,
            }
        }

    async def start(self) -> None:
        if self.config.load == "startup":
            await self._ensure_engine()

    async def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await self.store.release(engine)

    async def _ensure_engine(self) -> Engine:
        engine = self._engine
        if engine is not None and engine.running:
            self.store.touch(engine)
            return engine
        if self._loading is None:
            self._loading = asyncio.Lock()
        async with self._loading:
            if self._engine is None or not self._engine.running:
                # Generating a missing model takes from a second (tiny) to minutes: not on the loop.
                path = await asyncio.to_thread(self._model_path)
                self._engine = await self.store.load(path, self.config)
            return self._engine

    def _model_path(self) -> Path:
        path = self.config.path
        if path is not None and (path / "config.json").exists() and not self.config.create_preset:
            return path
        if path is not None and self.config.create_preset:
            # Also for a model that exists: one generated earlier gets the current chat template.
            from gateway.modelgen.create import ensure_model
            from gateway.modelgen.plan import format_bytes, plan_model

            preset = self.config.create_preset
            if not (path / "config.json").exists():
                plan = plan_model(preset)
                count = plan.parameters
                parameters = f"{count / 1e9:.2f}B" if count >= 1e9 else f"{count / 1e6:.1f}M"
                # The 3b preset and up take minutes and gigabytes: say so, then how it goes.
                log.info(
                    "generating local model %s (preset %s, %s parameters, %s of weights) for backend %s",
                    path,
                    preset,
                    parameters,
                    format_bytes(plan.weight_bytes),
                    self.name,
                    extra={"event": "model_generating", "model_path": str(path), "preset": preset},
                )
            ensure_model(
                path,
                preset,
                progress=lambda message: log.info(
                    "generating local model %s: %s",
                    path,
                    message,
                    extra={"event": "model_generating", "model_path": str(path)},
                ),
            )
            return path
        if self.config.hf_repo:
            return Path(self.config.hf_repo)  # mlx_lm.load resolves a repository id (online machines only)
        raise UpstreamFailure("unsupported", f"no model at {path} (set create_preset to generate one)")

    # -- serving ----------------------------------------------------------------------------------

    async def send(self, call: UpstreamCall, model: str, limits: AttemptLimits) -> Reply | Stream:
        try:
            engine = await self._ensure_engine()
        except UpstreamFailure:
            raise
        except Exception as error:
            raise UpstreamFailure("http_5xx", f"the local model failed to load: {error}") from None
        request = call.request
        if call.endpoint == "embeddings":
            assert isinstance(request, EmbeddingRequest)
            return await self._embed(engine, request, limits)
        chat_prompt = self._prompt(engine, request)
        if call.endpoint == "count_tokens":
            return TokenCount(len(chat_prompt.tokens))
        assert isinstance(request, ChatRequest | CompletionRequest)
        prompt = chat_prompt.tokens
        n, fields, grammars = await self._decoding(engine, request)
        if n > 1:
            if chat_prompt.tools:
                # Several choices are not parsed for tool calls: refused rather than answered as text.
                raise UpstreamFailure("unsupported", "local models answer n > 1 only without tools")
            shared: asyncio.Queue[tuple[int, JobEvent]] = asyncio.Queue()
            each = grammars or [None] * n
            jobs = [self._job(request, prompt, fields, each[i], i, ChoiceQueue(shared, i)) for i in range(n)]
            return await self._send_choices(Choices(engine, jobs, shared), call.stream, model, limits)
        job = self._job(request, prompt, fields, grammars[0] if grammars else None, 0)
        try:
            engine.submit(job)
        except EngineOverloaded as error:
            raise UpstreamFailure("overloaded", f"local model busy: {error}", retry_after="1") from None
        try:
            first = await self._first_event(job, limits)
        except BaseException:
            engine.cancel(job)
            raise
        tools = self._tool_parser(engine, chat_prompt)
        if call.stream:
            return self._stream(engine, job, first, model, tools)
        return await self._reply(engine, job, first, model, tools)

    async def _decoding(
        self, engine: Engine, request: ChatRequest | CompletionRequest
    ) -> tuple[int, SamplingFields, list[GrammarProcessor]]:
        """The request's choice count, sampling fields and a grammar processor per choice (none without
        a `response_format`), all checked before anything is queued: a value the model cannot honour
        is the client's error."""
        extra = request.extra
        if not extra:
            return 1, SamplingFields(), []
        openai = isinstance(request, CompletionRequest) or request.source == "openai"
        n = extra.get("n") if openai else None
        if n is None:
            n = 1
        elif type(n) is not int or not 1 <= n <= 128:
            raise UpstreamFailure("client_error", "n: must be an integer from 1 to 128", param="n")
        # Anthropic clients' top_k is the only sampling member of theirs a local model reads.
        fields = sampling_fields(extra if openai else {"top_k": extra.get("top_k")}, vocab_size(engine))
        response_format = extra.get("response_format") if openai else None
        if response_format is None or isinstance(request, CompletionRequest):
            return n, fields, []
        # Compiling a schema, building llguidance's tokenizer (once per model) and a matcher per choice
        # (~1 ms each for a schema of 30 members) block: not on the loop.
        return n, fields, await asyncio.to_thread(_grammar_processors, engine, response_format, n)

    def _job(
        self,
        request: ChatRequest | CompletionRequest,
        prompt: list[int],
        fields: SamplingFields,
        grammar: GrammarProcessor | None,
        index: int,
        events: asyncio.Queue[JobEvent] | None = None,
    ) -> Job:
        """Choice `index`'s job: its own processors, and seed + index when seeded."""
        processors = fields.processors()
        if grammar is not None:
            processors.append(grammar)
        job = Job(
            prompt=prompt,
            max_tokens=request.max_tokens or self.config.default_max_tokens,
            temperature=1.0 if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            seed=None if request.seed is None else request.seed + index,
            stop=request.stop,
            loop=asyncio.get_running_loop(),
            ignore_eos=request.extra.get("ignore_eos") is True,
            processors=processors,
            top_k=fields.top_k,
        )
        if events is not None:
            job.events = events
        return job

    async def _send_choices(
        self, choices: Choices, stream: bool, model: str, limits: AttemptLimits
    ) -> Reply | Stream:
        """`n` > 1: n jobs in the same batch, answered together (see `choices.py`)."""
        engine = choices.engine
        submitted = 0
        try:
            for job in choices.jobs:
                engine.submit(job)
                submitted += 1
        except EngineOverloaded as error:
            for job in choices.jobs[:submitted]:
                engine.cancel(job)
            raise UpstreamFailure("overloaded", f"local model busy: {error}", retry_after="1") from None
        try:
            first = await choices.first(limits)
        except BaseException:
            choices.cancel()
            raise
        if stream:
            return choices.stream(first, model)
        return await choices.reply(first, model)

    async def _embed(
        self, engine: Engine, request: EmbeddingRequest, limits: AttemptLimits
    ) -> EmbeddingResponse:
        embedder = engine.embedder
        size = embedder.hidden_size if embedder is not None else None
        if size is None:
            raise UpstreamFailure("unsupported", "this model's architecture has no hidden states to embed")
        if request.dimensions is not None and request.dimensions != size:
            # The vectors are the model's hidden states: they have its hidden size and no shorter form.
            raise UpstreamFailure(
                "client_error",
                f"dimensions: this model's embeddings have {size} dimensions, got {request.dimensions}; "
                f"leave dimensions out or set it to {size}",
                param="dimensions",
            )
        value = request.input
        single = type(value) is str or type(value[0]) is int
        inputs: Any = [value] if single else value
        job = EmbeddingJob(inputs, single, asyncio.get_running_loop())
        try:
            engine.submit_embedding(job)
        except EngineOverloaded as error:
            raise UpstreamFailure("overloaded", f"local model busy: {error}", retry_after="1") from None
        # The whole answer is its first byte: it must come within the first-byte limit.
        wait = limits.until_first_byte()
        try:
            async with asyncio.timeout(wait):
                vectors, tokens = await job.result
        except TimeoutError:
            engine.cancel_embedding(job)
            raise UpstreamFailure("timeout", f"no embeddings within {wait:g} s (first-byte limit)") from None
        except InputRejected as error:
            raise UpstreamFailure("client_error", str(error), param=error.field) from None
        except EmbeddingFailed as error:
            raise UpstreamFailure("http_5xx", str(error)) from None
        except BaseException:
            engine.cancel_embedding(job)
            raise
        return EmbeddingResponse(vectors, size, Usage(tokens), request.encoding_format or "float")

    def _prompt(self, engine: Engine, request: Any) -> ChatPrompt:
        tokenizer = engine.tokenizer
        if isinstance(request, CompletionRequest):
            prompt = request.prompt
            if isinstance(prompt, str):
                return ChatPrompt(tokenizer.encode(prompt))
            if prompt and all(isinstance(t, int) for t in prompt):
                return ChatPrompt(list(prompt))  # type: ignore[arg-type]
            if len(prompt) == 1 and isinstance(prompt[0], str):
                return ChatPrompt(tokenizer.encode(prompt[0]))
            raise UpstreamFailure("unsupported", "local models take one prompt per request")
        return build_chat_prompt(tokenizer, request)

    @staticmethod
    def _tool_parser(engine: Engine, prompt: ChatPrompt) -> ToolCallParser | None:
        """What parses tool calls out of the answer; None when the request offers no tools."""
        if not prompt.tools:
            return None
        tokenizer = engine.tokenizer
        return ToolCallParser(
            tokenizer.tool_call_start,
            tokenizer.tool_call_end,
            tokenizer.tool_parser,
            prompt.tools,
            prefill=prompt.prefill,
            single_call=prompt.single_call,
        )

    async def _first_event(self, job: Job, limits: AttemptLimits) -> JobEvent:
        wait = limits.until_first_byte()
        try:
            async with asyncio.timeout(wait):
                event = await job.events.get()
        except TimeoutError:
            raise UpstreamFailure("timeout", f"no token within {wait:g} s (first-byte limit)") from None
        if event.kind == "error":
            raise UpstreamFailure("http_5xx", event.text)
        return event

    async def _reply(
        self, engine: Engine, job: Job, event: JobEvent, model: str, tools: ToolCallParser | None
    ) -> ChatResponse:
        parts: list[str] = []
        try:
            while event.kind == "text":
                parts.append(event.text)
                event = await job.events.get()
        except BaseException:
            engine.cancel(job)
            raise
        if event.kind == "error":
            raise UpstreamFailure("http_5xx", event.text)
        text = "".join(parts)
        finish_reason = event.finish_reason
        if tools is None:
            content: tuple[Part, ...] = (TextPart(text),) if text else ()
        else:
            content = _content([*tools.feed(text), *tools.finish()])
            if tools.calls and finish_reason == "stop":
                finish_reason = "tool_calls"
        return ChatResponse(
            id="",  # the client's encoder makes an id in its protocol's form
            model=model,
            content=content,
            finish_reason=finish_reason,  # type: ignore[arg-type]
            usage=Usage(event.prompt_tokens, event.completion_tokens, event.cached_tokens),
            stop_sequence=event.stop_sequence,
        )

    def _stream(
        self, engine: Engine, job: Job, first: JobEvent, model: str, tools: ToolCallParser | None
    ) -> EventStream:
        finished = False

        def events(event: JobEvent) -> tuple[StreamEvent, ...]:
            nonlocal finished
            if event.kind == "text":
                return (TextDelta(event.text),) if tools is None else tuple(tools.feed(event.text))
            finished = True
            if event.kind == "done":
                usage = Usage(event.prompt_tokens, event.completion_tokens, event.cached_tokens)
                stream.usage = usage
                finish_reason = event.finish_reason or "stop"
                rest: list[StreamEvent] = []
                if tools is not None:
                    rest = tools.finish()
                    if tools.calls and finish_reason == "stop":
                        finish_reason = "tool_calls"
                end = StreamEnd(finish_reason, event.stop_sequence)  # type: ignore[arg-type]
                return (*rest, UsageEvent(usage), end)
            raise UpstreamFailure("http_5xx", event.text)

        async def rest() -> AsyncIterator[StreamEvent]:
            while not finished:
                for event in events(await job.events.get()):
                    yield event

        async def close() -> None:
            # A client gone mid-stream (or a deadline) frees the sequence's slot in the batch.
            if not finished:
                engine.cancel(job)

        stream = EventStream(close=close, rest=rest())
        # The id is left to the client's encoder, which makes one in its protocol's form.
        stream.first = (StreamStart("", model), *events(first))
        return stream

    def __repr__(self) -> str:
        return f"<LocalModelBackend {self.config.name} {self.config.path or self.config.hf_repo}>"


def _content(events: list[StreamEvent]) -> tuple[Part, ...]:
    """A whole answer's parts from its parsed events: text runs joined, each call one part."""
    parts: list[Part] = []
    text = ""
    for event in events:
        if type(event) is TextDelta:
            text += event.text
        elif type(event) is ToolCallStart:
            if text:
                parts.append(TextPart(text))
                text = ""
            parts.append(ToolCallPart(event.id, event.name, ""))
        elif type(event) is ToolCallDelta:
            call = parts[-1]
            assert type(call) is ToolCallPart  # the parser sends a call's delta right after its start
            parts[-1] = ToolCallPart(call.id, call.name, call.arguments + event.arguments)
    if text:
        parts.append(TextPart(text))
    return tuple(parts)


def _grammar_processors(engine: Engine, response_format: Any, n: int) -> list[GrammarProcessor]:
    """One grammar processor per choice for `response_format` (none for plain text). Blocking."""
    grammar = response_format_grammar(response_format)
    if grammar is None:
        return []
    tokenizer = grammar_tokenizer(engine)
    return [GrammarProcessor(tokenizer, grammar) for _ in range(n)]
