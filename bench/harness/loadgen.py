"""A cheap closed-loop HTTP/1.1 load generator, run as its own process (for the overhead and peers
scenarios).

    python -m gateway.bench.harness.loadgen  # one JSON phase per stdin line, one JSON result per line

Each of `concurrency` keep-alive connections sends a pre-encoded request, waits for the whole
response, and sends the next one at once (a closed loop). The client is a bare `asyncio.Protocol`:
no tasks, futures or header objects per request, only a `perf_counter()` at the write, a find of
`\\r\\n\\r\\n`, the content length or the chunk sizes, and a `perf_counter()` at the end, so it
costs a small fraction of what the servers it measures spend on the same request (its own CPU time
per request is reported with every result, so a reader can check).

For streamed responses (`"stream": true`) it also records the time to the first chunk that carries
a token (`"content":"` followed by at least one character) and counts the tokens of each stream.

A phase: `{"host", "port", "path", "body", "stream", "concurrency", "warmup", "duration"}`, and
optionally `"min_requests"` (the measured window is extended until that many responses are in it)
and `"headers"` (more request headers, e.g. an API key).
A result: requests completed in the measured window, req/s and latency (and TTFT) percentiles in ms
over them; answered (warm-up included); failed over the whole phase (with up to 5 example errors);
min/max tokens per stream; the load generator's own CPU share and microseconds per request.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LoadGenerator", "percentiles", "run_phase"]

_TOKEN = re.compile(rb'"content":"[^"]')
_DONE = b"data: [DONE]"


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean (nearest rank), rounded to microseconds."""
    if not values:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
    ordered = sorted(values)
    last = len(ordered) - 1

    def rank(q: float) -> float:
        return round(ordered[min(last, round(q / 100 * last))], 3)

    return {
        "p50": rank(50),
        "p90": rank(90),
        "p99": rank(99),
        "max": round(ordered[-1], 3),
        "mean": round(sum(ordered) / len(ordered), 3),
    }


@dataclass
class _Run:
    """What all connections of one phase share: the clock window and the recorded samples."""

    request: bytes
    stream: bool
    measure_from: float = 0.0
    measure_until: float = float("inf")
    stopping: bool = False
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    completed: int = 0
    answered: int = 0  # every completed response, warm-up included (for CPU per request)
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    open_connections: int = 0

    def connect(self, host: str, port: int, since: float | None = None) -> asyncio.Task[Any]:
        """Open one more connection of the loop (`since`: when its first request counts as started)."""
        loop = asyncio.get_running_loop()

        async def open_one() -> None:
            try:
                await loop.create_connection(lambda: _Connection(self, since), host, port)
            except OSError as error:
                self.fail(f"connect failed: {error}")

        return loop.create_task(open_one())

    def fail(self, message: str) -> None:
        """Count a failed request, in the warm-up too: every request of a phase must succeed."""
        self.failed += 1
        if len(self.errors) < 5:
            self.errors.append(message)


class _Connection(asyncio.Protocol):
    """One keep-alive connection running the closed loop; all work happens in `data_received`."""

    def __init__(self, run: _Run, since: float | None = None) -> None:
        self.run = run
        self.since = since
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] | None = None
        self.close_after = False
        self.buffer = bytearray()
        self.started = 0.0
        self.first_token = 0.0
        self.in_body = False
        self.chunked = False
        self.length = 0
        self.status = 0
        self.tokens = 0
        self.done_marker = False
        self.busy = False

    # -- the loop

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = transport.get_extra_info("peername")[:2]
        self.run.open_connections += 1
        self._send()

    def _send(self) -> None:
        run = self.run
        if run.stopping or self.transport is None:
            self._finish()
            return
        self.in_body = False
        self.first_token = 0.0
        self.tokens = 0
        self.done_marker = False
        self.busy = True
        self.started = time.perf_counter()
        if self.since is not None:  # a reconnect: the request's time includes the new connection's
            self.started, self.since = self.since, None
        self.transport.write(run.request)

    def _finish(self) -> None:
        self.busy = False
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def _complete(self) -> None:
        now = time.perf_counter()
        self.busy = False
        run = self.run
        run.answered += 1
        ok = self.status == 200 and (not run.stream or self.done_marker)
        if not ok:
            detail = f"HTTP {self.status}" if self.status != 200 else "stream ended without [DONE]"
            run.fail(detail + ": " + bytes(self.buffer[:200]).decode("latin-1"))
        elif run.measure_from <= self.started and now <= run.measure_until:
            run.completed += 1
            run.latencies.append(now - self.started)
            if run.stream:
                run.ttfts.append((self.first_token or now) - self.started)
                run.tokens.append(self.tokens)
        self.buffer.clear()
        if self.close_after:
            # The server ends the connection after this response (Hypercorn does so after
            # keep_alive_max_requests, 1000 by default); a real client reconnects, and so do we.
            self._finish()
            if not run.stopping:
                assert self.peer is not None
                run.connect(*self.peer, since=time.perf_counter())
            return
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        run = self.run
        if self.busy:
            run.fail(f"connection lost mid-request: {exc or 'closed by the server'}")
        self.transport = None
        run.open_connections -= 1
        if run.open_connections == 0:
            run.idle.set()

    # -- parsing (only as much of HTTP/1.1 as the servers measured here send)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.in_body:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).lower()
            del buffer[: end + 4]
            self.status = int(head[9:12])
            self.in_body = True
            self.chunked = b"\r\ntransfer-encoding: chunked" in head
            self.close_after = b"\r\nconnection: close" in head
            if not self.chunked:
                at = head.find(b"\r\ncontent-length:")
                if at < 0:
                    self.run.fail("response without content-length or chunked encoding")
                    self._finish()
                    return
                line_end = head.find(b"\r\n", at + 17)
                self.length = int(head[at + 17 : line_end if line_end > 0 else len(head)])
        if not self.chunked:
            if len(buffer) >= self.length:
                self._complete()
            return
        self._chunks()

    def _chunks(self) -> None:
        buffer = self.buffer
        stream = self.run.stream
        while True:
            line_end = buffer.find(b"\r\n")
            if line_end < 0:
                return
            size = int(bytes(buffer[:line_end]).split(b";", 1)[0], 16)
            if size == 0:  # the last chunk; the servers measured here send no trailers
                if len(buffer) < line_end + 4:
                    return
                self._complete()
                return
            start = line_end + 2
            if len(buffer) < start + size + 2:
                return
            if stream:
                chunk = bytes(buffer[start : start + size])
                found = len(_TOKEN.findall(chunk))
                if found:
                    if not self.tokens:
                        self.first_token = time.perf_counter()
                    self.tokens += found
                if _DONE in chunk:
                    self.done_marker = True
            del buffer[: start + size + 2]


