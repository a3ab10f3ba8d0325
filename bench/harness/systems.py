"""The systems the local-inference scenarios measure, each started alone and stopped afterwards (its
memory returned): the gateway with one `mlx` backend (batching on or off), `mlx_lm.server`, and the
bare `BatchGenerator` loop; and the generated models they serve, made once in the cache directory.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.bench.harness import bare_loop
from gateway.bench.harness.paths import cache_dir
from gateway.bench.harness.progress import say
from gateway.bench.harness.servers import JsonWorker, stop_process, wait_http

from gateway.testing.process import free_port

__all__ = [
    "MODEL_NAME",
    "System",
    "ensure_bench_model",
    "gateway_blas",
    "model_dir",
    "start_system",
    "weight_bytes",
]

MODEL_NAME = "local"


def model_dir(preset: str) -> Path:
    """Where the benchmarks' generated model for `preset` lives: `<cache>/bench-models/<preset>`."""
    return cache_dir() / "bench-models" / preset


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
    #: Whether it batches concurrent requests (its warm-up then runs at the phase's concurrency).
    batches: bool = True


def gateway_mlx_config(path: Path, batching: bool, batch_size: int, blas_threads: int = 0) -> str:
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


def gateway_blas(port: int, config: Path) -> str | None:
    """What the gateway's engine says it computes on (`/admin/api/backends`, with the local admin token
    the gateway keeps next to `config`), thread count included."""
    import requests
    from gateway.admin.secret import TOKEN_FILE

    try:
        token = (config.parent / TOKEN_FILE).read_text().strip()
        backends = requests.get(
            f"http://127.0.0.1:{port}/admin/api/backends",
            headers={"authorization": f"Bearer {token}"},
            timeout=10,
        ).json()["backends"]
    except (OSError, requests.RequestException, ValueError, KeyError):
        return None
    return next((b["local"]["blas"] for b in backends if b.get("local")), None)


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
        worker = JsonWorker(bare_loop.command(str(model), batch_size), log, env=threads_env)
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
        config.write_text(gateway_mlx_config(model, name == "gateway", batch_size, blas_threads))
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
        described = gateway_blas(port, config) if name.startswith("gateway") else None
        yield System(
            name,
            process.pid,
            lambda: stop_process(process),
            blas_described=described,
            batches=name != "gateway_no_batching",
            url=f"http://127.0.0.1:{port}/v1/chat/completions",
            body=body,
        )
    finally:
        stop_process(process)
