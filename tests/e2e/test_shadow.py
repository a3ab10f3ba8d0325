"""Shadow traffic (`models.<m>.shadow`) through the real gateway in this process, over loopback, against
two fake upstreams (the primary and the shadow target) and a real SQLite audit log: every sampled
request's copy is recorded with the primary's request id and never touches the client's answer, its
limits or its budget, whatever the shadow target does (answer, fail, hang)."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import logfire
import pytest
import requests
from logfire.testing import CaptureLogfire
from prometheus_client.parser import text_string_to_metric_families

from gateway.surfaces.shadow import SHADOW_SPAN
from gateway.telemetry.requests import REQUEST_SPAN
from gateway.testing import Behaviour, FakeOpenAI
from gateway.testing.inprocess import InProcessGateway, gateway_in_thread
from tests.conftest import wait_until

PROMPT = "Which of the old lighthouses along this coast still guide ships at night"
USER = [{"role": "user", "content": PROMPT}]
KEY, ADMIN = "sk-shadow-client-0123456789", "sk-shadow-admin-0123456789"
BOUND = 2  # max_concurrency of gpt's shadow
CHAT_TOTAL_S = 3  # the chat tier's total: how long a hung copy is stuck


def config(primary: FakeOpenAI, mirror: FakeOpenAI, audit_db: Path | None) -> str:
    audit = f'audit: {{database_url: "sqlite://{audit_db}", flush_interval_ms: 50}}'
    return f"""
auth:
  client_keys:
    - {{name: app, key: "${{SHADOW_KEY}}", limits: {{budget_usd: {{per_day: 1.0}}}}}}
  admin_keys:
    - {{name: ops, key: "${{SHADOW_ADMIN}}"}}
backends:
  primary:
    type: openai_compatible
    base_url: "{primary.base_url}"
    prices: {{gpt-4o: {{input: 0.01, output: 0.01}}}}
  mirror:
    type: openai_compatible
    base_url: "{mirror.base_url}"
    prices: {{gpt-next: {{input: 500000, output: 500000}}}}   # $0.50 a token: one copy is over the budget
models:
  gpt:
    chain: [{{backend: primary, model: gpt-4o}}]
    shadow: {{target: {{backend: mirror, model: gpt-next}}, sample_rate: 1, max_concurrency: {BOUND}}}
  gpt-sampled:
    chain: [{{backend: primary, model: gpt-4o}}]
    shadow: {{target: {{backend: mirror, model: gpt-next}}, sample_rate: 0.1, max_concurrency: 1000}}
