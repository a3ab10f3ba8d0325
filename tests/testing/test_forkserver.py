"""The fork server the suite starts its gateways with: a forked child runs the command as
`python -m gateway.cli` would (working directory, environment, log, exit status, signals)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.testing.forkserver import ForkServer, forkable

VALID = """\
backends:
  up:
    type: openai_compatible
    base_url: ${UPSTREAM_URL}
models:
  m:
    chain: [{backend: up}]
"""


@pytest.fixture
def server() -> Iterator[ForkServer]:
    server = ForkServer()
    yield server
    server.close()


def test_a_command_runs_in_its_directory_with_its_environment_and_exit_status(
    server: ForkServer, tmp_path: Path
) -> None:
    (tmp_path / "gateway.yaml").write_text(VALID)
    env = {**os.environ, "UPSTREAM_URL": "http://127.0.0.1:9/v1"}
    log = tmp_path / "check.log"
    child = server.spawn(["check"], env=env, cwd=str(tmp_path), log=str(log))
    assert child.wait(30) == 0
    assert "gateway.yaml: valid" in log.read_text()

    without = {k: v for k, v in os.environ.items() if k != "UPSTREAM_URL"}
    refused = server.spawn(["check"], env=without, cwd=str(tmp_path), log=str(tmp_path / "refused.log"))
    assert refused.wait(30) != 0
    assert "UPSTREAM_URL" in (tmp_path / "refused.log").read_text()


def test_a_signal_is_the_childs_and_its_status_reads_as_popen_s(server: ForkServer, tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text(VALID)
    env = {**os.environ, "UPSTREAM_URL": "http://127.0.0.1:9/v1"}
    child = server.spawn(
        ["serve", "--port", "0"], env=env, cwd=str(tmp_path), log=str(tmp_path / "serve.log")
    )
    assert child.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        child.wait(0.2)
    child.send_signal(signal.SIGKILL)
    assert child.wait(30) == -signal.SIGKILL
    assert child.returncode == -signal.SIGKILL


def test_closing_the_server_ends_its_children(tmp_path: Path) -> None:
    server = ForkServer()
    (tmp_path / "gateway.yaml").write_text(VALID)
    env = {**os.environ, "UPSTREAM_URL": "http://127.0.0.1:9/v1"}
    child = server.spawn(["serve", "--port", "0"], env=env, cwd=str(tmp_path), log=str(tmp_path / "s.log"))
    server.close()
    with pytest.raises(ProcessLookupError):
        os.kill(child.pid, 0)


def test_settings_read_at_import_are_not_forked() -> None:
    assert forkable(dict(os.environ))
    assert not forkable({**os.environ, "PROMETHEUS_MULTIPROC_DIR": "/tmp/elsewhere"})
    assert not forkable({**os.environ, "PYTHONHASHSEED": "123"})
    assert not forkable({**os.environ, "PYTHONPATH": "/somewhere"})
    assert forkable({**os.environ, "UPSTREAM_URL": "http://127.0.0.1:9/v1"})
