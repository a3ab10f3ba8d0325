"""One battery for every native backend type, run with the official OpenAI and Anthropic SDKs through
the real gateway (in-process) to a chain whose only target is that type's fake: chat whole and
streamed, a tool round trip, an image, embeddings where the type has them, and the upstream errors
mapped as documented (400 relayed, a refused gateway credential, 429 and 5xx failed over to a second
target or answered with the documented status without one, a stream dying mid-way as an error event).

A new native type joins by adding one row to `NATIVE_TYPES`: its fake, the backend's YAML, its
models, how to make the fake refuse the gateway's credentials and the environment its credentials need.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from gateway.testing import Behaviour, FakeAzureOpenAI, FakeGemini, FakeOpenAI, FakeVertex
from gateway.testing.behaviour import FakeServer
from gateway.testing.fake_azure_openai import AZURE_API_VERSION
from gateway.testing.fake_bedrock import TEST_CREDENTIALS, FakeBedrock
from gateway.testing.inprocess import InProcessGateway, gateway_in_thread
from tests.e2e.upstreams import (
    FAKE_KEY,
    WEATHER_ARGS,
    WEATHER_SCHEMA,
    assert_problem,
    expected_reply,
    tool_result_reply,
)

PROMPT = "Tell me about the weather in Lisbon today"
MESSAGES = [{"role": "user", "content": PROMPT}]
REPLY = expected_reply(PROMPT)
KEY = '"${FAKE_KEY}"'
# A 1x1 PNG.
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
    )
).decode()


def _wrong_key(fake: FakeServer) -> None:
    fake.behaviour = Behaviour(api_key="not-the-gateway-key")


def _unknown_access_key(fake: FakeServer) -> None:
    fake.credentials = {"AKIDSOMEONEELSE00001": "another-secret"}  # type: ignore[attr-defined]


def _permission_denied(fake: FakeServer) -> None:
    fake.permission_denied = True  # type: ignore[attr-defined]


def _bedrock_env(tmp: Path, _fake: FakeServer) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": TEST_CREDENTIALS[0],
        "AWS_SECRET_ACCESS_KEY": TEST_CREDENTIALS[1],
        "AWS_EC2_METADATA_DISABLED": "true",  # no network beyond loopback
        "AWS_CONFIG_FILE": str(tmp / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "credentials"),
    }


def _vertex_env(tmp: Path, fake: FakeServer) -> dict[str, str]:
    account = fake.service_account(tmp / "service-account.json")  # type: ignore[attr-defined]
    return {
        "GOOGLE_APPLICATION_CREDENTIALS": str(account),
        # Nothing else of Google's: no gcloud login, no metadata server (no network beyond loopback).
        "CLOUDSDK_CONFIG": str(tmp / "gcloud"),
        "NO_GCE_CHECK": "True",
    }


def _vertex(fake: FakeServer) -> str:
    return f'type: vertex, base_url: "{fake.base_url}", project: test-project, region: europe-west4'


def _functionresponse(result: str) -> str:
    """A tool result as a Gemini `functionResponse` carries it."""
    return json.dumps({"output": result}, separators=(",", ":"))


@dataclass(frozen=True)
class NativeType:
    """How the battery runs one native backend type against its fake."""

    fake: type[FakeServer]
    #: The backend's YAML flow mapping (without braces), given the running fake.
    backend: Callable[[FakeServer], str]
    chat_model: str
    #: The upstream model for embeddings; None when the type has none.
    embedding_model: str | None
    #: Make the fake refuse the credentials the gateway sends.
    refuse_credentials: Callable[[FakeServer], None]
    #: What the upstream answers when it refuses them (the documented `auth` outcome).
    refused_status: int
    #: Process environment the backend needs (AWS's and Google's credential chains read it), given the
    #: test's tmp dir and the running fake.
    environment: Callable[[Path, FakeServer], dict[str, str]] = field(default=lambda _tmp, _fake: {})
    #: A tool result as the upstream API receives it (the fakes answer with its first 20 characters).
    tool_result: Callable[[str], str] = field(default=lambda result: result)


#: Every native type the battery covers (`vertex` twice: one row per publisher).
NATIVE_TYPES: dict[str, NativeType] = {
    "gemini": NativeType(
        fake=FakeGemini,
        backend=lambda fake: f'type: gemini, base_url: "{fake.base_url}", api_key: {KEY}',
        chat_model="gemini-2.5-flash",
        embedding_model="text-embedding-004",
        refuse_credentials=_wrong_key,
        refused_status=400,  # INVALID_ARGUMENT with reason API_KEY_INVALID
        tool_result=_functionresponse,
    ),
    "azure_openai": NativeType(
        fake=FakeAzureOpenAI,
        backend=lambda fake: (
            f'type: azure_openai, base_url: "{fake.base_url}", api_version: "{AZURE_API_VERSION}", '
            f"api_key: {KEY}"
        ),
        chat_model="gpt-4o-deployment",
        embedding_model="embedding-deployment",
        refuse_credentials=_wrong_key,
        refused_status=401,
    ),
    "bedrock": NativeType(
        fake=FakeBedrock,
        backend=lambda fake: f'type: bedrock, base_url: "{fake.base_url}", region: us-east-1',
        chat_model="anthropic.claude-3-5-haiku-20241022-v1:0",
        embedding_model="amazon.titan-embed-text-v2:0",
        refuse_credentials=_unknown_access_key,
        refused_status=403,  # UnrecognizedClientException
        environment=_bedrock_env,
    ),
    "vertex-gemini": NativeType(
        fake=FakeVertex,
        backend=_vertex,
        chat_model="gemini-2.5-flash",
        embedding_model="text-embedding-005",  # through :predict
        refuse_credentials=_permission_denied,
        refused_status=403,  # PERMISSION_DENIED: the service account lacks the permission
        environment=_vertex_env,
        tool_result=_functionresponse,
    ),
    "vertex-claude": NativeType(
        fake=FakeVertex,
        backend=_vertex,
        chat_model="claude-sonnet-4-5@20250929",
        embedding_model="text-embedding-005",  # the same backend's Google embedding model
        refuse_credentials=_permission_denied,
        refused_status=403,
        environment=_vertex_env,
    ),
}


@dataclass
class Battery:
    kind: str
    native: NativeType
    fake: Any
    fallback: FakeOpenAI
    gateway: InProcessGateway
    openai: openai.OpenAI
    anthropic: anthropic.Anthropic

    def heal(self) -> None:
        self.fake.last_body = None
        self.fake.behaviour = Behaviour(api_key=FAKE_KEY)
        self.fake.reset_stats()
        self.fallback.behaviour = Behaviour(api_key=FAKE_KEY)
        self.fallback.reset_stats()
        if isinstance(self.fake, FakeBedrock):
            self.fake.credentials = {TEST_CREDENTIALS[0]: TEST_CREDENTIALS[1]}
            self.fake.stream_exception = None
        if isinstance(self.fake, FakeVertex):
            self.fake.permission_denied = False


def _config(kind: str, native: NativeType, fake: FakeServer, fallback: FakeOpenAI) -> str:
    embed = (
        f"  embed: {{chain: [{{backend: native, model: {json.dumps(native.embedding_model)}}}]}}\n"
        if native.embedding_model
        else ""
    )
    model = json.dumps(native.chat_model)
    return f"""
