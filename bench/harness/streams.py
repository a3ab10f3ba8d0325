"""Streaming generation phases, for the local-inference scenarios: every request's prompt, the
streaming chat client (a worker process: `python -m gateway.bench.harness.streams`, one JSON phase a
line on stdin, its records a line on stdout), the metrics of a phase computed the same way for every
system from those records, and `StreamBench`, which warms up, runs a phase and reads the CPU each
process spent.

The client runs on uvloop where installed, with aiohttp; it matches bytes with regexes and parses
JSON only for the usage chunk. Tokens are counted from each response's usage, never assumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.bench.harness.loadgen import percentiles
from gateway.bench.harness.proc import cpu_seconds, machine_busy_seconds, own_cpu_seconds, thread_cpu_seconds
from gateway.bench.harness.progress import Progress, say
from gateway.bench.harness.servers import JsonWorker

if TYPE_CHECKING:
    from gateway.bench.harness.systems import System

__all__ = [
    "FOREIGN_LIMIT",
    "PARAGRAPH",
    "REQUEST_LOG_FIELDS",
    "WARMUP_TEXT",
    "StreamBench",
    "client_command",
    "fastest_event_loop",
    "new_record",
    "prompts",
    "summarize",
]

PARAGRAPH = "Write a poem about the moon."
WARMUP_TEXT = "Say hi."
#: Cores' worth of CPU that other processes may use during a phase before it is run again.
FOREIGN_LIMIT = 0.15


# ---------------------------------------------------------------- the workload


def prompts(label: str, streams: int, rounds: int, body: str = PARAGRAPH) -> list[list[str]]:
    """The user message of every request: `[stream][round]`, each one distinct from its first word
    (a hash of the phase and the request), so a prompt cache can reuse no more than the chat
    template's opening tokens."""

    def text(s: int, r: int) -> str:
        tag = hashlib.sha256(f"{label}/{s}/{r}".encode()).hexdigest()[:8]
        return f"{tag}: {body}"

    return [[text(s, r) for r in range(rounds)] for s in range(streams)]


# ---------------------------------------------------------------- the streaming client (a worker process)

_CONTENT = re.compile(rb'"content": ?"[^"]')
_USAGE = re.compile(rb'"usage": ?\{')
_FINISH = re.compile(rb'"finish_reason": ?"(\w+)"')


def new_record(stream: int, index: int) -> dict[str, Any]:
    return {
        "stream": stream,
        "round": index,
        "t_start": 0.0,
        "t_first": None,
        "t_last": None,
        "t_done": None,
        "tokens": 0,
        "chunks": 0,
        "prompt_tokens": None,
        "cached_tokens": None,
        "finish_reason": None,
        "error": None,
    }


async def client_phase(phase: dict[str, Any]) -> dict[str, Any]:
    """Run one phase: each stream sends its requests one after another; return every request's record."""
    import aiohttp

    url, base = phase["url"], phase["body"]
    bodies = [
        [json.dumps({**base, "messages": [{"role": "user", "content": text}]}).encode() for text in row]
        for row in phase["prompts"]
    ]
    headers = {"content-type": "application/json", "accept": "text/event-stream"}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=None)
    records: list[dict[str, Any]] = []
    clock = time.perf_counter

    async def one(session: aiohttp.ClientSession, record: dict[str, Any], body: bytes) -> None:
        record["t_start"] = clock() - t0
        done = False
        try:
            async with session.post(url, data=body, headers=headers) as response:
                if response.status != 200:
                    text = (await response.read())[:300].decode(errors="replace")
                    record["error"] = f"HTTP {response.status}: {text}"
                    return
                pending = b""
                async for data in response.content.iter_any():
                    now = clock() - t0
                    pending += data
                    *events, pending = pending.split(b"\n\n")
                    for event in events:
                        if not event.startswith(b"data: "):
                            continue  # `: keepalive` comments (mlx_lm.server, during prefill)
                        if event == b"data: [DONE]":
                            done = True
                            continue
                        if _CONTENT.search(event):
                            record["chunks"] += 1
                            if record["t_first"] is None:
                                record["t_first"] = now
                            record["t_last"] = now
                        finish = _FINISH.search(event)
                        if finish:
                            record["finish_reason"] = finish.group(1).decode()
                        if _USAGE.search(event):
                            usage = json.loads(event[6:])["usage"]
                            record["tokens"] = usage["completion_tokens"]
                            record["prompt_tokens"] = usage["prompt_tokens"]
                            details = usage.get("prompt_tokens_details") or {}
                            record["cached_tokens"] = details.get("cached_tokens")
            record["t_done"] = clock() - t0
            if not done:
                record["error"] = "stream ended without [DONE]"
            elif record["prompt_tokens"] is None:
                record["error"] = "no usage chunk in the stream"
        except (aiohttp.ClientError, OSError, ValueError, KeyError) as error:
            record["error"] = f"{type(error).__name__}: {error}"

    async def stream(session: aiohttp.ClientSession, s: int) -> None:
        for r, body in enumerate(bodies[s]):
            record = new_record(s, r)
            records.append(record)
            await one(session, record, body)

    cpu_before = time.process_time()
    connector = aiohttp.TCPConnector(limit=0, force_close=phase.get("force_close", False))
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        t0 = clock()
        await asyncio.gather(*(stream(session, s) for s in range(len(bodies))))
        makespan = clock() - t0
    cpu = time.process_time() - cpu_before
    return {"makespan_s": makespan, "cpu_s": cpu, "cpu_share": cpu / makespan, "records": records}


