"""Every `openai_compatible` preset (`provider: <vendor>`) through the real gateway to the fake OpenAI
API playing that vendor (`FakeOpenAI(vendor=...)`: its path prefix, its key or none, the fields it
refuses or ignores): a chat works at the preset's path with the preset's credentials, a field the
vendor refuses is refused by the gateway itself (400 naming the field and the vendor; the vendor never
sees it), and a field the vendor takes reaches it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest
import requests

from gateway.config.providers import PRESETS
from gateway.testing import Behaviour, FakeOpenAI
from gateway.testing.inprocess import InProcessGateway, gateway_in_thread
from gateway.testing.vendors import VENDORS
from tests.e2e.upstreams import FAKE_KEY, assert_problem, expected_reply

PROMPT = "Tell me about the weather in Lisbon today"
MESSAGES = [{"role": "user", "content": PROMPT}]
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}}


@dataclass(frozen=True)
class Quirk:
    """A request field the vendor refuses (`refused`, with the capability the gateway names), and one
    it takes (`accepted`)."""

    accepted: dict[str, Any]
    refused: dict[str, Any] | None = None
    capability: str | None = None


#: One row per preset; a preset whose vendor refuses a request field says which.
QUIRKS: dict[str, Quirk] = {
    "groq": Quirk({"seed": 7, "temperature": 0.5}, {"n": 2}, "n"),
    "mistral": Quirk({"logit_bias": {"1": 1}}),
    "deepseek": Quirk(
        {"response_format": {"type": "json_object"}}, {"response_format": JSON_SCHEMA}, "json_schema"
    ),
    "xai": Quirk({"logprobs": True, "top_logprobs": 2}),
    "openrouter": Quirk({"logit_bias": {"1": 1}}),
    "together": Quirk({"n": 2}),
    "fireworks": Quirk({"n": 2}),
    "ollama": Quirk({"seed": 7}, {"logit_bias": {"1": 1}}, "logit_bias"),
    "vllm": Quirk({"top_k": 5}),
    "lmstudio": Quirk({"seed": 7}),
}


def test_every_preset_has_a_vendor_in_the_fake_and_a_row_here() -> None:
    assert set(PRESETS) == set(VENDORS) == set(QUIRKS)
    for name, preset in PRESETS.items():
        # Every request-field refusal of a preset is exercised (endpoint refusals are not fields).
        fields = set(preset.refuses) - {"completions", "embeddings"}
        if fields:
            assert QUIRKS[name].capability in fields, name


@dataclass
class Presets:
    gateway: InProcessGateway
    fakes: dict[str, FakeOpenAI]
    client: openai.OpenAI


@pytest.fixture(scope="module")
def presets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Presets]:
    with ExitStack() as stack:
        fakes = {
            name: stack.enter_context(FakeOpenAI.in_thread(Behaviour(api_key=FAKE_KEY), vendor=name))
            for name in PRESETS
        }
        lines = ["backends:"]
        for name, preset in PRESETS.items():
            # The preset's own URL path on the fake's host: the fake serves only its vendor's prefix.
            base = fakes[name].url + urlsplit(preset.base_url).path
            key = ', api_key: "${FAKE_KEY}"' if preset.key_env else ""
            lines.append(f'  {name}: {{type: openai_compatible, provider: {name}, base_url: "{base}"{key}}}')
        lines.append("models:")
        lines += [f"  {name}: {{chain: [{{backend: {name}, model: m}}]}}" for name in PRESETS]
        lines += ["reload: {watch: false}", "audit: {enabled: false}"]
        path = Path(tmp_path_factory.mktemp("presets")) / "gateway.yaml"
        path.write_text("\n".join(lines) + "\n")
        gateway = stack.enter_context(gateway_in_thread(path, env={"FAKE_KEY": FAKE_KEY}))
        client = openai.OpenAI(base_url=gateway.url("/v1"), api_key="x", max_retries=0, timeout=30)
        yield Presets(gateway, fakes, client)
        client.close()


@pytest.fixture
def fresh(presets: Presets) -> Presets:
    for fake in presets.fakes.values():
        fake.reset_stats()
        fake.ignored.clear()
        fake.last_body = fake.last_authorization = None
    return presets


@pytest.mark.parametrize("name", list(PRESETS))
def test_a_chat_reaches_the_vendor_at_the_presets_path_with_its_credentials(
    fresh: Presets, name: str
) -> None:
    fake, preset = fresh.fakes[name], PRESETS[name]
    raw = fresh.client.chat.completions.with_raw_response.create(model=name, messages=MESSAGES)  # type: ignore[arg-type]
    assert raw.parse().choices[0].message.content == expected_reply(PROMPT).text
    assert raw.headers["x-gateway-backend"] == name
    assert fake.stats.requests == {f"{fake.quirks.prefix}/chat/completions": 1}
    # A cloud vendor gets the key as a bearer token; a local server gets no key at all.
    assert fake.last_authorization == (f"Bearer {FAKE_KEY}" if preset.key_env else None)


@pytest.mark.parametrize("name", [name for name, quirk in QUIRKS.items() if quirk.refused])
def test_a_field_the_vendor_refuses_is_refused_by_the_gateway(fresh: Presets, name: str) -> None:
    fake, quirk = fresh.fakes[name], QUIRKS[name]
    assert quirk.refused is not None
    [field] = quirk.refused
    with pytest.raises(openai.BadRequestError) as raised:
        fresh.client.chat.completions.create(model=name, messages=MESSAGES, **quirk.refused)  # type: ignore[arg-type, call-overload]
    body = assert_problem(raised.value.response, 400, sdk_error=raised.value)
    assert body["type"] == "/problems/unsupported-capability"
    assert (body["capability"], body["field"]) == (quirk.capability, field)
    assert PRESETS[name].title in body["detail"]
    assert fake.stats.total == 0  # the vendor never saw it
    # What the vendor would have done with it: a 400 of its own, or the field silently dropped.
    headers = {"Authorization": f"Bearer {FAKE_KEY}"}
    direct = requests.post(
        f"{fake.base_url}/chat/completions",
        json={"model": "m", "messages": MESSAGES, **quirk.refused},
        headers=headers,
        timeout=30,
    )
    if field in fake.quirks.refuses:
        assert direct.status_code == 400 and direct.json()["error"]["param"] == field
    else:
        assert direct.status_code == 200 and fake.ignored == [field]


@pytest.mark.parametrize("name", list(PRESETS))
def test_a_field_the_vendor_takes_reaches_it(fresh: Presets, name: str) -> None:
    fake, quirk = fresh.fakes[name], QUIRKS[name]
    response = requests.post(
        fresh.gateway.url("/v1/chat/completions"),
        json={"model": name, "messages": MESSAGES, **quirk.accepted},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert fake.last_body is not None
    assert {key: fake.last_body.get(key) for key in quirk.accepted} == quirk.accepted
    assert fake.ignored == []
