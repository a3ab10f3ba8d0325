"""Typed, frozen configuration objects, built once per load from the schema-validated document.

They compare by value, which is how a reload decides what it must rebuild (a backend whose settings
are equal to the live ones is carried over as the same object). Backend settings, one class per
backend type, are in `gateway.config.backends`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gateway.config.backends import BackendLimits, BackendSettings, Price
from gateway.config.secret import Secret

__all__ = [
    "AdminConfig",
    "AdminKey",
    "AuditConfig",
    "AuthConfig",
    "BackendLimits",
    "Budget",
    "CacheConfig",
    "CircuitBreakerPolicy",
    "ClientKey",
    "Config",
    "FailoverPolicy",
    "KeyLimits",
    "LimitsConfig",
    "LocalModelsConfig",
    "LogfireConfig",
    "LoggingConfig",
    "ModelCache",
    "ModelConfig",
    "Price",
    "PrometheusConfig",
    "ReloadConfig",
    "Secret",
    "ServerConfig",
    "ServerTimeouts",
    "Sticky",
    "Target",
    "TargetGroup",
    "TelemetryConfig",
    "TimeoutTier",
    "TimeoutTiers",
]

EndpointKind = Literal["chat", "completions", "embeddings"]


@dataclass(frozen=True, slots=True)
class ServerTimeouts:
    """`server.timeouts`: how long the gateway waits to receive from a client (never to send)."""

    header_seconds: float
    body_seconds: float
    keep_alive_seconds: float
    drain_idle_seconds: float


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str
    port: int
    workers: int
    max_body_bytes: int
    max_client_connections: int
    graceful_shutdown_seconds: float
    timeouts: ServerTimeouts
    #: auto | uvloop | asyncio
    event_loop: str
    #: CIDRs of the reverse proxies whose forwarding headers name the real client (validated at load).
    trusted_proxies: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Budget:
    """`budget_usd`: spend caps in USD per UTC calendar period (None: no cap)."""

    per_day: float | None = None
    per_month: float | None = None


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """A client key's limits (`auth.client_keys[].limits`, `auth.default_limits`); None: no limit."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    concurrent_requests: int | None = None
    budget_usd: Budget = Budget()

    def over(self, defaults: KeyLimits | None) -> KeyLimits:
        """These limits with the members they leave unset taken from `defaults`."""
        if defaults is None:
            return self
        return KeyLimits(
            requests_per_minute=_first(self.requests_per_minute, defaults.requests_per_minute),
            tokens_per_minute=_first(self.tokens_per_minute, defaults.tokens_per_minute),
            concurrent_requests=_first(self.concurrent_requests, defaults.concurrent_requests),
            budget_usd=Budget(
                per_day=_first(self.budget_usd.per_day, defaults.budget_usd.per_day),
                per_month=_first(self.budget_usd.per_month, defaults.budget_usd.per_month),
            ),
        )

    @property
    def empty(self) -> bool:
        return self == _NO_LIMITS


def _first(value: Any, fallback: Any) -> Any:
    return fallback if value is None else value


_NO_LIMITS = KeyLimits()


@dataclass(frozen=True, slots=True)
class ClientKey:
    name: str
    key_sha256: str = field(repr=False)
    models: tuple[str, ...]
    #: As written for this key (None: no `limits` member); merge with `AuthConfig.default_limits`.
    limits: KeyLimits | None = None


@dataclass(frozen=True, slots=True)
class AdminKey:
    name: str
    key_sha256: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class AuthConfig:
    client_keys: tuple[ClientKey, ...]
    admin_keys: tuple[AdminKey, ...]
    allow_unauthenticated: bool
    #: `auth.default_limits` (None: not set).
    default_limits: KeyLimits | None = None


@dataclass(frozen=True, slots=True)
class Target:
    backend: str
    model: str
    #: `models.<m>.chain[i].capabilities` as written: name -> on/off over the backend's capabilities.
    capabilities: tuple[tuple[str, bool], ...] = ()
    #: A group member's `weight` (its share under the `weighted` strategy); 1 outside a group.
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class Sticky:
    """`group.sticky`: what keys a request to one member of its group."""

    by: Literal["key", "user", "header"]
    #: `by: header`: the header's name, lower case.
    header: str | None = None


@dataclass(frozen=True, slots=True)
class TargetGroup:
    """`models.<m>.chain[i].group`: members sharing one step of the chain by a strategy."""

    strategy: Literal["weighted", "least_busy", "latency"]
    targets: tuple[Target, ...]
    sticky: Sticky | None = None


@dataclass(frozen=True, slots=True)
class ModelCache:
    """`models.<name>.cache`: whether and how this model's answers are cached."""

    mode: Literal["off", "exact", "semantic"] = "off"
    #: None: the top-level `cache.ttl_seconds`.
    ttl_seconds: int | None = None
    any_temperature: bool = False
    client_control: bool = True
    #: `semantic`: the least cosine similarity of the last user turn's embedding for a hit.
    similarity: float = 0.95
    #: `semantic`: the public model (of `models`) that embeds the last user turn.
    embedding_model: str | None = None


@dataclass(frozen=True, slots=True)
class ShadowConfig:
    """`models.<name>.shadow`: a sample of the model's requests copied to `target`, answers discarded."""

    target: Target
    sample_rate: float
    #: Most copies in flight at once per worker; past it a sampled copy is dropped (and counted).
    max_concurrency: int = 16


