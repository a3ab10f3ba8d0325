"""Several choices for one request on a local model (OpenAI `n` > 1).

The n sequences are n engine jobs sharing the prompt (each with its own sampler, seeded `seed + i`
when the request is seeded, and its own logits processors), so they decode in the same batch. Their
events meet in one queue, tagged with the choice's index, and come back as one `ChatResponse` with
`extra_choices`, or as one stream whose deltas carry `TextDelta.choice` and whose choices each end
with a `ChoiceEnd`. Usage counts the prompt once and sums the completions, as OpenAI's does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from gateway.backends.mlx.engine import Engine, Job, JobEvent
from gateway.backends.upstream import AttemptLimits, EventStream, UpstreamFailure
from gateway.protocol.canonical import (
    ChatResponse,
    Choice,
    ChoiceEnd,
    StreamEnd,
    StreamEvent,
    StreamStart,
    TextDelta,
    TextPart,
    Usage,
    UsageEvent,
)

__all__ = ["ChoiceQueue", "Choices"]


class ChoiceQueue(asyncio.Queue[JobEvent]):
    """A job's event queue that forwards each event, tagged with the job's choice index, to the
    queue the choices share (the engine puts events with `put_nowait` on the event loop)."""

    def __init__(self, shared: asyncio.Queue[tuple[int, JobEvent]], index: int) -> None:
        super().__init__()
        self.shared = shared
        self.index = index

    def put_nowait(self, item: JobEvent) -> None:
        self.shared.put_nowait((self.index, item))


class Choices:
    """The n jobs of one request and the queue their events meet in."""

    def __init__(self, engine: Engine, jobs: list[Job], shared: asyncio.Queue[tuple[int, JobEvent]]) -> None:
        self.engine = engine
        self.jobs = jobs
        self.shared = shared
        self.done: dict[int, JobEvent] = {}

    def cancel(self) -> None:
        """Free the batch slots of the choices still generating."""
        for index, job in enumerate(self.jobs):
            if index not in self.done:
                self.engine.cancel(job)

    async def first(self, limits: AttemptLimits) -> tuple[int, JobEvent]:
        wait = limits.until_first_byte()
        try:
            async with asyncio.timeout(wait):
                return await self._next()
        except TimeoutError:
            raise UpstreamFailure("timeout", f"no token within {wait:g} s (first-byte limit)") from None

    async def _next(self) -> tuple[int, JobEvent]:
        index, event = await self.shared.get()
        if event.kind == "error":
            raise UpstreamFailure("http_5xx", event.text)
        if event.kind == "done":
            self.done[index] = event
        return index, event

    def usage(self) -> Usage:
        first = self.done[0]
        completion = sum(event.completion_tokens for event in self.done.values())
        return Usage(first.prompt_tokens, completion, first.cached_tokens)

    async def reply(self, first: tuple[int, JobEvent], model: str) -> ChatResponse:
        texts: list[list[str]] = [[] for _ in self.jobs]
        item = first
        try:
            while True:
                index, event = item
                if event.kind == "text":
                    texts[index].append(event.text)
                if len(self.done) == len(self.jobs):
                    break
                item = await self._next()
        except BaseException:
            self.cancel()
            raise
        choices = []
        for index, parts in enumerate(texts):
            text = "".join(parts)
            end = self.done[index]
            choices.append(Choice((TextPart(text),) if text else (), end.finish_reason, end.stop_sequence))  # type: ignore[arg-type]
        head = choices[0]
        return ChatResponse(
            id="",  # the client's encoder makes an id in its protocol's form
            model=model,
            content=head.content,
            finish_reason=head.finish_reason,
            usage=self.usage(),
            stop_sequence=head.stop_sequence,
            extra_choices=tuple(choices[1:]),
        )

    def stream(self, first: tuple[int, JobEvent], model: str) -> EventStream:
        def events(index: int, event: JobEvent) -> tuple[StreamEvent, ...]:
            if event.kind == "text":
                return (TextDelta(event.text, index),)
            end = ChoiceEnd(index, event.finish_reason or "stop", event.stop_sequence)  # type: ignore[arg-type]
            if len(self.done) < len(self.jobs):
                return (end,)
            usage = stream.usage = self.usage()
            head = self.done[0]
            return end, UsageEvent(usage), StreamEnd(head.finish_reason or "stop", head.stop_sequence)  # type: ignore[arg-type]

        async def rest() -> AsyncIterator[StreamEvent]:
            while len(self.done) < len(self.jobs):
                for event in events(*await self._next()):
                    yield event

        async def close() -> None:
            # A client gone mid-stream (or a deadline) frees the sequences' slots in the batch.
            self.cancel()

        stream = EventStream(close=close, rest=rest())
        stream.first = (StreamStart("", model), *events(*first))
        return stream
