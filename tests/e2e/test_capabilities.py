"""Capabilities and native fields through the real server: a target that cannot serve a request is
skipped before anything is sent (outcome `incapable`, its reason in the trail), and a model none of
whose targets can serve it answers 400 `unsupported-capability` naming the capability or field, which
both SDKs raise as BadRequestError."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import requests

from gateway.config.capabilities import CAPABILITIES
from gateway.routing.trail import RequestTrail
from gateway.testing.inprocess import InProcessGateway, gateway_in_thread
from tests.e2e.test_usage_paths import TrailRecorder
from tests.e2e.upstreams import FAKE_KEY, WEATHER_SCHEMA, Upstreams, assert_problem, fake_upstreams

ADMIN = "admin-key-for-capability-tests"
USER = [{"role": "user", "content": "hello there"}]
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": WEATHER_SCHEMA}}]

#: For each capability: the pair of backends its chain uses, the path, and a body that needs it.
NEEDS: dict[str, tuple[tuple[str, str], str, dict[str, Any]]] = {
    "chat": (("oa", "oa2"), "/v1/chat/completions", {"messages": USER}),
    "completions": (("oa", "oa2"), "/v1/completions", {"prompt": "hello there"}),
    "embeddings": (("oa", "oa2"), "/v1/embeddings", {"input": "hello there"}),
    "tools": (("oa", "oa2"), "/v1/chat/completions", {"messages": USER, "tools": TOOLS}),
    "images": (
        ("oa", "oa2"),
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "what is it"}, IMAGE]}]},
    ),
    "json_object": (
        ("oa", "oa2"),
        "/v1/chat/completions",
        {"messages": USER, "response_format": {"type": "json_object"}},
    ),
    "json_schema": (
        ("oa", "oa2"),
        "/v1/chat/completions",
        {
            "messages": USER,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "w", "schema": WEATHER_SCHEMA},
            },
        },
    ),
    "n": (("oa", "oa2"), "/v1/chat/completions", {"messages": USER, "n": 2}),
    "logprobs": (("oa", "oa2"), "/v1/chat/completions", {"messages": USER, "logprobs": True}),
    "logit_bias": (("oa", "oa2"), "/v1/chat/completions", {"messages": USER, "logit_bias": {"50256": -100}}),
    "penalties": (("oa", "oa2"), "/v1/chat/completions", {"messages": USER, "presence_penalty": 0.5}),
    "top_k": (("an", "an2"), "/v1/messages", {"messages": USER, "max_tokens": 16, "top_k": 5}),
    "reasoning": (
        ("an", "an2"),
        "/v1/messages",
        {"messages": USER, "max_tokens": 2048, "thinking": {"type": "enabled", "budget_tokens": 1024}},
    ),
}


def models_yaml() -> str:
    lines = []
    for capability, ((first, second), _, _) in NEEDS.items():
        lacking = f"{{backend: {first}, model: first, capabilities: {{{capability}: false}}}}"
        lines.append(f"  skip-{capability}: {{chain: [{lacking}, {{backend: {second}, model: second}}]}}")
        lines.append(f"  none-{capability}: {{chain: [{lacking}]}}")
    return "\n".join(lines)


def config(up: Upstreams) -> str:
    oa, an = up.openai.base_url, up.anthropic.base_url
    key = '"${FAKE_KEY}"'
    return f"""
auth:
  admin_keys: [{{name: ops, key: "${{CAP_ADMIN_KEY}}"}}]
backends:
  oa: {{type: openai_compatible, base_url: "{oa}", api_key: {key}}}
  oa2: {{type: openai_compatible, base_url: "{oa}", api_key: {key}}}
  an: {{type: anthropic, base_url: "{an}", api_key: {key}}}
  an2: {{type: anthropic, base_url: "{an}", api_key: {key}}}
  unused: {{type: openai_compatible, base_url: "{oa}", api_key: {key}, enabled: false}}
models:
{models_yaml()}
  claude-then-gpt: {{chain: [{{backend: an, model: claude}}, {{backend: oa, model: gpt}}]}}
  claude-only: {{chain: [{{backend: an, model: claude}}]}}
  gpt-then-claude: {{chain: [{{backend: oa, model: gpt}}, {{backend: an, model: claude}}]}}
  gpt-only: {{chain: [{{backend: oa, model: gpt}}]}}
  each-lacks-one:
    chain: [{{backend: an, model: claude}}, {{backend: oa, model: gpt, capabilities: {{images: false}}}}]
  vllm-like: {{chain: [{{backend: oa, model: gpt, capabilities: {{top_k: true}}}}]}}
  off-then-claude: {{chain: [{{backend: unused, model: gpt}}, {{backend: an, model: claude}}]}}
failover:
  # Skipped targets do not count: a chain whose first target is skipped still reaches its second.
  max_attempts: 1
  circuit_breaker: {{failure_threshold: 1}}
