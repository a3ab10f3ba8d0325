"""The semantic response cache through the real gateway, with the official SDKs against the fakes (the
fake OpenAI's `text-embedding-semantic` model makes paraphrases close): a paraphrase is a hit above
the model's `similarity` with no upstream chat call, and a miss below it; a different system prompt
misses; another client key misses unless keys share entries; an embedding model that is down makes
the lookup a miss and the request is still served."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from gateway.testing.process import GatewayProcess
from tests.conftest import wait_until
from tests.e2e.upstreams import GATEWAY_ENV, Upstreams, backends_yaml, fake_upstreams

TEAM, OTHER = "sk-semantic-team-0123456789", "sk-semantic-other-0123456789"
ENV = {**GATEWAY_ENV, "TEAM_KEY": TEAM, "OTHER_KEY": OTHER}
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def up() -> Iterator[Upstreams]:
    with fake_upstreams() as upstreams:
        yield upstreams


def config(up: Upstreams, *, shared: bool = False, store: str = "memory") -> str:
    def semantic(similarity: float, embedder: str = "embed") -> str:
        return f"cache: {{mode: semantic, embedding_model: {embedder}, similarity: {similarity}}}"

    return f"""
auth:
  client_keys:
    - {{name: team, key: "${{TEAM_KEY}}"}}
    - {{name: other, key: "${{OTHER_KEY}}"}}
backends:
{backends_yaml(up)}
  dead: {{type: openai_compatible, base_url: "http://127.0.0.1:9/v1", api_key: "${{FAKE_KEY}}"}}
models:
  gpt: {{chain: [{{backend: oa, model: gpt-4o-mini}}], {semantic(0.8)}}}
  claude: {{chain: [{{backend: an, model: claude-sonnet-4-5}}], {semantic(0.8)}}}
  strict: {{chain: [{{backend: oa, model: gpt-4o-mini}}], {semantic(0.999)}}}
  orphan: {{chain: [{{backend: oa, model: gpt-4o-mini}}], {semantic(0.8, "embed-down")}}}
  embed: {{chain: [{{backend: oa, model: text-embedding-semantic}}]}}
  embed-down: {{chain: [{{backend: dead, model: text-embedding-semantic}}]}}
cache:
  store: "{store}"
  shared_between_keys: {str(shared).lower()}
"""


@pytest.fixture(scope="module")
def gateway(gateway_server_module, up: Upstreams) -> GatewayProcess:
    return gateway_server_module(config(up), env=ENV, name="semantic.yaml")


def chat_calls(up: Upstreams) -> int:
    return up.openai.stats.requests.get(CHAT, 0) + up.anthropic.stats.requests.get("/v1/messages", 0)


def ask(
    gateway: GatewayProcess, model: str, question: str, *, system: str = "Be brief.", key: str = TEAM
) -> Any:
    client = openai.OpenAI(base_url=gateway.url("/v1"), api_key=key, max_retries=0)
    return client.chat.completions.with_raw_response.create(
        model=model,
        temperature=0,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
    )


def topic() -> str:
    """A word of its own per test, so tests never meet each other's entries."""
    return "zq" + secrets.token_hex(4)


def text(raw: Any) -> str:
    return raw.parse().choices[0].message.content


def test_a_paraphrase_hits_above_the_threshold_with_no_upstream_chat_call(
    gateway: GatewayProcess, up: Upstreams
) -> None:
    word = topic()
    first = ask(gateway, "gpt", f"What is the capital of {word}?")
    assert first.headers["x-gateway-cache"] == "miss"
    chats = chat_calls(up)
    embeddings = up.openai.stats.requests.get("/v1/embeddings", 0)
    hit = ask(gateway, "gpt", f"what's the capital city of {word}")
    assert hit.headers["x-gateway-cache"] == "hit"
    assert 0.8 <= float(hit.headers["x-gateway-cache-similarity"]) < 1.0
    assert hit.headers["x-gateway-attempts"] == "0" and "x-gateway-backend" not in hit.headers
    assert text(hit) == text(first)
    request_id = hit.headers["x-request-id"]

    def logged() -> list[dict]:
        # The request's log line is written once the answer has gone out: it may come a moment later.
        return [
            json.loads(line)
            for line in gateway.log().splitlines()
            if request_id in line and '"event": "request"' in line.replace('":"', '": "')
        ]

    wait_until(logged, timeout=10)
    [line] = logged()
    assert line["cache"] == "hit" and line["cache_similarity"] == pytest.approx(
        float(hit.headers["x-gateway-cache-similarity"]), abs=1e-4
    )
    assert chat_calls(up) == chats  # no upstream chat call on the hit
    assert up.openai.stats.requests["/v1/embeddings"] == embeddings + 1  # the paraphrase was embedded
    # The same request again is an exact hit: no embedding needed, no similarity header.
    again = ask(gateway, "gpt", f"What is the capital of {word}?")
    assert again.headers["x-gateway-cache"] == "hit" and "x-gateway-cache-similarity" not in again.headers
    assert up.openai.stats.requests["/v1/embeddings"] == embeddings + 1


