"""Processes the benchmarks start on loopback and stop afterwards: the fake providers
(`python -m gateway.testing`), the gateway, peers (LiteLLM's proxy, mlx_lm.server), each a process
of its own, optionally pinned to a core with taskset; and worker processes that answer JSON lines
(the load generators, the bare generation loop)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.bench.harness.progress import say

__all__ = [
    "JsonWorker",
    "Server",
    "closed_port",
    "pinned",
    "start_fake",
    "start_http",
    "start_listening",
    "stop_process",
    "usable_cpus",
    "wait_http",
]


def pinned(command: list[str], cpu: int | None) -> list[str]:
    return command if cpu is None else ["taskset", "-c", str(cpu), *command]


def usable_cpus(wanted: dict[str, int | None]) -> dict[str, int | None]:
    """The cores asked for, less those this machine (or taskset's absence) cannot give: those
    processes run unpinned, with a warning, and the result file says so."""
    if shutil.which("taskset") is None:
        say("warning: taskset (util-linux) not found; nothing is pinned")
        return dict.fromkeys(wanted)
    available = os.sched_getaffinity(0)
    usable: dict[str, int | None] = {}
    for role, cpu in wanted.items():
        if cpu is not None and cpu not in available:
            say(f"warning: no core {cpu} here; the {role} runs unpinned")
            cpu = None
        usable[role] = cpu
    return usable


@dataclass
class Server:
    """A server process under test: where it listens, its pid (for CPU accounting, with its worker
    processes), and whether it forwards to the fake upstream (whose CPU is then reported too)."""

    name: str
    port: int
    process: subprocess.Popen[bytes] | Any
    stop_process: Any = None
    proxies: bool = False

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


def closed_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_connectable(
    name: str, port: int, process: subprocess.Popen[Any], log: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(
                    f"{name} does not accept connections\n{log.read_text(errors='replace')}"
                ) from None
            time.sleep(0.02)


def start_listening(name: str, command: list[str], log: Path, *, proxies: bool = False) -> Server:
    """Start a process that prints `listening on http://HOST:PORT` once it accepts connections."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=open(log, "wb"))  # noqa: SIM115
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    match = re.search(r"listening on http://[^:]+:(\d+)", line)
    if not match:
        process.kill()
        raise RuntimeError(f"{name} did not start: {line!r}\n{log.read_text(errors='replace')}")
    port = int(match.group(1))
    # The line may come just before the server listens (the overhead baselines print it early).
    _wait_connectable(name, port, process, log, 15)
    return Server(name, port, process, proxies=proxies)


def start_fake(
    provider: str,
    log: Path,
    *,
    cpu: int | None = None,
    reply_tokens: int = 16,
    latency_ms: float = 0.0,
    token_delay_ms: float = 0.0,
    name: str = "fake",
    service_account: Path | None = None,
) -> Server:
    """The project's fake server for `provider` (openai, anthropic, gemini, ...) in its own process;
    `service_account`: where the fake Vertex AI writes the service-account file it accepts tokens of."""
    command = [sys.executable, "-m", "gateway.testing", provider, "--host", "127.0.0.1", "--port", "0"]
    command += ["--reply-tokens", str(reply_tokens)]
    if service_account is not None:
        command += ["--service-account", str(service_account)]
    if latency_ms:
        command += ["--latency-ms", str(latency_ms)]
    if token_delay_ms:
        command += ["--token-delay-ms", str(token_delay_ms)]
    return start_listening(name, pinned(command, cpu), log)


def start_http(
    name: str,
    command: list[str],
    port: int,
    ready_path: str,
    log: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
    proxies: bool = False,
) -> Server:
    """Start a server on a known port; return once `GET ready_path` answers 200."""
    import requests

    with open(log, "wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}{ready_path}"
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return Server(name, port, process, proxies=proxies)
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            server = Server(name, port, process)
            server.stop()
            raise RuntimeError(
                f"{name} did not answer {url} within {timeout:.0f} s\n{log.read_text(errors='replace')}"
            )
        time.sleep(0.2)


def wait_http(url: str, process: subprocess.Popen[Any], log: Path, timeout: float) -> None:
    """Return once `GET url` answers 200; raise (with the process's log) if it exits or times out."""
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


def stop_process(process: subprocess.Popen[Any], timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


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
