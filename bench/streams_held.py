"""Streams held: thousands of streams open at once on one gateway worker, against a fake OpenAI
server that drips a token every 100 ms. Do they all complete, what does an open stream cost the
gateway in memory, and how much time to first token does the gateway add?

    gateway bench streams-held [--quick] [--streams 5000] [--tokens 100] [--token-delay-ms 100]

The same streams run twice: straight to the fake (the baseline), then through the gateway (one
worker). The client is a bare asyncio protocol per connection (uvloop where installed) that writes
one pre-encoded request, notes the time to the first content token and the end (`data: [DONE]`),
and closes; connections are opened in bursts of `--ramp` every 50 ms. Memory per open stream is the
gateway's resident memory at the sample with the most streams open, less its resident memory idle
(after a few warm-up requests), divided by the streams open then. TTFT added is the gateway's TTFT
p99 less the direct one's. The exit status is 1 if any stream did not complete.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from gateway.bench.harness.limits import raise_open_files
from gateway.bench.harness.loadgen import percentiles
from gateway.bench.harness.options import scenario_settings
from gateway.bench.harness.paths import checkout_commit
from gateway.bench.harness.proc import rss_bytes
from gateway.bench.harness.progress import Progress, say
from gateway.bench.harness.results import markdown_table, ms
from gateway.bench.harness.runner import scenario_main
from gateway.bench.harness.servers import start_fake

from gateway.config.schema import load_schema
from gateway.testing.process import start_gateway

FULL = {"streams": 5000, "tokens": 100, "token_delay_ms": 100.0, "ramp": 250}
QUICK = {"streams": 100, "tokens": 10, "token_delay_ms": 100.0, "ramp": 100}
MODEL = "gpt-4o-mini"
_TOKEN = re.compile(rb'"content":"[^"]')
_DONE = b"data: [DONE]"
#: Names the server connection limit may have in the schema (set to fit the streams when present).
CONNECTION_LIMIT_KEYS = ("max_client_connections", "max_connections", "max_open_connections")


@dataclass
class _Phase:
    request: bytes
    started: int = 0
    open: int = 0  # connected, not yet finished
    completed: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    total: int = 0

    def end(self) -> None:
        self.open -= 1
        if self.completed + self.failed >= self.total:
            self.finished.set()

    def fail(self, message: str) -> None:
        self.failed += 1
        if len(self.errors) < 5:
            self.errors.append(message)


class _Stream(asyncio.Protocol):
    def __init__(self, phase: _Phase) -> None:
        self.phase = phase
        self.transport: asyncio.Transport | None = None
        self.sent = 0.0
        self.tail = b""
        self.status_checked = False
        self.ttft: float | None = None
        self.done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # (uvloop's is not a subclass)
        self.phase.open += 1
        self.sent = time.perf_counter()
        transport.write(self.phase.request)

    def data_received(self, data: bytes) -> None:
        window = self.tail + data
        if not self.status_checked and b"\r\n" in window:
            self.status_checked = True
            if not window.startswith(b"HTTP/1.1 200"):
                self.phase.fail(window.split(b"\r\n", 1)[0].decode(errors="replace"))
                self.done = True
                if self.transport is not None:
                    self.transport.close()
                return
        if self.ttft is None and _TOKEN.search(window):
            self.ttft = time.perf_counter() - self.sent
            self.phase.ttfts.append(self.ttft * 1000)
        if _DONE in window:
            self.done = True
            self.phase.completed += 1
            self.phase.durations.append((time.perf_counter() - self.sent) * 1000)
            if self.transport is not None:
                self.transport.close()
        self.tail = window[-64:]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done:
            self.done = True
            self.phase.fail(f"closed before its end: {exc}")
        self.phase.end()


def _request(port: int, model: str, tokens: int) -> bytes:
    body = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": "Tell a long story."}],
            "max_tokens": tokens,
            "stream": True,
        }
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode()
    return head + body


async def _hold(port: int, model: str, settings: dict[str, Any], pid: int | None) -> dict[str, Any]:
    """Open every stream (in bursts), sample `pid`'s memory meanwhile, wait for all to end."""
    loop = asyncio.get_running_loop()
    phase = _Phase(_request(port, model, settings["tokens"]), total=settings["streams"])
    samples: list[tuple[int, int]] = []  # (streams open, resident bytes)

    async def sample() -> None:
        while True:
            samples.append((phase.open, rss_bytes(pid) if pid else 0))
            await asyncio.sleep(0.25)

    async def open_one() -> None:
        try:
            await loop.create_connection(lambda: _Stream(phase), "127.0.0.1", port)
        except OSError as error:
            phase.fail(f"connect: {error}")
            if phase.completed + phase.failed >= phase.total:
                phase.finished.set()

    sampler = asyncio.create_task(sample())
    started = time.perf_counter()
    for first in range(0, settings["streams"], settings["ramp"]):
        count = min(settings["ramp"], settings["streams"] - first)
        await asyncio.gather(*(open_one() for _ in range(count)))
        await asyncio.sleep(0.05)
    opened_s = time.perf_counter() - started
    expected = settings["tokens"] * settings["token_delay_ms"] / 1000
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(phase.finished.wait(), timeout=expected + 120)
    sampler.cancel()
    peak_open, peak_rss = max(samples, default=(0, 0))
    return {
        "streams": settings["streams"],
        "completed": phase.completed,
        "failed": phase.failed + (settings["streams"] - phase.completed - phase.failed),
        "errors": phase.errors,
        "opened_all_after_s": round(opened_s, 2),
        "duration_s": round(time.perf_counter() - started, 2),
        "peak_open": peak_open,
        "peak_rss_bytes": peak_rss,
        "ttft_ms": percentiles(phase.ttfts),
        "stream_ms": percentiles(phase.durations),
    }