@dataclass(frozen=True, slots=True)
class CanaryRollback:
    """`models.<name>.canary.rollback`: when the canary is judged worse than the stable targets."""

    #: Roll back when the canary's error rate exceeds the stable targets' by more (None: not judged).
    error_rate: float | None = None
    #: Roll back when the canary's p95 latency exceeds the stable targets' by more (None: not judged).
    p95_latency_ms: float | None = None
    #: The canary requests the window must hold before anything is judged.
    min_requests: int = 20
    #: The sliding window judged, in seconds.
    window: float = 300.0


@dataclass(frozen=True, slots=True)
class CanaryConfig:
    """`models.<name>.canary`: `weight` percent of the model's requests try `target` first."""

    target: Target
    #: Percent of requests (0–100); 0: the canary is off (e.g. rolled back).
    weight: float
    #: None: never rolled back automatically.
    rollback: CanaryRollback | None = None


@dataclass(frozen=True, slots=True)
class ModelConfig:
    name: str
    description: str
    aliases: tuple[str, ...]
    #: Every target of the chain in order, a group's members in its place.
    chain: tuple[Target, ...]
    cache: ModelCache = ModelCache()
    #: `shadow` (None: no shadow traffic).
    shadow: ShadowConfig | None = None
    #: The chain's steps as written: a target, or a group of targets (empty: each target is a step).
    steps: tuple[Target | TargetGroup, ...] = ()
    #: `canary` (None: no canary).
    canary: CanaryConfig | None = None


@dataclass(frozen=True, slots=True)
class TimeoutTier:
    kind: EndpointKind
    total: float
    connect: float
    first_byte: float


@dataclass(frozen=True, slots=True)
class TimeoutTiers:
    chat: TimeoutTier
    completions: TimeoutTier
    embeddings: TimeoutTier

    def for_kind(self, kind: EndpointKind) -> TimeoutTier:
        return getattr(self, kind)


@dataclass(frozen=True, slots=True)
class CircuitBreakerPolicy:
    enabled: bool
    failure_threshold: int
    cooldown_seconds: float


@dataclass(frozen=True, slots=True)
class FailoverPolicy:
    retry_on: frozenset[str]
    max_attempts: int
    circuit_breaker: CircuitBreakerPolicy


@dataclass(frozen=True, slots=True)
class LocalModelsConfig:
    memory_budget_gb: float
    blas_threads: int = 0


@dataclass(frozen=True, slots=True)
class AuditConfig:
    enabled: bool
    #: As written, with a relative SQLite path made absolute (relative to the config file's directory).
    database_url: str = field(repr=False)
    retention_days: int
    buffer_records: int
    batch_size: int
    flush_interval_ms: int
    spill_path: Path


@dataclass(frozen=True, slots=True)
class LogfireConfig:
    enabled: bool
    service_name: str
    environment: str
    project_url: str


@dataclass(frozen=True, slots=True)
class PrometheusConfig:
    enabled: bool
    path: str
    require_admin_key: bool


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str
    format: str


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    logfire: LogfireConfig
    prometheus: PrometheusConfig
    logging: LoggingConfig


@dataclass(frozen=True, slots=True)
class BenchmarkConfig:
    """`admin.benchmark`: the panel's "Test performance" runs against one backend."""

    #: A run is refused while the backend has more requests than this in flight (or queued).
    max_inflight: int = 2


@dataclass(frozen=True, slots=True)
class AdminConfig:
    enabled: bool
    write_back: bool
    session_hours: float
    benchmark: BenchmarkConfig = BenchmarkConfig()


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """`limits`: where the rate-limit, concurrency and budget counters live."""

    #: "memory" or a Redis URL (it may hold a password: never printed).
    store: str = field(repr=False)
    on_store_down: Literal["allow", "deny"]
    store_timeout_ms: int
    key_prefix: str


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """`cache`: where the response cache lives and how long its entries last."""

    #: "memory" or a Redis URL (it may hold a password: never printed).
    store: str = field(default="memory", repr=False)
    max_entries: int = 10000
    max_bytes: int = 104857600
    ttl_seconds: int = 3600
    max_ttl_seconds: int = 86400
    shared_between_keys: bool = False
    key_prefix: str = "gateway:cache:"
    store_timeout_ms: int = 100


@dataclass(frozen=True, slots=True)
class ReloadConfig:
    watch: bool
    debounce_ms: int


@dataclass(frozen=True, slots=True)
class Config:
    """The whole of gateway.yaml, resolved: defaults filled, `${VAR}`s substituted, paths made absolute."""

    path: Path
    version: str
    server: ServerConfig
    auth: AuthConfig
    #: Each backend's settings, of the class its `type` names (`gateway.config.backends`).
    backends: tuple[BackendSettings, ...]
    models: tuple[ModelConfig, ...]
    timeouts: TimeoutTiers
    failover: FailoverPolicy
    local_models: LocalModelsConfig
    audit: AuditConfig
    telemetry: TelemetryConfig
    admin: AdminConfig
    reload: ReloadConfig
    limits: LimitsConfig
    cache: CacheConfig = CacheConfig()
    #: Environment variables referenced but unset (only with `gateway check --no-env`).
    unset_env: frozenset[str] = frozenset()

    def backend(self, name: str) -> BackendSettings | None:
        for backend in self.backends:
            if backend.name == name:
                return backend
        return None
