"""Client-key limits through a real gateway (in this process, so its limits read a manual clock):
past a limit, a 429 problem+json that names the limit and the key, with Retry-After and the RateLimit
headers of draft-ietf-httpapi-ratelimit-headers, which the official SDKs raise as RateLimitError; an
audit record `rejected` with the limit's name; and, once the clock has moved on, service again.
Requests per minute, tokens per minute (estimate corrected to the usage), concurrency, a daily budget.
"""

from __future__ import annotations

import json
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import requests

from gateway.limits import ManualClock
from gateway.testing import FakeOpenAI
from gateway.testing.inprocess import InProcessGateway, gateway_in_thread
from tests.conftest import wait_until
from tests.e2e.upstreams import assert_problem

KEYS = {"team-a": "sk-team-a", "team-b": "sk-team-b", "team-c": "sk-team-c", "team-d": "sk-team-d"}
USER = [{"role": "user", "content": "hello there"}]


def config(fake: FakeOpenAI, audit_db: Path) -> str:
    hang = """headers: {x-fake-behaviour: '{"hang": true}'}"""
    return f"""
auth:
  client_keys:
    - {{name: team-a, key: "${{TEAM_A}}", limits: {{requests_per_minute: 3}}}}
    - {{name: team-b, key: "${{TEAM_B}}", limits: {{tokens_per_minute: 200}}}}
    - {{name: team-c, key: "${{TEAM_C}}", limits: {{concurrent_requests: 1}}}}
    - {{name: team-d, key: "${{TEAM_D}}"}}
  default_limits: {{budget_usd: {{per_day: 1.0}}}}
backends:
  oa: {{type: openai_compatible, base_url: "{fake.base_url}"}}
  oa-hang: {{type: openai_compatible, base_url: "{fake.base_url}", {hang}}}
  oa-dear:
    type: openai_compatible
    base_url: "{fake.base_url}"
    prices: {{gpt-4o: {{input: 500000, output: 500000}}}}   # $0.50 a token
models:
  gpt: {{chain: [{{backend: oa, model: gpt-4o}}]}}
  gpt-dear: {{chain: [{{backend: oa-dear, model: gpt-4o}}]}}
  gpt-hang: {{chain: [{{backend: oa-hang, model: gpt-4o}}]}}
audit:
  database_url: "sqlite://{audit_db}"
  flush_interval_ms: 50
"""


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.in_thread() as server:
        yield server


@pytest.fixture(scope="module")
def clock() -> ManualClock:
    return ManualClock(1_767_225_600.5)  # 2026-01-01T00:00:00.5Z


@pytest.fixture(scope="module")
def audit_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("limits") / "audit.sqlite3"


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, fake: FakeOpenAI, clock: ManualClock, audit_db: Path
) -> Iterator[InProcessGateway]:
    path = tmp_path_factory.mktemp("gateway") / "gateway.yaml"
    path.write_text(config(fake, audit_db))
    env = {name.upper().replace("-", "_"): key for name, key in KEYS.items()}
    with gateway_in_thread(path, env=env, watch=False, limits_clock=clock) as running:
        yield running


def chat(gateway: InProcessGateway, key: str, body: dict[str, Any] | None = None) -> requests.Response:
    return requests.post(
        gateway.url("/v1/chat/completions"),
        json=body or {"model": "gpt", "messages": USER},
        headers={"authorization": f"Bearer {KEYS[key]}"},
        timeout=30,
    )


