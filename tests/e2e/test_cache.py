"""The exact response cache through the real gateway, with both official SDKs against the fakes: a
second identical request is a hit with no upstream call, in both protocols, whole and streamed (the
stream's text and usage equal the first answer's), pass-through and translated; what changes the
answer misses; keys are namespaced unless shared; the client's bypass and TTL headers; an expired
entry; the audit record and the admin API; two gateways sharing a Redis; and the canary: a prompt's
unique string is in the cache store and nowhere else (audit database, log)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import redis

from gateway.testing import Behaviour
from gateway.testing.process import GatewayProcess
from gateway.testing.redis_server import RedisServer
from tests.conftest import wait_until
from tests.e2e.audit_support import audit_database
from tests.e2e.upstreams import GATEWAY_ENV, Upstreams, backends_yaml, fake_upstreams

TEAM, OTHER = "sk-cache-team-0123456789", "sk-cache-other-0123456789"
ENV = {**GATEWAY_ENV, "TEAM_KEY": TEAM, "OTHER_KEY": OTHER}


@pytest.fixture(scope="module")
def up() -> Iterator[Upstreams]:
    with fake_upstreams() as upstreams:
        yield upstreams


def config(up: Upstreams, *, store: str = "memory", shared: bool = False, audit: str = "") -> str:
    exact = "cache: {mode: exact}"
    return f"""
auth:
  client_keys:
    - {{name: team, key: "${{TEAM_KEY}}"}}
    - {{name: other, key: "${{OTHER_KEY}}"}}
backends:
{backends_yaml(up)}
models:
  gpt: {{chain: [{{backend: oa-official, model: gpt-4o-mini}}], {exact}}}
  gpt-cross: {{chain: [{{backend: an, model: claude-sonnet-4-5}}], {exact}}}
  claude: {{chain: [{{backend: an, model: claude-sonnet-4-5}}], {exact}}}
  claude-cross: {{chain: [{{backend: oa-official, model: gpt-4o-mini}}], {exact}}}
  plain: {{chain: [{{backend: oa, model: gpt-4o-mini}}]}}
  deaf: {{chain: [{{backend: oa, model: gpt-4o-mini}}], cache: {{mode: exact, client_control: false}}}}
