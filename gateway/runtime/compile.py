"""Compile a `Config` into a `Runtime`: the immutable routing table request handlers read.

Backend objects are reused from the previous Runtime when their own settings are unchanged (equal), so
a reload keeps connection pools, loaded model weights, circuit breakers and concurrency counts. The
limits store is reused likewise when `limits` is unchanged, so counters survive a reload; the limits
themselves (keys', backends' quotas) are always compiled from the new config. The response cache's
store is reused when `cache` is unchanged (models' own cache settings are read per request). A
balanced group keeps its strategy's state when it and its backend objects are unchanged, and a
canary its windows and rollback likewise.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import MappingProxyType

from gateway.auth import KeyTable, TrustedProxies
from gateway.backends.base import Backend, SharedResources
from gateway.backends.mlx.store import LocalModelStore
from gateway.backends.registry import build_backend
from gateway.cache import CacheStats, ResponseCache, build_cache_store
from gateway.config.backends import BackendSettings
from gateway.config.model import Config, ModelConfig, Target, TargetGroup
from gateway.limits import BackendQuota, Clock, Limiter, backend_rules, build_store, key_rules, system_clock
from gateway.pricing import TokenPrice, resolve_price
from gateway.routing.canary import RollbackBook, RouteCanary
from gateway.routing.groups import RouteGroup
from gateway.routing.table import ModelRoute, RouteTarget, Runtime

__all__ = ["compile_runtime"]


def compile_runtime(
    config: Config,
    previous: Runtime | None,
    source: str,
    local_models: LocalModelStore | None = None,
    clock: Clock = system_clock,
    rollbacks: RollbackBook | None = None,
) -> tuple[Runtime, list[Backend]]:
    """Build the Runtime for `config`. Returns it and the backends that are new (to be started).
    `clock`: what the limits read the time from (tests pass a manual one). `rollbacks`: the canary
    rollbacks this process knows of, applied to the canaries compiled here (which report theirs to it)."""
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
    if previous is not None and previous.config.limits == config.limits:
        store = previous.limits.store
    else:
        store = build_store(config.limits)
    if previous is not None and previous.cache is not None and previous.config.cache == config.cache:
        cache_store, cache_stats = previous.cache.store, previous.cache.stats
        cache_index = previous.cache.index
    else:
        cache_store, cache_stats = build_cache_store(config.cache), CacheStats()
        cache_index = None
    limiter = Limiter(store, config.limits, MappingProxyType(dict(key_rules(config.auth))), clock)
    # Quotas come from this config's settings: a backend reused from the previous Runtime keeps its
    # old settings object, whose `limits` (not compared) may be out of date.
    quotas: dict[str, BackendQuota] = {}
    for settings in config.backends:
        rules = backend_rules(settings.name, settings.limits)
        if rules is not None:
            quotas[settings.name] = BackendQuota(limiter, rules)
    models = []
    routes: dict[str, ModelRoute] = {}
    prices: dict[tuple[str, str], TokenPrice | None] = {}
    for model in config.models:
        chain = tuple(_target(config, t, backends, quotas, prices) for t in model.chain)
        shadow = _shadow_route(config, model, backends, quotas, prices)
        steps = _steps(model, chain, previous)
        canary = _canary(config, model, backends, quotas, prices, previous, rollbacks)
        route = ModelRoute(
            name=model.name,
            config=model,
            chain=chain,
            shadow=shadow,
            steps=steps,
            sticky=any(type(s) is RouteGroup and s.config.sticky is not None for s in steps),
            canary=canary,
        )
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
        limits=limiter,
        cache=ResponseCache(config.cache, cache_store, cache_stats, index=cache_index),
    )
    return runtime, created


def _target(
    config: Config,
    t: Target,
    backends: dict[str, Backend],
    quotas: dict[str, BackendQuota],
    prices: dict[tuple[str, str], TokenPrice | None],
) -> RouteTarget:
    """A target of this config resolved to its backend object, price, quota and capabilities."""
    return RouteTarget(
        target=t,
        backend=backends[t.backend],
        config=backends[t.backend].config,
        # This config's settings: a reused backend object keeps the settings it was built with, and
        # a price change does not rebuild a backend.
        price=_price(config.backends, t.backend, t.model, prices),
        quota=quotas.get(t.backend),
        capabilities=_capabilities(config, t),
    )


def _shadow_route(
    config: Config,
    model: ModelConfig,
    backends: dict[str, Backend],
    quotas: dict[str, BackendQuota],
    prices: dict[tuple[str, str], TokenPrice | None],
) -> ModelRoute | None:
    """`models.<m>.shadow` as a one-target route (so a copy meets its target's breaker, quota and
    concurrency limit as a chain step would), or None."""
    if model.shadow is None:
        return None
    target = _target(config, model.shadow.target, backends, quotas, prices)
    return ModelRoute(name=model.name, config=model, chain=(target,))


def _canary(
    config: Config,
    model: ModelConfig,
    backends: dict[str, Backend],
    quotas: dict[str, BackendQuota],
    prices: dict[tuple[str, str], TokenPrice | None],
    previous: Runtime | None,
    rollbacks: RollbackBook | None,
) -> RouteCanary | None:
    """`models.<m>.canary` with its target resolved. Unchanged since the previous Runtime (same
    settings, same backend object), it keeps its windows, share and rollback."""
    if model.canary is None:
        return None
    target = _target(config, model.canary.target, backends, quotas, prices)
    canary = RouteCanary(model.name, model.canary, target)
    old = previous.routes.get(model.name) if previous is not None else None
    before = old.canary if old is not None else None
    if before is not None and before.config == model.canary and before.target.backend is target.backend:
        canary.carry_over(before)
    if rollbacks is not None:
        rollbacks.attach(canary)
    return canary


def _steps(
    model: ModelConfig, chain: tuple[RouteTarget, ...], previous: Runtime | None
) -> tuple[RouteTarget | RouteGroup, ...]:
    """The chain's steps, each group with its members; empty when the chain has no group. A group
    equal to the previous Runtime's at its place, on the same backend objects, keeps its strategy's
    state (counters, averages); any other starts afresh."""
    if not any(isinstance(s, TargetGroup) for s in model.steps):
        return ()
    old = previous.routes.get(model.name) if previous is not None else None
    steps: list[RouteTarget | RouteGroup] = []
    at = 0
    for index, step in enumerate(model.steps):
        if not isinstance(step, TargetGroup):
            steps.append(chain[at])
            at += 1
            continue
        members = chain[at : at + len(step.targets)]
        at += len(step.targets)
        picker = None
        if old is not None and index < len(old.steps):
            before = old.steps[index]
            if (
                type(before) is RouteGroup
                and before.config == step
                and all(a.backend is b.backend for a, b in zip(before.members, members, strict=True))
            ):
                picker = before.picker
        steps.append(RouteGroup(step, index, members, picker))
    return tuple(steps)


def _capabilities(config: Config, target: Target) -> frozenset[str]:
    """What a chain target can do, from this config's settings (a reused backend object keeps the
    settings it was built with, and a capability change does not rebuild a backend)."""
    settings = config.backend(target.backend)
    assert settings is not None  # the loader checked every chain's backend names
    return settings.capabilities_for(target.model, dict(target.capabilities))


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
