"""`type: vertex` settings: the endpoint from the region (the global endpoint for `global`), a
`base_url` for a proxy, capabilities by publisher, and `project` and `region` required by the schema,
located by `gateway check`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config.backends import VertexSettings
from gateway.config.issues import ConfigError
from gateway.config.load import parse_config


def vertex(backend: str) -> VertexSettings:
    text = f"backends:\n  vx: {backend}\nmodels:\n  m: {{chain: [{{backend: vx, model: x}}]}}\n"
    config = parse_config(text.encode(), Path("/srv/gw/gateway.yaml"), env={})
    settings = config.backend("vx")
    assert type(settings) is VertexSettings
    return settings


@pytest.mark.parametrize(
    ("region", "base_url"),
    [
        ("us-central1", "https://us-central1-aiplatform.googleapis.com"),
        ("global", "https://aiplatform.googleapis.com"),
    ],
)
def test_the_endpoint_follows_the_region(region: str, base_url: str) -> None:
    settings = vertex(f"{{type: vertex, project: my-project, region: {region}}}")
    assert (settings.project, settings.region, settings.base_url) == ("my-project", region, base_url)
    assert settings.enabled  # credentials come from Google's default chain, not the file


def test_a_base_url_wins_for_a_proxy() -> None:
    settings = vertex('{type: vertex, project: p, region: us-east5, base_url: "http://127.0.0.1:9000/"}')
    assert settings.base_url == "http://127.0.0.1:9000"


def test_capabilities_follow_the_publisher() -> None:
    settings = vertex("{type: vertex, project: p, region: us-east5}")
    gemini = settings.capabilities_for("gemini-2.5-pro")
    claude = settings.capabilities_for("claude-sonnet-4-5@20250929")
    assert {"json_schema", "penalties", "top_k"} <= gemini and "embeddings" not in gemini
    assert claude == {"chat", "tools", "images", "top_k", "reasoning"}
    assert settings.capabilities_for("text-embedding-005") == {"embeddings"}
    assert settings.capabilities_for("gemini-embedding-001") == {"embeddings"}


@pytest.mark.parametrize(
    ("backend", "missing"),
    [("{type: vertex, region: us-east5}", "project"), ("{type: vertex, project: p}", "region")],
)
def test_project_and_region_are_required(backend: str, missing: str) -> None:
    with pytest.raises(ConfigError) as refused:
        vertex(backend)
    (issue,) = refused.value.issues
    assert issue.path == "backends.vx"
    assert missing in issue.message


def test_an_api_key_is_refused_naming_google_credentials() -> None:
    with pytest.raises(ConfigError, match="takes no api_key: it authenticates with Google credentials"):
        vertex('{type: vertex, project: p, region: us-east5, api_key: "${KEY}"}')


def test_gateway_check_locates_a_vertex_backend_without_project(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "models:\n  m: {chain: [{backend: vx, model: gemini-2.5-flash}]}\n"
        "backends:\n  vx:\n    type: vertex\n    region: us-central1\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check", str(path)], capture_output=True, text=True
    )
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"{path}:4:" in out and "backends.vx" in out and "project" in out
