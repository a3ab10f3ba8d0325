"""Compile a `Config` into a `Runtime`: the immutable routing table request handlers read.

Backend objects are reused from the previous Runtime when their own settings are unchanged (equal), so
a reload keeps connection pools, loaded model weights, circuit breakers and concurrency counts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import MappingProxyType

from gateway.auth import KeyTable, TrustedProxies
from gateway.backends.base import Backend, SharedResources
from gateway.backends.mlx.store import LocalModelStore
from gateway.backends.registry import build_backend
from gateway.config.backends import BackendSettings
from gateway.config.model import Config
from gateway.pricing import TokenPrice, resolve_price
from gateway.routing.table import ModelRoute, RouteTarget, Runtime

__all__ = ["compile_runtime"]


def compile_runtime(
    config: Config, previous: Runtime | None, source: str, local_models: LocalModelStore | None = None
) -> tuple[Runtime, list[Backend]]:
    """Build the Runtime for `config`. Returns it and the backends that are new (to be started)."""
    if local_models is None:
        local_models = previous.local_models if previous is not None else LocalModelStore()
    local_models.set_budget(config.local_models.memory_budget_gb)
    local_models.set_blas_threads(config.local_models.blas_threads)
    shared = SharedResources(local_models=local_models)
    reusable: dict[BackendSettings, Backend] = {}
    if previous is not None:
        reusable = {backend.config: backend for backend in previous.backends.values()}
    backends: dict[str, Backend] = {}
    created: list[Backend] = []
    for settings in config.backends:
        backend = reusable.get(settings)
        if backend is None:
            backend = build_backend(settings, shared)
            created.append(backend)
        backends[settings.name] = backend
    models = []
    routes: dict[str, ModelRoute] = {}
    prices: dict[tuple[str, str], TokenPrice | None] = {}
    for model in config.models:
        chain = tuple(
            RouteTarget(
                target=t,
                backend=backends[t.backend],
                config=backends[t.backend].config,
                # This config's settings: a reused backend object keeps the settings it was built
                # with, and a price change does not rebuild a backend.
                price=_price(config.backends, t.backend, t.model, prices),
            )
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
        proxies=TrustedProxies(config.server.trusted_proxies),
        local_models=local_models,
    )
    return runtime, created


def _price(
    settings: tuple[BackendSettings, ...],
    backend: str,
    model: str,
    seen: dict[tuple[str, str], TokenPrice | None],
) -> TokenPrice | None:
    """The price of `model` on `backend` (resolved once per pair and config)."""
    key = (backend, model)
    if key not in seen:
        [own] = [s for s in settings if s.name == backend]
        resolved = resolve_price(own, model)
        seen[key] = None if resolved is None else TokenPrice.of(resolved.price)
    return seen[key]
