"""Load gateway.yaml: YAML → `${VAR}` → JSON Schema → cross-field checks → a frozen `Config`.

Every problem is collected (not just the first) and located as `file:line:col: path: message`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import ipaddress
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gateway.config.backends import BackendSettings, BackendSource, backend_settings
from gateway.config.capabilities import default_capabilities, resolve_capabilities
from gateway.config.issues import ConfigError, ConfigIssue, Location
from gateway.config.literal_secrets import env_name, literal_key_message, literal_secrets, reference_fix
from gateway.config.model import (
    AdminConfig,
    AdminKey,
    AuditConfig,
    AuthConfig,
    BenchmarkConfig,
    Budget,
    CacheConfig,
    CanaryConfig,
    CanaryRollback,
    CircuitBreakerPolicy,
    ClientKey,
    Config,
    FailoverPolicy,
    KeyLimits,
    LimitsConfig,
    LocalModelsConfig,
    LogfireConfig,
    LoggingConfig,
    ModelCache,
    ModelConfig,
    PrometheusConfig,
    ReloadConfig,
    ServerConfig,
    ServerTimeouts,
    ShadowConfig,
    Sticky,
    Target,
    TargetGroup,
    TelemetryConfig,
    TimeoutTier,
    TimeoutTiers,
)
from gateway.config.schema import apply_defaults, validate
from gateway.config.yamlsource import LocatedDocument, parse_yaml

__all__ = ["config_version", "load_config", "parse_config"]


def config_version(raw: bytes) -> str:
    """The version of a config file: a hash of its exact bytes (16 hex digits)."""
    return hashlib.sha256(raw).hexdigest()[:16]


def load_config(
    path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None, strict_env: bool = True
) -> Config:
    """Read and load the file at `path`. Raises `ConfigError` with every issue found."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError(
            [ConfigIssue(str(file), Location(1, 1), "", f"cannot read file: {reason}")]
        ) from None
    return parse_config(raw, file, env=env, strict_env=strict_env)


