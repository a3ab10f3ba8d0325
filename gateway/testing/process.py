"""Run the real gateway (`gateway serve`) as a subprocess on a free loopback port (tests, benchmarks)."""

from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from gateway.admin.secret import TOKEN_ENV_VAR, TOKEN_FILE
from gateway.testing.forkserver import ForkedProcess, fork_server, forkable

__all__ = ["GatewayProcess", "free_port", "start_gateway", "use_fork_server"]

_use_fork_server = False


def use_fork_server(on: bool = True) -> None:
    """Start gateways by forking a process that has imported the gateway already (the test suite's
    choice: `gateway.testing.forkserver`), not with a fresh interpreter each (the default)."""
    global _use_fork_server
    _use_fork_server = on


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class GatewayProcess:
    process: subprocess.Popen[bytes] | ForkedProcess
    config_path: Path
    port: int
    log_path: Path
    #: What the process got on top of this one's environment.
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    @property
    def admin_token(self) -> str:
        """The local admin token (the admin credential while no admin keys are configured): the
        `GATEWAY_ADMIN_TOKEN` it was started with, else the file it created next to its config."""
        given = self.env.get(TOKEN_ENV_VAR) or os.environ.get(TOKEN_ENV_VAR)
        if given:
            return given
        return (self.config_path.parent / TOKEN_FILE).read_text().strip()

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.admin_token}"}

    def admin(self, method: str, path: str, **kwargs: object) -> requests.Response:
        """An admin API request (`path` under the base URL) with the local admin token."""
        headers = {**self.admin_headers, **kwargs.pop("headers", {})}  # type: ignore[dict-item]
        kwargs.setdefault("timeout", 10)
        return requests.request(method, self.url(path), headers=headers, **kwargs)  # type: ignore[arg-type]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Signal the process (SIGTERM: graceful) and wait for it; kill it if it does not exit.

        First free what the caller dropped: a response left in a reference cycle still holds its
        keep-alive connection, and a draining gateway gives an idle connection `drain_idle_seconds`
        (2 s by default) before it closes it, so the stop would wait that long for nothing."""
        if self.process.poll() is None:
            gc.collect()
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
    arguments = ["serve", "--config", str(config_path), "--port", str(port), "--workers", str(workers)]
    environment = {**os.environ, **(env or {})}
    server = fork_server() if _use_fork_server and cpu is None and forkable(environment) else None
    process: subprocess.Popen[bytes] | ForkedProcess
    if server is not None:
        log_path.write_bytes(b"")
        process = server.spawn(arguments, env=environment, cwd=str(config_path.parent), log=str(log_path))
    else:
        command = [sys.executable, "-m", "gateway.cli", *arguments]
        if cpu is not None:
            command = ["taskset", "-c", str(cpu), *command]
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                command, stdout=log_file, stderr=subprocess.STDOUT, env=environment, cwd=config_path.parent
            )
    gateway = GatewayProcess(process, config_path, port, log_path, dict(env or {}))
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
