"""Shared fixtures: config files in a temp dir and the real server in a subprocess."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.testing.process import GatewayProcess, start_gateway

__all__ = ["start_gateway", "wait_until"]


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
