"""Property-based fuzz of every route over loopback (issue 15, the standing suite): the real gateway,
models on a fake OpenAI and a fake Anthropic, each client protocol against each backend, and the admin
API with an admin key. Whatever is sent, no 5xx, and every error is problem+json with its request_id.

`GATEWAY_FUZZ_CASES` sets the number of cases (CI: the default, a few thousand); `GATEWAY_FUZZ_SEED`
another sequence of them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import requests

from gateway.testing.fuzz import fuzz_gateway
from tests.e2e.upstreams import GATEWAY_ENV, Upstreams, backends_yaml, fake_upstreams

CLIENT_KEY = "sk-fuzz-client"
ADMIN_KEY = "sk-fuzz-admin-0123456789"
CASES = int(os.environ.get("GATEWAY_FUZZ_CASES", "3000"))
SEED = int(os.environ.get("GATEWAY_FUZZ_SEED", "0"))


def config(up: Upstreams) -> str:
    return f"""
server:
  max_body_bytes: 65536
auth:
  client_keys:
    - {{name: fuzz, key: "${{FUZZ_CLIENT_KEY}}"}}
  admin_keys:
    - {{name: fuzz-admin, key: "${{FUZZ_ADMIN_KEY}}"}}
backends:
{backends_yaml(up)}
models:
  gpt: {{chain: [{{backend: oa, model: gpt-4o}}]}}
  claude: {{chain: [{{backend: an, model: claude-sonnet-test}}]}}
  either: {{chain: [{{backend: an, model: claude-x}}, {{backend: oa, model: gpt-4o}}]}}
"""


@pytest.fixture(scope="module")
def up() -> Iterator[Upstreams]:
    with fake_upstreams() as upstreams:
        yield upstreams


@pytest.fixture(scope="module")
def gateway(gateway_server_module, up: Upstreams):
    env = {**GATEWAY_ENV, "FUZZ_CLIENT_KEY": CLIENT_KEY, "FUZZ_ADMIN_KEY": ADMIN_KEY}
    return gateway_server_module(config(up), env=env)


def test_the_openapi_document_needs_no_key(gateway) -> None:
    response = requests.get(gateway.url("/openapi.json"), timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["openapi"].startswith("3.1")


@pytest.mark.timeout(600)
def test_no_client_input_gets_a_5xx_or_a_bare_error(gateway, up: Upstreams) -> None:
    report = fuzz_gateway(
        gateway.base_url,
        CASES,
        models=["gpt", "claude", "either"],
        client_key=CLIENT_KEY,
        admin_key=ADMIN_KEY,
        seed=SEED,
    )
    assert report.cases == CASES
    assert report.failed == 0, report.summary()
    # The fuzz reached the backends of both protocols, and refused plenty.
    assert report.by_status[200] > CASES // 20, report.summary()
    assert report.by_status[400] > CASES // 10, report.summary()
    assert up.openai.stats.requests and up.anthropic.stats.requests
