"""Shared fixtures: config files in a temp dir and the real server in a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.runtime.configlock import lock_file_candidates
from gateway.testing.process import GatewayProcess, start_gateway, use_fork_server
from gateway.testing.redis_server import RedisServer, redis_server_binary

__all__ = [
    "service_missing",
    "start_gateway",
    "wait_for",
    "wait_until",
    "wait_watching",
    "writers_lock_held",
]


# The test modules' compiled (assert-rewritten) code is cached in __pycache__ (git ignores it) even
# where PYTHONDONTWRITEBYTECODE is set, as it is on our CI machines: without the cache every worker
# of every run rewrites the asserts of all ~400 modules again (collection 14 s instead of 8 s).
sys.dont_write_bytecode = False

# Gateways start as forks of a process that has imported the gateway once (gateway.testing.forkserver):
# the same `gateway serve`, without 1.5 s of imports each. GATEWAY_TEST_FORK_SERVER=0 turns it off.
use_fork_server()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect `opt_in(env)` tests unless `env` is set: they are counted as deselected, not skipped,
    so a skip in a CI run always means something is missing."""
    kept, dropped = [], []
    for item in items:
        marker = item.get_closest_marker("opt_in")
        (dropped if marker is not None and not os.environ.get(marker.args[0]) else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _gateway_factory(directory: Path) -> tuple[Callable[..., GatewayProcess], list[GatewayProcess]]:
    """`start(config_text)` writes the config in `directory` and starts the server; also the started list."""
    started: list[GatewayProcess] = []

    def start(config_text: str, *, name: str = "gateway.yaml", **kwargs: object) -> GatewayProcess:
        path = directory / name
        path.write_text(config_text)
        gateway = start_gateway(path, **kwargs)  # type: ignore[arg-type]
        started.append(gateway)
        return gateway

    return start, started


@pytest.fixture
def gateway_server(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """Factory: `gateway_server(config_text)` writes the config and starts the server; stopped afterwards."""
    start, started = _gateway_factory(tmp_path)
    yield start
    for gateway in started:
        gateway.stop()


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.02) -> float:
    """Poll until `predicate()` is true; return the seconds it took. Fails the test on timeout."""
    started = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(interval)


async def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.01) -> None:
    """Await until `predicate()` (a bool, or an awaitable of one) is true; fail the test on timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


def wait_watching(
    gateway: GatewayProcess, timeout: float = 10.0, headers: dict[str, str] | None = None
) -> None:
    """Wait until the gateway's file watcher has its watch in place (`watching` in the admin API's
    config status): a save from then on is seen. Tests wait for this, never for a while. `headers`:
    the admin credential, when it is not the local admin token."""

    def watching() -> bool:
        response = gateway.admin("GET", "/admin/api/config", headers=headers or {})
        assert response.status_code == 200, response.text
        return response.json()["watching"] is True

    wait_until(watching, timeout=timeout)


def service_missing(reason: str) -> None:
    """A service a test needs (PostgreSQL, chromium...) is not there: skip the test on a developer's
    machine, but fail it under CI (`CI` set), where .ci/run promised the service; a broken service start
    must not turn into a green run of skips."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: .ci/run starts it, so its absence is a failure)", pytrace=False)
    pytest.skip(reason)


@contextlib.contextmanager
def writers_lock_held(config_path: Path) -> Iterator[Callable[[], None]]:
    """Another process holds the writers' lock of `config_path` (its flock) until `release()` is
    called or the block ends, as a worker in the middle of an edit would."""
    lock = lock_file_candidates(config_path)[0]
    script = (
        "import fcntl, os, sys\n"
        f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT, 0o600)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )

    def release() -> None:
        if process.stdin is not None and not process.stdin.closed:
            process.stdin.close()
        process.wait(10)

    try:
        assert process.stdout is not None and process.stdout.readline() == "locked\n"
        yield release
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


@pytest.fixture(scope="module")
def gateway_server_module(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., GatewayProcess]]:
    """Like `gateway_server`, shared by the tests of one module."""
    start, started = _gateway_factory(tmp_path_factory.mktemp("gateway"))
    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated tiny model directory (real tokenizer, random weights), made once per test session."""
    from gateway.modelgen.create import create_model

    path = tmp_path_factory.mktemp("models") / "tiny"
    create_model(path, preset="tiny", seed=0)
    return path


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server on a free loopback port (no persistence), stopped afterwards; tests may
    `stop()` and `start()` it again on the same port."""
    if redis_server_binary() is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server; .ci/run does)")
    with RedisServer() as server:
        yield server