cache:
  store: "{store}"
  shared_between_keys: {str(shared).lower()}
{audit}
"""


@pytest.fixture(scope="module")
def gateway(gateway_server_module, up: Upstreams) -> GatewayProcess:
    return gateway_server_module(config(up), env=ENV, name="cache.yaml")


def calls(up: Upstreams) -> int:
    return up.openai.stats.total + up.anthropic.stats.total


def oai(gateway: GatewayProcess, key: str = TEAM) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url("/v1"), api_key=key, max_retries=0)


def claude(gateway: GatewayProcess, key: str = TEAM) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.base_url, api_key=key, max_retries=0)


def unique(text: str = "Tell me about") -> str:
    return f"{text} {secrets.token_hex(6)}"


def entries(gateway: GatewayProcess) -> int:
    return gateway.admin("GET", "/admin/api/cache").json()["store"]["entries"]


# -- one exchange per protocol and form: (headers, text, usage) ---------------------------------------


def openai_call(client: openai.OpenAI, model: str, prompt: str | list, stream: bool, **extra: Any) -> tuple:
    messages = prompt
    if isinstance(prompt, str):
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}]
    extra.setdefault("temperature", 0)
    if not stream:
        raw = client.chat.completions.with_raw_response.create(model=model, messages=messages, **extra)
        answer = raw.parse()
        usage = (answer.usage.prompt_tokens, answer.usage.completion_tokens)
        return raw.headers, answer.choices[0].message.content, usage
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True}, **extra
    )
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    [final] = [c.usage for c in chunks if c.usage]
    pieces = sum(1 for c in chunks if c.choices and c.choices[0].delta.content)
    return raw.headers, text, (final.prompt_tokens, final.completion_tokens), pieces


def anthropic_call(client: anthropic.Anthropic, model: str, prompt: str, stream: bool, **extra: Any) -> tuple:
    # (this SDK version has no `temperature` argument: it goes in the body as sent)
    args = {
        "model": model,
        "max_tokens": 64,
        "system": "Be brief.",
        "extra_body": {"temperature": 0},
        **extra,
    }
    messages = [{"role": "user", "content": prompt}]
    if not stream:
        raw = client.messages.with_raw_response.create(messages=messages, **args)
        message = raw.parse()
        text = "".join(b.text for b in message.content if b.type == "text")
        return raw.headers, text, (message.usage.input_tokens, message.usage.output_tokens)
    raw = client.messages.with_raw_response.create(messages=messages, stream=True, **args)
    events = list(raw.parse())
    text = "".join(
        e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    [start] = [e for e in events if e.type == "message_start"]
    [delta] = [e for e in events if e.type == "message_delta"]
    pieces = sum(1 for e in events if e.type == "content_block_delta")
    # The final count: `message_delta` repeats the input tokens when `message_start` could not know them.
    prompt_tokens = getattr(delta.usage, "input_tokens", None) or start.message.usage.input_tokens
    return raw.headers, text, (prompt_tokens, delta.usage.output_tokens), pieces


CASES = [
    ("openai", "gpt"),  # pass-through
    ("openai", "gpt-cross"),  # translated: an Anthropic backend
    ("anthropic", "claude"),  # pass-through
    ("anthropic", "claude-cross"),  # translated: an OpenAI backend
]


@pytest.mark.parametrize(("protocol", "model"), CASES)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_second_identical_request_is_a_hit_with_no_upstream_call(
    gateway: GatewayProcess, up: Upstreams, protocol: str, model: str, stream: bool
) -> None:
    call = openai_call if protocol == "openai" else anthropic_call
    client = oai(gateway) if protocol == "openai" else claude(gateway)
    prompt = unique()
    before, stored = calls(up), entries(gateway)
    first = call(client, model, prompt, stream)
    assert first[0]["x-gateway-cache"] == "miss" and calls(up) == before + 1
    wait_until(lambda: entries(gateway) == stored + 1)  # a stream is stored once it has ended
    # The other form of the same request is the same entry: a whole answer replays as a stream.
    for form in (stream, not stream):
        again = call(client, model, prompt, form)
        headers = again[0]
        assert headers["x-gateway-cache"] == "hit" and int(headers["age"]) >= 0
        assert headers["x-gateway-attempts"] == "0" and "x-gateway-backend" not in headers
        assert again[1:3] == first[1:3]  # the same text and usage
        if form:
            assert again[3] > 2  # chunked like a real stream, not one event
    assert calls(up) == before + 1


def test_what_changes_the_answer_misses(gateway: GatewayProcess, up: Upstreams) -> None:
    client = oai(gateway)
    prompt = unique()
    openai_call(client, "gpt", prompt, False)
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    before = calls(up)
    for extra in ({"temperature": 0, "seed": 7}, {"tools": [tool], "tool_choice": "none"}, {"max_tokens": 5}):
        assert openai_call(client, "gpt", prompt, False, **extra)[0]["x-gateway-cache"] == "miss"
    messages = [{"role": "system", "content": "Be long."}, {"role": "user", "content": prompt}]
    raw = client.chat.completions.with_raw_response.create(model="gpt", messages=messages, temperature=0)
    assert raw.headers["x-gateway-cache"] == "miss"
    assert calls(up) == before + 4
    # Not deterministic: not cached at all.
    assert openai_call(client, "gpt", prompt, False, temperature=0.7)[0]["x-gateway-cache"] == "off"
    assert openai_call(client, "gpt", prompt, False, temperature=0.7)[0]["x-gateway-cache"] == "off"
    # A model whose cache is off.
    assert openai_call(client, "plain", prompt, False)[0]["x-gateway-cache"] == "off"
    assert openai_call(client, "plain", prompt, False)[0]["x-gateway-cache"] == "off"
    assert calls(up) == before + 8


def test_another_key_misses(gateway: GatewayProcess, up: Upstreams) -> None:
    prompt = unique()
    openai_call(oai(gateway), "gpt", prompt, False)
    assert openai_call(oai(gateway, OTHER), "gpt", prompt, False)[0]["x-gateway-cache"] == "miss"
    assert openai_call(oai(gateway, OTHER), "gpt", prompt, False)[0]["x-gateway-cache"] == "hit"


def test_keys_share_entries_when_the_config_says_so(gateway_server, up: Upstreams) -> None:
    shared = gateway_server(config(up, shared=True), env=ENV, name="shared.yaml")
    prompt = unique()
    assert openai_call(oai(shared), "gpt", prompt, False)[0]["x-gateway-cache"] == "miss"
    assert openai_call(oai(shared, OTHER), "gpt", prompt, False)[0]["x-gateway-cache"] == "hit"


def test_the_clients_bypass_and_ttl_headers(gateway: GatewayProcess, up: Upstreams) -> None:
    client = oai(gateway)
    prompt = unique()
    for header in ({"cache-control": "no-cache"}, {"x-gateway-cache": "bypass"}):
        assert (
            openai_call(client, "gpt", prompt, False, extra_headers=header)[0]["x-gateway-cache"] == "bypass"
        )
    assert openai_call(client, "gpt", prompt, False)[0]["x-gateway-cache"] == "miss"  # bypass stored nothing
    assert openai_call(client, "gpt", prompt, False)[0]["x-gateway-cache"] == "hit"
    bypassed = openai_call(client, "gpt", prompt, False, extra_headers={"cache-control": "no-cache"})
    assert bypassed[0]["x-gateway-cache"] == "bypass"
    # A model that ignores the client's headers.
    prompt = unique()
    openai_call(client, "deaf", prompt, False)
    ignored = openai_call(client, "deaf", prompt, False, extra_headers={"cache-control": "no-cache"})
    assert ignored[0]["x-gateway-cache"] == "hit"


def test_an_expired_entry_misses(gateway: GatewayProcess, up: Upstreams) -> None:
    client = oai(gateway)
    prompt = unique()
    first = openai_call(client, "gpt", prompt, False, extra_headers={"x-gateway-cache-ttl": "1"})
    stored_at = time.monotonic()
    assert first[0]["x-gateway-cache"] == "miss"
    assert openai_call(client, "gpt", prompt, False)[0]["x-gateway-cache"] == "hit"
    time.sleep(max(0.0, stored_at + 1.2 - time.monotonic()))  # the entry's lifetime passes (not a sync)
    assert openai_call(client, "gpt", prompt, False)[0]["x-gateway-cache"] == "miss"


def test_admin_status_and_clear(gateway: GatewayProcess, up: Upstreams) -> None:
    client = oai(gateway)
    prompts = [unique(), unique()]

    def counted() -> dict[str, int]:
        return gateway.admin("GET", "/admin/api/cache").json()["requests"]

    before = counted()
    for prompt in prompts:
        openai_call(client, "gpt", prompt, False)
    anthropic_call(claude(gateway), "claude", prompts[0], False)
    # Three new prompts: three misses counted (when each request ended), no hit.
    wait_until(lambda: counted()["miss"] == before["miss"] + 3)
    assert counted()["hit"] == before["hit"]
    status = gateway.admin("GET", "/admin/api/cache").json()
    assert status["store"]["store"] == "memory"
    assert {"name": "plain", "mode": "off"} in status["models"]
    assert gateway.admin("POST", "/admin/api/cache/clear", json={"model": "nope"}).status_code == 422
    cleared = gateway.admin("POST", "/admin/api/cache/clear?model=claude").json()
    assert cleared["cleared"] >= 1 and cleared["model"] == "claude"
    assert anthropic_call(claude(gateway), "claude", prompts[0], False)[0]["x-gateway-cache"] == "miss"
    assert openai_call(client, "gpt", prompts[0], False)[0]["x-gateway-cache"] == "hit"  # not gpt's
    assert gateway.admin("POST", "/admin/api/cache/clear").json()["cleared"] >= 2
    assert entries(gateway) == 0
    assert openai_call(client, "gpt", prompts[1], False)[0]["x-gateway-cache"] == "miss"
    assert requests_post_as_client(gateway).status_code == 403


def requests_post_as_client(gateway: GatewayProcess) -> Any:
    import requests

    return requests.post(
        gateway.url("/admin/api/cache/clear"), headers={"authorization": f"Bearer {TEAM}"}, timeout=10
    )


def test_the_audit_record_says_hit_and_what_it_saved(gateway_server, up: Upstreams, tmp_path: Path) -> None:
    with audit_database("sqlite", tmp_path) as db:
        audited = gateway_server(config(up, audit=f'audit: {{database_url: "{db.url()}"}}'), env=ENV)
        prompt = unique()
        miss = openai_call(oai(audited), "gpt", prompt, False)
        hit = openai_call(oai(audited), "gpt", prompt, False)
        assert hit[0]["x-gateway-cost-usd"] == "0"
        bypass = openai_call(oai(audited), "gpt", prompt, False, extra_headers={"cache-control": "no-cache"})
        off = openai_call(oai(audited), "plain", prompt, False)
        wait_until(lambda: db.count() >= 4, timeout=10, interval=0.1)
        rows = {row["request_id"]: row for row in db.rows()}
        first, second = rows[miss[0]["x-request-id"]], rows[hit[0]["x-request-id"]]
        assert first["cache"] == "miss" and first["saved_tokens"] is None and first["cost_usd"] > 0
        assert second["cache"] == "hit" and second["attempts"] == 0 and second["backend"] is None
        assert second["saved_tokens"] == sum(miss[2]) and second["cost_usd"] == 0
        assert second["saved_usd"] == pytest.approx(first["cost_usd"])
        assert rows[bypass[0]["x-request-id"]]["cache"] == "bypass"
        assert rows[off[0]["x-request-id"]]["cache"] == "off"
        metrics = audited.admin("GET", "/metrics").text
        assert 'gateway_cache_requests_total{model="gpt",result="hit"} 1.0' in metrics
        assert "gateway_cache_saved_tokens_total" in metrics and "gateway_cache_saved_usd_total" in metrics


def test_two_gateways_sharing_redis_serve_each_others_entries(
    gateway_server, up: Upstreams, redis_server: RedisServer
) -> None:
    text = config(up, store=redis_server.url())
    first = gateway_server(text, env=ENV, name="first.yaml")
    second = gateway_server(text, env=ENV, name="second.yaml")
    prompt = unique()
    before = calls(up)
    store = redis.Redis.from_url(redis_server.url())
    try:
        assert openai_call(oai(first), "gpt", prompt, True)[0]["x-gateway-cache"] == "miss"
        wait_until(lambda: len(store.keys("gateway:cache:gpt:*")) == 1)
        hit = openai_call(oai(second), "gpt", prompt, True)
        assert hit[0]["x-gateway-cache"] == "hit" and calls(up) == before + 1
        assert 0 < store.pttl(store.keys("gateway:cache:gpt:*")[0]) <= 3600 * 1000
        assert second.admin("POST", "/admin/api/cache/clear").json() == {
            "cleared": 1,
            "model": None,
            "store": "redis",
        }
        assert openai_call(oai(first), "gpt", prompt, False)[0]["x-gateway-cache"] == "miss"
    finally:
        store.close()


def test_a_redis_that_is_down_makes_misses_not_failures(
    gateway_server, up: Upstreams, redis_server: RedisServer
) -> None:
    gateway = gateway_server(config(up, store=redis_server.url()), env=ENV)
    redis_server.stop()
    prompt = unique()
    for _ in range(2):
        headers, text, _ = openai_call(oai(gateway), "gpt", prompt, False)
        assert headers["x-gateway-cache"] == "miss" and text
    assert gateway.admin("GET", "/admin/api/cache").json()["store"]["up"] is False


def test_the_canary_is_in_the_cache_store_only(
    gateway_server, up: Upstreams, redis_server: RedisServer, tmp_path: Path
) -> None:
    """A prompt's unique string, through every cache path (miss, hit, stream miss and hit, both
    protocols, bypass): in the cache store (Redis), nowhere in the audit database or the log."""
    canary = "Cz" + secrets.token_hex(8)
    with audit_database("sqlite", tmp_path) as db:
        audit = f'audit: {{database_url: "{db.url()}"}}'
        gateway = gateway_server(config(up, store=redis_server.url(), audit=audit), env=ENV)
        exchanges = 0
        for stream in (False, True):
            conversation = canary_conversation(canary, stream)
            for _ in range(2):
                assert canary in openai_call(oai(gateway), "gpt", conversation, stream)[1]  # answered
                anthropic_call(claude(gateway), "claude", f"Find {canary} please {stream}", stream)
                exchanges += 2
            bypass = {"x-gateway-cache": "bypass"}
            openai_call(oai(gateway), "gpt", conversation, stream, extra_headers=bypass)
            exchanges += 1
        wait_until(lambda: db.count() >= exchanges, timeout=10, interval=0.1)
        assert {row["cache"] for row in db.rows()} == {"hit", "miss", "bypass"}
        store = redis.Redis.from_url(redis_server.url())
        try:
            stored = b"".join(store.get(name) or b"" for name in store.keys("*"))
        finally:
            store.close()
        assert canary.encode() in stored
        gateway.stop()
        assert canary not in db.everything_as_text()
        assert canary not in gateway.log()


def canary_conversation(canary: str, variant: object) -> list[dict[str, Any]]:
    """A conversation whose every part holds the canary; the fakes echo a tool result's first 20
    characters, so the answer (what the cache stores) holds it too."""
    arguments = f'{{"q": "{canary}"}}'
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": arguments}}
    return [
        {"role": "system", "content": f"Secret system prompt {canary} {variant}"},
        {"role": "user", "content": f"Find {canary} please"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": canary},
    ]


def test_a_reload_that_turns_a_models_cache_off_stops_serving_from_it_at_once(
    gateway_server, up: Upstreams
) -> None:
    text = config(up)
    gateway = gateway_server(text, env=ENV, name="reloaded.yaml")
    prompt = unique()
    openai_call(oai(gateway), "gpt", prompt, False)
    assert openai_call(oai(gateway), "gpt", prompt, False)[0]["x-gateway-cache"] == "hit"
    line = "  gpt: {chain: [{backend: oa-official, model: gpt-4o-mini}], cache: {mode: exact}}"
    assert line in text
    gateway.config_path.write_text(text.replace(line, line.replace("mode: exact", "mode: off")))
    assert gateway.admin("POST", "/admin/api/config/reload").json()["outcome"] in ("applied", "unchanged")
    before = calls(up)
    assert openai_call(oai(gateway), "gpt", prompt, False)[0]["x-gateway-cache"] == "off"
    assert calls(up) == before + 1
    # Turned on again: the entry (the store is unchanged, so it survived) is served again.
    gateway.config_path.write_text(text)
    assert gateway.admin("POST", "/admin/api/config/reload").json()["outcome"] in ("applied", "unchanged")
    assert openai_call(oai(gateway), "gpt", prompt, False)[0]["x-gateway-cache"] == "hit"


@pytest.mark.parametrize(("model", "fake"), [("gpt", "openai"), ("gpt-cross", "anthropic")])
def test_a_stream_that_breaks_off_stores_nothing(
    gateway: GatewayProcess, up: Upstreams, model: str, fake: str
) -> None:
    server = getattr(up, fake)
    kept = server.behaviour
    prompt = unique()
    server.behaviour = Behaviour(api_key=kept.api_key, drop_after_chunks=3)
    try:
        with pytest.raises(openai.APIError):
            openai_call(oai(gateway), model, prompt, True)
    finally:
        server.behaviour = kept
    assert openai_call(oai(gateway), model, prompt, False)[0]["x-gateway-cache"] == "miss"


def test_a_hit_counts_as_a_request_for_rate_limits(gateway_server, up: Upstreams) -> None:
    line = '- {name: team, key: "${TEAM_KEY}"}'
    text = config(up)
    assert line in text
    limited = gateway_server(text.replace(line, line[:-1] + ", limits: {requests_per_minute: 3}}"), env=ENV)
    prompt = unique()
    results = [openai_call(oai(limited), "gpt", prompt, False)[0]["x-gateway-cache"] for _ in range(3)]
    assert results == ["miss", "hit", "hit"]
    with pytest.raises(openai.RateLimitError):
        openai_call(oai(limited), "gpt", prompt, False)
