"""Gateway overhead: the same small chat completion sent to a fake OpenAI server directly and through
the gateway, so the difference is what the gateway adds.

    python -m bench.overhead [--quick] [--json FILE] [--duration S] [--warmup S] [--profile DIR]
                             [--retries N] [--wait-quiet S] [--no-baselines]

Layout (the machine this was written for has 2 cores):

    core 0: the gateway, one worker (`gateway serve --workers 1`, taskset)
            Hypercorn alone, a trivial ASGI app with a fixed JSON answer (baseline, idle otherwise)
            a minimal proxy: Hypercorn + one aiohttp session, no gateway logic (baseline, idle otherwise)
    core 1: the fake OpenAI server (`python -m gateway.testing openai`), and the load generator
            (`bench.loadgen`: a bare asyncio protocol, closed loop over keep-alive connections)

Scenarios, each measured directly against the fake and then through the gateway, after a warm-up:
non-streaming latency at 1 and 32 clients; streaming time to first token at 1 and 32 clients (16
tokens, no token delay); the most non-streaming requests/s (the best of a few client counts). The
same load against the fake directly is the load generator's ceiling (fake and load generator share
core 1), printed beside every result; the CPU each server spent per request is read from /proc.

The machine may be shared: each phase waits (up to `--wait-quiet` s) for other processes to leave
the cores, records the CPU they used meanwhile (`foreign_cpu_cores`), and runs again (`--retries`)
when that was more than a tenth of a core; the table lists the phases that stayed disturbed.

`--profile DIR` then runs py-spy against the gateway under the 32-client load and prints where its
samples fall (Hypercorn/h11, our handler, parsing, failover/backend, aiohttp, JSON, asyncio).
The exit status is 1 if any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.loadgen import LoadGenerator
from bench.proc import cpu_seconds, machine_busy_seconds, own_cpu_seconds
from gateway.testing.process import start_gateway

MODEL = "gpt-4o-mini"
REPLY_TOKENS = 16
PATH = "/v1/chat/completions"
BODY = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Say hello in a few words."}],
    "max_tokens": REPLY_TOKENS,
}
TARGETS = {
    "added_p50_ms_at_1_client": 1.0,  # at most
    "gateway_rps_one_worker": 1500.0,  # at least
}
_ROOT = Path(__file__).resolve().parent.parent
#: Responses a phase measures at least (its window is extended for them on a slow machine).
MIN_REQUESTS = 20
#: Cores' worth of CPU that other processes may use during a phase before it is run again.
FOREIGN_LIMIT = 0.1


# ---------------------------------------------------------------- processes


def _pinned(command: list[str], cpu: int | None) -> list[str]:
    return command if cpu is None else ["taskset", "-c", str(cpu), *command]


def usable_cpus(wanted: dict[str, int | None]) -> dict[str, int | None]:
    """The cores asked for, less those this machine (or taskset's absence) cannot give: those
    processes run unpinned, with a warning, and the result file says so."""
    if shutil.which("taskset") is None:
        print("warning: taskset (util-linux) not found; nothing is pinned", file=sys.stderr)
        return dict.fromkeys(wanted)
    available = os.sched_getaffinity(0)
    usable: dict[str, int | None] = {}
    for role, cpu in wanted.items():
        if cpu is not None and cpu not in available:
            print(f"warning: no core {cpu} here; the {role} runs unpinned", file=sys.stderr)
            cpu = None
        usable[role] = cpu
    return usable


@dataclass
class Server:
    """A server process under test: where it listens and its pid (for CPU accounting)."""

    name: str
    port: int
    process: subprocess.Popen[bytes] | Any
    stop_process: Any = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.stop_process is not None:
            self.stop_process()
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _start_listening(name: str, command: list[str], log: Path) -> Server:
    """Start a process that prints `listening on http://HOST:PORT` once it accepts connections."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=open(log, "wb"), cwd=_ROOT)  # noqa: SIM115
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    match = re.search(r"listening on http://[^:]+:(\d+)", line)
    if not match:
        process.kill()
        raise RuntimeError(f"{name} did not start: {line!r}\n{log.read_text(errors='replace')}")
    port = int(match.group(1))
    deadline = time.monotonic() + 15
    while True:  # the line may come just before the server listens (the baselines print it early)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(
                    f"{name} does not accept connections\n{log.read_text(errors='replace')}"
                ) from None
            time.sleep(0.02)
    return Server(name, port, process)