def audit_row(audit_db: Path, request_id: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def written() -> bool:
        if not audit_db.exists():
            return False
        connection = sqlite3.connect(audit_db)
        connection.row_factory = sqlite3.Row
        try:
            rows = connection.execute("SELECT * FROM audit_records WHERE request_id = ?", (request_id,))
            row = rows.fetchone()
        except sqlite3.OperationalError:  # not created yet
            return False
        finally:
            connection.close()
        if row is not None:
            found.update(dict(row))
        return row is not None

    wait_until(written, timeout=10)
    return found


def test_the_fourth_request_in_a_minute_is_a_429_naming_the_limit_and_the_key(
    gateway: InProcessGateway, clock: ManualClock, audit_db: Path
) -> None:
    for left in (2, 1, 0):
        response = chat(gateway, "team-a")
        assert response.status_code == 200, response.text
        assert response.headers["ratelimit-policy"].startswith('"requests_per_minute";q=3;w=60, ')
        assert response.headers["ratelimit"].startswith(f'"requests_per_minute";r={left};t=')
    refused = chat(gateway, "team-a")
    body = assert_problem(refused, 429)
    assert body["type"] == "/problems/limit-exceeded"
    assert body["limit"] == "requests_per_minute" and body["key"] == "team-a"
    assert body["detail"].startswith("API key 'team-a' is over its requests_per_minute limit (3 per minute)")
    assert body["error"]["type"] == "rate_limit_error"
    retry = int(refused.headers["retry-after"])
    assert 1 <= retry <= 60
    # Every limit of the key (its own, and the default daily budget), each with what is left.
    assert refused.headers["ratelimit-policy"] == (
        '"requests_per_minute";q=3;w=60, "budget_usd.per_day";q=100;qu="usd-cents";w=86400'
    )
    assert refused.headers["ratelimit"].startswith(
        f'"requests_per_minute";r=0;t={retry}, "budget_usd.per_day";r=100;t='
    )
    row = audit_row(audit_db, refused.headers["x-request-id"])
    assert (row["status"], row["http_status"], row["limit_name"]) == ("rejected", 429, "requests_per_minute")
    assert row["client_key"] == "team-a" and row["backend"] is None

    # The official SDKs raise their usual RateLimitError, with the gateway's message.
    client = openai.OpenAI(base_url=gateway.url("/v1"), api_key=KEYS["team-a"], max_retries=0)
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="gpt", messages=USER)  # type: ignore[arg-type]
    assert "requests_per_minute limit (3 per minute)" in str(raised.value)
    assert raised.value.response.headers["retry-after"]
    claude = anthropic.Anthropic(base_url=gateway.base_url, api_key=KEYS["team-a"], max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as raised_too:
        claude.messages.create(model="gpt", max_tokens=16, messages=USER)  # type: ignore[arg-type]
    assert "requests_per_minute limit" in str(raised_too.value)

    clock.advance(retry)
    assert chat(gateway, "team-a").status_code == 200  # the window has moved on
    clock.advance(60)
    assert [chat(gateway, "team-a").status_code for _ in range(4)] == [200, 200, 200, 429]


def test_tokens_are_charged_as_estimated_then_as_used(gateway: InProcessGateway, clock: ManualClock) -> None:
    # A long prompt of one word: estimated at its length / 4 (about 110 tokens), used: 1 + 16 answered.
    body = {"model": "gpt", "messages": [{"role": "user", "content": "a" * 400}]}
    served = 0
    while True:
        response = chat(gateway, "team-b", body)
        if response.status_code != 200:
            break
        served += 1
        assert served < 20, "never refused"
    problem = assert_problem(response, 429)
    assert problem["limit"] == "tokens_per_minute" and problem["key"] == "team-b"
    assert response.headers["ratelimit-policy"].startswith('"tokens_per_minute";q=200;qu="tokens";w=60, ')
    # Uncorrected, the second estimate would not fit beside the first (2 × 110 > 200); corrected to
    # what was used (17 each), several fit.
    assert served >= 3
    clock.advance(61)
    assert chat(gateway, "team-b", body).status_code == 200


def test_concurrent_requests_wait_for_the_one_in_flight(
    gateway: InProcessGateway, fake: FakeOpenAI, audit_db: Path
) -> None:
    before = fake.stats.requests.get("/v1/chat/completions", 0)
    payload = json.dumps({"model": "gpt-hang", "messages": USER}).encode()
    held = socket.create_connection(("127.0.0.1", gateway.port))
    held.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        + f"authorization: Bearer {KEYS['team-c']}\r\ncontent-length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    try:
        wait_until(lambda: fake.stats.requests.get("/v1/chat/completions", 0) > before)  # in flight
        refused = chat(gateway, "team-c")
        problem = assert_problem(refused, 429)
        assert problem["limit"] == "concurrent_requests" and refused.headers["retry-after"] == "1"
        assert refused.headers["ratelimit"].startswith('"concurrent_requests";r=0, ')
    finally:
        held.close()  # the client goes away: its request ends and frees its place
    wait_until(lambda: chat(gateway, "team-c").status_code == 200, timeout=10)


def test_a_daily_budget_refuses_until_utc_midnight(gateway: InProcessGateway, clock: ManualClock) -> None:
    # team-d has only the default limits: $1 a day. One request to a backend priced at $0.50 a token
    # costs more than that (its cost charged to the budget when it ends); the next is refused.
    dear = {"model": "gpt-dear", "messages": USER}
    first = chat(gateway, "team-d", dear)
    assert first.status_code == 200
    assert '"budget_usd.per_day";r=100;t=' in first.headers["ratelimit"]
    usage = first.json()["usage"]
    cost = float(first.headers["x-gateway-cost-usd"])
    assert cost == 0.5 * (usage["prompt_tokens"] + usage["completion_tokens"]) >= 1.0
    refused = chat(gateway, "team-d")
    problem = assert_problem(refused, 429)
    assert problem["limit"] == "budget_usd.per_day" and problem["key"] == "team-d"
    assert "$1 per UTC day" in problem["detail"]
    wait = int(refused.headers["retry-after"])
    assert refused.headers["ratelimit"] == f'"budget_usd.per_day";r=0;t={wait}'
    clock.advance(wait - 1)
    assert chat(gateway, "team-d").status_code == 429
    clock.advance(1)  # midnight UTC: a new day's budget
    assert chat(gateway, "team-d").status_code == 200