reload: {{watch: false}}
audit: {{enabled: false}}
"""


@dataclass(frozen=True)
class Running:
    gateway: InProcessGateway
    recorder: TrailRecorder
    openai: openai.OpenAI
    anthropic: anthropic.Anthropic
    up: Upstreams

    def trail(self, request_id: str) -> RequestTrail:
        while True:
            trail = self.recorder.next()
            if trail.request_id == request_id:
                return trail


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with fake_upstreams() as up:
        path = Path(tmp_path_factory.mktemp("capabilities")) / "gateway.yaml"
        path.write_text(config(up))
        recorder = TrailRecorder()
        env = {"FAKE_KEY": FAKE_KEY, "CAP_ADMIN_KEY": ADMIN}
        with gateway_in_thread(path, trails=recorder, env=env) as gateway:
            oai = openai.OpenAI(base_url=gateway.url("/v1"), api_key="x", max_retries=0, timeout=30)
            ant = anthropic.Anthropic(base_url=gateway.base_url, api_key="x", max_retries=0, timeout=30)
            yield Running(gateway, recorder, oai, ant, up)
            oai.close()
            ant.close()


def post(running: Running, path: str, body: dict[str, Any]) -> requests.Response:
    headers = {"anthropic-version": "2023-06-01"} if path.startswith("/v1/messages") else {}
    return requests.post(running.gateway.url(path), json=body, headers=headers, timeout=30)


def test_every_capability_has_a_case() -> None:
    assert tuple(NEEDS) == CAPABILITIES


@pytest.mark.parametrize("capability", list(NEEDS))
def test_a_target_lacking_a_needed_capability_is_skipped(running: Running, capability: str) -> None:
    (first, second), path, body = NEEDS[capability]
    response = post(running, path, {"model": f"skip-{capability}", **body})
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-backend"] == second
    assert response.headers["x-gateway-attempts"] == "1"  # the skip was no attempt
    trail = running.trail(response.headers["x-request-id"])
    skipped, served = trail.attempts
    assert (skipped.backend, skipped.outcome, skipped.status) == (first, "incapable", None)
    assert skipped.detail == f"lacks capability '{capability}'"
    assert (served.backend, served.outcome) == (second, "ok")
    assert trail.skipped_as_incapable() == [f"{first}: lacks capability '{capability}'"]


@pytest.mark.parametrize("capability", list(NEEDS))
def test_no_capable_target_is_a_400_naming_the_capability(running: Running, capability: str) -> None:
    (first, _), path, body = NEEDS[capability]
    model = f"none-{capability}"
    response = post(running, path, {"model": model, **body})
    problem = assert_problem(response, 400)
    assert problem["type"] == "/problems/unsupported-capability"
    assert problem["capability"] == capability
    assert problem["detail"] == (
        f"model '{model}' cannot serve this request: it needs capability '{capability}', which none of "
        f"its backends has ({first}: lacks capability '{capability}')"
    )
    assert problem["attempts"] == [
        {"backend": first, "model": "first", "outcome": "incapable", "status": None}
    ]
    assert problem["error"]["type"] == "invalid_request_error"


def test_the_openai_sdk_raises_bad_request_naming_the_capability(running: Running) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        running.openai.chat.completions.create(model="none-n", messages=USER, n=3)  # type: ignore[arg-type]
    body = assert_problem(caught.value.response, 400, sdk_error=caught.value)
    assert body["capability"] == "n"
    assert "it needs capability 'n'" in caught.value.message


def test_anthropic_top_k_skips_an_openai_target_by_default(running: Running) -> None:
    raw = running.anthropic.messages.with_raw_response.create(
        model="gpt-then-claude", max_tokens=16, messages=USER, extra_body={"top_k": 5}
    )
    assert raw.headers["x-gateway-backend"] == "an"
    trail = running.trail(raw.headers["x-request-id"])
    assert trail.skipped_as_incapable() == ["oa: lacks capability 'top_k'"]
    with pytest.raises(anthropic.BadRequestError) as caught:
        running.anthropic.messages.create(
            model="gpt-only", max_tokens=16, messages=USER, extra_body={"top_k": 5}
        )
    body = assert_problem(caught.value.response, 400, sdk_error=caught.value)
    assert body["capability"] == "top_k"
    assert body["error"]["type"] == "invalid_request_error"
    # An OpenAI-protocol target that says it takes top_k (vLLM) gets it, translated.
    served = running.anthropic.messages.with_raw_response.create(
        model="vllm-like", max_tokens=16, messages=USER, extra_body={"top_k": 5}
    )
    assert served.headers["x-gateway-backend"] == "oa"


# -------------------------------------------------------------------------------------- native fields


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("service_tier", {"service_tier": "flex"}),  # a typed parameter of the SDK
        ("reasoning_effort", {"reasoning_effort": "minimal"}),  # low/medium/high map (test_reasoning.py)
        ("vendor_knob", {"extra_body": {"vendor_knob": 1}}),  # not in the table: native
    ],
)
def test_an_openai_native_field_skips_an_anthropic_target(running: Running, field: str, kwargs: dict) -> None:
    raw = running.openai.chat.completions.with_raw_response.create(
        model="claude-then-gpt", messages=USER, **kwargs
    )
    assert raw.headers["x-gateway-backend"] == "oa"
    trail = running.trail(raw.headers["x-request-id"])
    assert trail.skipped_as_incapable() == [
        f"an: cannot take '{field}' (an OpenAI field): this backend speaks anthropic"
    ]
    with pytest.raises(openai.BadRequestError) as caught:
        running.openai.chat.completions.create(model="claude-only", messages=USER, **kwargs)
    body = assert_problem(caught.value.response, 400, sdk_error=caught.value)
    assert body["type"] == "/problems/unsupported-capability"
    assert body["field"] == field and caught.value.param == field
    assert body["detail"].startswith(
        f"model 'claude-only' cannot serve this request: it carries '{field}', which none of its backends "
        "can take (an: cannot take"
    )


def test_an_anthropic_native_field_skips_an_openai_target(running: Running) -> None:
    thinking = {"type": "adaptive"}  # no OpenAI counterpart (type enabled maps: test_reasoning.py)
    raw = running.anthropic.messages.with_raw_response.create(
        model="gpt-then-claude", max_tokens=2048, messages=USER, thinking=thinking
    )
    assert raw.headers["x-gateway-backend"] == "an"
    trail = running.trail(raw.headers["x-request-id"])
    assert trail.skipped_as_incapable() == [
        "oa: cannot take 'thinking' (an Anthropic field): this backend speaks openai"
    ]
    with pytest.raises(anthropic.BadRequestError) as caught:
        running.anthropic.messages.create(model="gpt-only", max_tokens=2048, messages=USER, thinking=thinking)
    body = assert_problem(caught.value.response, 400, sdk_error=caught.value)
    assert body["field"] == "thinking"


def test_a_native_content_part_is_refused_across_protocols(running: Running) -> None:
    audio = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
    body = {"model": "claude-only", "messages": [{"role": "user", "content": [audio]}]}
    problem = assert_problem(post(running, "/v1/chat/completions", body), 400)
    assert problem["field"] == "'input_audio' content part"
    assert (
        "an: cannot take an OpenAI 'input_audio' content part: this backend speaks anthropic"
        in (problem["detail"])
    )


def test_ignored_and_inert_fields_refuse_no_backend(running: Running) -> None:
    response = running.openai.chat.completions.with_raw_response.create(
        model="claude-only", messages=USER, store=False, metadata={"team": "a"}, n=1, logprobs=False, seed=3
    )
    assert response.headers["x-gateway-backend"] == "an"


def test_a_disabled_capable_target_and_an_incapable_one_is_a_400(running: Running) -> None:
    body = {"model": "off-then-claude", "messages": USER, "n": 2}
    problem = assert_problem(post(running, "/v1/chat/completions", body), 400)
    assert problem["capability"] == "n"
    assert [a["outcome"] for a in problem["attempts"]] == ["disabled", "incapable"]
    assert "unused: disabled (enabled: false); an: lacks capability 'n'" in problem["detail"]


def test_targets_lacking_different_capabilities_are_each_named(running: Running) -> None:
    body = {"model": "each-lacks-one", "messages": NEEDS["images"][2]["messages"], "n": 2}
    problem = assert_problem(post(running, "/v1/chat/completions", body), 400)
    assert problem["detail"] == (
        "model 'each-lacks-one' cannot serve this request: none of its backends has everything it needs "
        "(an: lacks capability 'n'; oa: lacks capability 'images')"
    )
    assert problem["capability"] == "n"  # the first target's


def test_skips_do_not_open_the_circuit(running: Running) -> None:
    # failure_threshold is 1: a skip counted as a failure would open oa's circuit.
    for _ in range(2):
        assert post(running, "/v1/chat/completions", {"model": "skip-n", **NEEDS["n"][2]}).status_code == 200
    response = post(running, "/v1/chat/completions", {"model": "gpt-only", "messages": USER})
    assert response.status_code == 200
    assert response.headers["x-gateway-backend"] == "oa"


# ------------------------------------------------------------------------------------- what is shown


def test_the_admin_api_and_the_models_list_show_capabilities(running: Running) -> None:
    headers = {"authorization": f"Bearer {ADMIN}"}
    backends = requests.get(running.gateway.url("/admin/api/backends"), headers=headers, timeout=10).json()
    by_name = {b["name"]: b["capabilities"] for b in backends["backends"]}
    assert by_name["an"] == ["chat", "tools", "images", "top_k", "reasoning"]
    assert by_name["oa"] == [c for c in CAPABILITIES if c != "top_k"]
    status = requests.get(running.gateway.url("/admin/api/config"), headers=headers, timeout=10).json()
    models = {m["name"]: m for m in status["models"]}
    assert [t["capabilities"] for t in models["skip-n"]["chain"]] == [
        [c for c in CAPABILITIES if c not in ("top_k", "n")],
        [c for c in CAPABILITIES if c != "top_k"],
    ]
    listed = {m.id: m for m in running.openai.models.list()}
    assert listed["gpt-then-claude"].capabilities == list(CAPABILITIES)  # type: ignore[attr-defined]
    assert listed["none-images"].capabilities == [c for c in CAPABILITIES if c not in ("top_k", "images")]  # type: ignore[attr-defined]