def _start_fake(cpu: int | None, log: Path) -> Server:
    command = [sys.executable, "-m", "gateway.testing", "openai", "--host", "127.0.0.1", "--port", "0"]
    command += ["--reply-tokens", str(REPLY_TOKENS)]
    return _start_listening("fake", _pinned(command, cpu), log)


def _start_baseline(kind: str, cpu: int | None, upstream: str, log: Path) -> Server:
    command = [sys.executable, "-m", "bench.overhead", "--serve-baseline", kind, "--upstream", upstream]
    return _start_listening(kind, _pinned(command, cpu), log)


def _gateway_config(upstream_port: int) -> str:
    return f"""backends:
  fake: {{type: openai_compatible, base_url: "http://127.0.0.1:{upstream_port}/v1"}}
models:
  {MODEL}: {{chain: [{{backend: fake, model: {MODEL}}}]}}
"""


# ---------------------------------------------------------------- the baselines (run in their own process)

_FIXED_REPLY = json.dumps(
    {
        "id": "chatcmpl-0123456789abcdef01234567",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "across ancient hills where old stories wait for curious travellers "
                    "to find hidden paths toward warm",
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 6, "completion_tokens": 16, "total_tokens": 22},
    },
    separators=(",", ":"),
).encode()


def _baseline_app(kind: str, upstream: str) -> Any:
    """`trivial`: read the body, answer a fixed chat completion. `proxy`: POST the body to `upstream`
    with one aiohttp session and relay the answer: the least a Hypercorn + aiohttp gateway must do."""
    import aiohttp

    state: dict[str, Any] = {}

    async def read_body(receive: Any) -> bytes:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    if kind == "proxy":
                        state["session"] = aiohttp.ClientSession(
                            connector=aiohttp.TCPConnector(limit=100),
                            timeout=aiohttp.ClientTimeout(total=None),
                        )
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if "session" in state:
                        await state["session"].close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = await read_body(receive)
        status, content_type, reply = 200, b"application/json", _FIXED_REPLY
        if kind == "proxy":
            async with state["session"].post(
                upstream + scope["path"], data=body, headers={"content-type": "application/json"}
            ) as response:
                reply = await response.read()
                status = response.status
                content_type = response.headers.get("content-type", "application/json").encode()
        headers = [(b"content-type", content_type), (b"content-length", str(len(reply)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": reply})

    return app


def _serve_baseline(kind: str, upstream: str) -> int:
    """Serve a baseline app with Hypercorn as `gateway serve` runs it (one worker, no access log)."""
    from hypercorn.asyncio.run import worker_serve
    from hypercorn.config import Config
    from hypercorn.utils import wrap_app

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    config.keep_alive_timeout = 75
    sockets = config.create_sockets()
    port = sockets.insecure_sockets[0].getsockname()[1]

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.call_soon(lambda: print(f"listening on http://127.0.0.1:{port}", flush=True))
        app = wrap_app(_baseline_app(kind, upstream), 0, "asgi")
        await worker_serve(app, config, sockets=sockets, shutdown_trigger=stop.wait)

    asyncio.run(main())
    return 0


# ---------------------------------------------------------------- measuring


@dataclass
class Bench:
    loadgen: LoadGenerator
    servers: dict[str, Server]
    warmup: float
    duration: float
    retries: int = 2
    wait_quiet: float = 0.0
    phases: list[dict[str, Any]] = field(default_factory=list)

    def measure(self, target: str, stream: bool, clients: int, *, record: bool = True) -> dict[str, Any]:
        """One phase against `target` (direct, gateway, hypercorn_trivial, minimal_proxy).

        A phase during which other processes on the machine used more than `FOREIGN_LIMIT` of a core
        (someone's test run, say) is run again, up to `retries` times; the least disturbed is kept."""
        attempts = []
        for _ in range(1 + self.retries):
            self._wait_for_quiet()
            phase = self._phase(target, stream, clients)
            attempts.append(phase)
            if phase["foreign_cpu_cores"] <= FOREIGN_LIMIT:
                break
            print(
                f"  (other processes used {phase['foreign_cpu_cores']:.2f} cores during that phase)",
                file=sys.stderr,
            )
        phase = min(attempts, key=lambda p: p["foreign_cpu_cores"])
        phase["runs"] = len(attempts)
        if record:
            self.phases.append(phase)
        return phase

    def _foreign_cores(self, seconds: float) -> float:
        """Cores' worth of CPU that processes other than ours used over the next `seconds`."""
        ours = [s.pid for s in self.servers.values()] + [self.loadgen.pid]
        ours_before, machine_before = sum(map(cpu_seconds, ours)), machine_busy_seconds()
        time.sleep(seconds)
        spent = machine_busy_seconds() - machine_before - (sum(map(cpu_seconds, ours)) - ours_before)
        return max(0.0, spent) / seconds

    def _wait_for_quiet(self) -> None:
        """Before a phase, wait (up to `wait_quiet` seconds) for other processes to leave the cores."""
        deadline = time.monotonic() + self.wait_quiet
        told = False
        while time.monotonic() < deadline:
            foreign = self._foreign_cores(1.0)
            if foreign <= FOREIGN_LIMIT:
                return
            if not told:
                print(f"  (waiting for other processes to go quiet: {foreign:.2f} cores)", file=sys.stderr)
                told = True

    def _phase(self, target: str, stream: bool, clients: int) -> dict[str, Any]:
        server = self.servers["fake" if target == "direct" else target]
        upstream = self.servers["fake"] if target in ("gateway", "minimal_proxy") else None
        body = dict(BODY, stream=True) if stream else BODY
        watched = {"server": server} | ({"upstream": upstream} if upstream else {})
        ours = [s.pid for s in self.servers.values()] + [self.loadgen.pid]
        before = {role: cpu_seconds(s.pid) for role, s in watched.items()}
        ours_before = sum(map(cpu_seconds, ours)) + own_cpu_seconds()
        machine_before = machine_busy_seconds()
        started = time.perf_counter()
        result = self.loadgen.run(
            {
                "host": "127.0.0.1",
                "port": server.port,
                "path": PATH,
                "body": json.dumps(body),
                "stream": stream,
                "concurrency": clients,
                "warmup": self.warmup,
                "duration": self.duration,
                "min_requests": MIN_REQUESTS,
            }
        )
        elapsed = time.perf_counter() - started
        ours_spent = sum(map(cpu_seconds, ours)) + own_cpu_seconds() - ours_before
        foreign = max(0.0, machine_busy_seconds() - machine_before - ours_spent) / elapsed
        answered = max(1, result.get("answered", result["requests"]))
        cpu = {}
        for role, watched_server in watched.items():
            spent = cpu_seconds(watched_server.pid) - before[role]
            cpu[role] = {
                "process": watched_server.name,
                "busy": round(spent / elapsed, 3),
                "us_per_request": round(spent / answered * 1e6, 1),
            }
        phase = {
            "target": target,
            "mode": "streaming" if stream else "non_streaming",
            "clients": clients,
            **result,
            "cpu": cpu,
            "foreign_cpu_cores": round(foreign, 3),
        }
        label = f"{target:<17} {phase['mode']:<13} {clients:>3} clients"
        metric = phase.get("ttft_ms", phase["latency_ms"])
        print(
            f"  {label}: {phase['rps']:>8.0f} req/s  p50 {metric['p50']:.3f} ms  p99 {metric['p99']:.3f} ms"
            + (f"  FAILED {phase['failed']}" if phase["failed"] else ""),
            file=sys.stderr,
            flush=True,
        )
        return phase


def _summary(phases: list[dict[str, Any]], clients: list[int], baselines: bool) -> dict[str, Any]:
    def find(target: str, mode: str, n: int) -> dict[str, Any]:
        return next(p for p in phases if (p["target"], p["mode"], p["clients"]) == (target, mode, n))

    def best(target: str, mode: str) -> dict[str, Any] | None:
        candidates = [p for p in phases if p["target"] == target and p["mode"] == mode]
        return max(candidates, key=lambda p: p["rps"]) if candidates else None

    ceiling = {mode: best("direct", mode)["rps"] for mode in ("non_streaming", "streaming")}  # type: ignore[index]
    rows = []
    for mode, metric in (("non_streaming", "latency_ms"), ("streaming", "ttft_ms")):
        for n in clients:
            direct, gateway = find("direct", mode, n), find("gateway", mode, n)
            rows.append(
                {
                    "scenario": "latency" if mode == "non_streaming" else "time_to_first_token",
                    "mode": mode,
                    "clients": n,
                    "metric": metric,
                    "direct": {k: direct[metric][k] for k in ("p50", "p99")} | {"rps": direct["rps"]},
                    "gateway": {k: gateway[metric][k] for k in ("p50", "p99")} | {"rps": gateway["rps"]},
                    "added_ms": {k: round(gateway[metric][k] - direct[metric][k], 3) for k in ("p50", "p99")},
                    "ceiling_rps": ceiling[mode],
                    "gateway_cpu_us_per_request": gateway["cpu"]["server"]["us_per_request"],
                }
            )
    top_gateway, top_direct = best("gateway", "non_streaming"), best("direct", "non_streaming")
    assert top_gateway is not None and top_direct is not None
    throughput: dict[str, Any] = {
        "gateway_rps": top_gateway["rps"],
        "gateway_clients": top_gateway["clients"],
        "gateway_core_busy": top_gateway["cpu"]["server"]["busy"],
        "gateway_cpu_us_per_request": top_gateway["cpu"]["server"]["us_per_request"],
        "upstream_core_busy": round(
            top_gateway["cpu"]["upstream"]["busy"] + top_gateway.get("loadgen_cpu_share", 0.0), 3
        ),
        "direct_rps": top_direct["rps"],
        "direct_clients": top_direct["clients"],
        "ceiling_rps": ceiling["non_streaming"],
    }
    if baselines:
        for target in ("hypercorn_trivial", "minimal_proxy"):
            top = best(target, "non_streaming")
            assert top is not None
            throughput[f"{target}_rps"] = top["rps"]
            throughput[f"{target}_cpu_us_per_request"] = top["cpu"]["server"]["us_per_request"]
    added_p50 = rows[0]["added_ms"]["p50"] if rows and rows[0]["clients"] == 1 else None
    targets = {
        "added_p50_ms_at_1_client": {
            "target": f"< {TARGETS['added_p50_ms_at_1_client']} ms",
            "value": added_p50,
            "met": added_p50 is not None and added_p50 < TARGETS["added_p50_ms_at_1_client"],
        },
        "gateway_rps_one_worker": {
            "target": f">= {TARGETS['gateway_rps_one_worker']:.0f} req/s",
            "value": top_gateway["rps"],
            "met": top_gateway["rps"] >= TARGETS["gateway_rps_one_worker"],
        },
    }
    return {"ceiling_rps": ceiling, "rows": rows, "throughput": throughput, "targets": targets}


def _machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = 0
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as meminfo:
        memory = int(meminfo.readline().split()[1]) // 1024 // 1024
    versions = {}
    for package in ("hypercorn", "h11", "quart", "aiohttp", "orjson"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
    }


# ---------------------------------------------------------------- profiling (py-spy)

#: Components, matched on a frame's file. A sample belongs to the innermost frame that matches.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("Hypercorn/h11", ("hypercorn/", "h11/", "wsproto/", "priority/")),
    ("aiohttp client", ("aiohttp/", "multidict/", "yarl/", "propcache/", "aiohappyeyeballs/", "frozenlist/")),
    (
        "our request parsing/validation",
        ("gateway/protocol/", "gateway/surfaces/access.py", "gateway/auth.py"),
    ),
    ("failover/backend code", ("gateway/routing/", "gateway/backends/")),
    ("our ASGI handler", ("gateway/surfaces/",)),
    ("other gateway code", ("gateway/", "admin/")),
    ("Quart/Werkzeug", ("quart/", "werkzeug/")),
    ("asyncio (event loop, tasks, socket I/O)", ("asyncio/", "selectors.py", "socket.py")),
]
JSON = "JSON encode/decode (orjson, json)"
LOOP = "asyncio event loop itself (polling, scheduling)"
_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_JSON_CALL = re.compile(r"\b(or)?json\.(loads|dumps)\(")
_ROOT_FRAME = "run_forever (asyncio/base_events.py"


def _frame(frame: str) -> tuple[str, str, int]:
    match = _FRAME.match(frame)
    if not match:
        return frame, "", 0
    return match["name"], match["file"], int(match["line"] or 0)


class _Sources:
    """Source lines of the frames, to see which calls are JSON (`orjson.loads(...)` is C code that
    py-spy charges to the Python line calling it)."""

    def __init__(self) -> None:
        self.files: dict[str, list[str]] = {}

    def line(self, file: str, number: int) -> str:
        if file not in self.files:
            lines: list[str] = []
            for base in [_ROOT, *map(Path, sys.path)]:
                path = base / file
                if file and path.is_file():
                    lines = path.read_text(errors="replace").splitlines()
                    break
            self.files[file] = lines
        lines = self.files[file]
        return lines[number - 1] if 0 < number <= len(lines) else ""


def _component(file: str) -> str | None:
    for name, markers in CATEGORIES:
        if any(marker in file for marker in markers):
            return name
    return None


def _categorize(frames: list[str], sources: _Sources) -> tuple[str, str]:
    """(where the time is: the innermost known component, on whose behalf: the innermost component
    that is not asyncio). Frames from the event loop's `run_forever` outwards are not looked at."""
    where = behalf = None
    leaf = True
    for frame in reversed(frames):
        if _ROOT_FRAME in frame:
            break
        _, file, number = _frame(frame)
        component = _component(file)
        if leaf and ".py" in file:
            leaf = False
            if _JSON_CALL.search(sources.line(file, number)):
                where = JSON
        if component is None:
            continue
        where = where or component
        if not component.startswith("asyncio"):
            behalf = component
            break
    return where or "other (stdlib, interpreter)", behalf or LOOP


def summarize_profile(raw: Path, top: int = 25) -> dict[str, Any]:
    """Shares of py-spy `--format raw` samples of the event-loop thread, by component and function.

    A function's self time includes the C code it calls (socket syscalls in the transport's `write`,
    orjson in the line calling it, which counts as JSON)."""
    where: Counter[str] = Counter()
    behalf: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    sources = _Sources()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if not any(_ROOT_FRAME in f for f in frames):
            continue  # idle helper threads (the default executor, the file watcher)
        n = int(count)
        total += n
        category, caller = _categorize(frames, sources)
        where[category] += n
        behalf[caller] += n
        name, file, _ = _frame(frames[-1])
        self_time[f"{name} ({file})"] += n
        for key in {f"{_frame(f)[0]} ({_frame(f)[1]})" for f in frames}:
            inclusive[key] += n

    def share(counter: Counter[str], limit: int | None = None) -> list[dict[str, Any]]:
        return [
            {"name": key, "samples": n, "share": round(n / total, 4) if total else 0.0}
            for key, n in counter.most_common(limit)
        ]

    ours = Counter({k: v for k, v in inclusive.items() if "(gateway/" in k and "gateway/cli.py" not in k})
    ours = Counter({k: v for k, v in ours.items() if "gateway/server.py" not in k})
    return {
        "samples": total,
        "categories": share(where),
        "categories_by_caller": share(behalf),
        "top_self": share(self_time, top),
        "top_inclusive_gateway": share(ours, top),
    }


def _profile(bench: Bench, directory: Path, duration: float) -> dict[str, Any]:
    """py-spy on the gateway under the 32-client load: non-blocking sampling (the process is not
    stopped, so it keeps its speed and syscalls are not over-sampled), Python frames only."""
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    directory.mkdir(parents=True, exist_ok=True)
    gateway = bench.servers["gateway"]
    profiles: dict[str, Any] = {}
    runs = [("non_streaming", "raw"), ("streaming", "raw"), ("non_streaming", "flamegraph")]
    for mode, fmt in runs:
        out = directory / f"gateway-{mode}.{'collapsed.txt' if fmt == 'raw' else 'svg'}"
        command = [py_spy, "record", "--pid", str(gateway.pid), "--rate", "250", "--nonblocking"]
        command += ["--duration", str(max(1, round(duration))), "--format", fmt, "-o", str(out)]
        recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        saved = bench.warmup, bench.duration
        bench.warmup, bench.duration = 0.5, duration + 1
        try:
            phase = bench.measure("gateway", mode == "streaming", 32, record=False)
        finally:
            bench.warmup, bench.duration = saved
        _, errors = recorder.communicate(timeout=60)
        if recorder.returncode != 0:
            raise RuntimeError(f"py-spy failed: {errors.decode(errors='replace')}")
        if fmt == "raw":
            profiles[mode] = {"file": str(out), "rps_while_sampled": phase["rps"], **summarize_profile(out)}
    return profiles


def _print_profile(profiles: dict[str, Any]) -> None:
    for mode, profile in profiles.items():
        print(
            f"\nprofile of the gateway, {mode}, 32 clients: {profile['samples']} samples at "
            f"{profile['rps_while_sampled']:,.0f} req/s ({profile['file']})"
        )
        print("  where the time is               | on whose behalf (asyncio charged to its caller)")
        left = [f"{r['share'] * 100:5.1f}%  {r['name']}" for r in profile["categories"]]
        right = [f"{r['share'] * 100:5.1f}%  {r['name']}" for r in profile["categories_by_caller"]]
        for i in range(max(len(left), len(right))):
            print(f"  {left[i] if i < len(left) else '':<46} {right[i] if i < len(right) else ''}")
        print("  hottest functions (self time):")
        for row in profile["top_self"][:15]:
            print(f"  {row['share'] * 100:5.1f}%  {row['name']}")


# ---------------------------------------------------------------- the table


def _ms(value: float) -> str:
    return f"{value:.2f}"


def table(result: dict[str, Any]) -> str:
    """The results as Markdown tables (pasted as is into PERFORMANCE.md)."""
    summary = result["summary"]
    lines = [
        "| scenario | clients | direct p50 | direct p99 | gateway p50 | gateway p99 | added p50 | added p99 "
        "| direct req/s | gateway req/s | ceiling req/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in summary["rows"]:
        name = "non-streaming latency (ms)" if row["mode"] == "non_streaming" else "streaming TTFT (ms)"
        direct, gateway, added = row["direct"], row["gateway"], row["added_ms"]
        lines.append(
            f"| {name} | {row['clients']} | {_ms(direct['p50'])} | {_ms(direct['p99'])} "
            f"| {_ms(gateway['p50'])} | {_ms(gateway['p99'])} | {added['p50']:+.2f} | {added['p99']:+.2f} "
            f"| {direct['rps']:,.0f} | {gateway['rps']:,.0f} | {row['ceiling_rps']:,.0f} |"
        )
    throughput = summary["throughput"]
    lines.append(
        f"| max non-streaming req/s | {throughput['direct_clients']} / {throughput['gateway_clients']} "
        f"| | | | | | | {throughput['direct_rps']:,.0f} | **{throughput['gateway_rps']:,.0f}** "
        f"| {throughput['ceiling_rps']:,.0f} |"
    )
    lines += [
        "",
        "| server (one process, one core) | best req/s | clients | p50 at 1 client (ms) "
        "| server CPU per request (µs) | its core busy | load generator CPU per request (µs) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    names = {
        "direct": "fake OpenAI server (aiohttp), direct",
        "hypercorn_trivial": "Hypercorn alone, fixed JSON answer",
        "minimal_proxy": "minimal proxy: Hypercorn + aiohttp",
        "gateway": "the gateway",
    }
    for target, label in names.items():
        phases = [p for p in result["phases"] if p["target"] == target and p["mode"] == "non_streaming"]
        if not phases:
            continue
        top = max(phases, key=lambda p: p["rps"])
        single = next((p for p in phases if p["clients"] == 1), None)
        p50 = _ms(single["latency_ms"]["p50"]) if single else "–"
        cpu = top["cpu"]["server"]
        lines.append(
            f"| {label} | {top['rps']:,.0f} | {top['clients']} | {p50} | {cpu['us_per_request']:.0f} "
            f"| {cpu['busy'] * 100:.0f}% | {top['loadgen_us_per_request']:.0f} |"
        )
    lines.append("")
    disturbed = [p for p in result["phases"] if p["foreign_cpu_cores"] > FOREIGN_LIMIT]
    for p in disturbed:
        lines.append(
            f"- disturbed: {p['target']} {p['mode']} {p['clients']} clients ran while other processes "
            f"used {p['foreign_cpu_cores']:.2f} cores (after {p['runs']} runs)"
        )
    for name, target in summary["targets"].items():
        state = "met" if target["met"] else "NOT met"
        lines.append(f"- target {name} {target['target']}: {target['value']} ({state})")
    return "\n".join(lines)


# ---------------------------------------------------------------- main


@contextlib.contextmanager
def _servers(workdir: Path, cpus: dict[str, int | None], baselines: bool) -> Iterator[dict[str, Server]]:
    servers: dict[str, Server] = {}
    try:
        fake = servers["fake"] = _start_fake(cpus["upstream"], workdir / "fake.log")
        upstream = f"http://127.0.0.1:{fake.port}"
        config = workdir / "gateway.yaml"
        config.write_text(_gateway_config(fake.port))
        gateway = start_gateway(config, cpu=cpus["gateway"])
        servers["gateway"] = Server("gateway", gateway.port, gateway.process, gateway.stop)
        if baselines:
            for kind, name in (("trivial", "hypercorn_trivial"), ("proxy", "minimal_proxy")):
                servers[name] = _start_baseline(kind, cpus["gateway"], upstream, workdir / f"{name}.log")
                servers[name].name = name
        yield servers
    finally:
        for server in reversed(servers.values()):
            server.stop()


def _check_answers(servers: dict[str, Server]) -> None:
    """One request each way: the gateway must answer what the fake answers, from the fake."""
    import requests

    for name in ("fake", "gateway"):
        url = f"http://127.0.0.1:{servers[name].port}{PATH}"
        response = requests.post(url, json=BODY, timeout=10)
        if response.status_code != 200 or response.json().get("object") != "chat.completion":
            raise RuntimeError(f"{name} did not answer the request: {response.status_code} {response.text}")
        if name == "gateway" and response.headers.get("x-gateway-backend") != "fake":
            raise RuntimeError("the gateway did not answer from the fake backend")


def run(
    *,
    duration: float,
    warmup: float,
    clients: list[int],
    rps_clients: list[int],
    baselines: bool,
    cpus: dict[str, int | None],
    profile: Path | None = None,
    retries: int = 2,
    wait_quiet: float = 0.0,
    quick: bool = False,
    command: str = "python -m bench.overhead",
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as directory:
        workdir = Path(directory)
        with _servers(workdir, cpus, baselines) as servers, LoadGenerator(cpus["loadgen"]) as loadgen:
            _check_answers(servers)
            bench = Bench(loadgen, servers, warmup, duration, retries, wait_quiet)
            for stream in (False, True):
                for n in clients:
                    for target in ("direct", "gateway"):
                        bench.measure(target, stream, n)
            for n in rps_clients:
                if n not in clients:
                    for target in ("direct", "gateway"):
                        bench.measure(target, False, n)
            if baselines:
                for target in ("hypercorn_trivial", "minimal_proxy"):
                    for n in sorted({1, *rps_clients, max(clients)}):
                        bench.measure(target, False, n)
            profiles = _profile(bench, profile, max(2 * duration, 5)) if profile else None
    result: dict[str, Any] = {
        "scenario": "overhead",
        "quick": quick,
        "command": command,
        "machine": _machine(),
        "settings": {
            "duration_s": duration,
            "warmup_s": warmup,
            "clients": clients,
            "rps_clients": rps_clients,
            "reply_tokens": REPLY_TOKENS,
            "request": BODY,
            "cpus": cpus,
            "retries": retries,
            "wait_quiet_s": wait_quiet,
            "foreign_cpu_limit_cores": FOREIGN_LIMIT,
        },
        "phases": bench.phases,
        "summary": _summary(bench.phases, clients, baselines),
        "requests": sum(p["requests"] for p in bench.phases),
        "failed_requests": sum(p["failed"] for p in bench.phases),
    }
    if profiles:
        result["profile"] = profiles
    return result


def _int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="0.4 s phases, fewer of them (smoke run)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per phase (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per phase (2)")
    parser.add_argument("--clients", type=_int_list, default=[1, 32], help="latency client counts (1,32)")
    parser.add_argument(
        "--rps-clients", type=_int_list, default=[8, 32, 64], help="client counts tried for max req/s"
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help=f"run a phase again when other processes used > {FOREIGN_LIMIT} core meanwhile (2)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=60.0,
        help="before each phase, wait up to this many seconds for other processes to go quiet (60)",
    )
    parser.add_argument("--no-baselines", action="store_true", help="skip Hypercorn-alone and minimal proxy")
    parser.add_argument("--gateway-cpu", type=int, default=0, help="core for the gateway and baselines (0)")
    parser.add_argument("--upstream-cpu", type=int, default=1, help="core for the fake server (1)")
    parser.add_argument("--loadgen-cpu", type=int, default=1, help="core for the load generator (1)")
    parser.add_argument("--profile", type=Path, help="also profile the gateway with py-spy; files go here")
    parser.add_argument("--json", type=Path, default=Path("bench/results/overhead.json"), help="result file")
    parser.add_argument("--serve-baseline", choices=["trivial", "proxy"], help=argparse.SUPPRESS)
    parser.add_argument("--upstream", default="", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.serve_baseline:
        return _serve_baseline(args.serve_baseline, args.upstream)
    duration, warmup, rps_clients = args.duration, args.warmup, args.rps_clients
    if args.quick:
        duration, warmup, rps_clients = 0.4, 0.2, []
    cpus = usable_cpus(
        {"gateway": args.gateway_cpu, "upstream": args.upstream_cpu, "loadgen": args.loadgen_cpu}
    )
    result = run(
        duration=duration,
        warmup=warmup,
        clients=args.clients,
        rps_clients=rps_clients,
        baselines=not args.no_baselines,
        cpus=cpus,
        profile=args.profile,
        retries=0 if args.quick else args.retries,
        wait_quiet=0.0 if args.quick else args.wait_quiet,
        quick=args.quick,
        command=" ".join(["python -m bench.overhead", *argv]),
    )
    print(table(result))
    if "profile" in result:
        _print_profile(result["profile"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nresult: {args.json}", file=sys.stderr)
    return 1 if result["failed_requests"] else 0


if __name__ == "__main__":
    sys.exit(main())
