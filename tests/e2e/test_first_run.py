"""The operator's first minutes: `gateway serve` in a directory with no gateway.yaml serves the
embedded defaults from the per-user data directory (the current directory stays untouched), says so,
and says "ready" with the URLs once it answers; a start that cannot happen says why in one line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from gateway.starter import DATA_DIR_ENV_VAR, EMBEDDED_DEFAULTS
from gateway.testing.process import GatewayProcess, free_port

NO_KEYS = {"OPENAI_API_KEY": "", "ANTHROPIC_API_KEY": ""}  # the embedded defaults: no keys


def _wait_for_ready_line(gateway: GatewayProcess, deadline_s: float) -> dict[str, object]:
    deadline = time.monotonic() + deadline_s
    while True:
        assert gateway.process.poll() is None, gateway.log()
        for line in gateway.log().splitlines():
            if line.startswith("{") and json.loads(line).get("event") == "ready":
                return json.loads(line)
        assert time.monotonic() < deadline, gateway.log()
        time.sleep(0.1)


def test_first_run_serves_the_embedded_defaults_from_the_data_directory(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    data = tmp_path / "data"
    port = free_port()
    log = tmp_path / "first-run.log"
    env = dict(os.environ, **NO_KEYS, **{DATA_DIR_ENV_VAR: str(data)})
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)],
            cwd=work,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    gateway = GatewayProcess(process, data / "gateway.yaml", port, log)
    try:
        ready = _wait_for_ready_line(gateway, 120)  # the tiny model is generated first
        # The ready line comes when the gateway answers, and names where.
        assert ready["model_api"] == f"http://127.0.0.1:{port}/v1"
        assert ready["admin_panel"] == f"http://127.0.0.1:{port}/admin/"
        assert requests.get(gateway.url("/health"), timeout=5).status_code == 200
        assert gateway.config_path.read_bytes() == EMBEDDED_DEFAULTS.read_bytes()
        said = gateway.log()
        assert f"serving the embedded defaults from {data / 'gateway.yaml'} (written now)" in said
        assert f"the local model and the audit database live in {data}" in said
        assert (data / "models" / "tiny" / "config.json").is_file()
        answer = requests.post(
            gateway.url("/v1/chat/completions"),
            json={"model": "local", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["usage"]["completion_tokens"] >= 1
        assert list(work.iterdir()) == []  # nothing lands where the command ran
    finally:
        gateway.stop()
    assert (data / "gateway-audit.sqlite3").is_file()


def _serve(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", *args],
        cwd=cwd,
        env=dict(os.environ, **NO_KEYS, **(env or {})),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _one_fatal_line(stderr: str) -> str:
    """The start failure, said once, without a traceback; its text whether logged as JSON or printed."""
    assert "Traceback" not in stderr, stderr
    fatal = [line for line in stderr.splitlines() if "not starting" in line]
    assert len(fatal) == 1, stderr
    line = fatal[0]
    return json.loads(line)["message"] if line.startswith("{") else line


def test_a_taken_port_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_bytes(EMBEDDED_DEFAULTS.read_bytes())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _serve("--port", str(port), cwd=tmp_path)
    assert done.returncode == 1
    line = _one_fatal_line(done.stderr)
    assert f"cannot listen on 127.0.0.1:{port}: the address is in use" in line
    assert "--port" in line
    assert "Errno" not in line


def test_debug_shows_the_traceback_of_a_failed_start(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_bytes(EMBEDDED_DEFAULTS.read_bytes())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = _serve("--port", str(taken.getsockname()[1]), "--debug", cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "the address is in use" in done.stderr


def test_an_unwritable_data_directory_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    work = tmp_path / "work"
    work.mkdir()
    done = _serve("--port", str(free_port()), cwd=work, env={DATA_DIR_ENV_VAR: str(blocker / "data")})
    assert done.returncode == 1
    line = _one_fatal_line(done.stderr)
    assert f"cannot keep the embedded defaults in {blocker / 'data'}" in line
    assert DATA_DIR_ENV_VAR in line and "gateway init" in line
    assert list(work.iterdir()) == []


def test_an_unreadable_config_is_named_with_the_check_command(tmp_path: Path) -> None:
    (tmp_path / "conf.yaml").mkdir()  # a directory where the file should be: unreadable as a file
    done = _serve("--config", "conf.yaml", "--port", str(free_port()), cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    first, *issues = done.stderr.splitlines()
    assert first.startswith("gateway: not starting: conf.yaml is not valid (1 error(s)")
    assert "gateway check conf.yaml" in first
    assert len(issues) == 1 and "conf.yaml" in issues[0]


def test_a_missing_config_named_on_the_command_line_is_an_error(tmp_path: Path) -> None:
    done = _serve("--config", "other.yaml", "--port", str(free_port()), cwd=tmp_path)
    assert done.returncode == 1
    assert "other.yaml" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_several_workers_say_ready_once_all_answer(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "version: 1\n"
        "backends:\n  up: {type: openai_compatible, base_url: 'http://127.0.0.1:9/v1'}\n"
        "models:\n  m: {chain: [{backend: up}]}\n"
        "audit: {enabled: false}\n"
    )
    port = free_port()
    log = tmp_path / "workers.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), "--workers", "2"],
            cwd=tmp_path,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    gateway = GatewayProcess(process, config, port, log)
    try:
        _wait_for_ready_line(gateway, 60)
        assert requests.get(gateway.url("/health"), timeout=5).status_code == 200
        events = [json.loads(line) for line in gateway.log().splitlines() if line.startswith("{")]
        started = [e for e in events if e.get("event") == "worker_started"]
        ready = [i for i, e in enumerate(events) if e.get("event") == "ready"]
        assert len(started) == 2 and len(ready) == 1
    finally:
        assert gateway.stop() == 0
