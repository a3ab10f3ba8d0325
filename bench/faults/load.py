"""The load that runs through every fault phase: `clients` closed-loop clients over aiohttp, each
request on one of four kinds in turn (OpenAI `/v1/chat/completions` and Anthropic `/v1/messages`,
streamed and not), each with its own `x-request-id` (`ft.<phase>.<n>`), so that its audit record can
be found afterwards whatever happened to the response.

What became of a request (`outcome`):
- `2xx`: a whole answer (for a stream: its terminator arrived, no error event);
- `2xx_cut`: a 2xx whose body or stream broke or carried the protocol's error event;
- `4xx`, `5xx`: the status the client got;
- `conn_error`: no connection (refused: nothing listening);
- `reset`: the connection dropped before a status arrived (a reset, a server that went away);
- `timeout`: no answer within the client's timeout.

A request counts as *answered* when a status line arrived (2xx, 2xx_cut, 4xx, 5xx): those must have
an audit record. After a connection error a client waits `backoff_s` before its next request, so
clients do not spin on a closed port while the gateway restarts.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["KINDS", "OUTCOMES", "FaultLoad", "RequestRecord"]

OUTCOMES = ("2xx", "2xx_cut", "4xx", "5xx", "conn_error", "reset", "timeout")
#: (surface, streamed)
KINDS = (("openai", False), ("anthropic", False), ("openai", True), ("anthropic", True))
_OPENAI_END = b"data: [DONE]"
_ANTHROPIC_END = b"event: message_stop"
_ERROR_EVENT = (b"event: error", b'data: {"error"')


@dataclass(slots=True)
class RequestRecord:
    rid: str
    phase: str
    surface: str
    stream: bool
    start: float  # time.time()
    end: float = 0.0
    status: int | None = None
    outcome: str = ""
    error: str | None = None

    @property
    def answered(self) -> bool:
        return self.status is not None

    def latency_ms(self) -> float:
        return (self.end - self.start) * 1000


def _bodies(openai_model: str, anthropic_model: str) -> dict[tuple[str, bool], bytes]:
    message = [{"role": "user", "content": "Say something about the sea."}]
    bodies = {}
    for surface, stream in KINDS:
        model = openai_model if surface == "openai" else anthropic_model
        body: dict[str, Any] = {"model": model, "messages": message, "max_tokens": 16}
        if stream:
            body["stream"] = True
        bodies[(surface, stream)] = orjson.dumps(body)
    return bodies


@dataclass
class FaultLoad:
    """`clients` closed-loop clients against `base_url`, tagging each request with `phase` (settable
    while they run). `start()` in a running loop, `stop()` to end (waits for requests in flight)."""

    base_url: str
    clients: int
    openai_model: str = "chat"
    anthropic_model: str = "claude"
    timeout_s: float = 30.0
    backoff_s: float = 0.05
    phase: str = "warmup"
    records: list[RequestRecord] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stopping: bool = False
    _counter: itertools.count[int] = field(default_factory=itertools.count)

    async def start(self) -> None:
        import aiohttp

        self._bodies = _bodies(self.openai_model, self.anthropic_model)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
        )
        self._tasks = [asyncio.create_task(self._client(c)) for c in range(self.clients)]

    async def stop(self) -> None:
        self._stopping = True
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._session.close()

    def of_phase(self, phase: str) -> list[RequestRecord]:
        return [r for r in self.records if r.phase == phase]

    async def _client(self, index: int) -> None:
        kinds = itertools.cycle(KINDS[index % len(KINDS) :] + KINDS[: index % len(KINDS)])
        while not self._stopping:
            surface, stream = next(kinds)
            record = RequestRecord(
                rid=f"ft.{self.phase}.{next(self._counter)}",
                phase=self.phase,
                surface=surface,
                stream=stream,
                start=time.time(),
            )
            self.records.append(record)
            await self._send(record)
            if record.outcome in ("conn_error", "reset"):
                await asyncio.sleep(self.backoff_s)

    async def _send(self, record: RequestRecord) -> None:
        import aiohttp

        path = "/v1/chat/completions" if record.surface == "openai" else "/v1/messages"
        headers = {"content-type": "application/json", "x-request-id": record.rid}
        if record.surface == "anthropic":
            headers["anthropic-version"] = "2023-06-01"
        try:
            async with self._session.post(
                self.base_url + path, data=self._bodies[(record.surface, record.stream)], headers=headers
            ) as response:
                record.status = response.status
                body = await response.read()
                record.outcome = _classify(record, response.status, body)
                if response.status >= 300:
                    record.error = f"HTTP {response.status}: {body[:160].decode(errors='replace')}"
        except aiohttp.ClientConnectorError as error:
            record.outcome, record.error = "conn_error", _text(error)
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as error:
            # After a status line, a broken body; before it, a dropped connection.
            record.outcome = "2xx_cut" if record.status and record.status < 300 else "reset"
            if record.status and record.status >= 300:
                record.outcome = f"{record.status // 100}xx"
            record.error = _text(error)
        except TimeoutError as error:
            record.outcome, record.error = "timeout", _text(error) or "client timeout"
        except aiohttp.ClientError as error:
            record.outcome, record.error = "reset", _text(error)
        record.end = time.time()


def _classify(record: RequestRecord, status: int, body: bytes) -> str:
    if status >= 300:
        return "5xx" if status >= 500 else "4xx"
    if not record.stream:
        return "2xx"
    end = _OPENAI_END if record.surface == "openai" else _ANTHROPIC_END
    if any(marker in body for marker in _ERROR_EVENT):
        record.error = "stream ended by an error event"
        return "2xx_cut"
    if end not in body:
        record.error = "stream without its terminator"
        return "2xx_cut"
    return "2xx"


def _text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:200]
