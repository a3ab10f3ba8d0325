"""A config file the gateway must not serve, met by a live gateway: an empty or comment-only file (an
editor between truncating and writing), one with no models, bytes YAML refuses. Each is a rejected
reload in the history and `last_error`, located, and the previous config keeps serving."""

from __future__ import annotations

import requests

from tests.conftest import wait_until, wait_watching

ADMIN_KEY = "admin-key-for-refusal-tests"
ENV = {"GW_ADMIN_KEY": ADMIN_KEY}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def config_text(tag: str) -> str:
    return f"""# test config {tag}
backends:
  up: {{type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}}
models:
  {tag}-a: {{chain: [{{backend: up}}]}}
  {tag}-b: {{chain: [{{backend: up}}]}}
auth:
  admin_keys: [{{name: ops, key: "${{GW_ADMIN_KEY}}"}}]
reload:
  debounce_ms: 50
"""


def model_ids(gateway) -> list[str]:
    response = requests.get(gateway.url("/v1/models"), timeout=5)
    assert response.status_code == 200
    return [m["id"] for m in response.json()["data"]]


def admin_config(gateway) -> dict:
    response = requests.get(gateway.url("/admin/api/config"), headers=ADMIN, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def test_an_emptied_file_is_refused_and_the_write_that_follows_is_applied(gateway_server) -> None:
    gateway = gateway_server(config_text("v1"), env=ENV)
    version = admin_config(gateway)["version"]
    wait_watching(gateway, headers=ADMIN)
    with gateway.config_path.open("r+b") as file:  # an editor truncating the file in place
        file.truncate(0)
    wait_until(lambda: admin_config(gateway)["last_error"] is not None, timeout=5)
    status = admin_config(gateway)
    assert status["version"] == version
    assert model_ids(gateway) == ["v1-a", "v1-b"], "the old config keeps serving"
    rejected = status["history"][0]
    assert status["last_error"] == rejected and rejected["outcome"] == "rejected"
    assert (rejected["source"], rejected["previous_version"]) == ("file", version)
    [error] = rejected["errors"]
    assert (error["line"], error["column"]) == (1, 1)
    assert "the file has no settings (it is empty or only comments)" in error["message"]
    # ...and then writing its content: the full write is applied, the error cleared.
    gateway.config_path.write_text(config_text("v2"))
    wait_until(lambda: model_ids(gateway) == ["v2-a", "v2-b"], timeout=5)
    status = admin_config(gateway)
    assert status["last_error"] is None and status["history"][0]["outcome"] == "applied"


def test_unservable_files_reloaded_through_the_api_are_recorded_rejections(gateway_server) -> None:
    gateway = gateway_server(config_text("v1").replace("debounce_ms: 50", "watch: false"), env=ENV)
    version = admin_config(gateway)["version"]
    cases = [
        (b"# nothing but a comment\n", (1, 1), "the file has no settings"),
        (b"server: {port: 8080}\n", (1, 1), "no models: define at least one"),
        (b"models:\n  m: {chain: []}\x00\x00\x00\n", (2, 17), "a NUL byte is not allowed"),
        (b"models:\n  caf\xe9: {}\n", (2, 6), "the file is not UTF-8 text: byte 0xe9 here"),
        (b"models:\n  m: \x1b[31m\n", (2, 6), "the control character U+001B is not allowed"),
    ]
    for content, (line, column), message in cases:
        gateway.config_path.write_bytes(content)
        response = requests.post(gateway.url("/admin/api/config/reload"), headers=ADMIN, timeout=5)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["request_id"] == response.headers["x-request-id"]
        [error] = problem["errors"]
        assert (error["line"], error["column"]) == (line, column) and message in error["message"], error
        status = admin_config(gateway)
        assert status["last_error"]["errors"] == problem["errors"]
        assert status["history"][0]["outcome"] == "rejected" and status["version"] == version
        assert model_ids(gateway) == ["v1-a", "v1-b"]
    assert [e["outcome"] for e in admin_config(gateway)["history"]] == ["rejected"] * len(cases) + ["applied"]
