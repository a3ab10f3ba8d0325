"""What each request costs, through the real gateway with the fake upstreams reporting every token kind
(plain input, cache reads, cache writes, output): exact to the picodollar against the same sum done in
decimal, the same whether the answer was passed through or translated, streamed or whole; unknown
prices give no cost (null, no header), never a guess; local models are free unless priced; failed
attempts the upstream billed count.

The gateway runs in this process so that the test reads each request's trail, which the audit record,
the log line, the span and the metric are built from (the last section checks those on `gateway serve`).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from gateway.pricing.table import PRICES_PATH
from gateway.protocol.canonical import Usage
from gateway.routing.trail import RequestTrail
from gateway.testing import Behaviour, FakeAnthropic, FakeOpenAI, count_tokens
from gateway.testing.inprocess import InProcessGateway, gateway_in_thread
from gateway.testing.process import GatewayProcess
from tests.conftest import wait_until
from tests.e2e.test_usage_paths import TrailRecorder

PROMPT = "Which of the old lighthouses along this coast still guide ships at night"
PROMPT_TOKENS = count_tokens(PROMPT)
REPLY_TOKENS = 16  # the fakes' reply length (Behaviour.reply_tokens)
CACHE_READ, CACHE_WRITE = 5, 3
CACHING = Behaviour(cached_tokens=CACHE_READ, cache_creation_tokens=CACHE_WRITE)
#: What each upstream reports for PROMPT (OpenAI reports no cache writes).
USAGE = {
    "openai": Usage(PROMPT_TOKENS, REPLY_TOKENS, cached_tokens=CACHE_READ),
    "anthropic": Usage(
        PROMPT_TOKENS, REPLY_TOKENS, cached_tokens=CACHE_READ, cache_creation_tokens=CACHE_WRITE
    ),
}
#: The upstream model of each public model, priced by the table shipped with the gateway.
SHIPPED = {"openai": "gpt-4o-mini", "anthropic": "claude-sonnet-4-5"}
MODEL = {"openai": "gpt", "anthropic": "claude"}
COST_HEADER = "x-gateway-cost-usd"


def shipped_price(provider: str, model: str) -> dict[str, Decimal]:
    """A model's price as written in the shipped file, read here on its own (not through gateway code)."""
    entry = json.loads(PRICES_PATH.read_text())["providers"][provider][model]
    plain = Decimal(str(entry["input"]))
    return {
        "input": plain,
        "output": Decimal(str(entry["output"])),
        "cached_input": Decimal(str(entry.get("cached_input", entry["input"]))),
        "cache_write": Decimal(str(entry.get("cache_write", entry["input"]))),
    }


def cost_of(price: dict[str, Decimal], usage: Usage) -> Decimal:
    """USD, in decimal: each token kind at its own price per million."""
    plain = usage.prompt_tokens - usage.cached_tokens - usage.cache_creation_tokens
    return (
        plain * price["input"]
        + usage.cached_tokens * price["cached_input"]
        + usage.cache_creation_tokens * price["cache_write"]
        + usage.completion_tokens * price["output"]
    ) / Decimal(10**6)


EXPECTED = {
    upstream: cost_of(shipped_price(upstream, SHIPPED[upstream]), USAGE[upstream]) for upstream in USAGE
}
#: `house` on the `own` backend: priced in gateway.yaml only.
HOUSE = {k: Decimal(v) for k, v in {"input": "1.1", "output": "4.4", "cached_input": "0.275"}.items()}
HOUSE["cache_write"] = HOUSE["input"]
#: gpt-4o-mini priced in gateway.yaml over the shipped table.
OVERRIDE = {"input": Decimal("0.2"), "output": Decimal("0.7"), "cached_input": Decimal("0.1")}
OVERRIDE["cache_write"] = OVERRIDE["input"]
LOCAL = {"input": Decimal("0.2"), "output": Decimal("0.8"), "cached_input": Decimal("0.02")}
LOCAL["cache_write"] = LOCAL["input"]


