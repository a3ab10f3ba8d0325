"""Providers through the real server: the official OpenAI SDK to an `azure_openai` backend (chat, a
stream, embeddings) at the fake Azure resource; Azure's content filter as a 400 problem naming the
categories, never failed over; a 429 from Azure failed over to the next target; and an
`openai_compatible` preset's refused field: 400 naming the field and the vendor, or the target skipped
as `incapable` when the chain has another."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
import requests

from gateway.testing import Behaviour, FakeAzureOpenAI, FakeOpenAI
from gateway.testing.fake_azure_openai import AZURE_API_VERSION
from gateway.testing.inprocess import InProcessGateway, gateway_in_thread
from tests.e2e.upstreams import FAKE_KEY, assert_problem

USER = [{"role": "user", "content": "Tell me about the weather in Lisbon today"}]
FAILING = """headers: {x-fake-behaviour: '{"status": 429}'}"""


def config(azure: FakeAzureOpenAI, oa: FakeOpenAI) -> str:
    key = '"${FAKE_KEY}"'
    common = f'base_url: "{azure.base_url}", api_version: "{AZURE_API_VERSION}", api_key: {key}'
    return f"""
backends:
  az: {{type: azure_openai, {common}}}
  az-busy: {{type: azure_openai, {common}, {FAILING}}}
  plain: {{type: openai_compatible, base_url: "{oa.base_url}", api_key: {key}}}
  groq: {{type: openai_compatible, provider: groq, base_url: "{oa.base_url}", api_key: {key}}}
models:
  azure: {{chain: [{{backend: az, model: gpt-4o-deployment}}]}}
  azure-embed: {{chain: [{{backend: az, model: embedding-deployment}}]}}
  azure-then-plain: {{chain: [{{backend: az, model: gpt-4o-deployment}}, {{backend: plain, model: gpt-4o}}]}}
  busy-azure-then-plain: {{chain: [{{backend: az-busy, model: d}}, {{backend: plain, model: gpt-4o}}]}}
  groq-only: {{chain: [{{backend: groq, model: llama-3.3-70b}}]}}
  groq-then-plain: {{chain: [{{backend: groq, model: llama-3.3-70b}}, {{backend: plain, model: gpt-4o}}]}}
failover:
  retry_on: [http_429, http_5xx, connect_error, timeout, overloaded]
reload: {{watch: false}}
audit: {{enabled: false}}
"""


@dataclass(frozen=True)
class Running:
    gateway: InProcessGateway
    client: openai.OpenAI
    azure: FakeAzureOpenAI
    oa: FakeOpenAI


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    behaviour = Behaviour(api_key=FAKE_KEY)
    with FakeAzureOpenAI.in_thread(behaviour) as azure, FakeOpenAI.in_thread(behaviour) as oa:
        path = Path(tmp_path_factory.mktemp("providers")) / "gateway.yaml"
        path.write_text(config(azure, oa))
        with gateway_in_thread(path, env={"FAKE_KEY": FAKE_KEY}) as gateway:
            client = openai.OpenAI(base_url=gateway.url("/v1"), api_key="x", max_retries=0, timeout=30)
            yield Running(gateway, client, azure, oa)
            client.close()


@pytest.fixture
def fresh(running: Running) -> Iterator[Running]:
    """The fakes as configured: no filter, counters zeroed."""
    running.azure.prompt_filter = None
    running.azure.filter_completion = False
    running.azure.seen.clear()
    running.azure.reset_stats()
    running.oa.reset_stats()
    yield running
    running.azure.prompt_filter = None
    running.azure.filter_completion = False


def test_the_openai_sdk_chats_with_an_azure_deployment(fresh: Running) -> None:
    raw = fresh.client.chat.completions.with_raw_response.create(model="azure", messages=USER)  # type: ignore[arg-type]
    answer = raw.parse()
    assert answer.choices[0].finish_reason == "stop" and answer.choices[0].message.content
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    assert raw.headers["x-gateway-backend"] == "az"
    [seen] = fresh.azure.seen
    assert seen.path == "/openai/deployments/gpt-4o-deployment/chat/completions"
    assert (seen.api_version, seen.credential) == (AZURE_API_VERSION, "api-key")


def test_the_openai_sdk_streams_from_an_azure_deployment(fresh: Running) -> None:
    chunks = list(
        fresh.client.chat.completions.create(
            model="azure",
            messages=USER,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_the_openai_sdk_embeds_with_an_azure_deployment(fresh: Running) -> None:
    result = fresh.client.embeddings.create(model="azure-embed", input=["one", "two"])
    assert len(result.data) == 2 and len(result.data[0].embedding) > 0
    assert fresh.azure.seen[-1].path == "/openai/deployments/embedding-deployment/embeddings"


def test_the_content_filter_is_a_problem_naming_the_categories_and_not_failed_over(fresh: Running) -> None:
    fresh.azure.prompt_filter = {"violence": "high"}
    with pytest.raises(openai.BadRequestError) as raised:
        fresh.client.chat.completions.create(model="azure-then-plain", messages=USER)  # type: ignore[arg-type]
    body = assert_problem(raised.value.response, 400, sdk_error=raised.value)
    assert body["type"] == "/problems/content-filter"
    assert body["categories"] == ["violence (high)"]
    assert "content filter" in body["detail"] and "Lisbon" not in body["detail"]
    assert raised.value.code == "content-filter"
    assert fresh.oa.stats.total == 0  # the prompt's fault: the next target was not tried


def test_a_filtered_answer_passes_its_finish_reason(fresh: Running) -> None:
    fresh.azure.filter_completion = True
    answer = fresh.client.chat.completions.create(model="azure", messages=USER)  # type: ignore[arg-type]
    assert answer.choices[0].finish_reason == "content_filter"
    assert answer.choices[0].message.content is None


def test_a_429_from_azure_fails_over_to_the_next_target(fresh: Running) -> None:
    raw = fresh.client.chat.completions.with_raw_response.create(
        model="busy-azure-then-plain",
        messages=USER,  # type: ignore[arg-type]
    )
    assert raw.parse().choices[0].message.content
    assert (raw.headers["x-gateway-backend"], raw.headers["x-gateway-attempts"]) == ("plain", "2")
    assert fresh.azure.stats.injected_failures == 1 and fresh.oa.stats.total == 1


def test_a_field_the_vendor_refuses_is_a_400_naming_it(fresh: Running) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        fresh.client.chat.completions.create(model="groq-only", messages=USER, n=2)  # type: ignore[arg-type]
    body = assert_problem(raised.value.response, 400, sdk_error=raised.value)
    assert body["type"] == "/problems/unsupported-capability"
    assert (body["capability"], body["field"]) == ("n", "n")
    assert "Groq" in body["detail"]
    assert raised.value.param == "n"
    assert fresh.oa.stats.total == 0  # refused before anything was sent


def test_a_target_whose_vendor_refuses_a_field_is_skipped_as_incapable(fresh: Running) -> None:
    response = requests.post(
        fresh.gateway.url("/v1/chat/completions"),
        json={"model": "groq-then-plain", "messages": USER, "logprobs": True},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-backend"] == "plain"
    assert response.headers["x-gateway-attempts"] == "1"  # a skip is not an attempt
    assert fresh.oa.stats.total == 1