def test_an_unrelated_question_misses(gateway: GatewayProcess, up: Upstreams) -> None:
    word = topic()
    ask(gateway, "gpt", f"What is the capital of {word}?")
    chats = chat_calls(up)
    other = ask(gateway, "gpt", f"How do I bake {word} bread at home?")
    assert other.headers["x-gateway-cache"] == "miss" and chat_calls(up) == chats + 1


def test_a_paraphrase_misses_below_the_threshold(gateway: GatewayProcess, up: Upstreams) -> None:
    word = topic()
    ask(gateway, "strict", f"What is the capital of {word}?")
    chats = chat_calls(up)
    para = ask(gateway, "strict", f"what's the capital city of {word}")
    assert para.headers["x-gateway-cache"] == "miss" and chat_calls(up) == chats + 1
    assert "x-gateway-cache-similarity" not in para.headers


def test_a_different_system_prompt_misses(gateway: GatewayProcess, up: Upstreams) -> None:
    word = topic()
    ask(gateway, "gpt", f"What is the capital of {word}?")
    para = ask(gateway, "gpt", f"what's the capital city of {word}", system="Answer at length.")
    assert para.headers["x-gateway-cache"] == "miss"


def test_another_key_misses(gateway: GatewayProcess, up: Upstreams) -> None:
    word = topic()
    ask(gateway, "gpt", f"What is the capital of {word}?")
    para = ask(gateway, "gpt", f"what's the capital city of {word}", key=OTHER)
    assert para.headers["x-gateway-cache"] == "miss"


def test_the_anthropic_surface_hits_a_paraphrase_too(gateway: GatewayProcess, up: Upstreams) -> None:
    word = topic()
    client = anthropic.Anthropic(base_url=gateway.base_url, api_key=TEAM, max_retries=0)

    def call(question: str) -> Any:
        return client.messages.with_raw_response.create(
            model="claude",
            max_tokens=64,
            system="Be brief.",
            messages=[{"role": "user", "content": question}],
            extra_body={"temperature": 0},
        )

    first = call(f"What is the capital of {word}?")
    assert first.headers["x-gateway-cache"] == "miss"
    chats = chat_calls(up)
    hit = call(f"what's the capital city of {word}")
    assert hit.headers["x-gateway-cache"] == "hit" and chat_calls(up) == chats
    assert hit.parse().content[0].text == first.parse().content[0].text


def test_the_embedding_model_down_is_a_miss_and_the_request_is_served(
    gateway: GatewayProcess, up: Upstreams
) -> None:
    word = topic()
    first = ask(gateway, "orphan", f"What is the capital of {word}?")
    assert first.headers["x-gateway-cache"] == "miss" and text(first)
    chats = chat_calls(up)
    para = ask(gateway, "orphan", f"what's the capital city of {word}")
    assert para.status_code == 200 and para.headers["x-gateway-cache"] == "miss"
    assert chat_calls(up) == chats + 1
    # The exact entry was still stored: the same request again is a hit without any embedding.
    assert ask(gateway, "orphan", f"What is the capital of {word}?").headers["x-gateway-cache"] == "hit"
    status = gateway.admin("GET", "/admin/api/cache").json()
    assert status["embedding_errors"] >= 2


def test_keys_share_paraphrases_when_the_cache_is_shared(gateway_server, up: Upstreams) -> None:
    shared = gateway_server(config(up, shared=True), env=ENV, name="semantic-shared.yaml")
    word = topic()
    ask(shared, "gpt", f"What is the capital of {word}?")
    chats = chat_calls(up)
    para = ask(shared, "gpt", f"what's the capital city of {word}", key=OTHER)
    assert para.headers["x-gateway-cache"] == "hit" and chat_calls(up) == chats


def test_with_redis_entries_are_shared_and_the_vectors_are_per_process(
    gateway_server, up: Upstreams, redis_server
) -> None:
    text = config(up, store=redis_server.url())
    first = gateway_server(text, env=ENV, name="semantic-first.yaml")
    second = gateway_server(text, env=ENV, name="semantic-second.yaml")
    word = topic()
    ask(first, "gpt", f"What is the capital of {word}?")
    assert ask(first, "gpt", f"what's the capital city of {word}").headers["x-gateway-cache"] == "hit"
    # The other instance has the entry (an exact repeat hits) but not the vector (a paraphrase misses).
    assert ask(second, "gpt", f"What is the capital of {word}?").headers["x-gateway-cache"] == "hit"
    assert ask(second, "gpt", f"what is the capital city of {word}?").headers["x-gateway-cache"] == "miss"