backends:
  native: {{{native.backend(fake)}}}
  fallback: {{type: openai_compatible, base_url: "{fallback.base_url}", api_key: {KEY}}}
models:
  only: {{chain: [{{backend: native, model: {model}}}]}}
  resilient: {{chain: [{{backend: native, model: {model}}}, {{backend: fallback, model: gpt-4o}}]}}
{embed}failover:
  retry_on: [http_429, http_5xx, connect_error, timeout, overloaded]
  circuit_breaker: {{failure_threshold: 1000}}
reload: {{watch: false}}
audit: {{enabled: false}}
"""


@pytest.fixture(scope="module", params=sorted(NATIVE_TYPES))
def battery(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Battery]:
    kind: str = request.param
    native = NATIVE_TYPES[kind]
    tmp = tmp_path_factory.mktemp(kind)
    with (
        pytest.MonkeyPatch.context() as patch,
        native.fake.in_thread(Behaviour(api_key=FAKE_KEY)) as fake,
        FakeOpenAI.in_thread(Behaviour(api_key=FAKE_KEY)) as fallback,
    ):
        for name, value in native.environment(tmp, fake).items():
            patch.setenv(name, value)
        path = tmp / "gateway.yaml"
        path.write_text(_config(kind, native, fake, fallback))
        with gateway_in_thread(path, env={"FAKE_KEY": FAKE_KEY}) as gateway:
            oa = openai.OpenAI(base_url=gateway.url("/v1"), api_key="x", max_retries=0, timeout=30)
            an = anthropic.Anthropic(base_url=gateway.base_url, api_key="x", max_retries=0, timeout=30)
            yield Battery(kind, native, fake, fallback, gateway, oa, an)
            oa.close()
            an.close()


@pytest.fixture
def run(battery: Battery) -> Iterator[Battery]:
    battery.heal()
    yield battery
    battery.heal()


# -- chat


def test_openai_sdk_chat(run: Battery) -> None:
    raw = run.openai.chat.completions.with_raw_response.create(model="only", messages=MESSAGES)
    completion = raw.parse()
    assert raw.headers["x-gateway-backend"] == "native"
    assert completion.choices[0].message.content == REPLY.text
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == REPLY.tokens


def test_openai_sdk_stream(run: Battery) -> None:
    chunks = list(
        run.openai.chat.completions.create(
            model="only", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == REPLY.tokens


def test_anthropic_sdk_chat(run: Battery) -> None:
    message = run.anthropic.messages.create(model="only", max_tokens=200, messages=MESSAGES)
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == REPLY.text
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == REPLY.tokens


def test_anthropic_sdk_stream(run: Battery) -> None:
    with run.anthropic.messages.stream(model="only", max_tokens=200, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
    assert text == REPLY.text
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == REPLY.tokens


# -- tools


def test_openai_sdk_tool_round_trip(run: Battery) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}]
    first = run.openai.chat.completions.create(model="only", messages=MESSAGES, tools=tools)
    assert first.choices[0].finish_reason == "tool_calls"
    [call] = first.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and call.id
    assert json.loads(call.function.arguments) == WEATHER_ARGS
    result = '{"temperature": 21}'
    follow_up = [
        *MESSAGES,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": result},
    ]
    answer = run.openai.chat.completions.create(model="only", messages=follow_up, tools=tools)
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.content == tool_result_reply(run.native.tool_result(result))


def test_anthropic_sdk_tool_round_trip(run: Battery) -> None:
    tools = [{"name": "get_weather", "description": "The weather", "input_schema": WEATHER_SCHEMA}]
    first = run.anthropic.messages.create(model="only", max_tokens=200, messages=MESSAGES, tools=tools)
    assert first.stop_reason == "tool_use"
    [use] = [block for block in first.content if block.type == "tool_use"]
    assert use.name == "get_weather" and use.input == WEATHER_ARGS
    result = "21 degrees and sunny"
    follow_up = [
        *MESSAGES,
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": result}]},
    ]
    answer = run.anthropic.messages.create(model="only", max_tokens=200, messages=follow_up, tools=tools)
    assert answer.stop_reason == "end_turn"
    assert answer.content[0].text == tool_result_reply(run.native.tool_result(result))


# -- images (every native type takes inline images)


def test_openai_sdk_image(run: Battery) -> None:
    content = [
        {"type": "text", "text": PROMPT},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
    ]
    completion = run.openai.chat.completions.create(
        model="only", messages=[{"role": "user", "content": content}]
    )
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert PNG in json.dumps(run.fake.last_body)  # the image went upstream, in the type's own shape


def test_anthropic_sdk_image(run: Battery) -> None:
    content = [
        {"type": "text", "text": PROMPT},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
    ]
    message = run.anthropic.messages.create(
        model="only", max_tokens=200, messages=[{"role": "user", "content": content}]
    )
    assert message.content[0].text
    assert message.stop_reason == "end_turn"
    assert PNG in json.dumps(run.fake.last_body)


# -- embeddings


def test_openai_sdk_embeddings(run: Battery) -> None:
    if run.native.embedding_model is None:
        pytest.skip(f"{run.kind} has no embeddings")
    answer = run.openai.embeddings.create(model="embed", input=["hello", "hello world"])
    assert [item.index for item in answer.data] == [0, 1]
    assert all(len(item.embedding) > 0 for item in answer.data)
    assert answer.data[0].embedding != answer.data[1].embedding


# -- errors


def test_a_400_is_relayed_to_both_sdks(run: Battery) -> None:
    run.fake.behaviour = Behaviour(api_key=FAKE_KEY, status=400)
    with pytest.raises(openai.BadRequestError) as oa:
        run.openai.chat.completions.create(model="only", messages=MESSAGES)
    body = assert_problem(oa.value.response, 400, sdk_error=oa.value)
    assert body["type"] == "/problems/bad-request"
    with pytest.raises(anthropic.BadRequestError) as an:
        run.anthropic.messages.create(model="only", max_tokens=50, messages=MESSAGES)
    assert assert_problem(an.value.response, 400)["type"] == "/problems/bad-request"
    assert run.fallback.stats.total == 0


def test_refused_gateway_credentials_are_not_the_clients_401(run: Battery) -> None:
    run.native.refuse_credentials(run.fake)
    with pytest.raises(openai.InternalServerError) as oa:
        run.openai.chat.completions.create(model="only", messages=MESSAGES)
    body = assert_problem(oa.value.response, 502)
    assert body["type"] == "/problems/upstream-error"
    assert [(a["outcome"], a["status"]) for a in body["attempts"]] == [("auth", run.native.refused_status)]
    with pytest.raises(anthropic.InternalServerError) as an:
        run.anthropic.messages.create(model="only", max_tokens=50, messages=MESSAGES)
    assert assert_problem(an.value.response, 502)["type"] == "/problems/upstream-error"
    # With a second target the refusal moves on.
    raw = run.openai.chat.completions.with_raw_response.create(model="resilient", messages=MESSAGES)
    assert raw.headers["x-gateway-backend"] == "fallback"


@pytest.mark.parametrize(
    ("status", "outcome", "openai_error", "anthropic_error", "client_status", "problem"),
    [
        (429, "http_429", openai.RateLimitError, anthropic.RateLimitError, 429, "rate-limited"),
        (500, "http_5xx", openai.InternalServerError, anthropic.InternalServerError, 502, "upstream-error"),
        (503, "http_5xx", openai.InternalServerError, anthropic.InternalServerError, 502, "upstream-error"),
    ],
)
def test_retryable_failures_fail_over_or_answer_the_documented_status(
    run: Battery,
    status: int,
    outcome: str,
    openai_error: type[Exception],
    anthropic_error: type[Exception],
    client_status: int,
    problem: str,
) -> None:
    run.fake.behaviour = Behaviour(api_key=FAKE_KEY, status=status)
    for stream in (False, True):
        raw = run.openai.chat.completions.with_raw_response.create(
            model="resilient", messages=MESSAGES, stream=stream
        )
        parsed = raw.parse()
        text = (
            "".join(c.choices[0].delta.content or "" for c in parsed if c.choices)
            if stream
            else parsed.choices[0].message.content
        )
        assert (raw.headers["x-gateway-backend"], raw.headers["x-gateway-attempts"]) == ("fallback", "2")
        assert text == REPLY.text
    message = run.anthropic.messages.create(model="resilient", max_tokens=200, messages=MESSAGES)
    assert message.content[0].text == REPLY.text
    # A chain of one has nowhere to go.
    with pytest.raises(openai_error) as oa:  # type: ignore[call-overload]
        run.openai.chat.completions.create(model="only", messages=MESSAGES)
    body = assert_problem(oa.value.response, client_status)
    assert body["type"] == f"/problems/{problem}"
    assert [a["outcome"] for a in body["attempts"]] == [outcome]
    with pytest.raises(anthropic_error) as an:  # type: ignore[call-overload]
        run.anthropic.messages.create(model="only", max_tokens=50, messages=MESSAGES)
    assert assert_problem(an.value.response, client_status)["type"] == f"/problems/{problem}"


def test_a_stream_dying_mid_way_is_an_error_event_for_both_sdks(run: Battery) -> None:
    run.fake.behaviour = Behaviour(api_key=FAKE_KEY, drop_after_chunks=2)
    with pytest.raises(openai.APIError, match="mid-stream"):
        for _ in run.openai.chat.completions.create(model="resilient", messages=MESSAGES, stream=True):
            pass
    with (
        pytest.raises(anthropic.APIError, match="mid-stream"),
        run.anthropic.messages.stream(model="resilient", max_tokens=200, messages=MESSAGES) as stream,
    ):
        for _ in stream:
            pass
    assert run.fallback.stats.total == 0, "no failover once the first byte was sent"
