"""Balanced groups through the real server and fake upstreams over loopback: the weighted split, the
latency strategy following the faster member, least_busy under uneven latencies, failover within the
group then to the next step (and what the audit record says), and sticky routing by a header."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from gateway.testing import Behaviour, FakeOpenAI
from tests.conftest import wait_until

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hello there"}]}


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeOpenAI]]:
    with FakeOpenAI.in_thread() as a, FakeOpenAI.in_thread() as b, FakeOpenAI.in_thread() as c:
        yield {"a": a, "b": b, "c": c}


@pytest.fixture(autouse=True)
def healthy(fakes: dict[str, FakeOpenAI]) -> None:
    for fake in fakes.values():
        fake.behaviour = Behaviour()
        fake.reset_stats()


def config(fakes: dict[str, FakeOpenAI], group: str, extra: str = "") -> str:
    backends = "\n".join(
        f'  {name}: {{type: openai_compatible, base_url: "{fake.base_url}"}}' for name, fake in fakes.items()
    )
    return f"""
backends:
{backends}
models:
  chat:
    chain:
      - group:
{group}
      - {{backend: c}}
timeouts:
  chat: {{total: 30, connect: 1, first_byte: 5}}
{extra}
"""


def post(gateway, **headers: str) -> requests.Response:
    response = requests.post(gateway.url("/v1/chat/completions"), json=CHAT, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return response


def served_by(gateway, n: int, **headers: str) -> list[str]:
    return [post(gateway, **headers).headers["x-gateway-backend"] for _ in range(n)]


def test_weighted_three_to_one_splits_two_hundred_requests_by_the_weights(
    gateway_server_module, fakes
) -> None:
    group = """\
          strategy: weighted
          targets: [{backend: a, weight: 3}, {backend: b, weight: 1}]"""
    gateway = gateway_server_module(config(fakes, group), name="weighted.yaml")
    counts = Counter(served_by(gateway, 200))
    assert counts == {"a": 150, "b": 50}  # one worker: smooth weighted round robin is exact


def test_latency_moves_traffic_to_a_five_times_faster_member_and_back(gateway_server_module, fakes) -> None:
    group = """\
          strategy: latency
          targets: [{backend: a}, {backend: b}]"""
    gateway = gateway_server_module(config(fakes, group), name="latency.yaml")
    fakes["a"].behaviour = Behaviour(latency_ms=50)
    fakes["b"].behaviour = Behaviour(latency_ms=10)
    counts = Counter(served_by(gateway, 200))
    assert counts["b"] >= 0.9 * 200
    # a recovers (and b slows down): a's probes measure it again and it wins the traffic back.
    fakes["a"].behaviour = Behaviour(latency_ms=2)
    fakes["b"].behaviour = Behaviour(latency_ms=50)
    served_by(gateway, 100)
    counts = Counter(served_by(gateway, 100))
    assert counts["a"] >= 0.9 * 100


def test_a_failing_member_fails_over_within_its_group_then_to_the_next_step(
    gateway_server_module, fakes, tmp_path_factory
) -> None:
    database = tmp_path_factory.mktemp("audit") / "audit.db"
    group = """\
          strategy: weighted
          targets: [{backend: a, weight: 1}, {backend: b, weight: 1}]"""
    extra = f"""
failover:
  circuit_breaker: {{failure_threshold: 1000}}
audit:
  database_url: "sqlite:///{database}"
  flush_interval_ms: 50
"""
    gateway = gateway_server_module(config(fakes, group, extra), name="failover.yaml")
    fakes["a"].behaviour = Behaviour(status=500)
    responses = [post(gateway) for _ in range(4)]
    assert [r.headers["x-gateway-backend"] for r in responses] == ["b"] * 4
    # Half the requests picked a and failed over to b: two attempts; the others picked b: one.
    assert sorted(r.headers["x-gateway-attempts"] for r in responses) == ["1", "1", "2", "2"]
    fakes["b"].behaviour = Behaviour(status=503)
    response = post(gateway)
    assert response.headers["x-gateway-backend"] == "c"
    assert response.headers["x-gateway-attempts"] == "3"

    def paths() -> list[list[dict]]:
        with contextlib.closing(sqlite3.connect(database)) as db:
            try:
                rows = db.execute("SELECT failover_path FROM audit_records ORDER BY id").fetchall()
            except sqlite3.OperationalError:  # the gateway is still creating the schema
                return []
            return [json.loads(path) for (path,) in rows]

    wait_until(lambda: len(paths()) == 5)
    last = paths()[-1]
    assert [(s["backend"], s["outcome"]) for s in last] == [
        (last[0]["backend"], "http_5xx"),
        (last[1]["backend"], "http_5xx"),
        ("c", "ok"),
    ]
    assert {last[0]["backend"], last[1]["backend"]} == {"a", "b"}
    assert [(s.get("group"), s.get("strategy"), s.get("reason")) for s in last] == [
        (0, "weighted", "picked"),
        (0, "weighted", "failover"),
        (None, None, None),
    ]


def test_sticky_by_header_keeps_a_session_on_one_member_and_moves_it_when_its_circuit_opens(
    gateway_server_module, fakes
) -> None:
    group = """\
          strategy: weighted
          targets: [{backend: a}, {backend: b}]
          sticky: {by: header, header: X-Session}"""
    extra = """
failover:
  circuit_breaker: {failure_threshold: 1, cooldown_seconds: 600}
"""
    gateway = gateway_server_module(config(fakes, group, extra), name="sticky.yaml")
    homes = {s: set(served_by(gateway, 5, **{"x-session": s})) for s in (f"s{i}" for i in range(16))}
    assert all(len(home) == 1 for home in homes.values())  # each session stays on one member
    assert set().union(*homes.values()) == {"a", "b"}  # and the sessions spread over both
    # Without the header the weighted strategy alternates.
    assert sorted(served_by(gateway, 2)) == ["a", "b"]
    moved = next(s for s, home in homes.items() if home == {"a"})
    stays = next(s for s, home in homes.items() if home == {"b"})
    fakes["a"].behaviour = Behaviour(status=500)
    first = post(gateway, **{"x-session": moved})  # fails on a, over to b: a's circuit opens
    assert first.headers["x-gateway-backend"] == "b"
    assert first.headers["x-gateway-attempts"] == "2"
    calls = fakes["a"].stats.requests.get("/v1/chat/completions", 0)
    assert set(served_by(gateway, 5, **{"x-session": moved})) == {"b"}
    assert set(served_by(gateway, 5, **{"x-session": stays})) == {"b"}
    assert fakes["a"].stats.requests.get("/v1/chat/completions", 0) == calls  # a not asked again


def test_least_busy_sends_more_to_the_member_that_frees_up_sooner(gateway_server_module, fakes) -> None:
    """Eight clients at once; a answers in 300 ms, b in 30 ms. Each request goes to the member with
    the fewest in flight, so b, whose requests end sooner, takes most of them."""
    group = """\
          strategy: least_busy
          targets: [{backend: a}, {backend: b}]"""
    gateway = gateway_server_module(config(fakes, group), name="least-busy.yaml")
    fakes["a"].behaviour = Behaviour(latency_ms=300)
    fakes["b"].behaviour = Behaviour(latency_ms=30)
    with ThreadPoolExecutor(8) as pool:
        counts = Counter(pool.map(lambda _: post(gateway).headers["x-gateway-backend"], range(80)))
    assert counts["a"] + counts["b"] == 80
    assert counts["b"] > 3 * counts["a"]
