"""The routing table request handlers read: a `Runtime` (one compiled config version), its public
models (`ModelRoute`) and their failover chains of backend objects (`RouteTarget`), a chain's balanced
groups (`gateway.routing.groups.RouteGroup`) among its steps.

Built by `gateway.runtime.compile`; immutable once built, replaced whole on reload.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from gateway.auth import KeyTable, TrustedProxies
from gateway.backends.base import Backend
from gateway.backends.mlx.store import LocalModelStore
from gateway.cache import ResponseCache
from gateway.config.backends import BackendSettings
from gateway.config.model import Config, ModelConfig, Target, TimeoutTiers
from gateway.limits import BackendQuota, Limiter
from gateway.pricing.cost import TokenPrice
from gateway.routing.canary import RouteCanary
from gateway.routing.groups import RouteGroup

__all__ = ["ModelRoute", "RouteTarget", "Runtime"]


@dataclass(frozen=True, slots=True)
class RouteTarget:
    target: Target
    backend: Backend
    #: The backend's settings (`backend.config`), of the class its type names.
    config: BackendSettings
    #: What the upstream model costs on this backend, resolved when the config was compiled (None:
    #: unknown, so requests served here have no cost).
    price: TokenPrice | None = None
    #: The backend's quota (`backends.<name>.limits` of this config), or None.
    quota: BackendQuota | None = None
    #: What this target can do (`gateway.config.capabilities`): its backend type's defaults for the
    #: upstream model, with the backend's and the target's overrides applied, resolved at compile time.
    capabilities: frozenset[str] = frozenset()

    @property
    def speaks(self) -> str | None:
        """The wire protocol of the backend (`openai`, `anthropic`), or None for a local model; a backend
        serving models of several protocols (`vertex`) says which this target's model speaks."""
        protocol_for = getattr(self.backend, "protocol_for", None)
        if protocol_for is not None:
            return protocol_for(self.target.model)
        return getattr(self.backend, "protocol", None) or None


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """A public model and its failover chain, resolved to backend objects."""

    name: str
    config: ModelConfig
    #: Every target in order, a group's members in its place (what the model can do, where it runs).
    chain: tuple[RouteTarget, ...]
    #: `shadow`: a one-target route to the shadow target (its breaker, quota and concurrency limit
    #: apply as to any chain), or None.
    shadow: ModelRoute | None = None
    #: The chain's steps as failover walks them: a target, or a balanced group (empty: the chain's
    #: targets, each a step).
    steps: tuple[RouteTarget | RouteGroup, ...] = ()
    #: Whether a group of the chain routes by a sticky key (the request handler then supplies one).
    sticky: bool = False
    #: `canary`: its target, share and windows (`gateway.routing.canary`), or None.
    canary: RouteCanary | None = None
    #: A chain without groups as failover walks it, built once: (target, no group, 0, no pick) each.
    plain_walk: tuple[tuple[RouteTarget, None, int, None], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "plain_walk", tuple((t, None, 0, None) for t in self.chain))

    @property
    def available(self) -> bool:
        return any(step.config.enabled for step in self.chain)


class _Usage:
    """Counts requests running on a Runtime, so a replaced one is released only once it is idle."""

    __slots__ = ("active", "idle")

    def __init__(self) -> None:
        self.active = 0
        self.idle: asyncio.Event | None = None


@dataclass(frozen=True)
class Runtime:
    config: Config
    loaded_at: datetime
    source: str
    backends: Mapping[str, Backend]
    #: Every public name and alias → its route.
    routes: Mapping[str, ModelRoute]
    #: One entry per public model, in file order (aliases not repeated).
    models: tuple[ModelRoute, ...]
    keys: KeyTable
    #: `server.trusted_proxies`, compiled (empty: the peer is the client).
    proxies: TrustedProxies
    local_models: LocalModelStore = field(compare=False, repr=False)
    #: Limits of client keys and backends; its store is shared with the Runtimes of equal `limits`.
    limits: Limiter = field(compare=False, repr=False)
    usage: _Usage = field(default_factory=_Usage, compare=False, repr=False)
    #: The response cache; its store is shared with the Runtimes of equal `cache` settings.
    cache: ResponseCache | None = field(default=None, compare=False, repr=False)

    @property
    def version(self) -> str:
        return self.config.version

    @property
    def timeouts(self) -> TimeoutTiers:
        return self.config.timeouts

    @contextmanager
    def lease(self) -> Iterator[Runtime]:
        """Hold this Runtime for the duration of a request (streams included)."""
        usage = self.usage
        usage.active += 1
        try:
            yield self
        finally:
            usage.active -= 1
            if usage.active == 0 and usage.idle is not None:
                usage.idle.set()

    async def drained(self) -> None:
        """Return once no request holds this Runtime."""
        if self.usage.active == 0:
            return
        if self.usage.idle is None:
            self.usage.idle = asyncio.Event()
        while self.usage.active:
            self.usage.idle.clear()
            await self.usage.idle.wait()
