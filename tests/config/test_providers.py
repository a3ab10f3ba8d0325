"""`openai_compatible` presets (`provider: groq`, ...): every preset loads with its vendor's base URL and
key rule, `base_url` still overrides, what a vendor refuses is a capability its targets lack (the
refusal names the vendor and the field), and `gateway check` names an unknown provider with the list."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.backends.upstream import UpstreamCall
from gateway.config.backends import OpenAICompatibleSettings
from gateway.config.capabilities import DEFAULTS_BY_TYPE, default_capabilities
from gateway.config.load import parse_config
from gateway.config.providers import PRESETS, PROVIDERS
from gateway.config.schema import load_schema
from gateway.protocol.openai_request import parse_chat_request
from gateway.routing.capabilities import refusal
from gateway.routing.table import RouteTarget

USER = [{"role": "user", "content": "hi"}]


def load(backend: str, env: dict[str, str] | None = None) -> OpenAICompatibleSettings:
    text = f"backends:\n  v: {backend}\nmodels:\n  m: {{chain: [{{backend: v, model: up}}]}}\n"
    config = parse_config(text.encode(), Path("/srv/gateway.yaml"), env=env or {})
    settings = config.backend("v")
    assert isinstance(settings, OpenAICompatibleSettings)
    return settings


def test_the_schema_lists_exactly_the_presets() -> None:
    [branch] = [
        b["then"]
        for b in load_schema()["$defs"]["backend"]["allOf"]
        if b["if"]["properties"]["type"].get("const") == "openai_compatible"
    ]
    assert tuple(branch["properties"]["provider"]["enum"]) == PROVIDERS


@pytest.mark.parametrize("provider", PROVIDERS)
def test_every_preset_resolves(provider: str) -> None:
    vendor = PRESETS[provider]
    key = f', api_key: "${{{vendor.key_env}}}"' if vendor.key_env else ""
    settings = load(f"{{type: openai_compatible, provider: {provider}{key}}}", {vendor.key_env or "X": "k"})
    assert settings.provider == provider
    assert settings.base_url == vendor.base_url.rstrip("/")
    assert settings.enabled, settings.disabled_reason
    expected = (DEFAULTS_BY_TYPE["openai_compatible"] | vendor.adds) - vendor.refuses.keys()
    assert settings.capabilities == expected
    assert settings.capabilities_for("any-model") == expected


@pytest.mark.parametrize("provider", [p for p in PROVIDERS if PRESETS[p].key_env])
def test_a_cloud_preset_without_a_key_is_off_and_says_which_variable(provider: str) -> None:
    settings = load(f"{{type: openai_compatible, provider: {provider}}}")
    key_env = PRESETS[provider].key_env
    assert not settings.enabled
    assert f"${{{key_env}}}" in settings.disabled_reason
    empty = load(f'{{type: openai_compatible, provider: {provider}, api_key: "${{MY_KEY:-}}"}}')
    assert not empty.enabled and "set MY_KEY" in empty.disabled_reason


@pytest.mark.parametrize(
    ("provider", "url"),
    [
        ("ollama", "http://127.0.0.1:11434/v1"),
        ("vllm", "http://127.0.0.1:8000/v1"),
        ("lmstudio", "http://127.0.0.1:1234/v1"),
    ],
)
def test_local_presets_need_no_key(provider: str, url: str) -> None:
    settings = load(f"{{type: openai_compatible, provider: {provider}}}")
    assert settings.enabled and settings.base_url == url and not settings.api_key


def test_base_url_overrides_the_preset_s_and_the_differences_stay() -> None:
    settings = load(
        '{type: openai_compatible, provider: groq, base_url: "http://10.0.0.5:9000/openai/v1/", '
        'api_key: "${K}"}',
        {"K": "k"},
    )
    assert settings.base_url == "http://10.0.0.5:9000/openai/v1"
    assert "n" not in settings.capabilities and "logprobs" not in settings.capabilities


def test_an_override_switches_a_refused_capability_back_on() -> None:
    settings = load(
        '{type: openai_compatible, provider: groq, api_key: "${K}", capabilities: {n: true}}', {"K": "k"}
    )
    assert "n" in settings.capabilities


def test_vllm_adds_top_k_and_a_plain_server_keeps_the_defaults() -> None:
    assert "top_k" in default_capabilities("openai_compatible", provider="vllm")
    assert default_capabilities("openai_compatible") == DEFAULTS_BY_TYPE["openai_compatible"]
    # A preset applies to openai_compatible only.
    assert default_capabilities("openai", provider="groq") == DEFAULTS_BY_TYPE["openai"]


def test_openrouter_attribution_settings_load() -> None:
    settings = load(
        '{type: openai_compatible, provider: openrouter, api_key: "${K}", '
        'app_url: "https://app.example", app_title: "My App"}',
        {"K": "k"},
    )
    assert (settings.app_url, settings.app_title) == ("https://app.example", "My App")


class Speaker:
    protocol = "openai"
    name = "v"


def target(backend: str) -> RouteTarget:
    text = f"backends:\n  v: {backend}\nmodels:\n  m: {{chain: [{{backend: v, model: up}}]}}\n"
    config = parse_config(text.encode(), Path("/srv/gateway.yaml"), env={"K": "k"})
    settings = config.backend("v")
    assert settings is not None
    backend_object: Any = Speaker()
    return RouteTarget(
        config.models[0].chain[0], backend_object, settings, capabilities=settings.capabilities_for("up")
    )


def needs(**members: Any) -> Any:
    body = {"model": "m", "messages": USER, **members}
    return UpstreamCall("chat", "openai", body, parse_chat_request(body), False, "r", "m").needs


@pytest.mark.parametrize(
    ("members", "capability", "field"),
    [
        ({"n": 2}, "n", "n"),
        ({"logprobs": True}, "logprobs", "logprobs"),
        ({"logit_bias": {"1": 5}}, "logit_bias", "logit_bias"),
    ],
)
def test_a_refused_field_names_the_vendor_and_the_field(
    members: dict[str, Any], capability: str, field: str
) -> None:
    refused = refusal(needs(**members), target('{type: openai_compatible, provider: groq, api_key: "${K}"}'))
    assert refused is not None
    assert (refused.capability, refused.field) == (capability, field)
    assert "Groq" in refused.detail


def test_deepseek_refuses_json_schema_by_naming_response_format() -> None:
    step = target('{type: openai_compatible, provider: deepseek, api_key: "${K}"}')
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    refused = refusal(needs(response_format=schema), step)
    assert refused is not None and refused.field == "response_format" and "DeepSeek" in refused.detail
    assert refusal(needs(response_format={"type": "json_object"}), step) is None


def test_a_plain_server_s_missing_capability_names_no_vendor() -> None:
    step = target('{type: openai_compatible, base_url: "http://h/v1", capabilities: {n: false}}')
    refused = refusal(needs(n=2), step)
    assert refused is not None and refused.detail == "lacks capability 'n'" and refused.field == "n"


def test_gateway_check_names_an_unknown_provider_with_the_list(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "backends:\n  g: {type: openai_compatible, provider: grok}\nmodels:\n  m: {chain: [{backend: g}]}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check", str(path)], capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "backends.g.provider" in result.stdout + result.stderr
    out = result.stdout + result.stderr
    assert all(f'"{name}"' in out for name in PROVIDERS) and "did you mean 'groq'" in out


def test_without_base_url_or_provider_an_openai_compatible_backend_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("backends:\n  g: {type: openai_compatible}\nmodels:\n  m: {chain: [{backend: g}]}\n")
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check", str(path)], capture_output=True, text=True
    )
    assert result.returncode != 0 and "`base_url`" in result.stdout + result.stderr
