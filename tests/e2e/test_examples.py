"""The client examples in examples/clients run as documented against a real gateway."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.testing import FakeAnthropic, FakeOpenAI

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "clients"


@pytest.fixture(scope="module")
def gateway(gateway_server_module) -> Iterator:
    with FakeOpenAI.in_thread() as oa, FakeAnthropic.in_thread() as an:
        yield gateway_server_module(
            f"""
backends:
  oa: {{type: openai_compatible, base_url: "{oa.base_url}"}}
  an: {{type: anthropic, base_url: "{an.base_url}", api_key: "${{FAKE_KEY}}"}}
models:
  gpt-4o-mini: {{chain: [{{backend: oa}}]}}
  claude-haiku: {{chain: [{{backend: an}}]}}
""",
            env={"FAKE_KEY": "k"},
        )


@pytest.mark.parametrize(
    ("script", "model"),
    [
        ("openai_sdk.py", "claude-haiku"),
        ("anthropic_sdk.py", "gpt-4o-mini"),
        ("openai_responses.py", "claude-haiku"),
        ("openai_responses.py", "gpt-4o-mini"),
    ],
)
def test_client_example_runs(gateway, script: str, model: str) -> None:
    env = {**os.environ, "GATEWAY_URL": gateway.base_url, "MODEL": model}
    result = subprocess.run([sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "answer:" in result.stdout and "streamed:" in result.stdout
    assert "error: 404 Model 'no-such-model' not found" in result.stdout
    if script == "openai_responses.py":
        assert (
            "call: get_weather" in result.stdout and "after the call: Tool result received" in result.stdout
        )
