"""Backend settings, one frozen dataclass per backend `type`, chosen by that tag (no flat union of every
field), and the registry type -> settings class the loader builds from.

Settings compare by value and hash: a reload carries a backend object over when its settings are
equal to the live ones. A new backend type is one settings class here (registered in
`SETTINGS_BY_TYPE`), one backend class in `gateway/backends/` (registered in its registry) and its
branch of the schema's `backend` definition.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Literal, Self

from gateway.config.capabilities import default_capabilities, resolve_capabilities
from gateway.config.providers import preset
from gateway.config.secret import Secret

__all__ = [
    "SETTINGS_BY_TYPE",
    "AnthropicSettings",
    "AzureOpenAISettings",
    "BackendLimits",
    "BackendSettings",
    "BackendSource",
    "BedrockSettings",
    "GeminiSettings",
    "HTTPSettings",
    "MLXSettings",
    "OpenAICompatibleSettings",
    "OpenAISettings",
    "Price",
    "VertexSettings",
    "backend_settings",
]


@dataclass(frozen=True, slots=True)
class BackendSource:
    """What building one backend's settings reads: its mapping as written (schema-valid, defaults
    filled), how the loader resolves a path and where `api_key` came from."""

    name: str
    raw: Mapping[str, Any]
    #: A path as written -> absolute (relative to the config file's directory).
    resolve_path: Callable[[str], Path]
    #: The environment variables `api_key` was read from (named when an empty key disables a backend).
    api_key_env: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens of each kind (`backends.<name>.prices.<model>`)."""

    input: float
    output: float
    #: Input tokens read from the prompt cache.
    cached_input: float
    #: Input tokens written to the prompt cache.
    cache_write: float

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> Price:
        """From a schema-valid mapping: the cache prices default to the input price."""
        plain = float(raw["input"])
        return cls(
            input=plain,
            output=float(raw["output"]),
            cached_input=float(raw.get("cached_input", plain)),
            cache_write=float(raw.get("cache_write", plain)),
        )


