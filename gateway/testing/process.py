"""Run the real gateway (`gateway serve`) as a subprocess on a free loopback port (tests, benchmarks)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

__all__ = ["GatewayProcess", "free_port", "start_gateway"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class GatewayProcess:
    process: subprocess.Popen[bytes]
    config_path: Path
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Signal the process (SIGTERM: graceful) and wait for it; kill it if it does not exit."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


def start_gateway(
    config_path: Path,
    *,
    workers: int = 1,
    env: dict[str, str] | None = None,
    ready_path: str = "/v1/models",
    cpu: int | None = None,
    timeout: float = 30,
    port: int | None = None,
) -> GatewayProcess:
    """Start `gateway serve` for `config_path` on a free port; return once it answers HTTP.

    `cpu` pins the server to one core (taskset), for benchmarks of one worker on one core. `port`:
    this one instead of a free one (to restart a gateway where its clients expect it).
    """
    port = port or free_port()
    log_path = config_path.parent / f"gateway-{port}.log"
    command = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config_path)]
    command += ["--port", str(port), "--workers", str(workers)]
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=config_path.parent,
        )
    gateway = GatewayProcess(process, config_path, port, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited with {process.returncode}:\n{gateway.log()}")
        try:
            requests.get(gateway.url(ready_path), timeout=1)
            return gateway
        except requests.ConnectionError:
            time.sleep(0.05)
    gateway.stop()
    raise RuntimeError(f"gateway did not answer within {timeout} s:\n{gateway.log()}")
