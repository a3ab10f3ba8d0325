"""Token usage is the same on every path for the same upstream answer: OpenAI or Anthropic upstream,
passed through or translated, streamed or whole, with prompt-cache reads (and, from Anthropic, cache
writes). What the audit log and metrics read (`trail.usage`) is one canonical Usage per upstream answer,
and each client, through its official SDK, reads the same numbers in its own protocol's members.

The fakes report caching in each API's real shape; the gateway runs in this process so that the test can
read each request's trail.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anthropic
import openai
import pytest

from gateway.protocol.canonical import Usage
from gateway.routing.trail import RequestTrail
from gateway.testing import Behaviour, FakeAnthropic, FakeOpenAI, count_tokens
from gateway.testing.inprocess import InProcessGateway, gateway_in_thread

PROMPT = "Which of the old lighthouses along this coast still guide ships at night"
PROMPT_TOKENS = count_tokens(PROMPT)
REPLY_TOKENS = 16  # the fakes' reply length (Behaviour.reply_tokens)
CACHE_READ, CACHE_WRITE = 5, 3
assert CACHE_READ + CACHE_WRITE < PROMPT_TOKENS

#: The canonical usage of each upstream's answer: every prompt token, with the cached ones among them.
#: OpenAI reports no cache writes.
EXPECTED = {
    "openai": Usage(PROMPT_TOKENS, REPLY_TOKENS, cached_tokens=CACHE_READ),
    "anthropic": Usage(
        PROMPT_TOKENS, REPLY_TOKENS, cached_tokens=CACHE_READ, cache_creation_tokens=CACHE_WRITE
    ),
}
MODEL = {"openai": "gpt", "anthropic": "claude"}


@dataclass(frozen=True)
class UsagePath:
    upstream: str
    client: str
    stream: bool
    #: OpenAI clients only: whether the client asked for usage in the stream.
    include_usage: bool = True

    @property
    def id(self) -> str:
        same = self.upstream == self.client or (self.upstream, self.client) == ("openai", "responses")
        how = "passthrough" if same else "translated"
        shape = "stream" if self.stream else "whole"
        extra = "" if self.include_usage or not self.stream or self.client != "openai" else "-no-usage-asked"
        client = "-responses-api" if self.client == "responses" else ""
        return f"{self.upstream}-upstream-{how}-{shape}{extra}{client}"


PATHS = (
    [
        UsagePath(upstream, client, stream)
        for upstream in ("openai", "anthropic")
        for client in ("openai", "anthropic")
        for stream in (False, True)
    ]
    + [
        # The client did not ask for usage: it gets none, the audit log still does.
        UsagePath("openai", "openai", True, include_usage=False),
        UsagePath("anthropic", "openai", True, include_usage=False),
    ]
    + [
        # The Responses API: passed through to an `openai` backend, translated from Anthropic.
        UsagePath(upstream, "responses", stream)
        for upstream in ("openai", "anthropic")
        for stream in (False, True)
    ]
)


class TrailRecorder:
    """Receives each finished request's trail (in the gateway's thread)."""

    active = True

    def __init__(self) -> None:
        self.trails: queue.Queue[RequestTrail] = queue.Queue()

    def record(self, trail: RequestTrail) -> None:
        self.trails.put(trail)

    def next(self) -> RequestTrail:
        # The trail is recorded just after the last byte is sent, so it may trail the client by a moment.
        return self.trails.get(timeout=10)


@dataclass(frozen=True)
class Running:
    gateway: InProcessGateway
    recorder: TrailRecorder
    openai: openai.OpenAI
    anthropic: anthropic.Anthropic


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    caching = Behaviour(cached_tokens=CACHE_READ, cache_creation_tokens=CACHE_WRITE)
    with FakeOpenAI.in_thread(caching) as oa, FakeAnthropic.in_thread(caching) as an:
        path = Path(tmp_path_factory.mktemp("usage")) / "gateway.yaml"
        path.write_text(
            f"""
backends:
  oa: {{type: openai_compatible, base_url: "{oa.base_url}"}}
  oa-official: {{type: openai, base_url: "{oa.base_url}", api_key: "${{USAGE_KEY}}"}}
  an: {{type: anthropic, base_url: "{an.base_url}", api_key: "${{USAGE_KEY}}"}}
