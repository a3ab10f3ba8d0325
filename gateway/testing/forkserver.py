"""Start `gateway …` commands by forking a process that has already imported the gateway.

A `gateway serve` started with `subprocess.Popen` spends about 1.5 s of CPU importing Quart,
Hypercorn, aiohttp, asyncpg, numpy and the gateway before it reads its config; the test suite starts
a few hundred of them. The fork server imports all that once, single-threaded, and then forks a child
per command: the child sets the command's working directory, environment and log file, and runs
`gateway.cli.main` exactly as `python -m gateway.cli` would. It is a real, separate process with its
own PID, signals and exit status; only the interpreter's start-up is shared.

Used by `gateway.testing.process.start_gateway` when the test suite asks for it (tests/conftest.py);
`GATEWAY_TEST_FORK_SERVER=0` turns it off. Commands whose environment changes what a module reads
when it is imported (`PROMETHEUS_MULTIPROC_DIR`, Python's own start-up variables) are not forked:
they start with `Popen` as before.

Protocol: JSON lines over the server's stdin and stdout. `{"op": "spawn", "argv", "env", "cwd",
"log"}` answers `{"pid"}`; `{"op": "poll", "pid"}` answers `{"returncode"}` (null while it runs).
When its stdin closes (the test process ended), the server kills the children still running and
exits.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import runpy
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["ForkServer", "ForkedProcess", "fork_server", "forkable"]

#: Read when a module is imported (by prometheus_client, by the interpreter at start-up): a command
#: that sets one of these differently from the fork server's own environment is started with Popen.
_IMPORT_TIME_ENV = ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")
_INTERPRETER_ENV_PREFIX = "PYTHON"

#: What `gateway serve` imports before it reads its config; numpy's BLAS is kept to one thread so that
#: the server has no thread but its own when it forks.
_CLI = "gateway.cli"
_PRELOAD = (_CLI, "gateway.server", "gateway.app")


def forkable(env: Mapping[str, str]) -> bool:
    """Whether a command with this environment may be forked (its import-time settings match)."""
    for name in _IMPORT_TIME_ENV:
        if env.get(name) != os.environ.get(name):
            return False
    return all(
        env.get(name) == os.environ.get(name)
        for name in {*env, *os.environ}
        if name.startswith(_INTERPRETER_ENV_PREFIX)  # PYTHONPATH too: it decides what is imported
    )


class ForkedProcess:
    """The part of `subprocess.Popen` the tests and benchmarks use, for a child of the fork server."""

    def __init__(self, server: ForkServer, pid: int, args: Sequence[str]) -> None:
        self._server = server
        self.pid = pid
        self.args = list(args)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._server.returncode(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._exit_fd() as exit_fd:
            while self.poll() is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise subprocess.TimeoutExpired(self.args, timeout or 0)
                # Woken when the child exits (a pidfd), else checked every 20 ms.
                wait_s = 0.02 if exit_fd is None else (0.5 if left is None else min(left, 0.5))
                if exit_fd is None:
                    time.sleep(wait_s if left is None else min(wait_s, left))
                else:
                    select.select([exit_fd], [], [], wait_s)
        assert self.returncode is not None
        return self.returncode

    @contextlib.contextmanager
    def _exit_fd(self) -> Any:
        try:
            fd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            yield None
            return
        try:
            yield fd
        finally:
            os.close(fd)

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """A fork server of this process's own (started on first use, stopped at exit)."""

    def __init__(self) -> None:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "gateway.testing.forkserver"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self._lock = threading.Lock()
        hello = self._read()
        if not hello.get("ready"):
            self.close()
            raise RuntimeError(f"the fork server cannot fork: {hello.get('error')}")
        atexit.register(self.close)

    def spawn(self, argv: Sequence[str], *, env: Mapping[str, str], cwd: str, log: str) -> ForkedProcess:
        """Run `gateway <argv>` in a forked child, its output appended to `log`."""
        answer = self._ask({"op": "spawn", "argv": list(argv), "env": dict(env), "cwd": cwd, "log": log})
        return ForkedProcess(self, answer["pid"], ["gateway", *argv])

    def returncode(self, pid: int) -> int | None:
        return self._ask({"op": "poll", "pid": pid})["returncode"]

    def close(self) -> None:
        if self._process.stdin is not None and not self._process.stdin.closed:
            with contextlib.suppress(OSError):
                self._process.stdin.close()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            assert self._process.stdin is not None
            self._process.stdin.write(json.dumps(request).encode() + b"\n")
            self._process.stdin.flush()
            answer = self._read()
        if "error" in answer:
            raise RuntimeError(f"fork server: {answer['error']}")
        return answer

    def _read(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the fork server ended (exit status {self._process.poll()})")
        return json.loads(line)


_server: ForkServer | None = None
_server_lock = threading.Lock()


def fork_server() -> ForkServer | None:
    """This process's fork server, started on first use; None when it is switched off
    (`GATEWAY_TEST_FORK_SERVER=0`)."""
    global _server
    if os.environ.get("GATEWAY_TEST_FORK_SERVER", "1") == "0":
        return None
    with _server_lock:
        if _server is None:
            _server = ForkServer()
        return _server


# -- the server ------------------------------------------------------------------------------------


def _serve() -> int:
    requests = os.fdopen(os.dup(0), "rb", buffering=0)
    answers = os.fdopen(os.dup(1), "wb", buffering=0)
    with open(os.devnull, "rb") as devnull:
        os.dup2(devnull.fileno(), 0)
    os.dup2(2, 1)  # a stray print goes to stderr, not into the answers

    def answer(message: dict[str, Any]) -> None:
        answers.write(json.dumps(message).encode() + b"\n")

    try:
        for module in _PRELOAD:
            importlib.import_module(module)
    except Exception as error:  # reported to the client, which then stops using the server
        answer({"ready": False, "error": f"importing failed: {error!r}"})
        return 1
    threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1
    if threading.active_count() != 1 or threads != 1:
        answer({"ready": False, "error": f"{threads} threads after importing: forking is unsafe"})
        return 1
    answer({"ready": True})

    children: dict[int, int | None] = {}
    buffer = b""
    while True:
        _reap(children)
        readable, _, _ = select.select([requests], [], [], 0.05)
        if not readable:
            continue
        chunk = requests.read(65536)
        if not chunk:
            break
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            request = json.loads(line)
            try:
                if request["op"] == "spawn":
                    pid = _spawn(request, (requests, answers))
                    children[pid] = None
                    answer({"pid": pid})
                else:
                    _reap(children)
                    answer({"returncode": children.get(request["pid"])})
            except Exception as error:  # the client raises it
                answer({"error": repr(error)})
    for pid, code in children.items():
        if code is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for pid, code in children.items():
        if code is None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    return 0


def _reap(children: dict[int, int | None]) -> None:
    for pid, code in children.items():
        if code is None:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                children[pid] = -signal.SIGKILL
                continue
            if done:
                children[pid] = os.waitstatus_to_exitcode(status)


def _spawn(request: dict[str, Any], server_files: Sequence[Any]) -> int:
    """Fork a child for the request; in the child, run the command and exit as the interpreter
    would (SystemExit unwinds out of `_serve`: non-daemon threads are joined, atexit runs)."""
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        os.close(log)
        return pid
    try:
        for file in server_files:
            file.close()
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["gateway", *request["argv"]]
        # What `python -m gateway.cli` runs: the module as __main__ (it ends in sys.exit(main())),
        # and, as there, not also as `gateway.cli` (its imports stay loaded).
        sys.modules.pop(_CLI, None)
        runpy.run_module(_CLI, run_name="__main__", alter_sys=True)
    except SystemExit:
        raise
    except BaseException:  # as an uncaught exception ends `python -m gateway.cli`
        import traceback

        traceback.print_exc()
        raise SystemExit(1) from None
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(_serve())
