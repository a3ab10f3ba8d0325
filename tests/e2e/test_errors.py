"""Error shapes of the model API, seen through the official OpenAI and Anthropic SDKs and raw HTTP.

Every error must be `application/problem+json` with `type, title, status, detail, instance, request_id`,
its `request_id` equal to the `x-request-id` header (and to the SDK exception's `request_id`), and an
`error.message` the SDKs show. No input, however malformed, may produce a 500.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
import requests

from tests.e2e.upstreams import (
    FAKE_KEY,
    GATEWAY_ENV,
    Upstreams,
    assert_problem,
    backends_yaml,
    fake_upstreams,
)

FULL_KEY = "sk-e2e-full-access"
GPT_KEY = "sk-e2e-gpt-only"
MAX_BODY = 2048
USER = [{"role": "user", "content": "hello there"}]

POST_ROUTES = [
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/messages",
    "/v1/messages/count_tokens",
]
ROUTES = {**dict.fromkeys(POST_ROUTES, "POST"), "/v1/models": "GET"}
# A valid body per route, for the tests that break one thing at a time.
VALID: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "gpt", "messages": USER},
    "/v1/responses": {"model": "gpt", "input": "hello there"},
    "/v1/completions": {"model": "gpt", "prompt": "hello there"},
    "/v1/embeddings": {"model": "gpt", "input": "hello there"},
    "/v1/messages": {"model": "claude", "max_tokens": 16, "messages": USER},
    "/v1/messages/count_tokens": {"model": "claude", "messages": USER},
}


def config(up: Upstreams) -> str:
    key = '"${FAKE_KEY}"'
    rejecting = """headers: {x-fake-behaviour: '{"status": 400}'}"""
    oa, an = up.openai.base_url, up.anthropic.base_url
    return f"""
server:
  max_body_bytes: {MAX_BODY}
auth:
  client_keys:
    - {{name: full, key: "${{E2E_FULL_KEY}}"}}
    - {{name: gpt-only, key: "${{E2E_GPT_KEY}}", models: ["gpt*"]}}
backends:
{backends_yaml(up)}
  oa-rejects: {{type: openai_compatible, base_url: "{oa}", api_key: {key}, {rejecting}}}
  an-rejects: {{type: anthropic, base_url: "{an}", api_key: {key}, {rejecting}}}
  oa-wrong-key: {{type: openai_compatible, base_url: "{oa}", api_key: "${{E2E_WRONG_KEY}}"}}
models:
  gpt: {{chain: [{{backend: oa, model: gpt-4o}}]}}
  claude: {{chain: [{{backend: an, model: claude-sonnet-test}}]}}
  gpt-strict: {{chain: [{{backend: oa-rejects, model: gpt-4o}}, {{backend: oa, model: gpt-4o}}]}}
  claude-strict: {{chain: [{{backend: an-rejects, model: claude-x}}, {{backend: an, model: claude-x}}]}}
  gpt-misconfigured: {{chain: [{{backend: oa-wrong-key, model: gpt-4o}}]}}
