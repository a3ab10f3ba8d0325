"""Local inference: the gateway's `mlx` backend against `mlx_lm.server` and a bare `BatchGenerator`
loop, on the same generated model and machine, at several numbers of concurrent streaming clients.

    gateway bench local [--quick] [--parts servers,two_models,tiers] [--json FILE]
                        [--preset tiny|3b] [--streams 1,4,16] [--tokens N] [--rounds R] [--repeat K]
                        [--systems LIST] [--batch-size 16] [--blas-threads N] [--profile DIR]
                        [--server-args "MORE mlx_lm.server OPTIONS"]
                        [--two-model-streams 4] [--tiers tiny,3b,7b,14b] [--tier-streams 1,4]

Three parts: `servers` (below: batching on and off, mlx_lm.server, the bare loop), `two_models`
(`bench/multimodel.py`: one model against two served at once) and `tiers` (`bench/tiers.py`: the
gateway on 4-bit models of each size tier, as far as the machine's memory allows).

The model is generated once into `$GATEWAY_CACHE_DIR/bench-models/<preset>` (default
`~/.cache/gateway/bench-models/<preset>`) with `create_model`. The systems, started one at a time
(the previous one stopped and its memory returned first):

- `gateway`: `gateway serve --workers 1` with one `mlx` backend, `batching: true`,
  `max_batch_size` = `--batch-size` (16).
- `gateway_no_batching`: the same with `batching: false` (one request at a time).
- `mlx_lm_server`: `python -m mlx_lm.server --model PATH --host 127.0.0.1 --port N
  --decode-concurrency 16 --prompt-concurrency 8 --temp 0`, its batching flags set to the gateway's
  batch sizes (decode 16 = `max_batch_size`, prefill 8 = what the engine uses). It is started with
  `LD_PRELOAD` = the OpenBLAS the gateway loads (`ensure_fast_blas`); without it, it would run on the
  reference BLAS bundled with `mlx[cpu]`. Its default prompt cache stays on; every request's prompt
  is distinct (below), so it can reuse only the chat template's first tokens (`cached_tokens` is
  reported).
- `bare`: mlx-lm's `BatchGenerator` driven by a plain loop in a subprocess (`ensure_fast_blas()`
  first, as the engine does), with the same batch sizes, prompts and max tokens: the ceiling, with no
  HTTP, no detokenizing and no threads around it.

The workload, identical for every system: `streams` clients each send `rounds` chat requests one
after another (a closed loop), streaming, greedy (`temperature: 0`), `max_tokens` = `--tokens`.
Every request has its own prompt (a hash of the phase and request number, then a fixed sentence), put
through the model's chat template by each system (the gateway and the bare loop with the
tokenizer's `apply_chat_template`, mlx_lm.server likewise; prompt token counts are compared). Before
each measured phase, a warm-up round at the same concurrency with a few tokens and other prompts.
`--repeat K` cycles K times through all the systems (so a drift of the machine is spread over all
of them) and reports each phase's median run, with the range of the K runs.

The sentence matters with random weights: greedy decoding soon repeats one token, and when that
token is a lone space, mlx-lm's streaming detokenizer (used by the gateway and mlx_lm.server alike)
holds every one of them back until a non-space token comes, so a stream can show no text until its
end. "Write a poem about the moon." was checked on the tiny and 3b models not to do that to any first
token; `chunks_per_request` in the result shows it if it happens (chunks well under tokens).

Equal work: the gateway gets `"ignore_eos": true` (vLLM's extension) and the bare loop stops on no
token, so both generate exactly `max_tokens`. mlx_lm.server has no equivalent (its request fields
have no `ignore_eos`; `logit_bias` against the end-of-sequence ids would do it, but any logits
processor switches its batch to a per-sequence Python loop, which would slow it down for our
convenience), so it runs greedy and the benchmark checks, from the usage it reports, that every
stream ran to `max_tokens`. Tokens are always counted from each response's usage
(`stream_options.include_usage`), never assumed, and throughput is divided by the tokens actually
generated, so an early end-of-sequence could not flatter anyone; the tables say if one happened.

Metrics per phase: aggregate generated tokens/s (every completion token of the phase over the time
from the first request sent to the last stream done), time to first token p50/p99 (request sent to
the first chunk with text), per-stream tokens/s (each request's `(tokens - 1) / (last chunk - first
chunk)`: the decode speed one client sees; p50 over the requests), the CPU the system used (cores),
the load generator's own CPU share, and CPU used by processes not ours ("foreign", a busy machine;
a phase disturbed past `FOREIGN_LIMIT` cores is run again, up to `--retries` times).

Placement (the machine this was written for has 2 cores): nothing is pinned. A system under test
gets both cores (mlx's CPU stream and Python threads, and OpenBLAS's threads: `--blas-threads`, the
same count for every system, the gateway through `local_models.blas_threads` and the others through
`OPENBLAS_NUM_THREADS`; 1 for the tiny model, which decodes faster on one thread even in the bare
loop, one per core for 3b); the load generator (`--client`: one process on uvloop where installed,
aiohttp, bytes matched with regexes, JSON parsed only for the usage chunk) shares them and reports
its CPU share, so its cost is visible. The bare loop runs with no load generator at all: that
difference is part of what it measures.

`--profile DIR` samples the gateway with py-spy (all threads, idle included) during one more
max-streams phase and splits the engine thread's time into `BatchGenerator.next_generated` and the
rest (detokenizing, stop checks, posting events), and the event loop's into encoding, HTTP, asyncio.
The exit status is 1 if any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.bench.loadgen import percentiles
from gateway.bench.proc import cpu_seconds, machine_busy_seconds, own_cpu_seconds, thread_cpu_seconds
from gateway.bench.progress import Progress, say
from gateway.bench.report import machine

from gateway.testing.process import free_port

_ROOT = Path(__file__).resolve().parent.parent

SYSTEMS = ("bare", "gateway", "gateway_no_batching", "mlx_lm_server")
LABELS = {
    "bare": "bare BatchGenerator loop",
    "gateway": "gateway, batching on",
    "gateway_no_batching": "gateway, batching off",
    "mlx_lm_server": "mlx_lm.server",
}
#: Per preset: max tokens, requests per stream, warm-up tokens (a 3b step takes about a second here).
PRESET_DEFAULTS = {"tiny": (256, 3, 16), "3b": (16, 1, 2)}
#: OpenBLAS threads per preset, the same for every system (0: one per core). Measured on the 2-core
#: machine, bare loop at 16 streams: the tiny model decodes faster on 1 thread than on 2 (the idle
#: worker spins in sched_yield, and its steps are mostly dispatch), the 3b one about 30% faster on 2.
BLAS_THREADS = {"tiny": 1, "3b": 0}
QUICK = {"preset": "tiny", "streams": [1, 4], "tokens": 16, "rounds": 2, "warmup_tokens": 4}
PARAGRAPH = "Write a poem about the moon."
WARMUP_TEXT = "Say hi."
MODEL_NAME = "local"
#: Cores' worth of CPU that other processes may use during a phase before it is run again.
FOREIGN_LIMIT = 0.15
GOAL_VS_BARE = 0.9


# ---------------------------------------------------------------- the workload


def prompts(label: str, streams: int, rounds: int, body: str = PARAGRAPH) -> list[list[str]]:
    """The user message of every request: `[stream][round]`, each one distinct from its first word
    (a hash of the phase and the request), so a prompt cache can reuse no more than the chat
    template's opening tokens."""

    def text(s: int, r: int) -> str:
        tag = hashlib.sha256(f"{label}/{s}/{r}".encode()).hexdigest()[:8]
        return f"{tag}: {body}"

    return [[text(s, r) for r in range(rounds)] for s in range(streams)]


