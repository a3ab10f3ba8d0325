"""Limits shared through Redis by separate gateway processes, a Redis that stops and starts again
mid-run (the store's outage follows `limits.on_store_down`, and nothing hangs), and backend quotas
that make the chain fail over instead of calling a provider that would answer 429."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from gateway.testing import FakeOpenAI
from gateway.testing.process import GatewayProcess
from gateway.testing.redis_server import RedisServer
from tests.conftest import wait_until
from tests.e2e.upstreams import assert_problem

KEY = "sk-shared-team"
USER = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.in_thread() as server:
        yield server


def config(fake: FakeOpenAI, store: str, *, rpm: int, on_store_down: str = "allow", extra: str = "") -> str:
    return f"""
auth:
  client_keys:
    - {{name: team, key: "${{TEAM_KEY}}", limits: {{requests_per_minute: {rpm}}}}}
backends:
  oa: {{type: openai_compatible, base_url: "{fake.base_url}"}}
models:
  gpt: {{chain: [{{backend: oa, model: gpt-4o}}]}}
limits:
  store: "{store}"
  on_store_down: {on_store_down}
  store_timeout_ms: 200
{extra}
"""


def chat(gateway: GatewayProcess, model: str = "gpt") -> requests.Response:
    return requests.post(
        gateway.url("/v1/chat/completions"),
        json={"model": model, "messages": USER},
        headers={"authorization": f"Bearer {KEY}"},
        timeout=30,
    )


def start(gateway_server, text: str, name: str) -> GatewayProcess:
    return gateway_server(text, name=name, env={"TEAM_KEY": KEY})


def test_two_gateways_sharing_redis_admit_exactly_the_limit(
    gateway_server, fake: FakeOpenAI, redis_server: RedisServer
) -> None:
    text = config(fake, redis_server.url(), rpm=10)
    first = start(gateway_server, text, "first.yaml")
    second = start(gateway_server, text, "second.yaml")
    statuses = [chat(first if i % 2 else second).status_code for i in range(20)]
    assert statuses.count(200) == 10 and statuses.count(429) == 10, statuses
    assert statuses[:10] == [200] * 10  # one count for both: the 11th request is the first refused


def test_memory_store_counts_per_process(gateway_server, fake: FakeOpenAI) -> None:
    """The default store is this process's: a second instance has counters of its own."""
    text = config(fake, "memory", rpm=2)
    first = start(gateway_server, text, "first.yaml")
    second = start(gateway_server, text, "second.yaml")
    assert [chat(first).status_code for _ in range(3)] == [200, 200, 429]
    assert chat(second).status_code == 200


def ready_limits(gateway: GatewayProcess) -> dict:
    ready = requests.get(gateway.url("/ready"), timeout=10)
    assert ready.status_code == 200, ready.text  # a store outage is reported, never "not ready"
    return ready.json()["checks"]["limits"]


def store_errors(gateway: GatewayProcess) -> float:
    metrics = requests.get(gateway.url("/metrics"), timeout=10).text
    lines = [line for line in metrics.splitlines() if line.startswith("gateway_limit_store_errors_total ")]
    return float(lines[0].split()[1]) if lines else 0.0


def test_redis_stopped_mid_run_with_allow_serves_unlimited_then_limits_again(
    gateway_server, fake: FakeOpenAI, redis_server: RedisServer
) -> None:
    gateway = start(gateway_server, config(fake, redis_server.url(), rpm=2), "gateway.yaml")
    assert [chat(gateway).status_code for _ in range(3)] == [200, 200, 429]
    assert ready_limits(gateway)["status"] == "ok"
    redis_server.stop()
    # Unlimited while the store is away: every request served, none waiting past the store's timeout.
    assert [chat(gateway).status_code for _ in range(5)] == [200] * 5
    check = ready_limits(gateway)
    assert check["status"] == "degraded" and check["up"] is False and check["on_store_down"] == "allow"
    assert "served without limits" in check["detail"]
    assert store_errors(gateway) >= 1
    assert "limits store (Redis) failed" in gateway.log()
    redis_server.start()  # empty: the counts start over
    wait_until(lambda: chat(gateway).status_code == 429, timeout=15, interval=0.2)
    assert ready_limits(gateway)["status"] == "ok"