def _config(fake_port: int, streams: int) -> tuple[str, str | None]:
    """The gateway's config, and the server connection limit key set (None: the schema has none)."""
    server_keys = load_schema()["properties"]["server"]["properties"]
    limit_key = next((key for key in CONNECTION_LIMIT_KEYS if key in server_keys), None)
    server = f"server: {{{limit_key}: {streams + 1000}}}\n" if limit_key else ""
    return (
        server
        + f"""backends:
  fake:
    type: openai_compatible
    base_url: "http://127.0.0.1:{fake_port}/v1"
    max_connections: {streams + 100}
models:
  chat: {{chain: [{{backend: fake, model: {MODEL}}}]}}
timeouts:
  chat: {{total: 3600}}
reload: {{watch: false}}
""",
        limit_key,
    )


def _in_loop(main: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Run `main` on uvloop where it is installed (the client's own cost stays small)."""
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main)


def run(settings: dict[str, Any], progress: Progress | None = None) -> dict[str, Any]:
    settings = settings | {"open_files_limit": raise_open_files(4 * settings["streams"] + 1024)}
    with tempfile.TemporaryDirectory(prefix="bench-streams-held-") as directory:
        workdir = Path(directory)
        fake = start_fake(
            "openai",
            workdir / "fake.log",
            reply_tokens=settings["tokens"],
            token_delay_ms=settings["token_delay_ms"],
        )
        gateway = None
        try:
            with progress.step("direct to the fake") if progress else contextlib.nullcontext():
                direct = _in_loop(_hold(fake.port, MODEL, settings, None))
            say(f"  direct: {direct['completed']}/{direct['streams']} complete, TTFT {direct['ttft_ms']}")
            config_path = workdir / "gateway.yaml"
            text, limit_key = _config(fake.port, settings["streams"])
            config_path.write_text(text)
            gateway = start_gateway(config_path, env={"GATEWAY_CACHE_DIR": str(workdir / "cache")})
            for _ in range(20):  # warm: the pool, the routes, the audit writer
                requests.post(
                    gateway.url("/v1/chat/completions"),
                    json={"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
                    timeout=30,
                )
            time.sleep(1)
            idle_rss = rss_bytes(gateway.process.pid)
            with progress.step("through the gateway") if progress else contextlib.nullcontext():
                through = _in_loop(_hold(gateway.port, "chat", settings, gateway.process.pid))
            say(
                f"  gateway: {through['completed']}/{through['streams']} complete, "
                f"TTFT p99 {through['ttft_ms']['p99']} ms"
            )
        finally:
            if gateway is not None:
                gateway.stop(timeout=60)
            fake.stop()
    peak_open = through["peak_open"]
    per_stream = (through["peak_rss_bytes"] - idle_rss) / peak_open if peak_open else None
    return {
        "settings": settings,
        "server_connection_limit_key": limit_key,
        "direct": direct,
        "gateway": through,
        "gateway_idle_rss_bytes": idle_rss,
        "rss_per_open_stream_kib": round(per_stream / 1024, 1) if per_stream is not None else None,
        "ttft_p99_added_ms": round(through["ttft_ms"]["p99"] - direct["ttft_ms"]["p99"], 1),
        "ttft_p50_added_ms": round(through["ttft_ms"]["p50"] - direct["ttft_ms"]["p50"], 1),
        "commit": checkout_commit(),
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
        "requests": direct["streams"] + through["streams"],
        "failed_requests": direct["failed"] + through["failed"],
    }


def table(result: dict[str, Any]) -> str:
    s = result["settings"]
    rows = []
    for label, key in (("direct to the fake", "direct"), ("through the gateway (1 worker)", "gateway")):
        found = result[key]
        rows.append(
            [
                label,
                f"{found['streams']:,}",
                f"{found['completed']:,}",
                found["failed"],
                f"{found['peak_open']:,}",
                found["opened_all_after_s"],
                ms(found["ttft_ms"]["p50"], 1),
                ms(found["ttft_ms"]["p99"], 1),
                ms(found["stream_ms"]["p50"], 0),
                ms(found["stream_ms"]["p99"], 0),
            ]
        )
    headers = [
        "path",
        "streams",
        "completed",
        "failed",
        "most open at once",
        "all opened after (s)",
        "TTFT p50 (ms)",
        "TTFT p99 (ms)",
        "stream p50 (ms)",
        "stream p99 (ms)",
    ]
    limit = result["server_connection_limit_key"]
    lines = [
        f"{s['streams']:,} streams of {s['tokens']} tokens, one every {s['token_delay_ms']:g} ms; "
        f"opened {s['ramp']} at a time every 50 ms; machine load average at the end "
        f"{result.get('load_average_end', [0])[0]:g}; commit {result.get('commit') or 'unknown'}, "
        f"{result.get('started_at', '')}",
        markdown_table(headers, rows),
        f"Gateway resident memory: {result['gateway_idle_rss_bytes'] / 2**20:.0f} MiB idle, "
        f"{result['gateway']['peak_rss_bytes'] / 2**20:.0f} MiB with {result['gateway']['peak_open']:,} "
        f"streams open: **{result['rss_per_open_stream_kib']} KiB per open stream**. TTFT added by the "
        f"gateway: p50 {result['ttft_p50_added_ms']} ms, **p99 {result['ttft_p99_added_ms']} ms**.",
        f"Server connection limit: `server.{limit}` set to streams + 1000."
        if limit
        else "Server connection limit: this version's schema has no `server.*` connection limit to set.",
    ]
    errors = result["gateway"]["errors"] + result["direct"]["errors"]
    if errors:
        lines.append(f"Errors seen: {errors[:3]}")
    return "\n\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--streams", type=int, help=f"streams open at once ({FULL['streams']})")
    parser.add_argument("--tokens", type=int, help=f"tokens per stream ({FULL['tokens']})")
    parser.add_argument(
        "--token-delay-ms", type=float, help=f"the fake's delay per token ({FULL['token_delay_ms']})"
    )
    parser.add_argument("--ramp", type=int, help=f"connections opened every 50 ms ({FULL['ramp']})")


def run_scenario(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    settings = scenario_settings(args, QUICK, FULL)
    progress.add(1)
    return run(settings, progress)


def main(argv: list[str] | None = None) -> int:
    """`python -m gateway.bench.streams_held ...` is `gateway bench streams-held ...`."""
    return scenario_main("streams-held", sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