@dataclass(frozen=True)
class Running:
    gateway: InProcessGateway
    recorder: TrailRecorder
    openai: openai.OpenAI
    anthropic: anthropic.Anthropic


def _yaml_price(price: dict[str, Decimal]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in price.items()) + "}"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Running]:
    no_answer = """headers: {x-fake-behaviour: '{"no_answer": true}'}"""
    cut = """headers: {x-fake-behaviour: '{"drop_after_chunks": 3}'}"""
    with FakeOpenAI.in_thread(CACHING) as oa, FakeAnthropic.in_thread(CACHING) as an:
        path = Path(tmp_path_factory.mktemp("cost")) / "gateway.yaml"
        path.write_text(
            f"""
backends:
  oa: {{type: openai, base_url: "{oa.base_url}", api_key: "${{COST_KEY}}"}}
  an: {{type: anthropic, base_url: "{an.base_url}", api_key: "${{COST_KEY}}"}}
  own:
    type: openai_compatible
    base_url: "{oa.base_url}"
    prices: {{house-model: {_yaml_price(HOUSE)}}}
  oa_own:
    type: openai
    base_url: "{oa.base_url}"
    api_key: "${{COST_KEY}}"
    prices: {{gpt-4o-mini: {_yaml_price(OVERRIDE)}}}
  billed: {{type: anthropic, base_url: "{an.base_url}", api_key: "${{COST_KEY}}", {no_answer}}}
  cut: {{type: anthropic, base_url: "{an.base_url}", api_key: "${{COST_KEY}}", {cut}}}
  local: {{type: mlx, path: "{tiny_model}"}}
  local_priced: {{type: mlx, path: "{tiny_model}", prices: {{tiny: {_yaml_price(LOCAL)}}}}}
models:
  gpt: {{chain: [{{backend: oa, model: gpt-4o-mini}}]}}
  claude: {{chain: [{{backend: an, model: claude-sonnet-4-5}}]}}
  house: {{chain: [{{backend: own, model: house-model}}]}}
  gpt-own: {{chain: [{{backend: oa_own, model: gpt-4o-mini}}]}}
  mystery: {{chain: [{{backend: own, model: mystery-model}}]}}
  claude-mystery: {{chain: [{{backend: an, model: claude-mystery}}]}}
  rescued: {{chain: [{{backend: billed, model: claude-sonnet-4-5}}, {{backend: oa, model: gpt-4o-mini}}]}}
  rescued-unknown:
    chain: [{{backend: billed, model: claude-mystery}}, {{backend: oa, model: gpt-4o-mini}}]
  lost: {{chain: [{{backend: billed, model: claude-sonnet-4-5}}]}}
  cut-short: {{chain: [{{backend: cut, model: claude-sonnet-4-5}}]}}
  local: {{chain: [{{backend: local, model: tiny}}]}}
  local-priced: {{chain: [{{backend: local_priced, model: tiny}}]}}
failover:
  circuit_breaker: {{failure_threshold: 1000}}
reload: {{watch: false}}
audit: {{enabled: false}}
"""
        )
        recorder = TrailRecorder()
        with gateway_in_thread(path, trails=recorder, env={"COST_KEY": "k"}) as gateway:
            oai = openai.OpenAI(base_url=gateway.url("/v1"), api_key="x", max_retries=0, timeout=60)
            ant = anthropic.Anthropic(base_url=gateway.base_url, api_key="x", max_retries=0, timeout=60)
            yield Running(gateway, recorder, oai, ant)
            oai.close()
            ant.close()


MESSAGES = [{"role": "user", "content": PROMPT}]
_SEQUENCE = itertools.count()