"""


@pytest.fixture(scope="module")
def up() -> Iterator[Upstreams]:
    with fake_upstreams() as upstreams:
        yield upstreams


@pytest.fixture(scope="module")
def gateway(gateway_server_module, up: Upstreams):
    env = {**GATEWAY_ENV, "E2E_FULL_KEY": FULL_KEY, "E2E_GPT_KEY": GPT_KEY, "E2E_WRONG_KEY": "sk-not-it"}
    return gateway_server_module(config(up), env=env)


def openai_client(gateway, key: str = FULL_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url("/v1"), api_key=key, max_retries=0, timeout=30)


def anthropic_client(gateway, key: str = FULL_KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def oai(gateway) -> Iterator[openai.OpenAI]:
    client = openai_client(gateway)
    yield client
    client.close()


@pytest.fixture(scope="module")
def ant(gateway) -> Iterator[anthropic.Anthropic]:
    client = anthropic_client(gateway)
    yield client
    client.close()


def post(
    gateway, path: str, data: bytes | Any, *, key: str | None = FULL_KEY, **kw: Any
) -> requests.Response:
    headers = {"content-type": "application/json", **kw.pop("headers", {})}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    return requests.post(gateway.url(path), data=data, headers=headers, timeout=30, **kw)


def check_sdk_error(error: Any, status: int, path: str) -> dict[str, Any]:
    body = assert_problem(error.response, status, sdk_error=error)
    assert body["instance"] == path
    # The SDKs show `error.message`: the detail must be in the exception's text.
    assert body["detail"] in str(error)
    return body


# ---------------------------------------------------------------------------------------- unknown model


def test_unknown_model_openai(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        oai.chat.completions.create(model="xyz", messages=USER)
    body = check_sdk_error(caught.value, 404, "/v1/chat/completions")
    assert "Model 'xyz' not found; available:" in caught.value.message
    available = body["detail"].split("available:", 1)[1]
    assert {"gpt", "claude", "gpt-strict"} <= {name.strip() for name in available.split(",")}
    assert body["error"]["type"] == "invalid_request_error"


def test_unknown_model_anthropic(ant: anthropic.Anthropic) -> None:
    for call in (
        lambda: ant.messages.create(model="xyz", max_tokens=16, messages=USER),
        lambda: ant.messages.count_tokens(model="xyz", messages=USER),
    ):
        with pytest.raises(anthropic.NotFoundError) as caught:
            call()
        body = assert_problem(caught.value.response, 404, sdk_error=caught.value)
        assert "Model 'xyz' not found; available:" in body["detail"]
        assert "Model 'xyz' not found; available:" in str(caught.value)
        assert caught.value.type == "not_found_error"


def test_client_request_id_is_the_problem_request_id(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        oai.chat.completions.create(model="xyz", messages=USER, extra_headers={"x-request-id": "e2e-err:1"})
    assert check_sdk_error(caught.value, 404, "/v1/chat/completions")["request_id"] == "e2e-err:1"
    with pytest.raises(anthropic.BadRequestError) as caught_a:
        ant.messages.create(
            model="claude", max_tokens=0, messages=USER, extra_headers={"x-request-id": "e2e-err:2"}
        )
    assert check_sdk_error(caught_a.value, 400, "/v1/messages")["request_id"] == "e2e-err:2"


def test_endpoints_the_gateway_does_not_serve_are_404_problems(
    oai: openai.OpenAI, ant: anthropic.Anthropic
) -> None:
    # SDK methods for endpoints outside the model API reach the gateway's fallback; the problem still
    # carries the id in the header each SDK reads (OpenAI: x-request-id, Anthropic: request-id).
    with pytest.raises(openai.NotFoundError) as caught:
        oai.models.retrieve("gpt")
    check_sdk_error(caught.value, 404, "/v1/models/gpt")
    for call, path in (
        (lambda: ant.models.retrieve("claude"), "/v1/models/claude"),
        (lambda: ant.messages.batches.list(), "/v1/messages/batches"),
    ):
        with pytest.raises(anthropic.NotFoundError) as caught_a:
            call()
        check_sdk_error(caught_a.value, 404, path)


def test_unknown_model_lists_only_what_the_key_may_use(gateway) -> None:
    with openai_client(gateway, GPT_KEY) as client, pytest.raises(openai.NotFoundError) as caught:
        client.embeddings.create(model="xyz", input="hello")
    body = check_sdk_error(caught.value, 404, "/v1/embeddings")
    available = {name.strip() for name in body["detail"].split("available:", 1)[1].split(",")}
    assert "gpt" in available and "claude" not in available and "claude-strict" not in available


# ---------------------------------------------------------------------------------------- keys


@pytest.mark.parametrize("key", [None, "sk-wrong-key"], ids=["missing", "wrong"])
def test_bad_key_openai(gateway, key: str | None) -> None:
    # The SDK insists on a key; a missing one is the Authorization header omitted.
    omit = {"Authorization": openai.Omit()} if key is None else {}
    with (
        openai_client(gateway, key or "unused") as client,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        client.chat.completions.create(model="gpt", messages=USER, extra_headers=omit)
    check_sdk_error(caught.value, 401, "/v1/chat/completions")
    assert caught.value.response.headers["www-authenticate"].lower().startswith("bearer")


@pytest.mark.parametrize("key", [None, "sk-wrong-key"], ids=["missing", "wrong"])
def test_bad_key_anthropic(gateway, key: str | None) -> None:
    omit = {"x-api-key": anthropic.Omit(), "Authorization": anthropic.Omit()} if key is None else {}
    with (
        anthropic_client(gateway, key or "unused") as client,
        pytest.raises(anthropic.AuthenticationError) as caught,
    ):
        client.messages.create(model="claude", max_tokens=16, messages=USER, extra_headers=omit)
    body = check_sdk_error(caught.value, 401, "/v1/messages")
    assert body["error"]["type"] == "authentication_error"


@pytest.mark.parametrize("path", [*POST_ROUTES, "/v1/models"])
def test_no_key_on_any_route_is_401(gateway, path: str) -> None:
    if path == "/v1/models":
        response = requests.get(gateway.url(path), timeout=30)
    else:
        response = post(gateway, path, b"{}", key=None)
    assert_problem(response, 401)


def test_key_whose_allowlist_excludes_the_model(gateway) -> None:
    with openai_client(gateway, GPT_KEY) as client:
        with pytest.raises(openai.PermissionDeniedError) as caught:
            client.chat.completions.create(model="claude", messages=USER)
        check_sdk_error(caught.value, 403, "/v1/chat/completions")
        assert "claude" in caught.value.message
        # ... and the key's models list leaves it out.
        assert sorted(m.id for m in client.models.list()) == ["gpt", "gpt-misconfigured", "gpt-strict"]
        assert client.chat.completions.create(model="gpt", messages=USER).choices[0].message.content
    with anthropic_client(gateway, GPT_KEY) as client:
        for call in (
            lambda: client.messages.create(model="claude", max_tokens=16, messages=USER),
            lambda: client.messages.count_tokens(model="claude-strict", messages=USER),
        ):
            with pytest.raises(anthropic.PermissionDeniedError) as caught_a:
                call()
            body = assert_problem(caught_a.value.response, 403, sdk_error=caught_a.value)
            assert "claude" in body["detail"]
            assert caught_a.value.type == "permission_error"


# ---------------------------------------------------------------------------------------- invalid fields

OPENAI_INVALID = [
    ("chat", {"messages": []}, "messages"),
    ("chat", {"messages": "hello"}, "messages"),
    ("chat", {"messages": [{"role": "user"}]}, "messages[0].content"),
    ("chat", {"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
    ("chat", {"messages": USER, "temperature": 3.5}, "temperature"),
    ("chat", {"messages": USER, "temperature": "hot"}, "temperature"),
    ("chat", {"messages": USER, "max_tokens": "ten"}, "max_tokens"),
    ("chat", {"messages": USER, "max_tokens": 0}, "max_tokens"),
    ("chat", {"messages": USER, "top_p": 1.5}, "top_p"),
    ("chat", {"messages": USER, "stop": ["a", 1]}, "stop[1]"),
    ("chat", {"messages": USER, "tools": [{"type": "function"}]}, "tools[0].function"),
    ("chat", {"messages": USER, "tool_choice": "sometimes"}, "tool_choice"),
    ("completions", {"prompt": []}, "prompt"),
    ("completions", {"prompt": "hi", "max_tokens": -1}, "max_tokens"),
    ("embeddings", {"input": ""}, "input"),
    ("embeddings", {"input": "hi", "encoding_format": "hex"}, "encoding_format"),
    ("embeddings", {"input": "hi", "dimensions": 0}, "dimensions"),
]


@pytest.mark.parametrize(("endpoint", "fields", "field"), OPENAI_INVALID)
def test_invalid_field_openai(oai: openai.OpenAI, endpoint: str, fields: dict[str, Any], field: str) -> None:
    create = {
        "chat": oai.chat.completions.create,
        "completions": oai.completions.create,
        "embeddings": oai.embeddings.create,
    }[endpoint]
    with pytest.raises(openai.BadRequestError) as caught:
        create(model="gpt", **fields)
    path = {"chat": "/v1/chat/completions"}.get(endpoint, f"/v1/{endpoint}")
    body = check_sdk_error(caught.value, 400, path)
    assert body["field"] == field
    assert caught.value.param == field
    assert f"{field}: " in caught.value.message


ANTHROPIC_INVALID = [
    ({"max_tokens": anthropic.omit, "messages": USER}, "max_tokens"),
    ({"max_tokens": "many", "messages": USER}, "max_tokens"),
    ({"max_tokens": 16, "messages": []}, "messages"),
    ({"max_tokens": 16, "messages": "hello"}, "messages"),
    ({"max_tokens": 1.5, "messages": USER}, "max_tokens"),
    ({"max_tokens": 16, "messages": [{"role": "system", "content": "hi"}]}, "messages[0].role"),
    ({"max_tokens": 16, "messages": USER, "temperature": 1.5}, "temperature"),
    ({"max_tokens": 16, "messages": USER, "system": 5}, "system"),
    ({"max_tokens": 16, "messages": USER, "tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
    ({"max_tokens": 16, "messages": USER, "stop_sequences": "STOP"}, "stop_sequences"),
    ({"max_tokens": 16, "messages": USER, "tools": [{"name": "t"}]}, "tools[0].input_schema"),
]


@pytest.mark.parametrize(("fields", "field"), ANTHROPIC_INVALID)
@pytest.mark.parametrize("model", ["claude", "gpt"])
def test_invalid_field_anthropic(
    ant: anthropic.Anthropic, model: str, fields: dict[str, Any], field: str
) -> None:
    known = {"max_tokens", "messages", "system", "tool_choice", "stop_sequences", "tools"}
    extra_body = {k: v for k, v in fields.items() if k not in known}  # this SDK has no `temperature`
    with pytest.raises(anthropic.BadRequestError) as caught:
        ant.messages.create(
            model=model, **{k: v for k, v in fields.items() if k in known}, extra_body=extra_body or None
        )
    body = check_sdk_error(caught.value, 400, "/v1/messages")
    assert body["field"] == field
    assert body["error"]["type"] == "invalid_request_error"
    assert caught.value.api_message is not None and caught.value.api_message.startswith(f"{field}: ")


def test_invalid_field_count_tokens(ant: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        ant.messages.count_tokens(model="claude", messages=[{"role": "user", "content": 42}])
    body = check_sdk_error(caught.value, 400, "/v1/messages/count_tokens")
    assert body["field"] == "messages[0].content"


# ---------------------------------------------------------------------------------------- bodies and methods


@pytest.mark.parametrize("path", POST_ROUTES)
@pytest.mark.parametrize(
    ("raw", "says"),
    [(b'{"model": "gpt",', "not valid JSON"), (b"", "not valid JSON"), (b"[1, 2]", "JSON object")],
    ids=["truncated", "empty", "array"],
)
def test_body_that_is_not_a_json_object(gateway, path: str, raw: bytes, says: str) -> None:
    body = assert_problem(post(gateway, path, raw), 400)
    assert body["instance"] == path
    assert says in body["detail"]


@pytest.mark.parametrize("path", POST_ROUTES)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversized_body_is_413(gateway, path: str, chunked: bool) -> None:
    payload = {**VALID[path], "pad": "x" * (MAX_BODY * 2)}
    data = json.dumps(payload).encode()
    response = post(gateway, path, iter([data]) if chunked else data)
    body = assert_problem(response, 413)
    assert body["instance"] == path
    assert str(MAX_BODY) in body["detail"]


def test_oversized_body_through_the_sdks(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    big = [{"role": "user", "content": "word " * MAX_BODY}]
    with pytest.raises(openai.APIStatusError) as caught:
        oai.chat.completions.create(model="gpt", messages=big)
    check_sdk_error(caught.value, 413, "/v1/chat/completions")
    with pytest.raises(anthropic.APIStatusError) as caught_a:
        ant.messages.create(model="claude", max_tokens=16, messages=big)
    body = check_sdk_error(caught_a.value, 413, "/v1/messages")
    assert body["error"]["type"] == "request_too_large"


@pytest.mark.parametrize(
    ("path", "allowed", "method"),
    [
        (path, allowed, method)
        for path, allowed in ROUTES.items()
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE")
        if method != allowed
    ],
)
def test_wrong_method_is_405(gateway, path: str, allowed: str, method: str) -> None:
    response = requests.request(
        method,
        gateway.url(path),
        json=VALID.get(path),
        headers={"authorization": f"Bearer {FULL_KEY}"},
        timeout=30,
    )
    body = assert_problem(response, 405)
    assert response.headers["allow"] == allowed
    assert body["instance"] == path and method in body["detail"]


# ---------------------------------------------------------------------------------------- upstream errors


def chat_calls(up: Upstreams) -> tuple[int, int]:
    oa, an = up.openai.stats.requests, up.anthropic.stats.requests
    return oa.get("/v1/chat/completions", 0), an.get("/v1/messages", 0)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("model", ["gpt-strict", "claude-strict"])
def test_upstream_400_reaches_an_openai_client_without_failover(
    oai: openai.OpenAI, up: Upstreams, model: str, stream: bool
) -> None:
    before = chat_calls(up)
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model=model, messages=USER, stream=stream)
    body = check_sdk_error(caught.value, 400, "/v1/chat/completions")
    assert "Injected failure (HTTP 400)" in body["detail"]
    assert body["error"]["type"] == "invalid_request_error"
    after = chat_calls(up)
    assert sum(after) - sum(before) == 1, "a client error is not retried on the next target"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("model", ["claude-strict", "gpt-strict"])
def test_upstream_400_reaches_an_anthropic_client_without_failover(
    ant: anthropic.Anthropic, up: Upstreams, model: str, stream: bool
) -> None:
    before = chat_calls(up)
    with pytest.raises(anthropic.BadRequestError) as caught:
        ant.messages.create(model=model, max_tokens=16, messages=USER, stream=stream)
    body = check_sdk_error(caught.value, 400, "/v1/messages")
    assert "Injected failure (HTTP 400)" in body["detail"]
    assert caught.value.type == "invalid_request_error"
    after = chat_calls(up)
    assert sum(after) - sum(before) == 1, "a client error is not retried on the next target"


def test_upstream_400_on_a_real_validation_error(oai: openai.OpenAI) -> None:
    # The fake refuses more than 8192 dimensions; the gateway only checks that the number is positive.
    with pytest.raises(openai.BadRequestError) as caught:
        oai.embeddings.create(model="gpt", input="hello", dimensions=9000)
    body = check_sdk_error(caught.value, 400, "/v1/embeddings")
    assert "dimensions" in body["detail"]


def test_upstream_refusing_the_gateway_key_is_not_the_clients_401(oai: openai.OpenAI, up: Upstreams) -> None:
    assert FAKE_KEY != "sk-not-it"
    with pytest.raises(openai.InternalServerError) as caught:
        oai.chat.completions.create(model="gpt-misconfigured", messages=USER)
    body = check_sdk_error(caught.value, 502, "/v1/chat/completions")
    assert "refused the gateway's credentials" in body["detail"]
    assert "sk-not-it" not in caught.value.response.text, "the upstream key never reaches the client"


# ---------------------------------------------------------------------------------------- no 500s

BAD_BODIES: list[bytes] = [
    b"",
    b"null",
    b"123",
    b'"a string"',
    b"[]",
    b"{",
    b"\xff\xfe\x00garbage",
    b'{"model": null}',
    b'{"model": 123}',
    b'{"model": ["gpt"]}',
    b'{"model": "gpt"}',
    b'{"model": "claude"}',
    b'{"model": "gpt", "messages": null, "prompt": null, "input": null}',
    b'{"model": "gpt", "messages": [1], "prompt": [1.5], "input": [{}]}',
    b'{"model": "claude", "messages": [[]], "prompt": [[]], "input": [[]]}',
    b'{"model": "gpt", "messages": [{"role": 5}], "prompt": [[1, "x"]], "input": [null]}',
    b'{"model": "claude", "max_tokens": 1e400, "messages": [{"role": "user", "content": "x"}]}',
    b'{"model": "claude", "max_tokens": 123456789012345678901234567890, "messages": []}',
    b'{"model": "claude", "max_tokens": true, "messages": [{"role": "user", "content": [null]}]}',
    b'{"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": 7}]}]}',
    b'{"model": "gpt", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}',
    b'{"model": "gpt", "messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": 3}]}]}',
    b'{"model": "gpt", "messages": [{"role": "tool", "content": "r"}]}',
    b'{"model": "claude", "max_tokens": 5, "system": [{"type": "image"}], "messages": []}',
    b'{"model": "claude", "max_tokens": 5, "metadata": [], "tools": {}, "messages": []}',
    b'{"model": "gpt", "stream": "yes", "stream_options": [], "messages": [], "prompt": "x", "input": "x"}',
    b'{"model": "gpt", "stream_options": {"include_usage": "yes"}, "messages": [], "prompt": "x"}',
    b'{"model": "gpt", "tool_choice": {"type": "function"}, "tools": [{"type": 1}], "messages": []}',
    b'{"model": "gpt", "temperature": NaN, "messages": []}',
    b'{"model": "gpt", "messages": [{"role": "user", "content": "x"}], "stop": {"a": 1}}',
    b'{"model": "gpt", "input": "x", "encoding_format": ["float"], "dimensions": "8"}',
    b'{"model": "claude", "messages": [{"role": "user", "content": "x"}], "tool_choice": "auto"}',
    b'{"model": "' + b"m" * 1500 + b'", "messages": []}',
    b'{"model": "gpt", "messages": [' + b"[" * 1000 + b"]" * 1000 + b"]}",
    *(
        json.dumps(body).encode()
        for body in (
            {
                "model": "gpt",
                "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "data:x"}]}],
            },
            {
                "model": "claude",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "tool_result"}]}],
            },
            {
                "model": "claude",
                "max_tokens": 5,
                "messages": [{"role": "assistant", "content": [{"type": "tool_use"}]}],
            },
        )
    ),
]


@pytest.mark.parametrize("path", POST_ROUTES)
def test_no_bad_input_is_a_500(gateway, path: str) -> None:
    answers = []
    for raw in BAD_BODIES:
        response = post(gateway, path, raw)
        answers.append(response.status_code)
        assert response.status_code < 500, f"{path} {raw[:120]!r} -> {response.status_code}: {response.text}"
        if response.status_code >= 400:  # a few bodies are valid for some routes
            assert_problem(response, response.status_code)
    assert sum(400 <= status < 500 for status in answers) >= len(BAD_BODIES) - 2, answers
    # Odd headers and query strings do not break it either.
    odd = post(
        gateway,
        path + "?stream=true&model=x",
        b"{}",
        headers={
            "content-type": "text/plain",
            "x-request-id": "x" * 500,
            "anthropic-version": "not-a-version",
        },
    )
    assert 400 <= odd.status_code < 500 and odd.headers["x-request-id"] != "x" * 500
    assert_problem(odd, odd.status_code)
    for method in ("GET", "PUT", "PATCH", "DELETE", "OPTIONS"):
        other = requests.request(method, gateway.url(path), data=b"\x00", timeout=30)
        assert 400 <= other.status_code < 500, (method, other.status_code, other.text)


def test_models_route_never_500s(gateway) -> None:
    for headers in ({}, {"authorization": "Bearer"}, {"authorization": "Basic abc"}, {"x-api-key": ""}):
        response = requests.get(gateway.url("/v1/models?limit=-1"), headers=headers, timeout=30)
        assert_problem(response, 401)
    response = requests.get(gateway.url("/v1/models"), headers={"x-api-key": FULL_KEY}, timeout=30)
    assert response.status_code == 200
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        other = requests.request(method, gateway.url("/v1/models"), data=b"{", timeout=30)
        assert 400 <= other.status_code < 500, (method, other.status_code)
