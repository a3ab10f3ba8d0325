"""A recording HTTP client for scenarios where each request's story matters (failover, cloud): who
served it, after how many attempts, its latency and time to first token. Not for the most requests
per second; that is `loadgen`'s job.

Each of `clients` concurrent clients sends its requests one after another over keep-alive
connections (a closed loop). Streams (OpenAI or Anthropic SSE) are read to their end; the first
token is the first event with non-empty text (`"content":"x` or `"text":"x`), and a stream counts as
complete only with its terminator (`[DONE]` or `message_stop`).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from typing import Any

from gateway.bench.harness.loadgen import percentiles

__all__ = ["new_record", "record_one", "run_requests", "summarize_records"]

_TEXT = re.compile(rb'"(?:content|text)": ?"[^"]')
# The end of a stream: OpenAI's, Anthropic's, Gemini's (its last chunk carries the finish reason) and
# Bedrock's event stream (a messageStop event).
_END = (b"data: [DONE]", b"event: message_stop", b'"finishReason"', b"messageStop")


def new_record(**fields: Any) -> dict[str, Any]:
    return {
        "start_s": 0.0,
        "status": None,
        "backend": None,
        "attempts": None,
        "latency_ms": None,
        "ttft_ms": None,
        "error": None,
    } | fields


async def record_one(
    session: Any,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    stream: bool,
    record: dict[str, Any],
    t0: float,
) -> None:
    """Send one request on `session` and fill `record` (times from `t0`, a perf_counter value)."""
    import aiohttp

    clock = time.perf_counter
    started = clock()
    record["start_s"] = round(started - t0, 4)
    try:
        async with session.post(url, data=body, headers=headers) as response:
            record["status"] = response.status
            record["backend"] = response.headers.get("x-gateway-backend")
            attempts = response.headers.get("x-gateway-attempts")
            record["attempts"] = int(attempts) if attempts and attempts.isdigit() else None
            if not stream or response.status != 200:
                payload = await response.read()
                if response.status != 200:
                    record["error"] = f"HTTP {response.status}: {payload[:200].decode(errors='replace')}"
            else:
                complete = False
                tail = b""
                async for data in response.content.iter_any():
                    if record["ttft_ms"] is None and _TEXT.search(tail + data):
                        record["ttft_ms"] = round((clock() - started) * 1000, 3)
                    window = tail + data
                    if any(end in window for end in _END):
                        complete = True
                    tail = window[-64:]
                if not complete:
                    record["error"] = "stream ended without its terminator"
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        record["error"] = f"{type(error).__name__}: {error}"
    record["latency_ms"] = round((clock() - started) * 1000, 3)


async def _run(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    clients: int,
    per_client: int,
    stream: bool,
    timeout: float,
) -> list[dict[str, Any]]:
    import aiohttp

    records: list[dict[str, Any]] = []
    connector = aiohttp.TCPConnector(limit=0)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        t0 = time.perf_counter()

        async def client(c: int) -> None:
            for r in range(per_client):
                record = new_record(client=c, round=r)
                records.append(record)
                await record_one(session, url, body, headers, stream, record, t0)

        await asyncio.gather(*(client(c) for c in range(clients)))
    records.sort(key=lambda r: r["start_s"])
    return records


def run_requests(
    url: str,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    *,
    clients: int = 1,
    per_client: int = 1,
    stream: bool = False,
    timeout: float = 120.0,
) -> list[dict[str, Any]]:
    """Send `clients` × `per_client` requests; every request's record, in the order they started."""
    merged = {"content-type": "application/json"} | dict(headers or {})
    return asyncio.run(
        _run(url, body, merged, clients=clients, per_client=per_client, stream=stream, timeout=timeout)
    )


def summarize_records(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Count, failures, and latency (and TTFT, for streams) percentiles in ms over the successful ones."""
    ok = [r for r in records if not r["error"]]
    summary: dict[str, Any] = {
        "requests": len(records),
        "failed": len(records) - len(ok),
        "latency_ms": percentiles([r["latency_ms"] for r in ok]),
    }
    ttfts = [r["ttft_ms"] for r in ok if r["ttft_ms"] is not None]
    if ttfts:
        summary["ttft_ms"] = percentiles(ttfts)
    return summary
