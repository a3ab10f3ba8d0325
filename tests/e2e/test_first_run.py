"""`gateway serve` in a directory with no gateway.yaml (the first run of an install): it writes the
embedded defaults there, generates their tiny model beside them and answers a chat request; a
`--config` that names a missing file is an error, and nothing is written."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from gateway.cli import EMBEDDED_DEFAULTS
from gateway.testing.process import GatewayProcess, free_port


def test_first_run_writes_the_embedded_defaults_and_serves_them(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path.parent / f"{tmp_path.name}-first-run.log"
    env = dict(os.environ, OPENAI_API_KEY="", ANTHROPIC_API_KEY="")  # the embedded defaults: no keys
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    gateway = GatewayProcess(process, tmp_path / "gateway.yaml", port, log)
    try:
        deadline = time.monotonic() + 120  # the tiny model is generated first
        while True:
            assert process.poll() is None, gateway.log()
            try:
                requests.get(gateway.url("/v1/models"), timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, gateway.log()
                time.sleep(0.1)
        assert gateway.config_path.read_bytes() == EMBEDDED_DEFAULTS.read_bytes()
        assert "wrote the embedded defaults to" in gateway.log()
        assert (tmp_path / "models" / "tiny" / "config.json").is_file()
        answer = requests.post(
            gateway.url("/v1/chat/completions"),
            json={"model": "local", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["usage"]["completion_tokens"] >= 1
    finally:
        gateway.stop()


def test_a_missing_config_named_on_the_command_line_is_an_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", "other.yaml", "--port", str(free_port())],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "other.yaml" in done.stderr
    assert list(tmp_path.iterdir()) == []
