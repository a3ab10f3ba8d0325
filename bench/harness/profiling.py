"""Where the gateway's time goes under load, from py-spy samples: for `gateway bench overhead
--profile DIR`, its event loop split by component (the HTTP server, our handler, parsing,
failover/backend, aiohttp, JSON, asyncio); for `gateway bench local --profile DIR`, the engine thread
and the event loop split by activity."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.bench.harness.streams import summarize

import gateway

if TYPE_CHECKING:
    from gateway.bench.harness.phases import LoadBench
    from gateway.bench.harness.streams import StreamBench
    from gateway.bench.harness.systems import System

#: The folder that holds the `gateway` package (a checkout's root, or site-packages): py-spy names
#: frames' files relative to it.
_SOURCES = Path(gateway.__file__).resolve().parent.parent

__all__ = [
    "CATEGORIES",
    "print_local_profile",
    "print_profile",
    "profile_gateway",
    "profile_local",
    "summarize_engine_profile",
    "summarize_profile",
]

#: Components, matched on a frame's file. A sample belongs to the innermost frame that matches.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    (
        "HTTP server (llhttp, Hypercorn, connections)",
        (
            "gateway/http1.py",
            "gateway/connections.py",
            "httptools/",
            "hypercorn/",
            "h11/",
            "wsproto/",
            "priority/",
        ),
    ),
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
#: The event loop's outermost frame: asyncio's own loop, or (uvloop, whose loop is C code) the
#: runner that started it. A sample without one is another thread's.
_ROOT_FRAMES = ("run_forever (asyncio/base_events.py", "Runner.run (asyncio/runners.py")


def _is_root(frame: str) -> bool:
    return any(root in frame for root in _ROOT_FRAMES)  # py-spy may prefix the class: BaseEventLoop.


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
            for base in [_SOURCES, *map(Path, sys.path)]:
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
        if _is_root(frame):
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
        if not any(_is_root(f) for f in frames):
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


def profile_gateway(bench: LoadBench, directory: Path, duration: float) -> dict[str, Any]:
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


def print_profile(profiles: dict[str, Any]) -> None:
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


# ---------------------------------------------------------------- local inference (bench/local/)

#: What the engine thread's samples are in, matched on frames (innermost first).
ENGINE_PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("detokenizing", ("add_token (mlx_lm/", "finalize (mlx_lm/", "last_segment (mlx_lm/")),
    ("posting events (call_soon_threadsafe)", ("post (gateway/backends/mlx/engine.py",)),
    ("stop-sequence checks", ("_partial_stop_suffix (",)),
    ("admitting and inserting jobs", ("_admit (gateway/", "_drain_inbox (gateway/")),
    ("BatchGenerator.next_generated (decode and prefill)", ("next_generated (mlx_lm/generate.py",)),
    ("idle: waiting for work", ("wait (threading.py",)),
    ("other engine code", ("(gateway/backends/mlx/engine.py",)),
]
#: The same for the event-loop thread.
LOOP_PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("idle: waiting in select()", ("select (selectors.py",)),
    ("SSE encoding (gateway/protocol)", ("(gateway/protocol/",)),
    (
        "HTTP server (llhttp, Hypercorn)",
        ("(gateway/http1.py", "(gateway/connections.py", "(hypercorn/", "(h11/"),
    ),
    ("our relay and handler (gateway/)", ("(gateway/",)),
    ("asyncio (callbacks, queues, sockets)", ("(asyncio/", "selectors.py", "socket.py")),
]


def _classify(frames: list[str], parts: list[tuple[str, tuple[str, ...]]]) -> str:
    """The part of the innermost frame that matches any part (parts are tried in order per frame)."""
    for frame in reversed(frames):
        for name, markers in parts:
            if any(marker in frame for marker in markers):
                return name
    return "other"


def summarize_engine_profile(raw: Path) -> dict[str, Any]:
    """Split py-spy `--threads --idle --format raw` samples of the gateway by thread and activity."""
    parts: dict[str, Counter[str]] = {"engine": Counter(), "event_loop": Counter()}
    self_time: dict[str, Counter[str]] = {"engine": Counter(), "event_loop": Counter()}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if any("_loop (gateway/backends/mlx/engine.py" in f for f in frames):
            thread, table = "engine", ENGINE_PARTS
        elif any("run_forever (asyncio/base_events.py" in f for f in frames):
            thread, table = "event_loop", LOOP_PARTS
        else:
            continue
        parts[thread][_classify(frames, table)] += int(count)
        self_time[thread][frames[-1]] += int(count)
    summary: dict[str, Any] = {}
    for thread, counter in parts.items():
        total = sum(counter.values())
        if total:
            summary[thread] = {
                "samples": total,
                "parts": [
                    {"name": name, "samples": n, "share": round(n / total, 4)}
                    for name, n in counter.most_common()
                ],
                "top_self": [
                    {"frame": frame, "share": round(n / total, 4)}
                    for frame, n in self_time[thread].most_common(12)
                ],
            }
    return summary


def profile_local(bench: StreamBench, system: System, streams: int, directory: Path) -> dict[str, Any]:
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    directory.mkdir(parents=True, exist_ok=True)
    raw = directory / f"{system.name}-{streams}-streams.raw.txt"
    command = [py_spy, "record", "--pid", str(system.pid), "--rate", "200", "--nonblocking"]
    command += ["--threads", "--idle", "--format", "raw", "-o", str(raw)]
    recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # py-spy attaches
    try:
        result = bench.phase(system, streams, "profile", bench.max_tokens, bench.rounds)
    finally:
        recorder.send_signal(signal.SIGINT)
        _, errors = recorder.communicate(timeout=60)
    if not raw.exists():
        raise RuntimeError(f"py-spy wrote nothing: {errors.decode(errors='replace')}")
    summary = summarize(result["records"], result["makespan_s"], bench.max_tokens)
    return {
        "system": system.name,
        "streams": streams,
        "file": str(raw),
        "aggregate_tokens_per_s_while_sampled": summary["aggregate_tokens_per_s"],
        "threads": summarize_engine_profile(raw),
    }


def print_local_profile(profile: dict[str, Any]) -> None:
    print(
        f"\nprofile of {profile['system']} at {profile['streams']} streams "
        f"({profile['aggregate_tokens_per_s_while_sampled']:.0f} tok/s while sampled; {profile['file']})"
    )
    for thread, data in profile["threads"].items():
        print(f"  {thread} thread, {data['samples']} samples:")
        for part in data["parts"]:
            print(f"    {part['share'] * 100:5.1f}%  {part['name']}")
