"""The `mlx` backend: a local model served in-process by an engine thread with continuous batching.

Requests arrive in the canonical form; the prompt is built with the tokenizer's chat template, and
the answer is encoded for whichever protocol the client speaks (OpenAI chat or completions,
Anthropic messages), streamed by token or whole.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson

from gateway.backends.base import SharedResources
from gateway.backends.breaker import CircuitBreaker
from gateway.backends.concurrency import ConcurrencyLimit
from gateway.backends.mlx.engine import Engine, EngineOverloaded, Job, JobEvent
from gateway.backends.upstream import AttemptLimits, Reply, Stream, UpstreamCall, UpstreamFailure
from gateway.config.backends import MLXSettings
from gateway.protocol import anthropic as anthropic_protocol
from gateway.protocol import openai as openai_protocol
from gateway.protocol import openai_legacy
from gateway.protocol._maps import new_id
from gateway.protocol.canonical import (
    ChatRequest,
    ChatResponse,
    CompletionRequest,
    StreamEnd,
    StreamStart,
    TextDelta,
    TextPart,
    Usage,
    UsageEvent,
)

__all__ = ["LocalModelBackend"]


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
        if path is not None and (path / "config.json").exists():
            return path
        if path is not None and self.config.create_preset:
            from gateway.modelgen.create import ensure_model

            ensure_model(path, self.config.create_preset)
            return path
        if self.config.hf_repo:
            return Path(self.config.hf_repo)  # mlx_lm.load resolves a repository id (online machines only)
        raise UpstreamFailure("unsupported", f"no model at {path} (set create_preset to generate one)")

    # -- serving ----------------------------------------------------------------------------------

    async def send(self, call: UpstreamCall, model: str, limits: AttemptLimits) -> Reply | Stream:
        if call.endpoint == "embeddings":
            raise UpstreamFailure("unsupported", "local models do not serve embeddings")
        try:
            engine = await self._ensure_engine()
        except UpstreamFailure:
            raise
        except Exception as error:
            raise UpstreamFailure("http_5xx", f"the local model failed to load: {error}") from None
        request = call.request
        prompt = self._prompt(engine, request)
        if call.endpoint == "count_tokens":
            return Reply(orjson.dumps({"input_tokens": len(prompt)}), Usage(len(prompt), 0))
        assert isinstance(request, ChatRequest | CompletionRequest)
        job = Job(
            prompt=prompt,
            max_tokens=request.max_tokens or self.config.default_max_tokens,
            temperature=1.0 if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            seed=request.seed,
            stop=request.stop,
            loop=asyncio.get_running_loop(),
            ignore_eos=request.extra.get("ignore_eos") is True,
        )
        try:
            engine.submit(job)
        except EngineOverloaded as error:
            raise UpstreamFailure("overloaded", f"local model busy: {error}", retry_after="1") from None
        try:
            first = await self._first_event(job, limits)
        except BaseException:
            engine.cancel(job)
            raise
        if call.stream:
            return self._stream(engine, job, first, call, model)
        return await self._reply(engine, job, first, call, model)

    def _prompt(self, engine: Engine, request: Any) -> list[int]:
        tokenizer = engine.tokenizer
        if isinstance(request, CompletionRequest):
            prompt = request.prompt
            if isinstance(prompt, str):
                return tokenizer.encode(prompt)
            if prompt and all(isinstance(t, int) for t in prompt):
                return list(prompt)
            if len(prompt) == 1 and isinstance(prompt[0], str):
                return tokenizer.encode(prompt[0])
            raise UpstreamFailure("unsupported", "local models take one prompt per request")
        messages = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        for message in request.messages:
            role = "user" if message.role == "tool" else message.role
            messages.append({"role": role, "content": message.text})
        return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True))

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
        self, engine: Engine, job: Job, event: JobEvent, call: UpstreamCall, model: str
    ) -> Reply:
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
        usage = Usage(event.prompt_tokens, event.completion_tokens, event.cached_tokens)
        text = "".join(parts)
        if call.endpoint == "completions":
            body = openai_legacy.encode_completion_response(
                new_id("cmpl-"), model, text, event.finish_reason or "stop", usage
            )
            return Reply(orjson.dumps(body), usage)
        response = ChatResponse(
            id=new_id("chatcmpl-" if call.protocol == "openai" else "msg_"),
            model=model,
            content=(TextPart(text),) if text else (),
            finish_reason=event.finish_reason,  # type: ignore[arg-type]
            usage=usage,
            stop_sequence=event.stop_sequence,
        )
        if call.protocol == "anthropic":
            return Reply(orjson.dumps(anthropic_protocol.encode_messages_response(response, model)), usage)
        return Reply(orjson.dumps(openai_protocol.encode_chat_response(response, model)), usage)

    def _stream(self, engine: Engine, job: Job, first: JobEvent, call: UpstreamCall, model: str) -> Stream:
        include_usage = bool(getattr(call.request, "include_usage", False))
        if call.endpoint == "completions":
            encoder: Any = openai_legacy.CompletionStreamEncoder(model, include_usage=include_usage)
        elif call.protocol == "anthropic":
            encoder = anthropic_protocol.AnthropicStreamEncoder(model)
        else:
            encoder = openai_protocol.OpenAIStreamEncoder(model, include_usage=include_usage)
        finished = False

        def encode(event: JobEvent) -> bytes:
            nonlocal finished
            if event.kind == "text":
                return encoder.encode(TextDelta(event.text))
            if event.kind == "done":
                finished = True
                usage = Usage(event.prompt_tokens, event.completion_tokens, event.cached_tokens)
                stream.usage = usage
                return encoder.encode_all(
                    [UsageEvent(usage), StreamEnd(event.finish_reason or "stop", event.stop_sequence)]  # type: ignore[arg-type]
                )
            finished = True
            raise UpstreamFailure("http_5xx", event.text)

        head = encoder.encode(
            StreamStart(new_id("chatcmpl-" if call.protocol == "openai" else "msg_"), model)
        )

        async def rest() -> AsyncIterator[bytes]:
            while not finished:
                yield encode(await job.events.get())

        async def close() -> None:
            if not finished:
                engine.cancel(job)

        stream = Stream(first=b"", rest=rest(), close=close, first_token_at=time.monotonic())
        stream.first = head + encode(first)
        return stream

    def __repr__(self) -> str:
        return f"<LocalModelBackend {self.config.name} {self.config.path or self.config.hf_repo}>"
