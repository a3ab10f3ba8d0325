"""Compile a `Config` into a `Runtime`: the immutable routing table request handlers read.

Backend objects are reused from the previous Runtime when their own `BackendConfig` is unchanged, so
a reload keeps connection pools and loaded model weights.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType

from gateway.auth import KeyTable
from gateway.backends.base import Backend
from gateway.backends.mlx.store import LocalModelStore
from gateway.backends.registry import build_backend
from gateway.config.model import BackendConfig, Config, ModelConfig, Target, TimeoutTiers

__all__ = ["ModelRoute", "RouteTarget", "Runtime", "compile_runtime"]


@dataclass(frozen=True, slots=True)
class RouteTarget:
    target: Target
    backend: Backend
    config: BackendConfig


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """A public model and its failover chain, resolved to backend objects."""

    name: str
    config: ModelConfig
    chain: tuple[RouteTarget, ...]

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
    local_models: LocalModelStore = field(compare=False, repr=False)
    usage: _Usage = field(default_factory=_Usage, compare=False, repr=False)

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


def compile_runtime(
    config: Config, previous: Runtime | None, source: str, local_models: LocalModelStore | None = None
) -> tuple[Runtime, list[Backend]]:
    """Build the Runtime for `config`. Returns it and the backends that are new (to be started)."""
    if local_models is None:
        local_models = previous.local_models if previous is not None else LocalModelStore()
    local_models.set_budget(config.local_models.memory_budget_gb)
    local_models.set_blas_threads(config.local_models.blas_threads)
    reusable: dict[BackendConfig, Backend] = {}
    if previous is not None:
        reusable = {backend.config: backend for backend in previous.backends.values()}
    backends: dict[str, Backend] = {}
    created: list[Backend] = []
    for backend_config in config.backends:
        backend = reusable.get(backend_config)
        if backend is None:
            backend = build_backend(backend_config, local_models)
            created.append(backend)
        backends[backend_config.name] = backend
    models = []
    routes: dict[str, ModelRoute] = {}
    for model in config.models:
        chain = tuple(
            RouteTarget(target=t, backend=backends[t.backend], config=backends[t.backend].config)
            for t in model.chain
        )
        route = ModelRoute(name=model.name, config=model, chain=chain)
        models.append(route)
        for public in (model.name, *model.aliases):
            routes[public] = route
    runtime = Runtime(
        config=config,
        loaded_at=datetime.now(UTC),
        source=source,
        backends=MappingProxyType(backends),
        routes=MappingProxyType(routes),
        models=tuple(models),
        keys=KeyTable(config.auth),
        local_models=local_models,
    )
    return runtime, created
