"""Shared pieces of the SDK end-to-end tests: the fake upstreams, the gateway config that points at
them, what the fakes deterministically answer, and the checks every problem response must pass.

Not a conftest: each test module builds its own module-scoped fixtures from these helpers, so one
gateway subprocess and one pair of fakes serve all the tests of a module.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.testing import Behaviour, FakeAnthropic, FakeOpenAI
from gateway.testing.behaviour import TOOL_TOKENS, TextPlan, count_tokens, plan_text, reply_words

__all__ = [
    "FAKE_KEY",
    "GATEWAY_ENV",
    "PROBLEM_MEMBERS",
    "TOKEN_DELAY_MS",
    "TOOL_TOKENS",
    "WEATHER_ARGS",
    "WEATHER_SCHEMA",
    "Upstreams",
    "assert_problem",
    "backends_yaml",
    "config_version",
    "count_tokens",
    "expected_reply",
    "fake_upstreams",
    "tool_result_reply",
]

#: The key the fakes require from the gateway (so every test also checks the upstream credentials).
FAKE_KEY = "sk-fake-upstream-0123456789"
GATEWAY_ENV = {"FAKE_KEY": FAKE_KEY}

#: The members RFC 9457 plus the gateway promise on every error body.
PROBLEM_MEMBERS = ("type", "title", "status", "detail", "instance", "request_id")

#: A tool with two required parameters; the fakes call it with a fixed value per JSON type.
WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "City name"},
        "days": {"type": "integer", "description": "Days ahead"},
        "metric": {"type": "boolean"},
    },
    "required": ["city", "days", "metric"],
}
WEATHER_ARGS = {"city": "fake", "days": 1, "metric": True}


@dataclass(frozen=True)
class Upstreams:
    openai: FakeOpenAI
    anthropic: FakeAnthropic


@contextmanager
def fake_upstreams() -> Iterator[Upstreams]:
    """A fake OpenAI and a fake Anthropic, each in its own thread, both requiring `FAKE_KEY`."""
    behaviour = Behaviour(api_key=FAKE_KEY)
    with FakeOpenAI.in_thread(behaviour) as oai, FakeAnthropic.in_thread(behaviour) as ant:
        yield Upstreams(oai, ant)


#: Milliseconds the `-slow` backends wait before each streamed token.
TOKEN_DELAY_MS = 25


def backends_yaml(up: Upstreams, *, indent: str = "  ") -> str:
    """The standard backends: `oa` (openai_compatible), `oa-official` (type openai) and `an`
    (anthropic), all pointing at the fakes with the key from the environment; `oa-slow` and `an-slow`
    are the same fakes streaming one token every `TOKEN_DELAY_MS` (set per request by a header)."""
    key = '"${FAKE_KEY}"'
    oa, an = up.openai.base_url, up.anthropic.base_url
    slow = f"""headers: {{x-fake-behaviour: '{{"token_delay_ms": {TOKEN_DELAY_MS}}}'}}"""
    return "\n".join(
        [
            f'{indent}oa: {{type: openai_compatible, base_url: "{oa}", api_key: {key}}}',
            f'{indent}oa-official: {{type: openai, base_url: "{oa}", api_key: {key}}}',
            f'{indent}an: {{type: anthropic, base_url: "{an}", api_key: {key}}}',
            f'{indent}oa-slow: {{type: openai_compatible, base_url: "{oa}", api_key: {key}, {slow}}}',
            f'{indent}an-slow: {{type: anthropic, base_url: "{an}", api_key: {key}, {slow}}}',
        ]
    )


def config_version(config_path: Path) -> str:
    """What the gateway reports as `x-config-version`: the first 16 hex digits of the file's SHA-256."""
    return hashlib.sha256(config_path.read_bytes()).hexdigest()[:16]


def expected_reply(seed: str, max_tokens: int | None = None, stops: tuple[str, ...] = ()) -> TextPlan:
    """What both fakes answer to a last user message `seed` (16 words, capped and cut as asked)."""
    return plan_text(reply_words(seed, 16), max_tokens, stops)


def tool_result_reply(result: str) -> str:
    """What both fakes answer when the last message carries a tool result."""
    return " ".join(f"Tool result received: {result[:20]}".split())


def assert_problem(response: Any, status: int, *, sdk_error: Any = None) -> dict[str, Any]:
    """Check a problem response (a `requests` or SDK/httpx response) and return its body.

    `sdk_error`: the SDK exception raised for it; its `request_id` must be the response's id.
    """
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0].strip() == "application/problem+json"
    body = json.loads(response.text)
    missing = [m for m in PROBLEM_MEMBERS if m not in body]
    assert not missing, f"problem body lacks {missing}: {body}"
    assert body["status"] == status
    assert body["type"].startswith("/problems/") or body["type"].startswith("http")
    assert body["title"] and body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    # Both SDKs read their exception message from `error.message`.
    assert body["error"]["message"] == body["detail"]
    if sdk_error is not None:
        assert sdk_error.status_code == status
        assert sdk_error.request_id == body["request_id"]
    return body