def parse_config(
    raw: bytes,
    path: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    strict_env: bool = True,
) -> Config:
    """Load config file content `raw` as if read from `path` (relative paths resolve from its directory)."""
    file = Path(path)
    name = str(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError([_not_utf8_issue(error, name)]) from None
    doc, issues = parse_yaml(text, name, env, strict_env=strict_env)
    if doc is None:
        raise ConfigError(issues)
    if doc.data is None:
        # Empty, or comments only. Also the moment an editor has truncated the file and not yet
        # written it: serving "no settings" would drop every model and key, so it is an error.
        message = "the file has no settings (it is empty or only comments); a gateway needs its models"
        raise ConfigError([*issues, ConfigIssue(name, Location(1, 1), "", message)])
    if not isinstance(doc.data, dict):
        issues.append(
            ConfigIssue(name, doc.location(()), "", "the file must be a mapping of settings (key: value)")
        )
        raise ConfigError(issues)
    # A value the YAML reader already refused (an unknown tag, `!!int abc`) is not described again.
    refused = {issue.path for issue in issues if issue.path}
    schema_issues = [i for i in validate(doc, name) if i.path not in refused]
    issues.extend(_drop_unset_env_issues(schema_issues, doc))
    if issues:
        # Report cross-field problems too, as far as the invalid document allows: all errors at once.
        with contextlib.suppress(KeyError, TypeError, AttributeError, ValueError):
            issues.extend(_cross_field_issues(apply_defaults(doc.data), doc, name))
        raise ConfigError(issues)
    data = apply_defaults(doc.data)
    issues.extend(_cross_field_issues(data, doc, name))
    if issues:
        raise ConfigError(issues)
    return _build(data, doc, file, config_version(raw))


def _not_utf8_issue(error: UnicodeDecodeError, name: str) -> ConfigIssue:
    """Where the first byte that is not UTF-8 is (line, and column in characters)."""
    data = error.object
    line_start = data.rfind(b"\n", 0, error.start) + 1
    line = data.count(b"\n", 0, error.start) + 1
    column = len(data[line_start : error.start].decode("utf-8", errors="replace")) + 1
    byte = data[error.start : error.start + 1].hex()
    message = f"the file is not UTF-8 text: byte 0x{byte} here ({error.reason}); save it as UTF-8"
    return ConfigIssue(name, Location(line, column), "", message)


def _drop_unset_env_issues(issues: list[ConfigIssue], doc: LocatedDocument) -> list[ConfigIssue]:
    """With `strict_env=False`, a value built from an unset variable is unknown, not wrong."""
    if not doc.unset:
        return issues
    unknown = {ConfigIssue.format_path(p) for p, names in doc.from_env.items() if doc.unset & set(names)}
    return [issue for issue in issues if issue.path not in unknown]


def _serves_embeddings(data: dict[str, Any], model: str) -> bool:
    """Whether some target of `model`'s chain has the `embeddings` capability (from the raw document:
    the type's defaults, the backend's overrides, the target's)."""
    backends = data["backends"]
    for _, target in _chain_targets(data["models"][model]["chain"]):
        backend = backends.get(target["backend"])
        if backend is None:
            continue  # told elsewhere
        base = default_capabilities(backend["type"], target.get("model", model), backend.get("provider"))
        own = resolve_capabilities(base, backend.get("capabilities"))
        if "embeddings" in resolve_capabilities(own, target.get("capabilities")):
            return True
    return False


def _canary_issues(
    model_name: str, model: dict[str, Any], backends: dict[str, Any], issue: Callable[..., None]
) -> None:
    """A canary's target must be a backend of this file, and not the only target of its model: a
    rollback sends its share back to the stable targets, so there must be one."""
    canary = model.get("canary")
    if canary is None:
        return
    target = canary["target"]
    path = ("models", model_name, "canary", "target")
    if target["backend"] not in backends:
        known = ", ".join(sorted(backends)) or "none are defined"
        issue((*path, "backend"), f"no backend named '{target['backend']}' (backends: {known})")
    own = (target["backend"], target.get("model", model_name))
    targets = [(t["backend"], t.get("model", model_name)) for _, t in _chain_targets(model["chain"])]
    if all(t == own for t in targets):
        issue(
            path,
            f"the canary's target ({own[0]}, model {own[1]}) is the model's only target: the chain needs "
            "a stable target the canary is compared with, and that takes its share back on a rollback",
        )
    rollback = canary.get("rollback")
    if rollback is not None and "error_rate" not in rollback and "p95_latency_ms" not in rollback:
        issue(
            ("models", model_name, "canary", "rollback"),
            "a rollback needs a rule: error_rate, p95_latency_ms or both (without `rollback` the canary "
            "is never rolled back automatically)",
        )


def _chain_targets(chain: list[dict[str, Any]]) -> list[tuple[tuple, dict[str, Any]]]:
    """Every target of a raw chain with its path under the chain (`(1, "group", "targets", 0)`)."""
    found: list[tuple[tuple, dict[str, Any]]] = []
    for i, step in enumerate(chain):
        if "group" in step:
            found += [((i, "group", "targets", j), t) for j, t in enumerate(step["group"]["targets"])]
        else:
            found.append(((i,), step))
    return found


def _target(raw: dict[str, Any], public: str) -> Target:
    return Target(
        backend=raw["backend"],
        model=raw.get("model", public),
        capabilities=tuple(sorted((raw.get("capabilities") or {}).items())),
        weight=float(raw.get("weight", 1)),
    )


def _steps(raw_chain: list[dict[str, Any]], public: str) -> tuple[Target | TargetGroup, ...]:
    steps: list[Target | TargetGroup] = []
    for step in raw_chain:
        group = step.get("group")
        if group is None:
            steps.append(_target(step, public))
            continue
        sticky = group.get("sticky")
        steps.append(
            TargetGroup(
                strategy=group.get("strategy", "weighted"),
                targets=tuple(_target(t, public) for t in group["targets"]),
                sticky=None
                if sticky is None
                else Sticky(by=sticky["by"], header=(sticky.get("header") or "").lower() or None),
            )
        )
    return tuple(steps)


def _flatten(steps: tuple[Target | TargetGroup, ...]) -> tuple[Target, ...]:
    return tuple(t for s in steps for t in (s.targets if isinstance(s, TargetGroup) else (s,)))


def _cross_field_issues(data: dict[str, Any], doc: LocatedDocument, name: str) -> list[ConfigIssue]:
    """What the schema cannot express: references between sections, unique names, secrets in the open."""
    issues: list[ConfigIssue] = []

    def issue(path: tuple, message: str, *, on_key: bool = False) -> None:
        where = doc.key_location(path) if on_key else doc.location(path)
        issues.append(ConfigIssue(name, where, ConfigIssue.format_path(path), message))

    backends = data["backends"]
    names_in_use: dict[str, str] = {}
    for model_name, model in (data.get("models") or {}).items():
        for where, target in _chain_targets(model["chain"]):
            if target["backend"] not in backends:
                known = ", ".join(sorted(backends)) or "none are defined"
                issue(
                    ("models", model_name, "chain", *where, "backend"),
                    f"no backend named '{target['backend']}' (backends: {known})",
                )
        shadow = model.get("shadow")
        if shadow is not None and shadow["target"]["backend"] not in backends:
            known = ", ".join(sorted(backends)) or "none are defined"
            issue(
                ("models", model_name, "shadow", "target", "backend"),
                f"no backend named '{shadow['target']['backend']}' (backends: {known})",
            )
        _canary_issues(model_name, model, backends, issue)
        cache = model.get("cache") or {}
        if cache.get("mode") == "semantic" and not cache.get("embedding_model"):
            issue(
                ("models", model_name, "cache", "mode"),
                "mode semantic needs cache.embedding_model: the model of this gateway that embeds "
                "the last user turn",
            )
        embedder = cache.get("embedding_model")
        if embedder is not None and embedder not in data["models"]:
            known = ", ".join(sorted(data["models"]))
            issue(
                ("models", model_name, "cache", "embedding_model"),
                f"no model named '{embedder}' (models: {known}); the embedding model must be one "
                "declared in `models` (its name, not an alias)",
            )
        elif embedder is not None and not _serves_embeddings(data, embedder):
            issue(
                ("models", model_name, "cache", "embedding_model"),
                f"model '{embedder}' cannot embed: no target of its chain has the capability "
                "'embeddings' (see docs/capabilities.md; an override `capabilities: {embeddings: true}` "
                "on its backend or target says it has)",
            )
        for j, public in enumerate([model_name, *model["aliases"]]):
            owner = names_in_use.get(public)
            if owner is not None:
                path = ("models", model_name) if j == 0 else ("models", model_name, "aliases", j - 1)
                issue(path, f"the public name '{public}' is already used by model '{owner}'", on_key=j == 0)
            else:
                names_in_use[public] = model_name

    for i, cidr in enumerate(data["server"]["trusted_proxies"]):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            issue(
                ("server", "trusted_proxies", i), f"'{cidr}' is not an IP address or CIDR range (10.0.0.0/8)"
            )
    auth = data["auth"]
    if data["server"]["trusted_proxies"] and not auth["client_keys"] and not auth["allow_unauthenticated"]:
        issue(
            ("server", "trusted_proxies"),
            "a trusted proxy means clients reach the gateway through it, and no client keys are "
            "configured: add auth.client_keys, or set auth.allow_unauthenticated: true to serve "
            "everyone the proxy serves",
        )

    seen_hashes: dict[str, str] = {}
    for section in ("client_keys", "admin_keys"):
        seen_names: set[str] = set()
        for i, entry in enumerate(data["auth"][section]):
            path = ("auth", section, i)
            if entry["name"] in seen_names:
                issue((*path, "name"), f"another key in auth.{section} is already named '{entry['name']}'")
            seen_names.add(entry["name"])
            if "key" in entry:
                key_path = (*path, "key")
                variable = f"{env_name(entry['name'])}_{section.removesuffix('_keys').upper()}_KEY"
                if key_path in doc.from_env:
                    variable = doc.from_env[key_path][0]
                if key_path not in doc.from_env or literal_key_message(doc, key_path, entry["key"], variable):
                    issue(
                        key_path,
                        f"a literal key is refused (this file belongs in git): {reference_fix(variable)}; "
                        "or store its hash instead (key_sha256: what `gateway key hash` prints)",
                    )
                    continue
                if not entry["key"] and not doc.unset:
                    issue((*path, "key"), "the key is empty")
                    continue
            digest = _key_hash(entry)
            other = seen_hashes.get(digest)
            if other is not None and digest:
                issue(path, f"the same key is also configured as {other}; every key must be distinct")
            seen_hashes[digest] = f"auth.{section}[{i}]"
    for path, message in literal_secrets(data, doc):
        issue(path, message)
    return issues


def _key_hash(entry: dict[str, Any]) -> str:
    if "key_sha256" in entry:
        return entry["key_sha256"].lower()
    return hashlib.sha256(entry["key"].encode()).hexdigest() if entry["key"] else ""


def _resolve_path(base: Path, value: str) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else (base / path).resolve()


def _database_url(base: Path, url: str) -> str:
    scheme, _, rest = url.partition("://")
    if scheme != "sqlite" or rest == ":memory:" or rest.startswith("/"):
        return url
    return f"sqlite://{_resolve_path(base, rest)}"


def _backend(name: str, raw: dict[str, Any], base: Path, doc: LocatedDocument) -> BackendSettings:
    source = BackendSource(
        name=name,
        raw=raw,
        resolve_path=functools.partial(_resolve_path, base),
        api_key_env=tuple(doc.from_env.get(("backends", name, "api_key"), ())),
    )
    return backend_settings(source)


def _shadow(model: str, raw: dict[str, Any] | None) -> ShadowConfig | None:
    if raw is None:
        return None
    target = raw["target"]
    return ShadowConfig(
        target=Target(backend=target["backend"], model=target.get("model", model)),
        sample_rate=float(raw["sample_rate"]),
        max_concurrency=raw["max_concurrency"],
    )


def _canary(model: str, raw: dict[str, Any] | None) -> CanaryConfig | None:
    if raw is None:
        return None
    rollback = raw.get("rollback")
    return CanaryConfig(
        target=_target(raw["target"], model),
        weight=float(raw["weight"]),
        rollback=None
        if rollback is None
        else CanaryRollback(
            error_rate=rollback.get("error_rate"),
            p95_latency_ms=rollback.get("p95_latency_ms"),
            min_requests=rollback["min_requests"],
            window=_duration_seconds(rollback["window"]),
        ),
    )


def _duration_seconds(value: float | str) -> float:
    """A duration as the schema takes it: seconds as a number, or a string such as `90s`, `5m`, `1h`."""
    if isinstance(value, int | float):
        return float(value)
    return float(value[:-1]) * {"s": 1, "m": 60, "h": 3600}[value[-1]]


def _key_limits(raw: dict[str, Any] | None) -> KeyLimits | None:
    if raw is None:
        return None
    return KeyLimits(
        requests_per_minute=raw.get("requests_per_minute"),
        tokens_per_minute=raw.get("tokens_per_minute"),
        concurrent_requests=raw.get("concurrent_requests"),
        budget_usd=Budget(**raw.get("budget_usd", {})),
    )


def _tier(kind: str, raw: dict[str, Any]) -> TimeoutTier:
    return TimeoutTier(kind=kind, total=raw["total"], connect=raw["connect"], first_byte=raw["first_byte"])  # type: ignore[arg-type]


def _build(data: dict[str, Any], doc: LocatedDocument, file: Path, version: str) -> Config:
    base = file.parent.resolve()
    auth = data["auth"]
    telemetry = data["telemetry"]
    failover = data["failover"]
    audit = data["audit"]
    return Config(
        path=file,
        version=version,
        server=ServerConfig(
            **{
                **data["server"],
                "trusted_proxies": tuple(data["server"]["trusted_proxies"]),
                "timeouts": ServerTimeouts(**data["server"]["timeouts"]),
            }
        ),
        auth=AuthConfig(
            client_keys=tuple(
                ClientKey(
                    name=k["name"],
                    key_sha256=_key_hash(k),
                    models=tuple(k["models"]),
                    limits=_key_limits(k.get("limits")),
                )
                for k in auth["client_keys"]
            ),
            admin_keys=tuple(AdminKey(name=k["name"], key_sha256=_key_hash(k)) for k in auth["admin_keys"]),
            allow_unauthenticated=auth["allow_unauthenticated"],
            default_limits=_key_limits(auth.get("default_limits")),
        ),
        backends=tuple(_backend(name, raw, base, doc) for name, raw in data["backends"].items()),
        models=tuple(
            ModelConfig(
                name=name,
                description=raw.get("description", ""),
                aliases=tuple(raw["aliases"]),
                chain=_flatten(steps := _steps(raw["chain"], name)),
                steps=steps,
                # A bare `off` is YAML's false.
                cache=ModelCache(**{**raw["cache"], "mode": raw["cache"]["mode"] or "off"}),
                shadow=_shadow(name, raw.get("shadow")),
                canary=_canary(name, raw.get("canary")),
            )
            for name, raw in data["models"].items()
        ),
        timeouts=TimeoutTiers(**{kind: _tier(kind, raw) for kind, raw in data["timeouts"].items()}),
        failover=FailoverPolicy(
            retry_on=frozenset(failover["retry_on"]),
            max_attempts=failover["max_attempts"],
            circuit_breaker=CircuitBreakerPolicy(**failover["circuit_breaker"]),
        ),
        local_models=LocalModelsConfig(**data["local_models"]),
        audit=AuditConfig(
            enabled=audit["enabled"],
            database_url=_database_url(base, audit["database_url"]),
            retention_days=audit["retention_days"],
            buffer_records=audit["buffer_records"],
            batch_size=audit["batch_size"],
            flush_interval_ms=audit["flush_interval_ms"],
            spill_path=_resolve_path(base, audit["spill_path"]),
        ),
        telemetry=TelemetryConfig(
            logfire=LogfireConfig(**telemetry["logfire"]),
            prometheus=PrometheusConfig(**telemetry["prometheus"]),
            logging=LoggingConfig(**telemetry["logging"]),
        ),
        admin=AdminConfig(**{**data["admin"], "benchmark": BenchmarkConfig(**data["admin"]["benchmark"])}),
        reload=ReloadConfig(**data["reload"]),
        limits=LimitsConfig(**data["limits"]),
        cache=CacheConfig(**data["cache"]),
        unset_env=frozenset(doc.unset),
    )
