"""The limits on one subject (a client key, the anonymous callers, a backend), compiled once per config
from `auth.client_keys[].limits` over `auth.default_limits`, and `backends.<name>.limits`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.config.backends import BackendLimits
from gateway.config.model import AuthConfig, Config, KeyLimits

__all__ = [
    "ANONYMOUS",
    "CONCURRENT",
    "PER_DAY",
    "PER_MONTH",
    "REQUESTS",
    "TOKENS",
    "WINDOW_SECONDS",
    "Rules",
    "backend_rules",
    "key_rules",
    "per_worker_warning",
]

#: The limits' names, as the config writes them (problem `limit`, audit `limit_name`, header policies).
REQUESTS = "requests_per_minute"
TOKENS = "tokens_per_minute"
CONCURRENT = "concurrent_requests"
PER_DAY = "budget_usd.per_day"
PER_MONTH = "budget_usd.per_month"
#: The sliding window of the per-minute limits.
WINDOW_SECONDS = 60
#: The principal name of callers without a key (no client keys configured): one bucket for them all.
ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Rules:
    """What one subject may do. None: no such limit."""

    #: Where its counters live in the store ("key:team-a", "anonymous", "backend:openai").
    subject: str
    #: How a message names it ("API key 'team-a'", "anonymous callers", "backend 'openai'").
    who: str
    #: The config's name for the subject (the key or backend name; "anonymous").
    name: str
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    concurrent_requests: int | None = None
    per_day: float | None = None
    per_month: float | None = None
    #: Whether requests' cost is added to its spend (client keys and anonymous callers, not backends).
    spends: bool = False
    #: The `RateLimit-Policy` header value (the draft's structured-field list), made once.
    policy: bytes = field(default=b"", compare=False)

    @property
    def budgets(self) -> bool:
        return self.per_day is not None or self.per_month is not None


def _rules(subject: str, who: str, name: str, limits: KeyLimits) -> Rules:
    rules = Rules(
        subject=subject,
        who=who,
        name=name,
        requests_per_minute=limits.requests_per_minute,
        tokens_per_minute=limits.tokens_per_minute,
        concurrent_requests=limits.concurrent_requests,
        per_day=limits.budget_usd.per_day,
        per_month=limits.budget_usd.per_month,
        spends=True,
    )
    object.__setattr__(rules, "policy", _policy(rules))
    return rules


def _policy(rules: Rules) -> bytes:
    """`RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers): one item per limit, named as in the
    config. Tokens and budgets have no unit in the draft's registry yet: `qu` names theirs ("tokens",
    "usd-cents"); budgets are calendar periods, `w` their length (a month's: the current month's)."""
    items = []
    if rules.requests_per_minute is not None:
        items.append(f'"{REQUESTS}";q={rules.requests_per_minute};w={WINDOW_SECONDS}')
    if rules.tokens_per_minute is not None:
        items.append(f'"{TOKENS}";q={rules.tokens_per_minute};qu="tokens";w={WINDOW_SECONDS}')
    if rules.concurrent_requests is not None:
        items.append(f'"{CONCURRENT}";q={rules.concurrent_requests};qu="concurrent-requests"')
    if rules.per_day is not None:
        items.append(f'"{PER_DAY}";q={_cents(rules.per_day)};qu="usd-cents";w=86400')
    if rules.per_month is not None:
        items.append(f'"{PER_MONTH}";q={_cents(rules.per_month)};qu="usd-cents"')
    return ", ".join(items).encode()


def _cents(usd: float) -> int:
    return max(0, int(usd * 100 + 1e-9))


def key_rules(auth: AuthConfig) -> Mapping[str, Rules]:
    """Principal name → its rules, for every caller with a limit: each client key's own `limits` over
    `default_limits`; without client keys, the anonymous callers under `default_limits`."""
    defaults = auth.default_limits
    table: dict[str, Rules] = {}
    if not auth.client_keys:
        if defaults is not None and not defaults.empty:
            table[ANONYMOUS] = _rules(ANONYMOUS, "anonymous callers", ANONYMOUS, defaults)
        return table
    for key in auth.client_keys:
        limits = (key.limits or KeyLimits()).over(defaults)
        if not limits.empty:
            table[key.name] = _rules(f"key:{key.name}", f"API key '{key.name}'", key.name, limits)
    return table


def backend_rules(name: str, limits: BackendLimits) -> Rules | None:
    """A backend's quota (`backends.<name>.limits`), or None when it has none."""
    if limits.requests_per_minute is None and limits.tokens_per_minute is None:
        return None
    return Rules(
        subject=f"backend:{name}",
        who=f"backend '{name}'",
        name=name,
        requests_per_minute=limits.requests_per_minute,
        tokens_per_minute=limits.tokens_per_minute,
    )


def per_worker_warning(config: Config, workers: int) -> str | None:
    """What to tell an operator whose limits are counted per process: a memory store with several
    workers (each counts alone, so a limit admits up to `workers` times its value). None otherwise."""
    if config.limits.store != "memory" or workers <= 1:
        return None
    limited = bool(key_rules(config.auth)) or any(
        backend_rules(b.name, b.limits) is not None for b in config.backends
    )
    if not limited:
        return None
    return (
        f"limits.store is memory and {workers} workers serve: each worker counts alone, so every "
        f"limit and quota admits up to {workers} times its value; set limits.store to a Redis URL "
        "(redis://host:6379/0) to share the counters"
    )
