"""`type: bedrock` settings: the endpoint from the region, the region from an endpoint's host, and
a backend with neither refused by the schema with a message naming both."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.backends import BedrockSettings
from gateway.config.issues import ConfigError
from gateway.config.load import parse_config
from gateway.config.secret import Secret


def bedrock(backend: str, env: dict[str, str] | None = None) -> BedrockSettings:
    text = f"backends:\n  br: {backend}\nmodels:\n  m: {{chain: [{{backend: br, model: x}}]}}\n"
    config = parse_config(text.encode(), Path("/srv/gw/gateway.yaml"), env=env or {})
    settings = config.backend("br")
    assert type(settings) is BedrockSettings
    return settings


def test_the_endpoint_follows_the_region() -> None:
    settings = bedrock("{type: bedrock, region: eu-central-1, profile: prod}")
    assert settings.base_url == "https://bedrock-runtime.eu-central-1.amazonaws.com"
    assert (settings.region, settings.profile) == ("eu-central-1", "prod")
    assert settings.api_key == Secret("") and settings.enabled  # credentials come from the AWS chain


@pytest.mark.parametrize(
    ("base_url", "region"),
    [
        ("https://vpce-0a1b-xyz.bedrock-runtime.ap-southeast-2.vpce.amazonaws.com/", "ap-southeast-2"),
        ("https://bedrock-runtime-fips.us-gov-west-1.amazonaws.com", "us-gov-west-1"),
        ("http://127.0.0.1:9000", None),  # a proxy or a fake: the AWS configuration's region, at start
    ],
)
def test_a_base_url_names_the_region_when_its_host_does(base_url: str, region: str | None) -> None:
    settings = bedrock(f'{{type: bedrock, base_url: "{base_url}"}}')
    assert settings.region == region and settings.base_url == base_url.rstrip("/")


def test_an_explicit_region_wins_over_the_host() -> None:
    url = "https://bedrock-runtime.us-east-1.amazonaws.com"
    assert bedrock(f'{{type: bedrock, base_url: "{url}", region: us-west-2}}').region == "us-west-2"


def test_a_bedrock_api_key_comes_from_the_environment() -> None:
    settings = bedrock('{type: bedrock, region: us-east-1, api_key: "${BR_KEY}"}', {"BR_KEY": "abc"})
    assert settings.api_key.reveal() == "abc"


def test_neither_region_nor_base_url_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"needs `region` \(or a `base_url`\)"):
        bedrock("{type: bedrock}")


def test_settings_of_another_type_are_refused() -> None:
    with pytest.raises(ConfigError, match="anthropic_version"):
        bedrock("{type: bedrock, region: us-east-1, anthropic_version: '2023-06-01'}")
