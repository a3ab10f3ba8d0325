"""`gateway serve` itself: refusing unsafe binds, warning when open on purpose, clean shutdown."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from gateway.testing.process import free_port, start_gateway

#: Every config needs a model; these tests are about the server around it.
ONE_MODEL = """\
backends:
  up: {type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
models:
  m: {chain: [{backend: up}]}
"""


def serve(config: Path, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def test_non_loopback_bind_without_keys_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(ONE_MODEL + "server: {port: 1}\n")
    result = serve(config, "--host", "0.0.0.0", "--port", str(free_port()))
    assert result.returncode == 1
    assert "no client keys are configured" in result.stderr
    assert "allow_unauthenticated" in result.stderr


def test_invalid_config_is_refused_at_start_with_every_error(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("server:\n  port: x\nmodels:\n  m: {chain: [{backend: nope}]}\n")
    result = serve(config)
    assert result.returncode == 1
    assert "gateway.yaml:2:9: server.port" in result.stderr
    assert "models.m.chain[0].backend: no backend named 'nope'" in result.stderr


def test_open_access_on_purpose_logs_a_warning(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(ONE_MODEL + "auth: {allow_unauthenticated: true}\n")
    gateway = start_gateway(config)
    try:
        assert requests.get(gateway.url("/v1/models"), timeout=5).status_code == 200
    finally:
        assert gateway.stop(signal.SIGTERM) == 0
    assert "serving clients without API keys" in gateway.log()


def test_unknown_route_is_a_problem_not_html(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(ONE_MODEL)
    gateway = start_gateway(config)
    try:
        response = requests.get(gateway.url("/v2/whatever"), timeout=5)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["request_id"] == response.headers["x-request-id"]
    finally:
        gateway.stop()


def test_workers_run_on_the_configured_event_loop(tmp_path: Path) -> None:
    """`server.event_loop`: auto takes uvloop (a dependency here), asyncio takes asyncio's own loop;
    the answer is the same either way and the startup line says which loop serves."""
    for choice, expected in (("auto", "uvloop event loop"), ("asyncio", "asyncio event loop")):
        config = tmp_path / choice / "gateway.yaml"
        config.parent.mkdir()
        config.write_text(ONE_MODEL + f"server: {{event_loop: {choice}}}\n")
        gateway = start_gateway(config)
        try:
            assert [m["id"] for m in requests.get(gateway.url("/v1/models"), timeout=5).json()["data"]] == [
                "m"
            ]
        finally:
            assert gateway.stop(signal.SIGTERM) == 0
        assert expected in gateway.log()


def test_event_loop_choices() -> None:
    import uvloop

    from gateway.server import event_loop_factory

    assert event_loop_factory("auto") is uvloop.new_event_loop
    assert event_loop_factory("uvloop") is uvloop.new_event_loop
    assert event_loop_factory("asyncio") is None


def test_sigterm_while_workers_are_still_starting_is_a_clean_stop(tmp_path: Path) -> None:
    """A SIGTERM that reaches workers before they could serve (a deploy rolled back at once) stops
    them cleanly: exit 0, not a worker killed by the signal reported as a failure."""
    config = tmp_path / "gateway.yaml"
    config.write_text(ONE_MODEL)
    command = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config)]
    for delay in (0.0, 0.3, 0.8):
        process = subprocess.Popen(
            [*command, "--port", str(free_port()), "--workers", "2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        started = 0
        for line in process.stdout:  # the supervisor has spawned both workers: they are importing
            started += "worker_started" in line or ("worker" in line and "started" in line)
            if started == 2:
                break
        time.sleep(delay)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
        assert process.returncode == 0, output