def test_redis_stopped_mid_run_with_deny_refuses_with_503(
    gateway_server, fake: FakeOpenAI, redis_server: RedisServer
) -> None:
    gateway = start(gateway_server, config(fake, redis_server.url(), rpm=2, on_store_down="deny"), "g.yaml")
    assert chat(gateway).status_code == 200
    redis_server.stop()
    for _ in range(3):
        refused = chat(gateway)
        problem = assert_problem(refused, 503)
        assert problem["type"] == "/problems/limits-unavailable"
        assert "limits.on_store_down is deny" in problem["detail"]
        assert refused.headers["retry-after"] == "1"
    assert ready_limits(gateway)["detail"].endswith(
        "limited requests are refused with 503 (limits.on_store_down)"
    )
    redis_server.start()
    wait_until(lambda: chat(gateway).status_code == 200, timeout=15, interval=0.2)
    assert [chat(gateway).status_code for _ in range(2)] == [200, 429]


@pytest.fixture(scope="module")
def second_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.in_thread() as server:
        yield server


def quota_config(fake: FakeOpenAI, second_fake: FakeOpenAI, audit_db: Path) -> str:
    quota = "limits: {requests_per_minute: 1}"
    return f"""
backends:
  primary: {{type: openai_compatible, base_url: "{fake.base_url}", {quota}}}
  secondary: {{type: openai_compatible, base_url: "{second_fake.base_url}", {quota}}}
models:
  gpt: {{chain: [{{backend: primary, model: big}}, {{backend: secondary, model: small}}]}}
audit:
  database_url: "sqlite://{audit_db}"
  flush_interval_ms: 50
"""


def test_a_backend_past_its_quota_is_skipped_for_the_next_target(
    gateway_server, fake: FakeOpenAI, second_fake: FakeOpenAI, tmp_path: Path
) -> None:
    import json
    import sqlite3

    audit_db = tmp_path / "audit.sqlite3"
    gateway = gateway_server(quota_config(fake, second_fake, audit_db))
    calls = (
        fake.stats.requests.get("/v1/chat/completions", 0),
        second_fake.stats.requests.get("/v1/chat/completions", 0),
    )

    def post() -> requests.Response:
        return requests.post(
            gateway.url("/v1/chat/completions"), json={"model": "gpt", "messages": USER}, timeout=30
        )

    first, second, third = post(), post(), post()
    assert first.headers["x-gateway-backend"] == "primary"
    assert second.status_code == 200 and second.headers["x-gateway-backend"] == "secondary"
    assert second.headers["x-gateway-attempts"] == "1"  # the skipped backend was not called
    assert (
        fake.stats.requests.get("/v1/chat/completions", 0) - calls[0],
        second_fake.stats.requests.get("/v1/chat/completions", 0) - calls[1],
    ) == (1, 1)
    # Both quotas used up: 429 with the time until one frees, and no backend called.
    problem = assert_problem(third, 429)
    assert [step["outcome"] for step in problem["attempts"]] == ["quota", "quota"]
    assert 1 <= int(third.headers["retry-after"]) <= 60

    def paths() -> list[list[str]]:
        if not audit_db.exists():
            return []
        connection = sqlite3.connect(audit_db)
        try:
            rows = connection.execute("SELECT failover_path FROM audit_records ORDER BY id").fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            connection.close()
        return [[step["outcome"] for step in json.loads(row[0])] for row in rows]

    wait_until(lambda: len(paths()) == 3, timeout=10)
    assert paths() == [["ok"], ["quota", "ok"], ["quota", "quota"]]
    metrics = requests.get(gateway.url("/metrics"), timeout=10).text
    assert 'gateway_backend_quota_skips_total{backend="primary"} 2.0' in metrics