def ask_openai(running: Running, model: str, stream: bool, request_id: str) -> dict[str, str]:
    """One chat completion; the response headers."""
    api = running.openai.chat.completions.with_raw_response
    tagged = {"x-request-id": request_id}
    if not stream:
        raw = api.create(model=model, messages=MESSAGES, extra_headers=tagged)  # type: ignore[arg-type]
        raw.parse()
        return dict(raw.headers)
    raw = api.create(model=model, messages=MESSAGES, stream=True, extra_headers=tagged)  # type: ignore[arg-type]
    # Read to its end ("length": the generated local model rarely stops by itself).
    assert [c.choices[0].finish_reason for c in raw.parse() if c.choices][-1] in ("stop", "length")
    return dict(raw.headers)


def ask_anthropic(running: Running, model: str, stream: bool, request_id: str) -> dict[str, str]:
    api = running.anthropic.messages.with_raw_response
    tagged = {"x-request-id": request_id}
    raw = api.create(  # type: ignore[call-overload]
        model=model, max_tokens=100, messages=MESSAGES, stream=stream, extra_headers=tagged
    )
    parsed = raw.parse()
    if stream:
        assert [event.type for event in parsed][-1] == "message_stop"
    return dict(raw.headers)


def ask_responses(running: Running, model: str, stream: bool, request_id: str) -> dict[str, str]:
    """One Responses API call (passed through to the `openai` backend, translated for the others)."""
    api = running.openai.responses.with_raw_response
    raw = api.create(model=model, input=PROMPT, stream=stream, extra_headers={"x-request-id": request_id})
    parsed = raw.parse()
    if stream:
        assert [event.type for event in parsed][-1] == "response.completed"
    return dict(raw.headers)


def trail_of(running: Running, request_id: str) -> RequestTrail:
    """The trail of one request (those of earlier requests, if a failed test left any, are skipped)."""
    while True:
        trail = running.recorder.next()
        if trail.request_id == request_id:
            return trail


def ask(
    running: Running, client: str, model: str, stream: bool = False
) -> tuple[RequestTrail, dict[str, str]]:
    request_id = f"cost-{next(_SEQUENCE)}"
    asker = {"openai": ask_openai, "anthropic": ask_anthropic, "responses": ask_responses}[client]
    headers = asker(running, model, stream, request_id)
    return trail_of(running, request_id), headers


def assert_cost(trail: RequestTrail, headers: dict[str, str], expected: Decimal | None) -> None:
    """The trail's cost is exactly `expected` (None: unknown), and so is the header of a whole answer."""
    if expected is None:
        assert trail.cost_usd is None
        assert COST_HEADER not in headers
        return
    assert trail.cost_usd == float(expected), (trail.cost_usd, expected)
    if trail.stream:
        assert COST_HEADER not in headers  # the head left before the usage was known
    else:
        assert Decimal(headers[COST_HEADER]) == expected


#: (upstream, client) pairs answered by pass-through (an `openai` backend takes the Responses API too).
SAME_PROTOCOL = {("openai", "openai"), ("anthropic", "anthropic"), ("openai", "responses")}
PATHS = [
    (u, c, s)
    for u in ("openai", "anthropic")
    for c in ("openai", "anthropic", "responses")
    for s in (False, True)
]


@pytest.mark.parametrize(
    ("upstream", "client", "stream"),
    PATHS,
    ids=[
        f"{u}-upstream-{'passthrough' if (u, c) in SAME_PROTOCOL else 'translated'}"
        f"-{'stream' if s else 'whole'}{'-responses-api' if c == 'responses' else ''}"
        for u, c, s in PATHS
    ],
)
def test_the_cost_is_exact_and_the_same_on_every_path(
    running: Running, upstream: str, client: str, stream: bool
) -> None:
    trail, headers = ask(running, client, MODEL[upstream], stream)
    assert (trail.surface, trail.stream, trail.error_type) == (client, stream, None)
    assert trail.usage == USAGE[upstream]
    assert_cost(trail, headers, EXPECTED[upstream])