def model_dir(preset: str) -> Path:
    base = Path(os.environ.get("GATEWAY_CACHE_DIR") or Path.home() / ".cache" / "gateway")
    return base / "bench-models" / preset


def ensure_bench_model(preset: str) -> Path:
    """The generated model for `preset`, created (with `create_model`) when missing."""
    from gateway.modelgen.create import ensure_model

    path = model_dir(preset)
    if not (path / "config.json").exists():
        say(f"creating the {preset} model in {path} ...")
        # Creating takes a few hundred MB whatever the size; serving memory is checked per system.
        ensure_model(path, preset, force=True, progress=lambda m: say("  " + m))
    return path


def weight_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


# ---------------------------------------------------------------- the load generator (a subprocess)

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


async def _client_phase(phase: dict[str, Any]) -> dict[str, Any]:
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


def _fastest_event_loop() -> Any:
    """uvloop's `run` where it is installed (it halves the load generator's CPU per token: 7% of a
    core at 16 streams of the tiny model -> 4%, CPU the systems under test would otherwise lose),
    else `asyncio.run`."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def _client_worker() -> int:
    """`--client`: read phases from stdin (one JSON object a line), write results to stdout."""
    run = _fastest_event_loop()
    for line in sys.stdin:
        if line.strip():
            result = run(_client_phase(json.loads(line)))
            sys.stdout.write(json.dumps(result) + "\n")
            sys.stdout.flush()
    return 0


# ---------------------------------------------------------------- the bare loop (a subprocess)


def _bare_worker(path: str, batch_size: int) -> int:
    """`--bare PATH`: load the model as the engine does, then run phases from stdin with a plain loop."""
    from gateway.blas import ensure_fast_blas, mapped_blas_libraries

    blas = ensure_fast_blas()  # before mlx.core is imported, as the engine does
    from mlx_lm import load
    from mlx_lm.generate import BatchGenerator, StopSequences
    from mlx_lm.sample_utils import make_sampler

    model, tokenizer = load(path)
    generator = BatchGenerator(
        model,
        stop_tokens=[[t] for t in tokenizer.eos_token_ids],
        completion_batch_size=batch_size,
        prefill_batch_size=min(8, batch_size),
    )
    greedy = make_sampler(temp=0.0, top_p=1.0)
    no_stops = StopSequences(None)
    eos_stops = StopSequences([[t] for t in tokenizer.eos_token_ids])
    ready = {"blas": blas.description, "mapped": mapped_blas_libraries()}
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        if line.strip():
            phase = json.loads(line)
            stops = no_stops if phase.get("ignore_eos", True) else eos_stops
            result = _bare_phase(generator, tokenizer, phase, greedy, stops)
            sys.stdout.write(json.dumps(result) + "\n")
            sys.stdout.flush()
    generator.close()
    return 0


def _bare_phase(
    generator: Any, tokenizer: Any, phase: dict[str, Any], sampler: Any, stops: Any
) -> dict[str, Any]:
    """One phase of the bare loop: the same closed loop as the clients', with no server around it."""
    rows = [
        [
            list(tokenizer.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True))
            for t in row
        ]
        for row in phase["prompts"]
    ]
    max_tokens = int(phase["max_tokens"])
    records: list[dict[str, Any]] = []
    by_uid: dict[int, dict[str, Any]] = {}
    clock = time.perf_counter
    cpu_before = time.process_time()
    t0 = clock()

    def insert(items: list[tuple[int, int]]) -> None:
        now = clock() - t0
        uids = generator.insert(
            [rows[s][r] for s, r in items],
            max_tokens=[max_tokens] * len(items),
            samplers=[sampler] * len(items),
            stop_sequences=[stops] * len(items),
        )
        for uid, (s, r) in zip(uids, items, strict=True):
            record = new_record(s, r)
            record["t_start"] = now
            record["prompt_tokens"] = len(rows[s][r])
            records.append(record)
            by_uid[uid] = record

    insert([(s, 0) for s in range(len(rows))])
    while by_uid:
        responses = generator.next_generated()
        now = clock() - t0
        follow: list[tuple[int, int]] = []
        for response in responses:
            record = by_uid.get(response.uid)
            if record is None:
                continue
            if response.finish_reason != "stop":  # an end-of-sequence token is not counted
                record["tokens"] += 1
                record["chunks"] += 1
                if record["t_first"] is None:
                    record["t_first"] = now
                record["t_last"] = now
            if response.finish_reason is not None:
                record["finish_reason"] = response.finish_reason
                record["t_done"] = now
                del by_uid[response.uid]
                if record["round"] + 1 < len(rows[record["stream"]]):
                    follow.append((record["stream"], record["round"] + 1))
        if follow:
            insert(follow)
    makespan = clock() - t0
    cpu = time.process_time() - cpu_before
    return {"makespan_s": makespan, "cpu_s": cpu, "cpu_share": cpu / makespan, "records": records}