def fastest_event_loop() -> Any:
    """uvloop's `run` where it is installed (it halves the load generator's CPU per token: 7% of a
    core at 16 streams of the tiny model -> 4%, CPU the systems under test would otherwise lose),
    else `asyncio.run`."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def client_worker() -> int:
    """The streaming client's process: phases from stdin (one JSON object a line), results to stdout."""
    run = fastest_event_loop()
    for line in sys.stdin:
        if line.strip():
            result = run(client_phase(json.loads(line)))
            sys.stdout.write(json.dumps(result) + "\n")
            sys.stdout.flush()
    return 0


def client_command() -> list[str]:
    """The command that starts the streaming client (for `JsonWorker`)."""
    return [sys.executable, "-m", "gateway.bench.harness.streams"]


# ---------------------------------------------------------------- measuring


def _wait_quiet(pids: list[int], seconds: float) -> float:
    """Wait (at most `seconds`) until processes not ours use under FOREIGN_LIMIT cores over half a
    second; return the last reading."""
    deadline = time.monotonic() + seconds
    foreign = 0.0
    while True:
        ours = sum(map(cpu_seconds, pids)) + own_cpu_seconds()
        busy, started = machine_busy_seconds(), time.perf_counter()
        time.sleep(0.5)
        elapsed = time.perf_counter() - started
        spent = sum(map(cpu_seconds, pids)) + own_cpu_seconds() - ours
        foreign = max(0.0, machine_busy_seconds() - busy - spent) / elapsed
        if foreign <= FOREIGN_LIMIT or time.monotonic() > deadline:
            return foreign


def summarize(records: list[dict[str, Any]], makespan: float, max_tokens: int) -> dict[str, Any]:
    """The metrics of one phase, computed the same way for every system from its request records.

    `makespan_s` is kept to the microsecond and the aggregate rate is computed from that same figure,
    so `aggregate_tokens_per_s` is `tokens.total / makespan_s` to its own rounding (0.005): a quick
    phase lasts a few tens of milliseconds, where rounding the makespan to the millisecond alone
    moved the quotient by over 1%."""
    ok = [r for r in records if not r["error"]]
    tokens = [r["tokens"] for r in ok]
    total = sum(tokens)
    ttft = [(r["t_first"] - r["t_start"]) * 1000 for r in ok if r["t_first"] is not None]
    rates = [
        (r["tokens"] - 1) / (r["t_last"] - r["t_first"])
        for r in ok
        if r["tokens"] > 1 and r["t_first"] is not None and r["t_last"] > r["t_first"]
    ]
    prompt = [r["prompt_tokens"] for r in ok if r["prompt_tokens"] is not None]
    cached = [r["cached_tokens"] for r in ok if r["cached_tokens"] is not None]
    makespan = round(makespan, 6)
    return {
        "requests": len(records),
        "completed": len(ok),
        "failed": len(records) - len(ok),
        "errors": [r["error"] for r in records if r["error"]][:5],
        "tokens": {
            "total": total,
            "per_request_min": min(tokens, default=0),
            "per_request_max": max(tokens, default=0),
            "expected_per_request": max_tokens,
            "all_ran_to_max_tokens": bool(ok) and all(t == max_tokens for t in tokens),
            "finish_reasons": dict(Counter(str(r["finish_reason"]) for r in ok)),
        },
        "chunks_per_request": {
            "min": min((r["chunks"] for r in ok), default=0),
            "max": max((r["chunks"] for r in ok), default=0),
        },
        "prompt_tokens": {"min": min(prompt, default=0), "max": max(prompt, default=0), "total": sum(prompt)},
        "cached_prompt_tokens_max": max(cached) if cached else None,
        "makespan_s": makespan,
        "aggregate_tokens_per_s": round(total / makespan, 2) if makespan > 0 else 0.0,
        "ttft_ms": percentiles(ttft),
        "per_stream_tokens_per_s": {
            "p50": percentiles(rates)["p50"],
            "min": round(min(rates), 3) if rates else 0.0,
            "mean": round(sum(rates) / len(rates), 3) if rates else 0.0,
        },
    }


