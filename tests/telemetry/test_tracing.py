"""Spans of real requests, captured with Logfire's test exporter (`capfire`): the app runs in this
process (Hypercorn in a thread) and calls the fake upstreams over loopback HTTP."""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import logfire
import pytest
import requests
from logfire.testing import CaptureLogfire

from gateway.routing.failover import ATTEMPT_SPAN
from gateway.telemetry.logging import JSONFormatter
from gateway.telemetry.requests import REQUEST_SPAN
from gateway.testing import FakeAnthropic, FakeOpenAI
from gateway.testing.inprocess import InProcessGateway, gateway_in_thread
from tests.conftest import wait_until
from tests.telemetry.conftest import CHAT_PRICE, CLAUDE_PRICE, ENV, gateway_yaml

HTTP_SPAN = "POST /v1/chat/completions"


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, openai_fake: FakeOpenAI, anthropic_fake: FakeAnthropic
) -> Iterator[InProcessGateway]:
    directory = tmp_path_factory.mktemp("traced")
    path = directory / "gateway.yaml"
    path.write_text(gateway_yaml(openai_fake.base_url, anthropic_fake.base_url))
    with gateway_in_thread(path, env=ENV, logfire_instance=logfire.DEFAULT_LOGFIRE_INSTANCE) as running:
        yield running


def chat(gateway: InProcessGateway, model: str, text: str = "hello there", **extra: Any) -> requests.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    return requests.post(gateway.url("/v1/chat/completions"), json=body, timeout=30)


def trace_of(capfire: CaptureLogfire, request_id: str) -> list[dict[str, Any]]:
    """The finished spans of the request with this id (its span, once ended, and its descendants)."""

    def request_span() -> dict[str, Any] | None:
        for span in capfire.exporter.exported_spans_as_dict():
            if span["name"] == REQUEST_SPAN and span["attributes"].get("request_id") == request_id:
                return span
        return None

    wait_until(lambda: request_span() is not None)
    root = request_span()
    assert root is not None
    trace_id = root["context"]["trace_id"]
    return [s for s in capfire.exporter.exported_spans_as_dict() if s["context"]["trace_id"] == trace_id]


