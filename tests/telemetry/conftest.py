"""Fixtures of the telemetry tests: fake upstreams (one OpenAI-style, one Anthropic-style) and a
gateway config whose models cover success, failover, errors and timeouts against them."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.config.load import parse_config
from gateway.routing.table import Runtime
from gateway.runtime.compile import compile_runtime
from gateway.testing import FakeAnthropic, FakeOpenAI

#: USD per million input and output tokens of the models `chat` and `claude` in `gateway_yaml`.
CHAT_PRICE = (Decimal("1.25"), Decimal("10"))
CLAUDE_PRICE = (Decimal("3"), Decimal("15"))
#: Environment for `${FAKE_KEY}` in the configs (an Anthropic backend without a key is disabled).
ENV = {"FAKE_KEY": "sk-fake-upstream-0123456789"}


def gateway_yaml(oa: str, an: str, extra: str = "") -> str:
    """Backends `oa` (answers), `broken` (HTTP 500), `stuck` (never answers), `an` (Anthropic); models
    `chat` (oa), `flaky` (broken then oa), `down` (broken only), `stuck` (stuck only), `claude` (an).
    `chat` and `claude` are priced (CHAT_PRICE, CLAUDE_PRICE), so their requests have a cost."""
    return f"""
backends:
  oa: {{type: openai_compatible, base_url: "{oa}", prices: {{chat: {{input: 1.25, output: 10}}}}}}
  broken: {{type: openai_compatible, base_url: "{oa}", headers: {{x-fake-behaviour: '{{"status": 500}}'}}}}
  stuck: {{type: openai_compatible, base_url: "{oa}", headers: {{x-fake-behaviour: '{{"hang": true}}'}}}}
  an:
    type: anthropic
    base_url: "{an}"
    api_key: "${{FAKE_KEY}}"
    prices: {{claude: {{input: 3, output: 15}}}}
models:
  chat: {{chain: [{{backend: oa}}]}}
  flaky: {{chain: [{{backend: broken}}, {{backend: oa}}]}}
  down: {{chain: [{{backend: broken}}]}}
  stuck: {{chain: [{{backend: stuck}}]}}
  claude: {{chain: [{{backend: an}}]}}
timeouts:
  chat: {{total: 30, connect: 2, first_byte: 0.5}}
failover:
  circuit_breaker: {{failure_threshold: 1000}}
reload: {{watch: false}}
{extra}
"""


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.in_thread() as fake:
        yield fake


@pytest.fixture(scope="module")
def anthropic_fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic.in_thread() as fake:
        yield fake


def compile_config(directory: Path, text: str) -> Runtime:
    """The Runtime of a config text (backends built, not started)."""
    path = directory / "gateway.yaml"
    path.write_text(text)
    runtime, _ = compile_runtime(parse_config(path.read_bytes(), path), None, "test")
    return runtime