def _request_bytes(
    host: str, port: int, path: str, body: bytes, headers: dict[str, str] | None = None
) -> bytes:
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: application/json, text/event-stream\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def run_phase(phase: dict[str, Any]) -> dict[str, Any]:
    """Run one phase (see the module docstring) in this process and return its result."""
    body = phase["body"].encode() if isinstance(phase["body"], str) else phase["body"]
    request = _request_bytes(phase["host"], phase["port"], phase["path"], body, phase.get("headers"))
    run = _Run(request, bool(phase["stream"]))
    concurrency = int(phase["concurrency"])
    cpu_before = time.process_time()
    wall_start = time.perf_counter()
    run.measure_from = wall_start + float(phase["warmup"])
    run.measure_until = run.measure_from + float(phase["duration"])
    await asyncio.gather(*(run.connect(phase["host"], phase["port"]) for _ in range(concurrency)))
    if run.open_connections:
        await asyncio.sleep(max(0.0, run.measure_until - time.perf_counter()))
    # On a slow or busy machine a short window may hold too few responses: extend it (30 s at most).
    minimum, give_up = int(phase.get("min_requests", 1)), run.measure_until + 30
    if run.completed < minimum and run.open_connections:
        run.measure_until = float("inf")
        while run.completed < minimum and run.open_connections and time.perf_counter() < give_up:
            await asyncio.sleep(0.02)
        run.measure_until = time.perf_counter()
    window = run.measure_until - run.measure_from
    run.stopping = True
    cpu = time.process_time() - cpu_before
    elapsed = time.perf_counter() - wall_start
    answered = run.answered
    if run.open_connections:
        try:
            await asyncio.wait_for(run.idle.wait(), timeout=30)
        except TimeoutError:
            run.fail("connections still busy 30 s after the phase ended")
    result: dict[str, Any] = {
        "requests": run.completed,
        "answered": answered,  # with the warm-up's (for CPU per request)
        "failed": run.failed,
        "errors": run.errors,
        "rps": round(run.completed / window, 1),
        "window_s": round(window, 3),
        "latency_ms": percentiles([v * 1000 for v in run.latencies]),
        # The load generator's own CPU over warm-up and measurement: busy share, and per response.
        "loadgen_cpu_share": round(cpu / elapsed, 3),
        "loadgen_us_per_request": round(cpu / answered * 1e6, 1) if answered else 0.0,
    }
    if run.stream:
        result["ttft_ms"] = percentiles([v * 1000 for v in run.ttfts])
        result["tokens_per_stream"] = {"min": min(run.tokens, default=0), "max": max(run.tokens, default=0)}
    return result


def _worker() -> int:
    """Read phases from stdin (one JSON object a line), write results to stdout, until EOF."""
    for line in sys.stdin:
        if not line.strip():
            continue
        result = asyncio.run(run_phase(json.loads(line)))
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
    return 0


class LoadGenerator:
    """The worker as a child process, optionally pinned to a core with taskset."""

    def __init__(self, cpu: int | None = None) -> None:
        command = [sys.executable, "-m", "gateway.bench.harness.loadgen"]
        if cpu is not None:
            command = ["taskset", "-c", str(cpu), *command]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def run(self, phase: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(phase) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the load generator exited with {self.process.wait()}")
        return json.loads(line)

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


if __name__ == "__main__":
    sys.exit(_worker())