def test_each_token_kind_is_charged_at_its_own_price(running: Running) -> None:
    """The Anthropic answer holds all four kinds; the expected sum spelled out kind by kind."""
    trail, headers = ask(running, "anthropic", "claude")
    plain = PROMPT_TOKENS - CACHE_READ - CACHE_WRITE
    # claude-sonnet-4-5: 3 input, 0.30 cache read, 3.75 cache write, 15 output (USD per million).
    spelled = (
        plain * Decimal("3")
        + CACHE_READ * Decimal("0.3")
        + CACHE_WRITE * Decimal("3.75")
        + 16 * Decimal("15")
    ) / 10**6
    assert EXPECTED["anthropic"] == spelled
    assert_cost(trail, headers, spelled)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_prices_in_gateway_yaml_are_used_and_override_the_shipped_table(
    running: Running, stream: bool
) -> None:
    trail, headers = ask(running, "openai", "house", stream)
    assert_cost(trail, headers, cost_of(HOUSE, USAGE["openai"]))
    trail, headers = ask(running, "openai", "gpt-own", stream)
    assert_cost(trail, headers, cost_of(OVERRIDE, USAGE["openai"]))
    assert cost_of(OVERRIDE, USAGE["openai"]) != EXPECTED["openai"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(("client", "model"), [("openai", "mystery"), ("anthropic", "claude-mystery")])
def test_an_unknown_price_is_no_cost_not_a_guess(
    running: Running, client: str, model: str, stream: bool
) -> None:
    trail, headers = ask(running, client, model, stream)
    assert trail.http_status == 200 and trail.usage is not None
    assert_cost(trail, headers, None)


def test_a_local_model_is_free_unless_priced(running: Running) -> None:
    trail, headers = ask(running, "openai", "local")
    assert trail.usage is not None and trail.usage.prompt_tokens > 0
    assert trail.cost_usd == 0.0 and headers[COST_HEADER] == "0"
    trail, headers = ask(running, "openai", "local-priced", stream=True)
    assert trail.usage is not None and trail.usage.completion_tokens > 0
    assert_cost(trail, headers, cost_of(LOCAL, trail.usage))


def test_a_failed_attempt_the_upstream_billed_is_added(running: Running) -> None:
    """`billed` answers 200 with its usage but no content, which cannot be translated: the chain moves
    on, and the request costs both answers."""
    trail, headers = ask(running, "openai", "rescued")
    billed, served = trail.attempts
    assert (billed.backend, billed.outcome, served.backend, served.outcome) == (
        "billed",
        "http_5xx",
        "oa",
        "ok",
    )
    assert billed.usage == USAGE["anthropic"]
    assert_cost(trail, headers, EXPECTED["anthropic"] + EXPECTED["openai"])


def test_a_billed_attempt_at_an_unknown_price_makes_the_cost_unknown(running: Running) -> None:
    trail, headers = ask(running, "openai", "rescued-unknown")
    assert trail.backend == "oa" and trail.attempts[0].usage is not None
    assert_cost(trail, headers, None)


def test_a_request_that_failed_costs_what_the_upstream_billed(running: Running) -> None:
    with pytest.raises(openai.APIStatusError) as failed:
        running.openai.chat.completions.create(
            model="lost",
            messages=MESSAGES,  # type: ignore[arg-type]
            extra_headers={"x-request-id": "cost-lost"},
        )
    assert failed.value.status_code == 502
    assert COST_HEADER not in failed.value.response.headers  # an error is not an answer
    trail = trail_of(running, "cost-lost")
    assert trail.cost_usd == float(EXPECTED["anthropic"])


def test_a_stream_cut_short_costs_the_usage_reported_before_the_cut(running: Running) -> None:
    """Anthropic reports the input counts (and 1 output token) in `message_start`: billed, even though
    the stream then broke off."""
    request = {"model": "cut-short", "max_tokens": 100, "messages": MESSAGES}
    tagged = {"x-request-id": "cost-cut"}
    with (
        running.anthropic.messages.stream(**request, extra_headers=tagged) as stream,  # type: ignore[arg-type]
        pytest.raises(anthropic.APIError),
    ):
        stream.get_final_message()
    trail = trail_of(running, "cost-cut")
    assert trail.error_type == "stream-failed"
    started = Usage(PROMPT_TOKENS, 1, cached_tokens=CACHE_READ, cache_creation_tokens=CACHE_WRITE)
    assert trail.usage == started
    assert trail.cost_usd == float(cost_of(shipped_price("anthropic", "claude-sonnet-4-5"), started))


# -- the audit record, the log line and the metric, from `gateway serve` ----------------------------


CLIENT_KEY = "cost-tests-client-key"


def _metric(gateway: GatewayProcess, **labels: str) -> float:
    text = requests.get(gateway.url("/metrics"), timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gateway_cost_usd_total" and sample.labels == labels:
                return sample.value
    return 0.0


def _record(gateway: GatewayProcess, request_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def arrived() -> bool:
        response = gateway.admin("GET", "/admin/api/logs", params={"request_id": request_id})
        found[:] = response.json()["records"]
        return bool(found)

    wait_until(arrived, timeout=10, interval=0.05)
    return found[0]


def _log_line(gateway: GatewayProcess, request_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def logged() -> bool:
        found[:] = [
            line
            for line in map(json.loads, filter(lambda t: t.startswith("{"), gateway.log().splitlines()))
            if line.get("event") == "request" and line.get("request_id") == request_id
        ]
        return bool(found)

    wait_until(logged, timeout=10, interval=0.05)
    return found[0]


def test_the_audit_record_log_line_and_metric_carry_the_cost(gateway_server) -> None:
    with FakeOpenAI.in_thread(CACHING) as oa, FakeAnthropic.in_thread(CACHING) as an:
        gateway = gateway_server(
            f"""
auth:
  client_keys:
    - {{name: billing, key: "${{GW_CLIENT_KEY}}"}}
backends:
  oa: {{type: openai, base_url: "{oa.base_url}", api_key: "${{COST_KEY}}"}}
  an: {{type: anthropic, base_url: "{an.base_url}", api_key: "${{COST_KEY}}"}}
  any: {{type: openai_compatible, base_url: "{oa.base_url}"}}
models:
  claude: {{chain: [{{backend: an, model: claude-sonnet-4-5}}]}}
  mystery: {{chain: [{{backend: any, model: mystery-model}}]}}
audit: {{flush_interval_ms: 50}}
""",
            env={"COST_KEY": "k", "GW_CLIENT_KEY": CLIENT_KEY},
        )
        client = openai.OpenAI(base_url=gateway.url("/v1"), api_key=CLIENT_KEY, max_retries=0)
        for request_id, stream in (("cost-whole", False), ("cost-stream", True)):
            answer = client.chat.completions.create(
                model="claude",
                messages=MESSAGES,  # type: ignore[arg-type]
                stream=stream,  # type: ignore[call-overload]
                extra_headers={"x-request-id": request_id},
            )
            if stream:
                list(answer)  # type: ignore[arg-type]
        client.chat.completions.create(
            model="mystery",
            messages=MESSAGES,  # type: ignore[arg-type]
            extra_headers={"x-request-id": "cost-unknown"},
        )
        expected = float(EXPECTED["anthropic"])
        for request_id in ("cost-whole", "cost-stream"):
            assert _record(gateway, request_id)["cost_usd"] == expected
            assert _log_line(gateway, request_id)["cost_usd"] == expected
        assert _record(gateway, "cost-unknown")["cost_usd"] is None
        assert _log_line(gateway, "cost-unknown")["cost_usd"] is None
        assert _metric(gateway, model="claude", backend="an", client="billing") == pytest.approx(2 * expected)
        assert _metric(gateway, model="mystery", backend="any", client="billing") == 0.0
        client.close()