models:
  gpt: {{chain: [{{backend: oa, model: gpt-4o}}]}}
  gpt-official: {{chain: [{{backend: oa-official, model: gpt-4o}}]}}
  claude: {{chain: [{{backend: an, model: claude-sonnet-test}}]}}
reload: {{watch: false}}
"""
        )
        recorder = TrailRecorder()
        with gateway_in_thread(path, trails=recorder, env={"USAGE_KEY": "k"}) as gateway:
            oai = openai.OpenAI(base_url=gateway.url("/v1"), api_key="x", max_retries=0, timeout=30)
            ant = anthropic.Anthropic(base_url=gateway.base_url, api_key="x", max_retries=0, timeout=30)
            yield Running(gateway, recorder, oai, ant)
            oai.close()
            ant.close()


def _openai_client(running: Running, path: UsagePath) -> openai.types.CompletionUsage | None:
    messages = [{"role": "user", "content": PROMPT}]
    model = MODEL[path.upstream]
    if not path.stream:
        return running.openai.chat.completions.create(model=model, messages=messages).usage  # type: ignore[arg-type]
    options = {"include_usage": True} if path.include_usage else None
    chunks = list(
        running.openai.chat.completions.create(
            model=model,
            messages=messages,  # type: ignore[arg-type]
            stream=True,
            **({"stream_options": options} if options else {}),  # type: ignore[arg-type]
        )
    )
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "stop"
    usages = [chunk.usage for chunk in chunks if chunk.usage is not None]
    assert len(usages) <= 1
    return usages[0] if usages else None


def _anthropic_client(running: Running, path: UsagePath) -> anthropic.types.Usage:
    messages = [{"role": "user", "content": PROMPT}]
    model = MODEL[path.upstream]
    if not path.stream:
        return running.anthropic.messages.create(model=model, max_tokens=100, messages=messages).usage  # type: ignore[arg-type]
    with running.anthropic.messages.stream(model=model, max_tokens=100, messages=messages) as stream:  # type: ignore[arg-type]
        return stream.get_final_message().usage


def _responses_client(running: Running, path: UsagePath) -> openai.types.responses.ResponseUsage | None:
    model = "gpt-official" if path.upstream == "openai" else MODEL[path.upstream]
    if not path.stream:
        return running.openai.responses.create(model=model, input=PROMPT).usage
    events = list(running.openai.responses.create(model=model, input=PROMPT, stream=True))
    assert events[-1].type == "response.completed"
    return events[-1].response.usage  # type: ignore[union-attr]


@pytest.mark.parametrize("path", PATHS, ids=[p.id for p in PATHS])
def test_usage_is_the_same_on_every_path(running: Running, path: UsagePath) -> None:
    expected = EXPECTED[path.upstream]
    if path.client == "responses":
        answer = _responses_client(running, path)
        assert answer is not None
        assert (answer.input_tokens, answer.output_tokens) == (PROMPT_TOKENS, REPLY_TOKENS)
        assert answer.input_tokens_details.cached_tokens == CACHE_READ
        assert answer.total_tokens == PROMPT_TOKENS + REPLY_TOKENS
    elif path.client == "openai":
        usage = _openai_client(running, path)
        if path.stream and not path.include_usage:
            assert usage is None, "the client did not ask for usage in the stream"
        else:
            assert usage is not None
            assert (usage.prompt_tokens, usage.completion_tokens) == (PROMPT_TOKENS, REPLY_TOKENS)
            assert usage.total_tokens == PROMPT_TOKENS + REPLY_TOKENS
            assert usage.prompt_tokens_details is not None
            assert usage.prompt_tokens_details.cached_tokens == CACHE_READ
    else:
        usage = _anthropic_client(running, path)
        written = expected.cache_creation_tokens
        # Anthropic's input_tokens is what was neither read from nor written to the cache.
        assert usage.input_tokens == PROMPT_TOKENS - CACHE_READ - written
        assert usage.cache_read_input_tokens == CACHE_READ
        assert (usage.cache_creation_input_tokens or 0) == written
        assert usage.output_tokens == REPLY_TOKENS

    trail = running.recorder.next()
    assert (trail.surface, trail.stream, trail.backend) == (
        path.client,
        path.stream,
        {"openai": "oa-official" if path.client == "responses" else "oa", "anthropic": "an"}[path.upstream],
    )
    assert trail.error_type is None and trail.http_status == 200
    assert trail.usage == expected
