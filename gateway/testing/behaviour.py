"""Shared core of the fake provider servers: fault-injection settings (`Behaviour`), the deterministic
reply generator and token counter, and `FakeServer`, the loopback aiohttp server both fakes build on.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import secrets
import threading
import zlib
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar, Self

import orjson
from aiohttp import web

__all__ = [
    "Behaviour",
    "FakeError",
    "FakeServer",
    "Stats",
    "TextPlan",
    "count_tokens",
    "plan_text",
    "reply_words",
    "split_fragments",
    "tool_arguments",
]

#: Extra prompt tokens each tool definition costs, so requests with tools count visibly more.
TOOL_TOKENS = 10

_WORDS = (
    "the quick brown fox jumps over a lazy dog while seven bright stars watch quiet rivers flow through "
    "green valleys under silver moons and gentle winds carry distant songs across ancient hills where old "
    "stories wait for curious travellers to find hidden paths toward warm lights glowing softly in small "
    "windows of sleepy towns near calm blue seas beyond tall mountains covered with fresh white snow "
    "every morning"
)
VOCABULARY: tuple[str, ...] = tuple(_WORDS.split())


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How a fake answers. Frozen: change it by assigning a new one (or `dataclasses.replace`)."""

    latency_ms: float = 0.0  # sleep before the response headers
    token_delay_ms: float = 0.0  # sleep before each streamed token frame
    reply_tokens: int = 16  # words in a generated reply (before max_tokens caps it)
    status: int | None = None  # every request fails with this status, in the provider's error shape
    fail_first_n: int = 0  # only the first N requests fail (with `status`, or 500)
    fail_every: int = 0  # every Nth request fails (with `status`, or 500): 5 fails one in five, 20 %
    hang: bool = False  # never answer; returns only when the client goes away or the server closes
    drop_after_chunks: int | None = None  # streaming: close the connection after N SSE frames
    malformed: bool = False  # 200 with a truncated JSON body / a broken SSE data line
    api_key: str | None = None  # required credential; None accepts any or none
    # Prompt caching, reported in each provider's own usage shape (capped at the prompt's tokens): input
    # tokens read from the cache (OpenAI `prompt_tokens_details.cached_tokens`, Anthropic
    # `cache_read_input_tokens`) and written to it (Anthropic `cache_creation_input_tokens`; OpenAI
    # reports no cache writes). Both 0: usage without cache members, as servers without a prompt cache.
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    # 200 with the usage reported but no answer (OpenAI `choices: []`, Anthropic no `content`): billed by
    # the upstream, yet nothing a translating gateway can give its client.
    no_answer: bool = False

    def __post_init__(self) -> None:
        for name in ("latency_ms", "token_delay_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"behaviour.{name} must be a number >= 0, got {value!r}")
        for name in (
            "reply_tokens",
            "fail_first_n",
            "fail_every",
            "drop_after_chunks",
            "cached_tokens",
            "cache_creation_tokens",
        ):
            value = getattr(self, name)
            if value is None and name == "drop_after_chunks":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"behaviour.{name} must be an integer >= 0, got {value!r}")
        if self.status is not None and (
            isinstance(self.status, bool) or not isinstance(self.status, int) or not 400 <= self.status <= 599
        ):
            raise ValueError(f"behaviour.status must be an HTTP error status 400-599, got {self.status!r}")
        for name in ("hang", "malformed", "no_answer"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"behaviour.{name} must be a boolean")
        if self.api_key is not None and not isinstance(self.api_key, str):
            raise ValueError("behaviour.api_key must be a string or null")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Behaviour:
        """Defaults plus the given fields; unknown fields or bad values raise `ValueError`."""
        return cls().merged(data)

    def merged(self, data: Mapping[str, Any]) -> Behaviour:
        """This behaviour with the given fields overridden (used for the per-request header)."""
        if not isinstance(data, Mapping):
            raise ValueError("behaviour must be a JSON object")
        unknown = set(data) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown behaviour fields: {', '.join(sorted(unknown))}")
        return replace(self, **data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def prompt_cache(self, prompt_tokens: int) -> tuple[int, int]:
        """(read from the cache, written to it) for a prompt of `prompt_tokens`: both within the prompt."""
        read = min(self.cached_tokens, prompt_tokens)
        return read, min(self.cache_creation_tokens, prompt_tokens - read)


# ---------------------------------------------------------------- deterministic text


def count_tokens(text: str) -> int:
    """The fakes' tokenizer: one token per whitespace-separated word."""
    return len(text.split())


def reply_words(seed: str, n: int) -> list[str]:
    """`n` words cycled from a fixed vocabulary, starting where a hash of `seed` points."""
    offset = zlib.crc32(seed.encode()) % len(VOCABULARY)
    return [VOCABULARY[(offset + i) % len(VOCABULARY)] for i in range(n)]


@dataclass(frozen=True, slots=True)
class TextPlan:
    """A reply cut by max tokens and stop strings. `pieces` are the streamed deltas; they join to `text`."""

    pieces: list[str]
    finish: str  # "end" (natural), "length" (max tokens) or "stop_sequence"
    stop_sequence: str | None

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def tokens(self) -> int:
        return count_tokens(self.text)


def plan_text(words: Sequence[str], max_tokens: int | None, stops: Sequence[str] = ()) -> TextPlan:
    """Cap `words` at `max_tokens`, then cut before the earliest stop string (which is never output)."""
    limit = len(words) if max_tokens is None else min(max_tokens, len(words))
    pieces = [w if i == 0 else " " + w for i, w in enumerate(words[:limit])]
    finish = "length" if limit < len(words) else "end"
    text = "".join(pieces)
    cut, matched = len(text) + 1, None
    for stop in stops:
        at = text.find(stop) if stop else -1
        if 0 <= at < cut:
            cut, matched = at, stop
    if matched is None:
        return TextPlan(pieces, finish, None)
    kept: list[str] = []
    pos = 0
    for piece in pieces:
        if pos + len(piece) > cut:
            if cut > pos:
                kept.append(piece[: cut - pos])
            break
        kept.append(piece)
        pos += len(piece)
    return TextPlan(kept, "stop_sequence", matched)


def tool_arguments(schema: Any) -> dict[str, Any]:
    """Arguments for a JSON-schema'd tool: each required property gets a fixed value of its type."""
    if not isinstance(schema, Mapping):
        return {}
    props = schema.get("properties") or {}
    args: dict[str, Any] = {}
    for name in schema.get("required") or ():
        kind = (props.get(name) or {}).get("type") if isinstance(props, Mapping) else None
        if isinstance(kind, list):  # e.g. ["string", "null"]: the first real type wins
            kind = next((k for k in kind if k != "null"), None)
        args[name] = {"string": "fake", "number": 1, "integer": 1, "boolean": True}.get(kind)
    return args


def split_fragments(text: str, size: int = 8) -> list[str]:
    """Fixed-size fragments, as a model streams a tool call's JSON arguments."""
    return [text[i : i + size] for i in range(0, len(text), size)]


# ---------------------------------------------------------------- server base


class FakeError(Exception):
    """Raised by handlers; rendered in the provider's error shape."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


@dataclass(slots=True)
class Stats:
    """Requests seen per path (API paths and unknown paths, not /_fake/*), and how many are running."""

    requests: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    injected_failures: int = 0

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "total": self.total,
            "in_flight": self.in_flight,
            "injected_failures": self.injected_failures,
        }


Handler = Callable[[web.Request, Behaviour], Awaitable[web.StreamResponse]]


class FakeServer(abc.ABC):
    """A fake provider API on loopback. Subclasses add routes and the provider's error shape.

    Behaviour is changed at run time by assigning `.behaviour` (which restarts fail_first_n's count), or over
    HTTP: `PUT /_fake/behaviour` replaces it with the defaults plus the given fields (so `{}` resets it),
    `PATCH` merges the given fields into the current one, `GET` reads it. A request header
    `x-fake-behaviour: {json}` overrides fields for that request only. `GET /_fake/stats` reports the
    counters, `POST /_fake/reset` zeroes them. fail_first_n counts server-wide, across all API requests.
    """

    provider: ClassVar[str] = "fake"
    request_id_header: ClassVar[str] = "x-request-id"
    request_id_prefix: ClassVar[str] = "req_"

    def __init__(self, behaviour: Behaviour | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self._behaviour = behaviour or Behaviour()
        self._failed = 0  # requests failed so far under fail_first_n
        self._counted = 0  # requests counted under fail_every
        self._stats = Stats()
        self._runner: web.AppRunner | None = None
        self._closing = False

    # -- subclass hooks

    @abc.abstractmethod
    def api_routes(self) -> list[tuple[str, str, Handler]]:
        """The provider's API routes: (method, path, handler)."""

    @abc.abstractmethod
    def check_auth(self, request: web.Request, behaviour: Behaviour) -> web.Response | None:
        """None if the request carries the credential `behaviour` requires, else the provider's 401."""

    @abc.abstractmethod
    def error_response(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> web.Response:
        """An error in the provider's own shape."""

    @property
    def base_url(self) -> str:
        return self.url

    # -- public API

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def behaviour(self) -> Behaviour:
        return self._behaviour

    @behaviour.setter
    def behaviour(self, value: Behaviour) -> None:
        self._behaviour = value
        self._failed = 0  # fail_first_n counts from the moment a behaviour is set
        self._counted = 0

    @property
    def stats(self) -> Stats:
        """A snapshot of the counters."""
        s = self._stats
        return Stats(dict(s.requests), s.in_flight, s.injected_failures)

    def reset_stats(self) -> None:
        """Zero the counters (in_flight stays: those requests are still running), fail_first_n's and
        fail_every's."""
        self._stats.requests.clear()
        self._stats.injected_failures = 0
        self._failed = 0
        self._counted = 0

    async def start(self) -> Self:
        self._closing = False
        # handler_cancellation: a hung or streaming handler stops as soon as its client goes away.
        # A short shutdown_timeout: streams still running at close are cut, so teardown stays fast.
        runner = web.AppRunner(
            self.make_app(), access_log=None, handler_cancellation=True, shutdown_timeout=0.25
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=2048, reuse_address=True)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]
        return self

    async def close(self) -> None:
        self._closing = True
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @classmethod
    @contextlib.contextmanager
    def in_thread(
        cls, behaviour: Behaviour | None = None, *, host: str = "127.0.0.1", port: int = 0, **options: Any
    ) -> Iterator[Self]:
        """Run the fake on its own event loop in a daemon thread, for synchronous clients. `options`: the
        subclass's own constructor arguments (`FakeOpenAI(vendor=...)`)."""
        server = cls(behaviour, host=host, port=port, **options)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=f"fake-{cls.provider}", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=30)
            yield server
        finally:
            asyncio.run_coroutine_threadsafe(server.close(), loop).result(timeout=30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
            loop.close()

    # -- plumbing shared by both fakes

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for method, path, handler in self.api_routes():
            app.router.add_route(method, path, self._wrap(handler))
        app.router.add_get("/_fake/behaviour", self._get_behaviour)
        app.router.add_put("/_fake/behaviour", self._put_behaviour)
        app.router.add_patch("/_fake/behaviour", self._patch_behaviour)
        app.router.add_get("/_fake/stats", self._get_stats)
        app.router.add_post("/_fake/reset", self._reset)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    def new_request_id(self) -> str:
        return self.request_id_prefix + secrets.token_hex(12)

    def make_response(self, obj: Any, status: int = 200, *, request_id: str | None = None) -> web.Response:
        headers = {self.request_id_header: request_id or self.new_request_id()}
        if status == 429:
            headers["retry-after"] = "1"
        return web.Response(
            body=orjson.dumps(obj), status=status, headers=headers, content_type="application/json"
        )

    def json_response(self, obj: Any, behaviour: Behaviour) -> web.Response:
        resp = self.make_response(obj)
        if behaviour.malformed:
            body = resp.body
            assert isinstance(body, bytes)
            resp.body = body[: len(body) // 2]
        return resp

    async def send_sse(
        self,
        request: web.Request,
        behaviour: Behaviour,
        head: list[bytes],
        tokens: list[bytes],
        tail: list[bytes],
    ) -> web.StreamResponse:
        """Stream SSE frames. `token_delay_ms` precedes each token frame; faults apply per frame."""
        frames = [*head, *tokens, *tail]
        first_token, end_token = len(head), len(head) + len(tokens)
        if behaviour.malformed and frames:
            i = 1 if len(frames) > 1 else 0
            data_at = frames[i].find(b"data: ") + 6
            frames[i] = frames[i][: data_at + (len(frames[i]) - data_at) // 2] + b"\n\n"
        return await self.stream_frames(
            request,
            behaviour,
            frames,
            first_token,
            end_token,
            "text/event-stream",
            {"cache-control": "no-cache"},
        )

    async def stream_frames(
        self,
        request: web.Request,
        behaviour: Behaviour,
        frames: list[bytes],
        first_token: int,
        end_token: int,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> web.StreamResponse:
        """Write a stream's frames (SSE events, event-stream messages): `token_delay_ms` before each
        token frame (`first_token` to `end_token`), cut after `drop_after_chunks` with the connection
        dropped, else ended cleanly."""
        dropping = behaviour.drop_after_chunks is not None
        if dropping:
            frames = frames[: behaviour.drop_after_chunks]
        resp = web.StreamResponse(headers={self.request_id_header: self.new_request_id(), **(headers or {})})
        resp.content_type = content_type
        await resp.prepare(request)
        delay = behaviour.token_delay_ms / 1000
        if not delay:
            await resp.write(b"".join(frames))
        else:
            pending: list[bytes] = []
            for i, frame in enumerate(frames):
                if first_token <= i < end_token:
                    if pending:
                        await resp.write(b"".join(pending))
                        pending = []
                    await asyncio.sleep(delay)
                pending.append(frame)
            if pending:
                await resp.write(b"".join(pending))
        if dropping:
            transport = request.transport
            # abort() discards unsent bytes; close() flushes them first, so the N frames still arrive.
            if transport is not None and transport.get_write_buffer_size():
                transport.close()
            elif transport is not None:
                transport.abort()
            return resp
        await resp.write_eof()
        return resp

    @staticmethod
    async def read_json(request: web.Request) -> dict[str, Any]:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise FakeError(400, "We could not parse the JSON body of your request.") from None
        if not isinstance(body, dict):
            raise FakeError(400, "The request body must be a JSON object.")
        return body

    def _wrap(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def run(request: web.Request) -> web.StreamResponse:
            stats = self._stats
            path = request.path
            stats.requests[path] = stats.requests.get(path, 0) + 1
            stats.in_flight += 1
            try:
                behaviour = self._behaviour
                override = request.headers.get("x-fake-behaviour")
                if override:
                    try:
                        behaviour = behaviour.merged(orjson.loads(override))
                    except (ValueError, TypeError) as exc:
                        return self.error_response(400, f"bad x-fake-behaviour header: {exc}")
                if behaviour.latency_ms:
                    await asyncio.sleep(behaviour.latency_ms / 1000)
                if behaviour.hang:
                    await self._hang(request)
                    return self.error_response(503, "The fake server is shutting down.")
                denied = self.check_auth(request, behaviour)
                if denied is not None:
                    return denied
                status = self._injected_status(behaviour)
                if status is not None:
                    stats.injected_failures += 1
                    return self.error_response(
                        status, f"Injected failure (HTTP {status}) from the fake server."
                    )
                return await handler(request, behaviour)
            except FakeError as exc:
                return self.error_response(exc.status, exc.message, param=exc.param, code=exc.code)
            finally:
                stats.in_flight -= 1

        return run

    def _injected_status(self, behaviour: Behaviour) -> int | None:
        if behaviour.fail_every:
            self._counted += 1
            return (behaviour.status or 500) if self._counted % behaviour.fail_every == 0 else None
        if behaviour.fail_first_n:
            if self._failed < behaviour.fail_first_n:
                self._failed += 1
                return behaviour.status or 500
            return None
        return behaviour.status

    async def _hang(self, request: web.Request) -> None:
        # handler_cancellation normally ends this on disconnect; polling also covers server shutdown.
        while not self._closing:
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            await asyncio.sleep(0.05)

    async def _not_found(self, request: web.Request) -> web.Response:
        self._stats.requests[request.path] = self._stats.requests.get(request.path, 0) + 1
        return self.error_response(404, f"Invalid URL ({request.method} {request.path})")

    async def _get_behaviour(self, request: web.Request) -> web.Response:
        return web.json_response(self._behaviour.to_dict(), dumps=lambda o: orjson.dumps(o).decode())

    async def _set_behaviour(self, request: web.Request, base: Behaviour) -> web.Response:
        try:
            self.behaviour = base.merged(orjson.loads(await request.read() or b"{}"))
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return await self._get_behaviour(request)

    async def _put_behaviour(self, request: web.Request) -> web.Response:
        return await self._set_behaviour(request, Behaviour())

    async def _patch_behaviour(self, request: web.Request) -> web.Response:
        return await self._set_behaviour(request, self._behaviour)

    async def _get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self._stats.to_dict())

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset_stats()
        return web.json_response(self._stats.to_dict())