@dataclass
class StreamBench:
    """Runs streaming phases against a system: through the streaming client (`client`), or inside the
    bare loop's own worker; each measured phase after a warm-up at its concurrency, run again (up to
    `retries` times) when other processes used more than `FOREIGN_LIMIT` cores meanwhile."""

    client: JsonWorker | None
    workdir: Path
    max_tokens: int
    rounds: int
    warmup_tokens: int
    retries: int
    quiet_wait: float
    progress: Progress | None = field(default=None)

    def phase(
        self, system: System, streams: int, label: str, max_tokens: int, rounds: int, body: str = PARAGRAPH
    ) -> dict[str, Any]:
        spec: dict[str, Any] = {"prompts": prompts(label, streams, rounds, body), "max_tokens": max_tokens}
        if system.bare is not None:
            return system.bare.run(spec | {"ignore_eos": True})
        assert self.client is not None and system.url is not None and system.body is not None
        return self.client.run(spec | {"url": system.url, "body": {**system.body, "max_tokens": max_tokens}})

    def measure(self, system: System, streams: int, label: str | None = None) -> dict[str, Any]:
        """Warm up at this concurrency, then the measured phase (run again if the machine was busy)."""
        label = f"{label or system.name}, {streams} streams"
        with self.progress.step(label) if self.progress else contextlib.nullcontext():
            return self._measure(system, streams)

    def _measure(self, system: System, streams: int) -> dict[str, Any]:
        # Warm-up at the batch shapes the phase will run (one request when the system batches nothing).
        warm_streams = streams if system.batches else 1
        warm = self.phase(system, warm_streams, f"warm-up {streams}", self.warmup_tokens, 1, WARMUP_TEXT)
        warm_failed = [r["error"] for r in warm["records"] if r["error"]]
        ours = [system.pid] + ([self.client.pid] if self.client and system.bare is None else [])
        attempts = []
        for attempt in range(1 + self.retries):
            if self.quiet_wait:
                _wait_quiet(ours, self.quiet_wait)
            before = cpu_seconds(system.pid)
            threads_before = thread_cpu_seconds(system.pid)
            ours_before = sum(map(cpu_seconds, ours)) + own_cpu_seconds()
            machine_before = machine_busy_seconds()
            started = time.perf_counter()
            result = self.phase(
                system, streams, f"streams {streams} try {attempt}", self.max_tokens, self.rounds
            )
            elapsed = time.perf_counter() - started
            spent = cpu_seconds(system.pid) - before
            threads = thread_cpu_seconds(system.pid)
            busy_threads = sorted(
                (
                    (
                        "main" if tid == system.pid else "thread",
                        (cpu - threads_before.get(tid, 0.0)) / elapsed,
                    )
                    for tid, cpu in threads.items()
                ),
                key=lambda item: -item[1],
            )
            ours_spent = sum(map(cpu_seconds, ours)) + own_cpu_seconds() - ours_before
            foreign = max(0.0, machine_busy_seconds() - machine_before - ours_spent) / elapsed
            phase = {
                "system": system.name,
                "streams": streams,
                "rounds": self.rounds,
                **summarize(result["records"], result["makespan_s"], self.max_tokens),
                "system_cpu_cores": round(spent / elapsed, 3),
                # Its busiest threads (cores each); "main" is the process's first thread.
                "system_threads": [
                    {"thread": name, "cores": round(cores, 3)}
                    for name, cores in busy_threads[:6]
                    if cores >= 0.01
                ],
                "loadgen_cpu_share": None if system.bare is not None else round(result["cpu_share"], 3),
                "foreign_cpu_cores": round(foreign, 3),
                "warmup_failed": len(warm_failed),
                # Every request, times in seconds from the phase's start (for a closer look).
                "request_log": [
                    [r["stream"], r["round"], r["tokens"], *(_round(r[k]) for k in _TIMES)]
                    for r in result["records"]
                ],
            }
            if warm_failed:
                phase["errors"] = (phase["errors"] + warm_failed)[:5]
            attempts.append(phase)
            _say(phase)
            if foreign <= FOREIGN_LIMIT:
                break
            say(f"    (other processes used {foreign:.2f} cores during that phase)")
        phase = min(attempts, key=lambda p: p["foreign_cpu_cores"])
        phase["runs"] = len(attempts)
        return phase


_TIMES = ("t_start", "t_first", "t_last", "t_done")
REQUEST_LOG_FIELDS = ("stream", "round", "tokens", *_TIMES)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _say(phase: dict[str, Any]) -> None:
    tokens = phase["tokens"]
    say(
        f"  {phase['system']:<20} {phase['streams']:>3} streams:"
        f" {phase['aggregate_tokens_per_s']:>9.1f} tok/s"
        f"  TTFT p50 {phase['ttft_ms']['p50']:.0f} ms p99 {phase['ttft_ms']['p99']:.0f} ms"
        f"  per stream {phase['per_stream_tokens_per_s']['p50']:.1f} tok/s"
        f"  tokens {tokens['per_request_min']}-{tokens['per_request_max']}/{tokens['expected_per_request']}"
        + (f"  FAILED {phase['failed']}" if phase["failed"] else "")
    )


if __name__ == "__main__":
    sys.exit(client_worker())
