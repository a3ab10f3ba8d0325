"""The limits' stores under test: every behaviour runs on the memory store and on a private Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from gateway.config.model import AuthConfig, Budget, ClientKey, KeyLimits, LimitsConfig
from gateway.limits import Limiter, ManualClock, Rules, build_store, key_rules
from gateway.testing.redis_server import RedisServer

#: 2026-03-31T23:59:00Z: a minute before both a day and a month end.
MONTH_END_MINUS_60 = 1_775_001_540.0


def limits_config(store: str = "memory", on_store_down: str = "allow", timeout_ms: int = 250) -> LimitsConfig:
    return LimitsConfig(
        store=store, on_store_down=on_store_down, store_timeout_ms=timeout_ms, key_prefix="t:"
    )  # type: ignore[arg-type]


def rules_for(**limits: object) -> Rules:
    budget = limits.pop("budget_usd", Budget())
    key = ClientKey(
        name="team-a", key_sha256="0" * 64, models=("*",), limits=KeyLimits(budget_usd=budget, **limits)
    )  # type: ignore[arg-type]
    return key_rules(AuthConfig(client_keys=(key,), admin_keys=(), allow_unauthenticated=False))["team-a"]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_767_225_600.5)  # 2026-01-01T00:00:00.5Z


@pytest.fixture(params=["memory", "redis"])
async def make_limiter(
    request: pytest.FixtureRequest, clock: ManualClock, tmp_path
) -> AsyncIterator[Callable[..., Limiter]]:
    """`make_limiter(rules, on_store_down=...)`: a Limiter over the parametrized store (Redis: a private
    server for this test), reading `clock`."""
    server = None
    if request.param == "redis":
        server = RedisServer()
        server.start()
    made: list[Limiter] = []

    def make(rules: Rules | None = None, **options: object) -> Limiter:
        config = limits_config(server.url() if server else "memory", **options)  # type: ignore[arg-type]
        limiter = Limiter(build_store(config), config, {"team-a": rules} if rules else {}, clock)
        made.append(limiter)
        return limiter

    make.server = server  # type: ignore[attr-defined]
    try:
        yield make
    finally:
        for limiter in made:
            await limiter.store.close()
        if server is not None:
            server.stop()
