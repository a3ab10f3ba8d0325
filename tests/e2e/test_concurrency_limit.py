"""`max_concurrency` through the real server: the request past the limit waits in the backend's queue
and then succeeds; with the queue full it fails over to the chain's next backend; a stream holds its
slot until it ends. The fake upstream's latency keeps requests in flight while the test looks."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
import requests

from gateway.testing import Behaviour, FakeOpenAI
from tests.conftest import wait_until

#: Long enough that requests are still in flight while the test looks at the gateway's state.
LATENCY_MS = 1500


@pytest.fixture(scope="module")
def primary() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.in_thread() as fake:
        yield fake


@pytest.fixture(scope="module")
def spare() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.in_thread() as fake:
        yield fake


@pytest.fixture(autouse=True)
def fresh(primary: FakeOpenAI, spare: FakeOpenAI) -> None:
    for fake in (primary, spare):
        fake.behaviour = Behaviour()
        fake.reset_stats()


@pytest.fixture(scope="module")
def gateway(gateway_server_module, primary: FakeOpenAI, spare: FakeOpenAI):
    up, other = primary.base_url, spare.base_url
    return gateway_server_module(f"""
backends:
  roomy: {{type: openai_compatible, base_url: "{up}", max_concurrency: 2, max_queue: 4}}
  strict: {{type: openai_compatible, base_url: "{up}", max_concurrency: 2, max_queue: 0}}
  single: {{type: openai_compatible, base_url: "{up}", max_concurrency: 1, max_queue: 0}}
  spare: {{type: openai_compatible, base_url: "{other}"}}
models:
  queued:
    chain: [{{backend: roomy, model: big}}, {{backend: spare, model: small}}]
  strict:
    chain: [{{backend: strict, model: big}}, {{backend: spare, model: small}}]
  streamed:
    chain: [{{backend: single, model: big}}, {{backend: spare, model: small}}]
timeouts:
  chat: {{total: 60, connect: 2, first_byte: 30}}
""")


def chat(gateway, model: str, *, stream: bool = False) -> requests.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], "stream": stream}
    return requests.post(gateway.url("/v1/chat/completions"), json=body, timeout=60, stream=stream)


def concurrency(gateway, backend: str) -> dict:
    """The backend's `concurrency` state as the admin API reports it."""
    listing = requests.get(
        gateway.url("/admin/api/backends"), headers=gateway.admin_headers, timeout=5
    ).json()["backends"]
    return next(b for b in listing if b["name"] == backend)["concurrency"]


def in_state(gateway, backend: str, in_flight: int, queued: int) -> bool:
    state = concurrency(gateway, backend)
    return (state["in_flight"], state["queued"]) == (in_flight, queued)


def test_the_request_past_the_limit_waits_in_the_queue_then_succeeds(gateway, primary, spare) -> None:
    primary.behaviour = Behaviour(latency_ms=LATENCY_MS)
    with ThreadPoolExecutor(3) as pool:
        futures: list[Future[requests.Response]] = [pool.submit(chat, gateway, "queued") for _ in range(3)]
        # Two in flight at the upstream, the third waiting in the gateway's queue.
        wait_until(lambda: in_state(gateway, "roomy", 2, 1), timeout=10)
        assert primary.stats.in_flight <= 2
        responses = [f.result() for f in futures]
    for response in responses:
        assert response.status_code == 200, response.text
        assert response.headers["x-gateway-backend"] == "roomy"
        assert response.headers["x-gateway-attempts"] == "1"
    assert primary.stats.requests["/v1/chat/completions"] == 3
    assert spare.stats.total == 0
    assert in_state(gateway, "roomy", 0, 0)


def test_with_the_queue_full_the_request_fails_over_to_the_next_backend(gateway, primary, spare) -> None:
    primary.behaviour = Behaviour(latency_ms=LATENCY_MS)
    with ThreadPoolExecutor(2) as pool:
        holders = [pool.submit(chat, gateway, "strict") for _ in range(2)]
        wait_until(lambda: in_state(gateway, "strict", 2, 0), timeout=10)
        extra = chat(gateway, "strict")
        assert extra.status_code == 200, extra.text
        assert extra.headers["x-gateway-backend"] == "spare"
        assert extra.headers["x-gateway-attempts"] == "2"
        assert extra.json()["model"] == "small"
        for holder in holders:
            assert holder.result().headers["x-gateway-backend"] == "strict"
    assert primary.stats.requests["/v1/chat/completions"] == 2  # the extra one never reached it
    assert spare.stats.requests["/v1/chat/completions"] == 1


def test_a_stream_holds_its_slot_until_it_ends(gateway, primary, spare) -> None:
    # 16 tokens, one every 150 ms: the stream stays open for seconds after its first byte.
    primary.behaviour = Behaviour(token_delay_ms=150)
    stream = chat(gateway, "streamed", stream=True)
    assert stream.status_code == 200 and stream.headers["x-gateway-backend"] == "single"
    lines = stream.iter_lines()
    assert next(lines).startswith(b"data: ")  # past the first byte, the stream still open
    assert in_state(gateway, "single", 1, 0)
    meanwhile = chat(gateway, "streamed")
    assert meanwhile.headers["x-gateway-backend"] == "spare"
    assert meanwhile.headers["x-gateway-attempts"] == "2"
    rest = [line for line in lines if line]
    assert rest[-1] == b"data: [DONE]"
    stream.close()
    wait_until(lambda: in_state(gateway, "single", 0, 0))
    after = chat(gateway, "streamed")
    assert after.headers["x-gateway-backend"] == "single"
    assert after.headers["x-gateway-attempts"] == "1"


def test_every_backend_busy_is_429_with_retry_after(gateway, primary, spare) -> None:
    """A chain whose only target turned the request away is rate-limited, not failed."""
    primary.behaviour = Behaviour(latency_ms=LATENCY_MS)
    spare.behaviour = Behaviour(status=429)
    with ThreadPoolExecutor(1) as pool:
        holder = pool.submit(chat, gateway, "streamed")
        wait_until(lambda: in_state(gateway, "single", 1, 0), timeout=10)
        refused = chat(gateway, "streamed")
        assert holder.result().status_code == 200
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"]
    outcomes = [a["outcome"] for a in refused.json()["attempts"]]
    assert outcomes == ["overloaded", "http_429"]
