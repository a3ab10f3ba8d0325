"""The capability check of one chain target: what it lacks, the native fields it cannot take (by the
protocol it speaks), and the local model's special case."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.backends.upstream import UpstreamCall
from gateway.config.load import parse_config
from gateway.protocol.anthropic_request import parse_count_tokens_request, parse_messages_request
from gateway.protocol.openai_request import parse_chat_request
from gateway.routing.capabilities import Refusal, refusal
from gateway.routing.table import RouteTarget

CONFIG = b"""
backends:
  oa: {type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
  an: {type: anthropic, api_key: "${AN_KEY}"}
  local: {type: mlx, path: /models/tiny}
models:
  m: {chain: [{backend: oa}, {backend: an}, {backend: local}]}
"""
USER = [{"role": "user", "content": "hi"}]


class Speaker:
    """A backend object as routing sees it: a name and, for HTTP backends, a wire protocol."""

    def __init__(self, name: str, protocol: str | None) -> None:
        self.name = name
        if protocol is not None:
            self.protocol = protocol


def targets() -> dict[str, RouteTarget]:
    config = parse_config(CONFIG, Path("/srv/gateway.yaml"), env={"AN_KEY": "k"})
    speaks = {"oa": "openai", "an": "anthropic", "local": None}
    out = {}
    for target in config.models[0].chain:
        settings = config.backend(target.backend)
        assert settings is not None
        backend: Any = Speaker(target.backend, speaks[target.backend])
        out[target.backend] = RouteTarget(
            target, backend, settings, capabilities=settings.capabilities_for(target.model)
        )
    return out


def openai_call(**members: Any) -> UpstreamCall:
    body = {"model": "m", "messages": USER, **members}
    return UpstreamCall("chat", "openai", body, parse_chat_request(body), False, "r", "m")


def test_a_plain_request_goes_anywhere() -> None:
    call = openai_call()
    assert all(refusal(call.needs, step) is None for step in targets().values())


def test_the_first_missing_capability_in_documentation_order_is_named() -> None:
    steps = targets()
    call = openai_call(n=2, logprobs=True)
    assert refusal(call.needs, steps["an"]) == Refusal("lacks capability 'n'", capability="n", field="n")
    assert refusal(call.needs, steps["local"]) == Refusal(
        "lacks capability 'logprobs'", capability="logprobs", field="logprobs"
    )
    assert refusal(call.needs, steps["oa"]) is None


def test_native_fields_need_a_backend_speaking_the_client_s_protocol() -> None:
    steps = targets()
    call = openai_call(service_tier="flex")
    assert refusal(call.needs, steps["oa"]) is None
    assert refusal(call.needs, steps["an"]) == Refusal(
        "cannot take 'service_tier' (an OpenAI field): this backend speaks anthropic", field="service_tier"
    )
    assert refusal(call.needs, steps["local"]) == Refusal(
        "cannot take 'service_tier' (an OpenAI field): a local model takes only the canonical form",
        field="service_tier",
    )


def test_a_local_model_takes_ignore_eos() -> None:
    steps = targets()
    call = openai_call(ignore_eos=True)
    assert refusal(call.needs, steps["local"]) is None
    assert refusal(call.needs, steps["an"]) is not None


def test_count_tokens_never_goes_to_an_openai_backend() -> None:
    steps = targets()
    body = {"model": "m", "messages": USER}
    call = UpstreamCall("count_tokens", "anthropic", body, parse_count_tokens_request(body), False, "r", "m")
    assert refusal(call.needs, steps["oa"]) == Refusal(
        "cannot count tokens: the OpenAI API has no count_tokens endpoint"
    )
    assert refusal(call.needs, steps["an"]) is None and refusal(call.needs, steps["local"]) is None


def test_anthropic_top_k_goes_to_anthropic_and_local_models() -> None:
    steps = targets()
    body = {"model": "m", "max_tokens": 8, "messages": USER, "top_k": 3}
    call = UpstreamCall("chat", "anthropic", body, parse_messages_request(body), False, "r", "m")
    assert refusal(call.needs, steps["oa"]) == Refusal(
        "lacks capability 'top_k'", capability="top_k", field="top_k"
    )
    assert refusal(call.needs, steps["an"]) is None and refusal(call.needs, steps["local"]) is None