def named(spans: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return sorted((s for s in spans if s["name"] == name), key=lambda s: s["start_time"])


def children(spans: list[dict[str, Any]], parent: dict[str, Any]) -> list[dict[str, Any]]:
    found = [s for s in spans if s["parent"] and s["parent"]["span_id"] == parent["context"]["span_id"]]
    return sorted(found, key=lambda s: s["start_time"])


def test_success_has_a_request_span_an_attempt_span_and_an_http_span(
    gateway: InProcessGateway, capfire: CaptureLogfire
) -> None:
    response = chat(gateway, "chat")
    assert response.status_code == 200
    spans = trace_of(capfire, response.headers["x-request-id"])
    [request] = named(spans, REQUEST_SPAN)
    assert request["parent"] is None
    attributes = request["attributes"]
    usage = response.json()["usage"]
    assert attributes["request_id"] == response.headers["x-request-id"]
    assert attributes["surface"] == "openai" and attributes["endpoint"] == "chat"
    assert attributes["model"] == "chat" and attributes["backend"] == "oa"
    assert attributes["status"] == "success" and attributes["http.response.status_code"] == 200
    assert attributes["attempts"] == 1
    assert attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert attributes["config_version"] == response.headers["x-config-version"]
    cost = (usage["prompt_tokens"] * CHAT_PRICE[0] + usage["completion_tokens"] * CHAT_PRICE[1]) / 10**6
    assert attributes["gateway.cost_usd"] == float(cost) == float(response.headers["x-gateway-cost-usd"])
    assert "ttft_ms" not in attributes  # a whole reply has no first token of its own
    [attempt] = children(spans, request)
    assert attempt["name"] == ATTEMPT_SPAN
    assert attempt["attributes"]["backend"] == "oa"
    assert attempt["attributes"]["outcome"] == "ok" and attempt["attributes"]["attempt"] == 1
    [http] = children(spans, attempt)
    assert http["name"] == HTTP_SPAN
    assert http["attributes"]["http.response.status_code"] == 200
    assert (
        http["attributes"]["url.full"]
        == f"http://127.0.0.1:{http['attributes']['server.port']}/v1/chat/completions"
    )


def test_failover_has_one_attempt_span_per_backend(
    gateway: InProcessGateway, capfire: CaptureLogfire
) -> None:
    response = chat(gateway, "flaky")
    assert response.status_code == 200
    spans = trace_of(capfire, response.headers["x-request-id"])
    [request] = named(spans, REQUEST_SPAN)
    assert request["attributes"]["status"] == "success"
    assert request["attributes"]["backend"] == "oa"
    assert request["attributes"]["attempts"] == 2
    assert json.loads(request["attributes"]["failover_path"]) == ["broken:http_5xx", "oa:ok"]
    first, second = children(spans, request)
    assert (first["name"], second["name"]) == (ATTEMPT_SPAN, ATTEMPT_SPAN)
    assert first["attributes"]["backend"] == "broken" and first["attributes"]["attempt"] == 1
    assert first["attributes"]["outcome"] == "http_5xx"
    assert first["attributes"]["http.response.status_code"] == 500
    assert second["attributes"]["backend"] == "oa" and second["attributes"]["attempt"] == 2
    assert second["attributes"]["outcome"] == "ok"
    [failed_http] = children(spans, first)
    assert failed_http["attributes"]["error.type"] == "http_5xx"
    assert failed_http["attributes"]["http.response.status_code"] == 500


def test_timeout_is_recorded_on_the_request_and_the_attempt(
    gateway: InProcessGateway, capfire: CaptureLogfire
) -> None:
    response = chat(gateway, "stuck")
    assert response.status_code == 504
    spans = trace_of(capfire, response.headers["x-request-id"])
    [request] = named(spans, REQUEST_SPAN)
    assert request["attributes"]["status"] == "timeout"
    assert request["attributes"]["http.response.status_code"] == 504
    assert request["attributes"]["logfire.level_num"] >= 17  # error
    [attempt] = children(spans, request)
    assert attempt["attributes"]["outcome"] == "timeout"
    [http] = children(spans, attempt)
    assert http["attributes"]["error.type"] == "timeout"


def test_error_without_any_answer(gateway: InProcessGateway, capfire: CaptureLogfire) -> None:
    response = chat(gateway, "down")
    assert response.status_code == 502
    spans = trace_of(capfire, response.headers["x-request-id"])
    [request] = named(spans, REQUEST_SPAN)
    assert request["attributes"]["status"] == "error"
    assert request["attributes"]["error_type"] == "upstream-error"
    assert "backend" not in request["attributes"]
    assert "gateway.cost_usd" not in request["attributes"]  # nothing was billed


def test_stream_records_time_to_first_token(gateway: InProcessGateway, capfire: CaptureLogfire) -> None:
    body = {
        "model": "claude",
        "max_tokens": 50,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    with requests.post(gateway.url("/v1/messages"), json=body, timeout=30, stream=True) as response:
        assert response.status_code == 200
        text = response.text
    assert "message_stop" in text
    spans = trace_of(capfire, response.headers["x-request-id"])
    [request] = named(spans, REQUEST_SPAN)
    assert request["attributes"]["surface"] == "anthropic" and request["attributes"]["stream"] is True
    assert request["attributes"]["backend"] == "an" and request["attributes"]["status"] == "success"
    assert request["attributes"]["ttft_ms"] >= 0
    assert request["attributes"]["gen_ai.usage.output_tokens"] > 0
    tokens_in, tokens_out = (request["attributes"][f"gen_ai.usage.{k}_tokens"] for k in ("input", "output"))
    cost = (tokens_in * CLAUDE_PRICE[0] + tokens_out * CLAUDE_PRICE[1]) / 10**6
    assert request["attributes"]["gateway.cost_usd"] == float(cost)
    assert "x-gateway-cost-usd" not in response.headers  # a stream's head leaves before its usage
    [attempt] = children(spans, request)
    [http] = children(spans, attempt)
    assert http["name"] == "POST /v1/messages"


def test_rejected_request_still_has_a_span(gateway: InProcessGateway, capfire: CaptureLogfire) -> None:
    response = chat(gateway, "no-such-model")
    assert response.status_code == 404
    [request] = named(trace_of(capfire, response.headers["x-request-id"]), REQUEST_SPAN)
    assert request["attributes"]["status"] == "rejected"
    assert request["attributes"]["http.response.status_code"] == 404


def test_trace_id_goes_to_the_log_line_and_the_audit_record(
    gateway: InProcessGateway, capfire: CaptureLogfire, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")
    response = chat(gateway, "chat")
    request_id = response.headers["x-request-id"]
    [request] = named(trace_of(capfire, request_id), REQUEST_SPAN)
    trace_id = f"{request['context']['trace_id']:032x}"

    def logged() -> list[logging.LogRecord]:
        return [r for r in caplog.records if getattr(r, "request_id", None) == request_id]

    # The line is written once the answer is sent, which may be just after the client has it.
    wait_until(lambda: bool(logged()))
    [line] = logged()
    assert line.trace_id == trace_id  # type: ignore[attr-defined]
    database = Path(gateway.app.live.path).parent / "gateway-audit.sqlite3"

    def audited() -> list[Any]:
        with sqlite3.connect(database) as connection:
            query = 'SELECT trace_id FROM "audit_records" WHERE request_id = ?'
            return connection.execute(query, (request_id,)).fetchall()

    wait_until(lambda: bool(audited()))
    assert audited() == [(trace_id,)]


def test_no_message_content_in_spans_or_log_lines(
    gateway: InProcessGateway, capfire: CaptureLogfire, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    canary = "zebra-canary-7f3a9c"
    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {"type": "object", "properties": {canary: {"type": "string"}}},
        },
    }
    ids = []
    for model in ("chat", "flaky", "down"):
        response = chat(gateway, model, f"tell me about {canary}", tools=[tool], user=canary)
        ids.append(response.headers["x-request-id"])
    body = {"model": "claude", "max_tokens": 20, "stream": True, "system": canary}
    body["messages"] = [{"role": "user", "content": canary}]
    with requests.post(gateway.url("/v1/messages"), json=body, timeout=30, stream=True) as response:
        ids.append(response.headers["x-request-id"])
        assert canary not in response.text  # (the fakes answer generated words, not the prompt)
    spans = [span for request_id in ids for span in trace_of(capfire, request_id)]
    assert len(spans) >= 3 * len(ids)
    everything = json.dumps(capfire.exporter.exported_spans_as_dict(), default=str)
    assert canary not in everything
    formatter = JSONFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    assert any('"event": "request"' in line or '"event":"request"' in line for line in lines)
    assert not [line for line in lines if canary in line]


def test_no_message_content_in_spans_logs_or_audit_on_the_cache_paths(
    tmp_path: Path,
    openai_fake: FakeOpenAI,
    anthropic_fake: FakeAnthropic,
    capfire: CaptureLogfire,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The canary through every response-cache path (miss, hit, stream miss, stream hit, bypass; both
    protocols), with the memory store: in the cache store, nowhere in spans, log lines or the audit log."""
    caplog.set_level(logging.DEBUG)
    canary = "Cz" + secrets.token_hex(8)  # the fakes echo a tool result's first 20 characters
    text = gateway_yaml(openai_fake.base_url, anthropic_fake.base_url)
    for model, backend in (("chat", "oa"), ("claude", "an")):
        line = f"  {model}: {{chain: [{{backend: {backend}}}]}}"
        assert line in text
        text = text.replace(line, f"  {model}: {{chain: [{{backend: {backend}}}], cache: {{mode: exact}}}}")
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    arguments = json.dumps({"q": canary})
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    conversation = [
        {"role": "system", "content": f"secret {canary}"},  # (+ the round: a stream is a new entry)
        {"role": "user", "content": f"find {canary}"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": canary},
    ]
    ids, seen = [], []

    def both(running: InProcessGateway, stream: bool, headers: dict[str, str]) -> None:
        messages = [{**conversation[0], "content": f"secret {canary} {stream}"}, *conversation[1:]]
        body: dict[str, Any] = {"model": "chat", "messages": messages, "temperature": 0, "stream": stream}
        answer = requests.post(running.url("/v1/chat/completions"), json=body, headers=headers, timeout=30)
        assert canary in answer.text
        seen.append(answer.headers["x-gateway-cache"])
        ids.append(answer.headers["x-request-id"])
        system = f"{canary} {stream}"
        body = {"model": "claude", "max_tokens": 20, "temperature": 0, "stream": stream, "system": system}
        body["messages"] = [{"role": "user", "content": canary}]
        answer = requests.post(running.url("/v1/messages"), json=body, headers=headers, timeout=30)
        seen.append(answer.headers["x-gateway-cache"])
        ids.append(answer.headers["x-request-id"])

    with gateway_in_thread(path, env=ENV, logfire_instance=logfire.DEFAULT_LOGFIRE_INSTANCE) as running:
        store = running.app.live.current.cache.store  # type: ignore[union-attr]
        for stored, stream in ((2, False), (4, True)):
            both(running, stream, {})
            # A stream's answer is stored once it has ended: wait for it before asking again.
            wait_until(lambda stored=stored: store.status()["entries"] == stored)
            both(running, stream, {})
            both(running, stream, {"x-gateway-cache": "bypass"})
        assert seen == (["miss"] * 2 + ["hit"] * 2 + ["bypass"] * 2) * 2
        assert any(canary.encode() in value for value in store.values())  # the store holds it
        for request_id in ids:
            trace_of(capfire, request_id)
    assert_canary_nowhere(canary, '"gateway.cache"', capfire, caplog, tmp_path)


def test_no_message_content_in_spans_logs_or_audit_on_the_semantic_cache_path(
    tmp_path: Path,
    openai_fake: FakeOpenAI,
    anthropic_fake: FakeAnthropic,
    capfire: CaptureLogfire,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The canary through the semantic cache: the last user turn goes to the embedding model (a call
    of its own through the chain), a paraphrase is then a hit; the canary is never in spans (the
    embedding attempt's included), log lines or the audit log."""
    caplog.set_level(logging.DEBUG)
    canary = "Sq" + secrets.token_hex(8)
    text = gateway_yaml(openai_fake.base_url, anthropic_fake.base_url)
    line = "  chat: {chain: [{backend: oa}]}"
    assert line in text
    semantic = "cache: {mode: semantic, embedding_model: embed, similarity: 0.8}"
    text = text.replace(
        line,
        f"  chat: {{chain: [{{backend: oa}}], {semantic}}}\n"
        "  embed: {chain: [{backend: oa, model: text-embedding-semantic}]}",
    )
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    questions = (f"what is the capital of {canary} today", f"what's the capital city of {canary} today")
    seen, ids = [], []
    with gateway_in_thread(path, env=ENV, logfire_instance=logfire.DEFAULT_LOGFIRE_INSTANCE) as running:
        store = running.app.live.current.cache.store  # type: ignore[union-attr]
        for question in questions:
            body = {"model": "chat", "temperature": 0, "messages": [{"role": "user", "content": question}]}
            answer = requests.post(running.url("/v1/chat/completions"), json=body, timeout=30)
            seen.append(answer.headers["x-gateway-cache"])
            ids.append(answer.headers["x-request-id"])
            wait_until(lambda: store.status()["entries"] >= 1)
        assert seen == ["miss", "hit"]
        # (The store holds the answer under a hash of the request, and the index a vector: the
        # fake's answer does not echo this prompt, so here the canary is nowhere at all.)
        for request_id in ids:
            trace_of(capfire, request_id)
    assert_canary_nowhere(canary, '"gateway.cache.similarity"', capfire, caplog, tmp_path)


def assert_canary_nowhere(
    canary: str, attribute: str, capfire: CaptureLogfire, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """The cache paths' spans carry `attribute` and never the canary; nor do log lines; the audit
    database has a hit and no canary."""
    everything = json.dumps(capfire.exporter.exported_spans_as_dict(), default=str)
    assert attribute in everything and canary not in everything
    formatter = JSONFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    assert not [line for line in lines if canary in line]
    audit = b"".join(p.read_bytes() for p in tmp_path.glob("gateway-audit.sqlite3*"))
    assert b"hit" in audit and canary.encode() not in audit


def fragments(secret: str, size: int = 8) -> set[str]:
    """Every `size`-character window of `secret`: a part of it leaked (a prefix cut short, a suffix, a
    middle) is found as surely as the whole."""
    return {secret[i : i + size] for i in range(0, max(len(secret) - size, 0) + 1)}


def test_no_reasoning_content_in_spans_logs_or_audit(
    tmp_path: Path,
    openai_fake: FakeOpenAI,
    anthropic_fake: FakeAnthropic,
    capfire: CaptureLogfire,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Thinking carries the canary (the fake's thinking restates the prompt's first words), and comes
    with signatures: through Anthropic, OpenAI chat and Responses clients, streamed and not, sent back in
    a second turn (a Responses reasoning item too); neither the canary, nor a signature or reasoning
    item's encrypted_content, nor any 8-character piece of them is in a span, a log line or the audit
    database."""
    caplog.set_level(logging.DEBUG)
    canary = "Tk" + secrets.token_hex(12)
    path = tmp_path / "gateway.yaml"
    path.write_text(gateway_yaml(openai_fake.base_url, anthropic_fake.base_url))
    thinking = {"type": "enabled", "budget_tokens": 1024}
    question = [{"role": "user", "content": f"{canary} weather"}]
    ids: list[str] = []
    secrets_seen: list[str] = []
    with gateway_in_thread(path, env=ENV, logfire_instance=logfire.DEFAULT_LOGFIRE_INSTANCE) as running:
        for stream in (False, True):
            body = {"model": "claude", "max_tokens": 2048, "thinking": thinking, "messages": question}
            answer = requests.post(running.url("/v1/messages"), json={**body, "stream": stream}, timeout=30)
            assert answer.status_code == 200 and canary in answer.text  # in the thinking, and only there
            ids.append(answer.headers["x-request-id"])
            chat_body = {"model": "claude", "messages": question, "reasoning_effort": "low", "stream": stream}
            answer = requests.post(running.url("/v1/chat/completions"), json=chat_body, timeout=30)
            assert answer.status_code == 200 and canary in answer.text
            ids.append(answer.headers["x-request-id"])
            responses_body = {
                "model": "claude",
                "input": question,
                "reasoning": {"effort": "low"},
                "stream": stream,
            }
            answer = requests.post(running.url("/v1/responses"), json=responses_body, timeout=30)
            assert answer.status_code == 200 and canary in answer.text
            ids.append(answer.headers["x-request-id"])
        # A Responses client's reasoning item, sent back in a second turn.
        responses_body = {"model": "claude", "input": question, "reasoning": {"effort": "low"}}
        item = requests.post(running.url("/v1/responses"), json=responses_body, timeout=30).json()["output"][
            0
        ]
        assert item["type"] == "reasoning" and canary in item["content"][0]["text"]
        secrets_seen.append(item["encrypted_content"])
        turns = [*question, item, {"role": "user", "content": "go"}]
        again = requests.post(
            running.url("/v1/responses"), json={**responses_body, "input": turns}, timeout=30
        )
        assert again.status_code == 200
        ids.append(again.headers["x-request-id"])
        first = requests.post(running.url("/v1/messages"), json=body, timeout=30).json()
        block = first["content"][0]
        assert block["type"] == "thinking" and canary in block["thinking"]
        secrets_seen.append(block["signature"])
        history = [
            *question,
            {"role": "assistant", "content": first["content"]},
            {"role": "user", "content": "go"},
        ]
        again = requests.post(running.url("/v1/messages"), json={**body, "messages": history}, timeout=30)
        assert again.status_code == 200
        ids.append(again.headers["x-request-id"])
        for request_id in ids:
            trace_of(capfire, request_id)
        database = tmp_path / "gateway-audit.sqlite3"

        def audited() -> int:
            marks = ",".join("?" * len(ids))
            query = f'SELECT COUNT(*) FROM "audit_records" WHERE request_id IN ({marks})'
            try:
                with sqlite3.connect(database) as connection:
                    return connection.execute(query, ids).fetchone()[0]
            except sqlite3.OperationalError:  # the writer has not created its table yet
                return 0

        wait_until(lambda: audited() == len(ids))
    everything = json.dumps(capfire.exporter.exported_spans_as_dict(), default=str)
    lines = "\n".join(JSONFormatter().format(record) for record in caplog.records)
    audit = b"".join(p.read_bytes() for p in tmp_path.glob("gateway-audit.sqlite3*")).decode("latin-1")
    assert '"event": "request"' in lines or '"event":"request"' in lines
    for secret in (canary, *secrets_seen):
        for piece in fragments(secret):
            assert piece not in everything, f"a piece of reasoning content in a span: {piece!r}"
            assert piece not in lines, f"a piece of reasoning content in a log line: {piece!r}"
            assert piece not in audit, f"a piece of reasoning content in the audit log: {piece!r}"