timeouts:
  chat: {{total: {CHAT_TOTAL_S}}}
{audit if audit_db is not None else "audit: {enabled: false}"}
"""


ENV = {"SHADOW_KEY": KEY, "SHADOW_ADMIN": ADMIN}


@pytest.fixture(scope="module")
def primary() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.in_thread() as server:
        yield server


@pytest.fixture(scope="module")
def mirror() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.in_thread() as server:
        yield server


@pytest.fixture(scope="module")
def audit_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shadow") / "audit.sqlite3"


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, primary: FakeOpenAI, mirror: FakeOpenAI, audit_db: Path
) -> Iterator[InProcessGateway]:
    path = tmp_path_factory.mktemp("gateway") / "gateway.yaml"
    path.write_text(config(primary, mirror, audit_db))
    with gateway_in_thread(path, env=ENV, watch=False) as running:
        yield running


@pytest.fixture(autouse=True)
def quiet(request: pytest.FixtureRequest, mirror: FakeOpenAI) -> Iterator[None]:
    """Each test starts with the shadow target answering and no copy running."""
    mirror.behaviour = Behaviour()
    yield
    mirror.behaviour = Behaviour()
    if "gateway" in request.fixturenames:
        shadows = request.getfixturevalue("gateway").app.shadows
        wait_until(lambda: not shadows.tasks, timeout=CHAT_TOTAL_S + 10)


def chat(gateway: InProcessGateway, model: str = "gpt", **extra: Any) -> requests.Response:
    response = requests.post(
        gateway.url("/v1/chat/completions"),
        json={"model": model, "messages": USER, **extra},
        headers={"authorization": f"Bearer {KEY}"},
        timeout=30,
    )
    return response


def rows(audit_db: Path, where: str = "1 = 1", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    if not audit_db.exists():
        return []
    connection = sqlite3.connect(audit_db)
    connection.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in connection.execute(f"SELECT * FROM audit_records WHERE {where}", params)]
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        connection.close()


def shadow_of(audit_db: Path, request_id: str) -> dict[str, Any]:
    wait_until(lambda: bool(rows(audit_db, "shadow_of = ?", (request_id,))), timeout=10)
    [row] = rows(audit_db, "shadow_of = ?", (request_id,))
    return row


def shadow_counts(gateway: InProcessGateway) -> dict[tuple[str, str, str], float]:
    admin = {"authorization": f"Bearer {ADMIN}"}
    text = requests.get(gateway.url("/metrics"), headers=admin, timeout=10).text
    counts: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "gateway_shadow_requests":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    labels = sample.labels
                    counts[(labels["model"], labels["target"], labels["outcome"])] = sample.value
    return counts


def test_every_request_is_copied_and_the_copy_recorded_as_metadata(
    gateway: InProcessGateway, audit_db: Path, mirror: FakeOpenAI
) -> None:
    answer = chat(gateway)
    assert answer.status_code == 200
    assert answer.headers["x-gateway-backend"] == "primary"
    request_id = answer.headers["x-request-id"]
    copy = shadow_of(audit_db, request_id)
    assert copy["request_id"] != request_id
    assert (copy["model"], copy["backend"], copy["upstream_model"]) == ("gpt", "mirror", "gpt-next")
    assert (copy["status"], copy["http_status"]) == ("success", 200)
    assert copy["latency_ms"] > 0 and copy["prompt_tokens"] > 0 and copy["completion_tokens"] == 16
    assert copy["cost_usd"] > 1.0  # recorded at the target's price...
    assert copy["client_key"] is None  # ...and charged to no key
    assert PROMPT not in " ".join(str(value) for value in copy.values())
    [original] = rows(audit_db, "request_id = ?", (request_id,))
    assert original["shadow_of"] is None and original["client_key"] == "app"
    assert original["backend"] == "primary"


def test_a_streamed_request_is_copied_as_a_stream_and_read_to_the_end(
    gateway: InProcessGateway, audit_db: Path
) -> None:
    answer = chat(gateway, stream=True)
    assert answer.status_code == 200 and "[DONE]" in answer.text
    copy = shadow_of(audit_db, answer.headers["x-request-id"])
    assert copy["stream"] == 1 and copy["status"] == "success"
    assert copy["completion_tokens"] == 16  # the usage arrives with the stream's last event


def test_copies_are_not_charged_to_the_keys_budget(gateway: InProcessGateway, audit_db: Path) -> None:
    first = chat(gateway)
    assert first.status_code == 200
    assert shadow_of(audit_db, first.headers["x-request-id"])["cost_usd"] > 1.0  # over the $1 budget
    again = chat(gateway)  # a charged copy would have used up the day's budget: 429
    assert again.status_code == 200, again.text


def test_a_failing_shadow_target_does_not_change_the_clients_answer(
    gateway: InProcessGateway, audit_db: Path, mirror: FakeOpenAI
) -> None:
    mirror.behaviour = Behaviour(status=500)
    answer = chat(gateway)
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"]
    copy = shadow_of(audit_db, answer.headers["x-request-id"])
    assert copy["status"] == "error" and copy["http_status"] == 502
    assert copy["failover_path"] and '"mirror"' in copy["failover_path"]


def test_a_hanging_shadow_target_never_holds_the_client_and_excess_copies_are_dropped(
    gateway: InProcessGateway, audit_db: Path, mirror: FakeOpenAI
) -> None:
    before = shadow_counts(gateway).get(("gpt", "mirror", "dropped"), 0)
    mirror.behaviour = Behaviour(hang=True)
    ids = []
    for _ in range(BOUND + 3):
        answer = chat(gateway)  # answered while the copies are stuck
        assert answer.status_code == 200
        ids.append(answer.headers["x-request-id"])
    shadows = gateway.app.shadows
    wait_until(lambda: mirror.stats.in_flight == BOUND)
    assert shadows.running["gpt"] == BOUND
    assert shadow_counts(gateway)[("gpt", "mirror", "dropped")] - before == 3
    # The stuck copies end at the chat tier's total, as timeouts; the dropped ones were never sent.
    copies = [shadow_of(audit_db, request_id) for request_id in ids[:BOUND]]
    assert {c["status"] for c in copies} == {"timeout"}
    assert not any(rows(audit_db, "shadow_of = ?", (request_id,)) for request_id in ids[BOUND:])
    assert shadows.running["gpt"] == 0


def test_a_sample_rate_copies_about_that_share(gateway: InProcessGateway, mirror: FakeOpenAI) -> None:
    gateway.app.shadows.draw = random.Random(22).random
    before = mirror.stats.total
    requests_sent = 200
    for _ in range(requests_sent):
        assert chat(gateway, "gpt-sampled").status_code == 200
    wait_until(lambda: not gateway.app.shadows.tasks)
    copied = mirror.stats.total - before
    # Binomial(200, 0.1): mean 20, standard deviation 4.2; this bound is over 3.5 deviations wide.
    assert 5 <= copied <= 35, copied


def test_the_logs_api_filters_copies(gateway: InProcessGateway, audit_db: Path) -> None:
    answer = chat(gateway)
    request_id = answer.headers["x-request-id"]
    shadow_of(audit_db, request_id)
    admin = {"authorization": f"Bearer {ADMIN}"}
    copies = requests.get(gateway.url("/admin/api/logs?shadow=true"), headers=admin, timeout=10).json()
    assert copies["records"] and all(r["shadow_of"] for r in copies["records"])
    assert request_id in {r["shadow_of"] for r in copies["records"]}
    clients = requests.get(gateway.url("/admin/api/logs?shadow=false"), headers=admin, timeout=10).json()
    assert clients["records"] and not any(r["shadow_of"] for r in clients["records"])
    wrong = requests.get(gateway.url("/admin/api/logs?shadow=maybe"), headers=admin, timeout=10)
    assert wrong.status_code == 400 and "shadow" in wrong.json()["detail"]


def test_a_copy_in_flight_finishes_on_the_runtime_it_started_with(
    gateway: InProcessGateway, audit_db: Path, mirror: FakeOpenAI
) -> None:
    live = gateway.app.live
    original = live.path.read_text()
    admin = {"authorization": f"Bearer {ADMIN}"}
    old = live.current
    mirror.behaviour = Behaviour(hang=True)
    request_id = chat(gateway).headers["x-request-id"]
    wait_until(lambda: mirror.stats.in_flight == 1)
    # The copy holds its Runtime, so the reload cannot close its backend. (The client request's own
    # lease ends when its handler returns, a moment after its answer went out.)
    wait_until(lambda: old.usage.active == 1)
    # A reload that rebuilds the shadow target's backend while the copy is stuck on it.
    live.path.write_text(
        original.replace("    prices: {gpt-next:", "    max_connections: 50\n    prices: {gpt-next:")
    )
    try:
        reloaded = requests.post(gateway.url("/admin/api/config/reload"), headers=admin, timeout=10)
        assert reloaded.status_code == 200 and live.current is not old
        assert "mirror" in reloaded.json()["rebuilt_backends"]
        copy = shadow_of(audit_db, request_id)
        assert copy["status"] == "timeout" and copy["error_type"] == "timeout"  # not cut by a closed pool
        wait_until(lambda: old.usage.active == 0)
    finally:
        live.path.write_text(original)
        requests.post(gateway.url("/admin/api/config/reload"), headers=admin, timeout=10)


def test_with_the_audit_log_off_copies_still_run_and_nothing_breaks(
    tmp_path: Path, primary: FakeOpenAI, mirror: FakeOpenAI
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(config(primary, mirror, None))
    before = mirror.stats.total
    with gateway_in_thread(path, env=ENV, watch=False) as running:
        for stream in (False, True):
            assert chat(running, stream=stream).status_code == 200
        wait_until(lambda: mirror.stats.total - before == 2)
        wait_until(lambda: not running.app.shadows.tasks)
    assert not list(tmp_path.glob("*.sqlite3*"))


def test_a_copy_has_its_own_span_in_the_client_requests_trace(
    tmp_path: Path, primary: FakeOpenAI, mirror: FakeOpenAI, capfire: CaptureLogfire
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(config(primary, mirror, None))
    with gateway_in_thread(
        path, env=ENV, watch=False, logfire_instance=logfire.DEFAULT_LOGFIRE_INSTANCE
    ) as running:
        request_id = chat(running).headers["x-request-id"]

        def spans(name: str) -> list[dict[str, Any]]:
            return [s for s in capfire.exporter.exported_spans_as_dict() if s["name"] == name]

        wait_until(lambda: any(s["attributes"].get("shadow_of") == request_id for s in spans(SHADOW_SPAN)))
    [copy] = [s for s in spans(SHADOW_SPAN) if s["attributes"]["shadow_of"] == request_id]
    [request] = [s for s in spans(REQUEST_SPAN) if s["attributes"]["request_id"] == request_id]
    assert copy["context"]["trace_id"] == request["context"]["trace_id"]
    attributes = copy["attributes"]
    assert (attributes["model"], attributes["backend"], attributes["upstream_model"]) == (
        "gpt",
        "mirror",
        "gpt-next",
    )
    assert attributes["status"] == "success" and attributes["http.response.status_code"] == 200
    assert attributes["gen_ai.usage.output_tokens"] == 16 and attributes["latency_ms"] > 0
    assert attributes["request_id"] != request_id