@dataclass(frozen=True, slots=True)
class BackendLimits:
    """`backends.<name>.limits`: the provider's quota, counted by the gateway (None: no limit)."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


@dataclass(frozen=True, slots=True)
class BackendSettings:
    """What every backend has, whatever its type."""

    #: The `type` tag in gateway.yaml; each subclass sets its own.
    type: ClassVar[str]
    name: str
    enabled: bool
    #: Why the backend is off, in words ("api_key is empty"), or "" when enabled.
    disabled_reason: str
    #: Most requests in flight to the backend (0: no limit).
    max_concurrency: int
    #: Most requests waiting for a slot (or, for mlx, for a place in the running batch).
    max_queue: int
    #: Longest wait for a slot under `max_concurrency` (0: until the request's deadline).
    queue_timeout_seconds: float
    #: Upstream model -> price, as written (the shipped table fills the rest when routes are compiled).
    #: Not compared: a price or quota change does not rebuild the backend (its pools and weights stay).
    prices: Mapping[str, Price] = field(compare=False)
    limits: BackendLimits = field(compare=False)
    #: What the backend can do (`gateway.config.capabilities`): its type's defaults with
    #: `backends.<name>.capabilities` applied. Not compared: a change re-routes, it rebuilds nothing.
    capabilities: frozenset[str] = field(compare=False)
    #: `backends.<name>.capabilities` as written (name -> on/off), applied again per chain target on
    #: top of the defaults for its upstream model.
    capability_overrides: Mapping[str, bool] = field(compare=False)

    @classmethod
    def from_source(cls, source: BackendSource) -> Self:
        return cls(**cls._fields_from(source))

    @classmethod
    def _fields_from(cls, source: BackendSource) -> dict[str, Any]:
        """The keyword arguments of this class, read from `source`; subclasses add their own.
        (They name their class in `super(...)`: a slots dataclass is a new class, which the
        zero-argument form would not see.)"""
        raw = source.raw
        overrides = raw.get("capabilities") or {}
        return {
            "name": source.name,
            "enabled": raw["enabled"],
            "disabled_reason": "" if raw["enabled"] else "enabled: false",
            "max_concurrency": raw["max_concurrency"],
            "max_queue": raw["max_queue"],
            "queue_timeout_seconds": raw["queue_timeout_seconds"],
            "prices": MappingProxyType({m: Price.from_raw(p) for m, p in raw.get("prices", {}).items()}),
            "limits": BackendLimits(**raw.get("limits", {})),
            "capabilities": resolve_capabilities(
                default_capabilities(raw["type"], provider=raw.get("provider")), overrides
            ),
            "capability_overrides": MappingProxyType(dict(overrides)),
        }

    def capabilities_for(
        self, upstream_model: str, target: Mapping[str, bool] | None = None
    ) -> frozenset[str]:
        """The capabilities of one chain target on this backend: the defaults for `upstream_model`,
        then this backend's overrides, then the target's own (`models.<m>.chain[i].capabilities`)."""
        base = default_capabilities(self.type, upstream_model, self.preset_name())
        return resolve_capabilities(resolve_capabilities(base, self.capability_overrides), target)

    def preset_name(self) -> str | None:
        """The vendor preset (`gateway.config.providers`) these settings follow; None for most types."""
        return None


@dataclass(frozen=True, slots=True)
class HTTPSettings(BackendSettings):
    """A backend reached over HTTP with its own connection pool."""

    #: A cloud API's usual key variable. A cloud backend whose key is empty is disabled, so the
    #: default config runs offline and a key in the environment switches the backend on.
    cloud_key_env: ClassVar[str | None] = None
    #: Without a trailing slash.
    base_url: str
    api_key: Secret
    #: Extra headers sent with every request, sorted by name.
    headers: tuple[tuple[str, Secret], ...]
    max_connections: int

    @classmethod
    def _uses_api_key(cls, raw: Mapping[str, Any]) -> bool:
        """Whether this backend authenticates with `api_key` (else an empty one does not disable it)."""
        return True

    @classmethod
    def _fields_from(cls, source: BackendSource) -> dict[str, Any]:
        fields = super(HTTPSettings, cls)._fields_from(source)
        raw = source.raw
        api_key = raw.get("api_key", "")
        if fields["enabled"] and cls.cloud_key_env and cls._uses_api_key(raw) and not api_key:
            variables = source.api_key_env or (cls.cloud_key_env,)
            fields["enabled"] = False
            fields["disabled_reason"] = f"api_key is empty (set {' or '.join(variables)} to enable it)"
        fields.update(
            base_url=raw["base_url"].rstrip("/"),
            api_key=Secret(api_key),
            headers=tuple((k, Secret(v)) for k, v in sorted(raw["headers"].items())),
            max_connections=raw["max_connections"],
        )
        return fields


@dataclass(frozen=True, slots=True)
class OpenAICompatibleSettings(HTTPSettings):
    """`openai_compatible`: any server speaking OpenAI's API (vLLM, Ollama, mlx_lm.server, a gateway),
    or a vendor named by `provider`, whose preset fills the base URL and states what it refuses."""

    type: ClassVar[str] = "openai_compatible"
    #: A `gateway.config.providers` preset name, or None for a plain OpenAI-compatible server.
    provider: str | None = None
    #: OpenRouter's attribution headers (`HTTP-Referer`, `X-Title`), sent when set.
    app_url: str | None = None
    app_title: str | None = None

    @classmethod
    def _fields_from(cls, source: BackendSource) -> dict[str, Any]:
        raw = source.raw
        vendor = preset(raw.get("provider"))
        if vendor is not None and not raw.get("base_url"):
            source = replace(source, raw={**raw, "base_url": vendor.base_url})
        fields = super(OpenAICompatibleSettings, cls)._fields_from(source)
        if vendor is not None and vendor.key_env and fields["enabled"] and not raw.get("api_key"):
            fields["enabled"] = False
            if source.api_key_env:
                variables = " or ".join(source.api_key_env)
                fields["disabled_reason"] = f"api_key is empty (set {variables} to enable it)"
            else:
                fields["disabled_reason"] = (
                    f"no api_key ({vendor.title} needs one: write `api_key: ${{{vendor.key_env}}}` "
                    f"and set {vendor.key_env})"
                )
        fields.update(
            provider=raw.get("provider"), app_url=raw.get("app_url"), app_title=raw.get("app_title")
        )
        return fields

    def preset_name(self) -> str | None:
        return self.provider


@dataclass(frozen=True, slots=True)
class AzureOpenAISettings(HTTPSettings):
    """`azure_openai`: Azure OpenAI. `base_url` is the resource's endpoint
    (https://{resource}.openai.azure.com), requests go to `/openai/deployments/{deployment}/...` with
    the chain target's `model` as the deployment, and `api-version` on every request."""

    type: ClassVar[str] = "azure_openai"
    cloud_key_env: ClassVar[str | None] = "AZURE_OPENAI_API_KEY"
    api_version: str
    #: `api_key`: the key in the `api-key` header; `entra`: a Microsoft Entra ID bearer token.
    auth: Literal["api_key", "entra"]
    #: The Entra ID token for `auth: entra` (from the environment; the gateway does not refresh it).
    azure_ad_token: Secret

    @classmethod
    def _fields_from(cls, source: BackendSource) -> dict[str, Any]:
        raw = source.raw
        if not raw.get("base_url"):
            source = replace(source, raw={**raw, "base_url": f"https://{raw['resource']}.openai.azure.com"})
        fields = super(AzureOpenAISettings, cls)._fields_from(source)
        auth, token = raw["auth"], raw.get("azure_ad_token", "")
        if fields["enabled"] and auth == "entra" and not token:
            fields["enabled"] = False
            fields["disabled_reason"] = (
                "azure_ad_token is empty (auth: entra; set the variable it names, e.g. AZURE_OPENAI_AD_TOKEN)"
            )
        fields.update(api_version=raw["api_version"], auth=auth, azure_ad_token=Secret(token))
        return fields

    @classmethod
    def _uses_api_key(cls, raw: Mapping[str, Any]) -> bool:
        return raw["auth"] == "api_key"


@dataclass(frozen=True, slots=True)
class OpenAISettings(HTTPSettings):
    """`openai`: OpenAI's own API."""

    type: ClassVar[str] = "openai"
    cloud_key_env: ClassVar[str | None] = "OPENAI_API_KEY"
    #: Sent as `OpenAI-Organization` when set.
    organization: str | None

    @classmethod
    def _fields_from(cls, source: BackendSource) -> dict[str, Any]:
        return {
            **super(OpenAISettings, cls)._fields_from(source),
            "organization": source.raw.get("organization"),
        }


@dataclass(frozen=True, slots=True)
class AnthropicSettings(HTTPSettings):
    """`anthropic`: Anthropic's Messages API."""

    type: ClassVar[str] = "anthropic"
    cloud_key_env: ClassVar[str | None] = "ANTHROPIC_API_KEY"
    anthropic_version: str

    @classmethod
    def _fields_from(cls, source: BackendSource) -> dict[str, Any]:
        return {
            **super(AnthropicSettings, cls)._fields_from(source),
            "anthropic_version": source.raw["anthropic_version"],
        }


#: A Bedrock Runtime host (public, FIPS or a VPC endpoint's), whose third label from the end is its region.
_AWS_HOST = re.compile(
    r"(?:^|\.)bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.(?:vpce\.)?amazonaws\.com(?:\.cn)?$"
)


@dataclass(frozen=True, slots=True)
class BedrockSettings(HTTPSettings):
    """`bedrock`: Amazon Bedrock's Converse API, requests signed with AWS credentials (SigV4) found by
    the usual AWS chain (environment, `profile`, instance or task role), or a Bedrock API key."""

    type: ClassVar[str] = "bedrock"
    #: The AWS region requests are signed for; None: read from `base_url`'s host when it names one,
    #: else from the AWS configuration when the backend starts.
    region: str | None
    #: The AWS shared-config profile credentials (and a missing region) are read from; None: the
    #: default chain.
    profile: str | None

    @classmethod
    def _fields_from(cls, source: BackendSource) -> dict[str, Any]:
        raw = dict(source.raw)
        region = raw.get("region")
        if raw.get("base_url") is None:
            raw["base_url"] = f"https://bedrock-runtime.{region}.amazonaws.com"
        elif region is None:
            host = raw["base_url"].split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
            found = _AWS_HOST.search(host)
            region = found.group(1) if found else None
        return {
            **super(BedrockSettings, cls)._fields_from(
                BackendSource(source.name, raw, source.resolve_path, source.api_key_env)
            ),
            "region": region,
            "profile": raw.get("profile"),
        }


@dataclass(frozen=True, slots=True)
class GeminiSettings(HTTPSettings):
    """`gemini`: Google's Gemini API (Google AI Studio keys), spoken natively."""

    type: ClassVar[str] = "gemini"
    cloud_key_env: ClassVar[str | None] = "GEMINI_API_KEY"


@dataclass(frozen=True, slots=True)
class VertexSettings(HTTPSettings):
    """`vertex`: Google Cloud Vertex AI: Gemini models (publisher google) and Anthropic's Claude
    models (publisher anthropic, a chain target's `model` starting with `claude-`), with Google's
    Application Default Credentials (no key in the file)."""

    type: ClassVar[str] = "vertex"
    #: The Google Cloud project id, in every request's path.
    project: str
    #: The Vertex AI location (`us-central1`, `global`), in every request's path.
    region: str

    @classmethod
    def _fields_from(cls, source: BackendSource) -> dict[str, Any]:
        raw = dict(source.raw)
        region = raw["region"]
        if raw.get("base_url") is None:
            host = (
                "aiplatform.googleapis.com" if region == "global" else f"{region}-aiplatform.googleapis.com"
            )
            raw["base_url"] = f"https://{host}"
        return {
            **super(VertexSettings, cls)._fields_from(
                BackendSource(source.name, raw, source.resolve_path, source.api_key_env)
            ),
            "project": raw["project"],
            "region": region,
        }


@dataclass(frozen=True, slots=True)
class MLXSettings(BackendSettings):
    """`mlx`: a local model served in-process with continuous batching."""

    type: ClassVar[str] = "mlx"
    #: The model directory, absolute (relative paths are resolved from the config file's directory).
    path: Path | None
    hf_repo: str | None
    create_preset: str | None
    load: Literal["startup", "first_use"]
    batching: bool
    max_batch_size: int
    prompt_cache_size: int
    default_max_tokens: int

    @classmethod
    def _fields_from(cls, source: BackendSource) -> dict[str, Any]:
        raw = source.raw
        path = raw.get("path")
        return {
            **super(MLXSettings, cls)._fields_from(source),
            "path": source.resolve_path(path) if path is not None else None,
            "hf_repo": raw.get("hf_repo"),
            "create_preset": raw.get("create_preset"),
            "load": raw["load"],
            "batching": raw["batching"],
            "max_batch_size": raw["max_batch_size"],
            "prompt_cache_size": raw["prompt_cache_size"],
            "default_max_tokens": raw["default_max_tokens"],
        }


#: The settings class of each backend `type` (the schema's `type` enum lists the same names).
SETTINGS_BY_TYPE: Mapping[str, type[BackendSettings]] = MappingProxyType(
    {
        cls.type: cls
        for cls in (
            MLXSettings,
            OpenAISettings,
            AnthropicSettings,
            OpenAICompatibleSettings,
            GeminiSettings,
            AzureOpenAISettings,
            BedrockSettings,
            VertexSettings,
        )
    }
)


def backend_settings(source: BackendSource) -> BackendSettings:
    """The typed settings of one (schema-valid) backend, by its `type`."""
    return SETTINGS_BY_TYPE[source.raw["type"]].from_source(source)