# ---------------------------------------------------------------- processes and CPU accounting


def available_memory() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _mapped_blas(pid: int) -> list[str]:
    try:
        text = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return []
    found: list[str] = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and re.search(r"(blas|lapack)[^/]*\.so", parts[5]) and parts[5] not in found:
            found.append(parts[5])
    return found


class JsonWorker:
    """A child process that answers one JSON line on stdout for each JSON line on stdin."""

    def __init__(self, command: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._log_file = open(log, "wb")  # noqa: SIM115 (closed in close())
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            text=True,
            cwd=_ROOT,
            env=dict(os.environ) | env if env else None,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            raise RuntimeError(f"{self.log.stem} exited with {code}:\n{self.log.read_text(errors='replace')}")
        return json.loads(line)

    def send(self, phase: dict[str, Any]) -> None:
        """Start a phase; `read()` its result (two workers' phases can run at once this way)."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(phase) + "\n")
        self.process.stdin.flush()

    def run(self, phase: dict[str, Any]) -> dict[str, Any]:
        self.send(phase)
        return self.read()

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log_file.close()


@dataclass
class System:
    """A system under test, running: where to send requests (or the bare worker), and its pid."""

    name: str
    pid: int
    stop: Any
    url: str | None = None
    body: dict[str, Any] | None = None
    bare: JsonWorker | None = None
    blas: list[str] | None = None
    #: What the system says it computes on (BLAS library and thread count), where it says.
    blas_described: str | None = None


def _gateway_config(path: Path, batching: bool, batch_size: int, blas_threads: int = 0) -> str:
    return f"""server: {{host: 127.0.0.1}}
local_models: {{blas_threads: {blas_threads}}}
backends:
  local:
    type: mlx
    path: "{path}"
    load: startup
    batching: {str(batching).lower()}
    max_batch_size: {batch_size}
    max_queue: 4096
models:
  {MODEL_NAME}: {{chain: [{{backend: local}}]}}
timeouts:
  chat: {{total: 86400, first_byte: 86400}}
reload: {{watch: false}}
"""


def wait_http(url: str, process: subprocess.Popen[Any], log: Path, timeout: float) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            if requests.get(url, timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s:\n{log.read_text(errors='replace')}")


def _gateway_blas(port: int) -> str | None:
    """What the gateway's engine says it computes on (`/admin/api/backends`), thread count included."""
    import requests

    try:
        backends = requests.get(f"http://127.0.0.1:{port}/admin/api/backends", timeout=10).json()["backends"]
    except (requests.RequestException, ValueError, KeyError):
        return None
    return next((b["local"]["blas"] for b in backends if b.get("local")), None)


def stop_process(process: subprocess.Popen[Any], timeout: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@contextlib.contextmanager
def start_system(
    name: str,
    model: Path,
    batch_size: int,
    workdir: Path,
    max_tokens: int,
    openblas: str | None,
    server_args: tuple[str, ...] = (),
    blas_threads: int = 0,
) -> Iterator[System]:
    """Start one system and yield it; stop it (and so free its memory) afterwards. `blas_threads`
    (0: OpenBLAS's default) goes to the gateway as `local_models.blas_threads` and to the others as
    `OPENBLAS_NUM_THREADS`."""
    threads_env = {"OPENBLAS_NUM_THREADS": str(blas_threads)} if blas_threads else {}
    log = workdir / f"{name}.log"
    load_timeout = 60 + weight_bytes(model) / 50e6  # generous: 3b fp32 loads in a minute or two here
    if name == "bare":
        worker = JsonWorker(
            [
                sys.executable,
                "-m",
                "gateway.bench.local",
                "--bare",
                str(model),
                "--batch-size",
                str(batch_size),
            ],
            log,
            env=threads_env,
        )
        try:
            ready = worker.read()
            yield System(
                name,
                worker.pid,
                worker.close,
                bare=worker,
                blas=ready["mapped"],
                blas_described=ready["blas"],
            )
        finally:
            worker.close()
        return
    if name.startswith("gateway"):
        config = workdir / f"{name}.yaml"
        config.write_text(_gateway_config(model, name == "gateway", batch_size, blas_threads))
        port = free_port()
        command = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port", str(port)]
        command += ["--workers", "1"]
        body = {"model": MODEL_NAME, "ignore_eos": True}
        ready_path = "/v1/models"
        env = dict(os.environ)
    else:
        port = free_port()
        command = [sys.executable, "-m", "mlx_lm.server", "--model", str(model), "--host", "127.0.0.1"]
        command += ["--port", str(port), "--decode-concurrency", str(batch_size)]
        command += ["--prompt-concurrency", str(min(8, batch_size)), "--temp", "0"]
        command += ["--max-tokens", str(max_tokens), *server_args]
        body = {"model": "default_model"}
        ready_path = "/health"
        env = dict(os.environ) | threads_env
        if openblas:
            env["LD_PRELOAD"] = openblas
    body |= {
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with open(log, "wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    try:
        wait_http(f"http://127.0.0.1:{port}{ready_path}", process, log, load_timeout)
        described = _gateway_blas(port) if name.startswith("gateway") else None
        yield System(
            name,
            process.pid,
            lambda: stop_process(process),
            blas_described=described,
            url=f"http://127.0.0.1:{port}/v1/chat/completions",
            body=body,
        )
    finally:
        stop_process(process)


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
    """The metrics of one phase, computed the same way for every system from its request records."""
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
        "makespan_s": round(makespan, 3),
        "aggregate_tokens_per_s": round(total / makespan, 2) if makespan > 0 else 0.0,
        "ttft_ms": percentiles(ttft),
        "per_stream_tokens_per_s": {
            "p50": percentiles(rates)["p50"],
            "min": round(min(rates), 3) if rates else 0.0,
            "mean": round(sum(rates) / len(rates), 3) if rates else 0.0,
        },
    }


@dataclass
class Bench:
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
        label = f"{label or LABELS.get(system.name, system.name)}, {streams} streams"
        with self.progress.step(label) if self.progress else contextlib.nullcontext():
            return self._measure(system, streams)

    def _measure(self, system: System, streams: int) -> dict[str, Any]:
        # Warm-up at the batch shapes the phase will run (one request when the system batches nothing).
        warm_streams = 1 if system.name == "gateway_no_batching" else streams
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


def wait_for_memory(needed: int, timeout: float = 180) -> int:
    """Wait until `needed` bytes are available (the previous system's memory returned); raise if not."""
    deadline = time.monotonic() + timeout
    while True:
        available = available_memory()
        if available >= needed or time.monotonic() > deadline:
            break
        time.sleep(1)
    if available < needed:
        raise RuntimeError(
            f"not enough memory to load the model: {available / 2**30:.1f} GiB available, "
            f"{needed / 2**30:.1f} GiB needed (stop other processes that hold large models)"
        )
    return available


# ---------------------------------------------------------------- the table


def _rate(value: float) -> str:
    return f"{value:,.2f}" if value < 10 else f"{value:,.1f}"


def servers_table(result: dict[str, Any]) -> str:
    """The `servers` part as a Markdown table (pasted as is into PERFORMANCE.md)."""
    phases = result["phases"]
    bare = {p["streams"]: p["aggregate_tokens_per_s"] for p in phases if p["system"] == "bare"}
    lines = [
        "| system | streams | tokens / stream | aggregate tok/s | runs | vs bare loop | TTFT p50 (ms) "
        "| TTFT p99 (ms) | per-stream tok/s p50 | system CPU (cores) | load generator CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for streams in result["streams"]:
        for name in SYSTEMS:
            phase = next((p for p in phases if p["system"] == name and p["streams"] == streams), None)
            if phase is None:
                continue
            tokens = phase["tokens"]
            count = (
                str(tokens["per_request_min"])
                if tokens["per_request_min"] == tokens["per_request_max"]
                else f"{tokens['per_request_min']}–{tokens['per_request_max']}"
            )
            if not tokens["all_ran_to_max_tokens"]:
                count += " (!)"
            ratio = (
                f"{phase['aggregate_tokens_per_s'] / bare[streams] * 100:.0f}%" if bare.get(streams) else "–"
            )
            loadgen = (
                "–" if phase["loadgen_cpu_share"] is None else f"{phase['loadgen_cpu_share'] * 100:.0f}%"
            )
            repeats = phase.get("repeats") or [phase["aggregate_tokens_per_s"]]
            spread = f"{min(repeats):,.0f}–{max(repeats):,.0f}" if len(repeats) > 1 else "1 run"
            lines.append(
                f"| {LABELS[name]} | {streams} | {count} | {_rate(phase['aggregate_tokens_per_s'])} "
                f"| {spread} | {ratio} "
                f"| {phase['ttft_ms']['p50']:,.0f} | {phase['ttft_ms']['p99']:,.0f} "
                f"| {_rate(phase['per_stream_tokens_per_s']['p50'])} | {phase['system_cpu_cores']:.2f} "
                f"| {loadgen} |"
            )
    lines.append("")
    for phase in phases:
        if phase["failed"]:
            lines.append(f"- FAILED: {phase['system']} at {phase['streams']} streams: {phase['errors']}")
        if phase["foreign_cpu_cores"] > FOREIGN_LIMIT:
            lines.append(
                f"- disturbed: {phase['system']} at {phase['streams']} streams ran while other processes "
                f"used {phase['foreign_cpu_cores']:.2f} cores (after {phase['runs']} runs)"
            )
        if phase["completed"] and not phase["tokens"]["all_ran_to_max_tokens"]:
            lines.append(
                f"- (!) {phase['system']} at {phase['streams']} streams: some streams ended before "
                f"max_tokens ({phase['tokens']['finish_reasons']}); its tok/s counts the tokens generated"
            )
    for name, goal in result["goals"].items():
        state = "met" if goal["met"] else ("NOT met" if goal["met"] is False else "not measured")
        lines.append(f"- goal {name}: {goal['target']}: {goal['value']} ({state})")
    return "\n".join(lines)


def _goals(phases: list[dict[str, Any]], streams: int) -> dict[str, Any]:
    def agg(name: str) -> float | None:
        phase = next((p for p in phases if p["system"] == name and p["streams"] == streams), None)
        return None if phase is None else phase["aggregate_tokens_per_s"]

    ours, server, bare = agg("gateway"), agg("mlx_lm_server"), agg("bare")
    return {
        f"gateway_vs_mlx_lm_server_at_{streams}": {
            "target": f"gateway (batching) aggregate tok/s >= mlx_lm.server's at {streams} streams",
            "value": None if ours is None or server is None else round(ours / server, 3),
            "met": None if ours is None or server is None else ours >= server,
        },
        f"gateway_vs_bare_at_{streams}": {
            "target": (
                f"gateway (batching) aggregate tok/s >= {GOAL_VS_BARE:.0%} of the bare loop's "
                f"at {streams} streams"
            ),
            "value": None if ours is None or bare is None else round(ours / bare, 3),
            "met": None if ours is None or bare is None else ours >= GOAL_VS_BARE * bare,
        },
    }


# ---------------------------------------------------------------- main


def run(
    *,
    preset: str,
    streams: list[int],
    max_tokens: int,
    rounds: int,
    warmup_tokens: int,
    systems: list[str],
    batch_size: int,
    retries: int,
    quiet_wait: float,
    repeat: int = 1,
    profile: Path | None = None,
    server_args: tuple[str, ...] = (),
    progress: Progress | None = None,
    blas_threads: int = 0,
) -> dict[str, Any]:
    """The `servers` part: every system at every stream count, `repeat` cycles."""
    from gateway.blas import ensure_fast_blas

    if progress:
        progress.add(repeat * len(systems) * len(streams) + (1 if profile else 0) - 1)

    model = ensure_bench_model(preset)
    blas = ensure_fast_blas()  # here only to find the library for mlx_lm.server's LD_PRELOAD
    weights = weight_bytes(model)
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    system_info: dict[str, Any] = {}
    profiles: list[dict[str, Any]] = []
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-local-") as directory:
        workdir = Path(directory)
        client = JsonWorker([sys.executable, "-m", "gateway.bench.local", "--client"], workdir / "client.log")
        try:
            bench = Bench(client, workdir, max_tokens, rounds, warmup_tokens, retries, quiet_wait, progress)
            # Cycles through every system, so a slow drift of the machine spreads over all of them.
            for cycle in range(repeat):
                for name in systems:
                    available = wait_for_memory(int(weights * 1.1) + (1 << 30))
                    say(
                        f"{name}: starting ({available / 2**30:.1f} GiB available, "
                        f"cycle {cycle + 1} of {repeat})"
                    )
                    t = time.perf_counter()
                    with start_system(
                        name, model, batch_size, workdir, max_tokens, blas.library, server_args, blas_threads
                    ) as system:
                        load_s = time.perf_counter() - t
                        for n in streams:
                            runs.setdefault((name, n), []).append(bench.measure(system, n))
                        system_info.setdefault(
                            name,
                            {
                                "start_s": round(load_s, 1),
                                "blas_mapped": system.blas or _mapped_blas(system.pid),
                                "blas": system.blas_described
                                or (f"OPENBLAS_NUM_THREADS={blas_threads}" if blas_threads else None),
                                "rss_gib": round(rss_bytes(system.pid) / 2**30, 2),
                            },
                        )
                        if profile is not None and name == "gateway" and not profiles:
                            from gateway.bench.profiling import print_local_profile, profile_local

                            profiles.append(profile_local(bench, system, max(streams), profile))
                            print_local_profile(profiles[-1])
        finally:
            client.close()
    phases = [_median_run(found) for found in runs.values()]
    result = {
        "preset": preset,
        "model": {"path": str(model), "weight_bytes": weights},
        "streams": streams,
        "max_tokens": max_tokens,
        "rounds": rounds,
        "warmup_tokens": warmup_tokens,
        "batch_size": batch_size,
        "mlx_lm_server_extra_args": list(server_args),
        "sampling": (
            "greedy (temperature 0); the gateway and the bare loop ignore EOS, "
            "mlx_lm.server is checked by its usage"
        ),
        "blas": blas.with_threads(blas_threads),
        "blas_threads": blas_threads,
        "systems": system_info,
        "machine": machine(),
        "placement": "nothing pinned: each system alone on both cores; the load generator shares them",
        "load_generator_loop": "uvloop" if _fastest_event_loop() is not asyncio.run else "asyncio",
        "request_log_fields": REQUEST_LOG_FIELDS,
        "phases": phases,
        "repeat": repeat,
        "failed_requests": sum(p["failed"] + p["warmup_failed"] for found in runs.values() for p in found),
        "goals": _goals(phases, max(streams)),
        "duration_s": round(time.time() - started, 1),
    }
    if profiles:
        result["profiles"] = profiles
    return result


def _median_run(found: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median aggregate tok/s (the lower middle one of an even count), with the
    spread of all runs beside it."""
    ordered = sorted(found, key=lambda p: p["aggregate_tokens_per_s"])
    phase = dict(ordered[(len(ordered) - 1) // 2])
    phase["repeats"] = [p["aggregate_tokens_per_s"] for p in found]
    phase["failed_in_repeats"] = sum(p["failed"] + p["warmup_failed"] for p in found)
    return phase


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected positive numbers")
    return values


def _system_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = sorted(set(names) - set(SYSTEMS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown systems {unknown} (choose from {', '.join(SYSTEMS)})")
    return names


PARTS = ("servers", "two_models", "tiers")


def _part_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = sorted(set(names) - set(PARTS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown parts {unknown} (choose from {', '.join(PARTS)})")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gateway.bench import multimodel, tiers

    parser.add_argument(
        "--parts", type=_part_list, default=list(PARTS), help="what to run: " + ", ".join(PARTS)
    )
    servers = parser.add_argument_group("servers: batching on and off, mlx_lm.server, the bare loop")
    servers.add_argument("--preset", choices=sorted(PRESET_DEFAULTS), default="tiny")
    servers.add_argument("--streams", type=_int_list, help="concurrent streaming clients (default 1,4,16)")
    servers.add_argument("--tokens", type=int, help="max_tokens of every request (default: 256 tiny, 16 3b)")
    servers.add_argument(
        "--rounds", type=int, help="requests per stream, one after another (default: 3 tiny, 1 3b)"
    )
    servers.add_argument("--warmup-tokens", type=int, help="max_tokens of the warm-up requests")
    servers.add_argument("--systems", type=_system_list, default=list(SYSTEMS), help=", ".join(SYSTEMS))
    servers.add_argument("--batch-size", type=int, default=16, help="max_batch_size / --decode-concurrency")
    servers.add_argument(
        "--repeat", type=int, help="cycles through all systems; the median run is reported (3 tiny, 1 3b)"
    )
    servers.add_argument("--retries", type=int, help="re-runs of a phase disturbed by other processes")
    servers.add_argument(
        "--quiet-wait", type=float, help="seconds to wait for a quiet machine before a phase"
    )
    servers.add_argument(
        "--server-args", default="", help="more mlx_lm.server options, e.g. '--prompt-cache-size 0'"
    )
    servers.add_argument("--profile", type=Path, help="py-spy the gateway at the most streams; files go here")
    servers.add_argument(
        "--blas-threads",
        type=int,
        help="OpenBLAS threads for every system, 0 = one per core (default: 1 tiny, 0 3b)",
    )
    multimodel.add_arguments(parser.add_argument_group("two_models: one model against two served at once"))
    tiers.add_arguments(parser.add_argument_group("tiers: 4-bit models of each size tier"))


def _servers_part(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    preset = QUICK["preset"] if args.quick else args.preset
    tokens, rounds, warmup = PRESET_DEFAULTS[preset]
    if args.quick:
        tokens, rounds, warmup = QUICK["tokens"], QUICK["rounds"], QUICK["warmup_tokens"]
    streams = args.streams or (QUICK["streams"] if args.quick else [1, 4, 16])
    return run(
        preset=preset,
        streams=streams,
        max_tokens=args.tokens or tokens,
        rounds=args.rounds or rounds,
        warmup_tokens=args.warmup_tokens or min(warmup, args.tokens or tokens),
        systems=args.systems,
        batch_size=args.batch_size,
        retries=args.retries if args.retries is not None else (0 if args.quick else 1),
        quiet_wait=args.quiet_wait if args.quiet_wait is not None else (0.0 if args.quick else 60.0),
        repeat=args.repeat or (1 if args.quick or preset != "tiny" else 3),
        profile=args.profile,
        server_args=tuple(shlex.split(args.server_args)),
        progress=progress,
        blas_threads=args.blas_threads if args.blas_threads is not None else BLAS_THREADS[preset],
    )


def run_scenario(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    from gateway.bench import multimodel, tiers

    result: dict[str, Any] = {"parts": args.parts}
    if "servers" in args.parts:
        result["servers"] = _servers_part(args, progress)
    if "two_models" in args.parts:
        result["two_models"] = multimodel.run_part(args, progress)
    if "tiers" in args.parts:
        result["tiers"] = tiers.run_part(args, progress)
    result["failed_requests"] = sum(result[part]["failed_requests"] for part in args.parts)
    return result


def table(result: dict[str, Any]) -> str:
    from gateway.bench import multimodel, tiers

    sections = []
    if "servers" in result:
        servers = result["servers"]
        sections.append(
            f"servers: {servers['preset']} model, {servers['max_tokens']} tokens per request, "
            f"{servers['rounds']} per stream; {servers['blas']}\n\n" + servers_table(servers)
        )
    if "two_models" in result:
        sections.append(multimodel.table(result["two_models"]))
    if "tiers" in result:
        sections.append(tiers.table(result["tiers"]))
    return "\n\n".join(sections)


def main(argv: list[str] | None = None) -> int:
    """`python -m gateway.bench.local ...` is `gateway bench local ...`; `--client` and `--bare` are
    its workers."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--client"]:
        return _client_worker()
    if argv[:1] == ["--bare"]:
        batch = int(argv[argv.index("--batch-size") + 1]) if "--batch-size" in argv else 16
        return _bare_worker(argv[1], batch)
    from gateway.bench.cli import main as bench_main

    return bench_main(["local", *argv])


if __name__ == "__main__":
    sys.exit(main())
