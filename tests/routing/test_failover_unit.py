"""Failover below the e2e layer: `execute` over fake in-process targets that implement the Backend
protocol (no network, no subprocess), table-driven over every failure kind × `retry_on` × circuit
state, `max_attempts`, the request's deadline (on a clock the test moves), skips and quotas, and the
error the client gets when the chain is exhausted."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import logfire
import pytest
from logfire.testing import CaptureLogfire

from gateway import tracing
from gateway.backends import breaker as breaker_module
from gateway.backends.breaker import CircuitBreaker
from gateway.backends.concurrency import ConcurrencyLimitReached
from gateway.backends.upstream import (
    ALWAYS_NEXT,
    BACKEND_FAULTS,
    AttemptLimits,
    ContentFilterRefusal,
    PassThroughReply,
    Reply,
    Stream,
    UpstreamCall,
    UpstreamFailure,
)
from gateway.config.backends import BackendSettings
from gateway.config.load import parse_config
from gateway.config.model import CanaryConfig, CanaryRollback, Config, TargetGroup
from gateway.errors import (
    BadRequest,
    ContentFiltered,
    GatewayError,
    GatewayTimeout,
    RateLimited,
    ServiceUnavailable,
    UnsupportedCapability,
    UpstreamError,
)
from gateway.limits.limiter import Admission
from gateway.limits.memory import MemoryStore
from gateway.limits.rules import Rules
from gateway.limits.store import Verdict
from gateway.pricing.cost import TokenPrice
from gateway.protocol import openai as openai_protocol
from gateway.protocol.canonical import ChatRequest, Usage
from gateway.routing import failover
from gateway.routing.canary import CANARY_PICK, RouteCanary
from gateway.routing.capabilities import Refusal
from gateway.routing.failover import ATTEMPT_SPAN, TIMER_SLACK_S, Attempt, execute
from gateway.routing.groups import LeastBusy, Picker, RouteGroup
from gateway.routing.table import ModelRoute, RouteTarget

KINDS = (
    "connect_error",
    "timeout",
    "http_429",
    "http_5xx",
    "overloaded",
    "auth",
    "unsupported",
    "client_error",
)
RETRYABLE = ("connect_error", "timeout", "http_429", "http_5xx", "overloaded")
STATUS = {"http_429": 429, "http_5xx": 503, "auth": 401, "unsupported": 404, "client_error": 400}

CONFIG = b"""
backends:
  a: {type: openai_compatible, base_url: "http://127.0.0.1:1"}
  b: {type: openai_compatible, base_url: "http://127.0.0.1:2"}
  c: {type: openai_compatible, base_url: "http://127.0.0.1:3"}
models:
  chat:
    chain: [{backend: a}, {backend: b}, {backend: c}]
failover:
  circuit_breaker: {failure_threshold: 2, cooldown_seconds: 30}
"""
CALL = UpstreamCall(
    endpoint="chat",
    protocol="openai",
    body={},
    request=ChatRequest(model="chat", messages=()),  # type: ignore[call-arg]
    stream=False,
    request_id="r",
    public_model="chat",
)


class Clock:
    """The failover module's clock, moved by the test (and by backends that 'take' time)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


Script = Callable[[], Reply | Stream]


class FakeBackend:
    """The Backend protocol in process: each `send` runs the next scripted step (a reply, or a failure
    to raise), optionally moving the clock first."""

    def __init__(self, config: BackendSettings, clock: Clock) -> None:
        self.config = config
        self.breaker = CircuitBreaker()
        self.concurrency = None
        self.clock = clock
        self.script: list[UpstreamFailure | Reply] = []
        self.takes = 0.0
        self.calls: list[tuple[str, AttemptLimits]] = []

    @property
    def name(self) -> str:
        return self.config.name

    async def send(self, call: UpstreamCall, model: str, limits: AttemptLimits) -> Reply | Stream:
        self.calls.append((model, limits))
        self.clock.now += self.takes
        step = self.script.pop(0) if self.script else PassThroughReply(b"{}", None)
        if isinstance(step, BaseException):
            raise step
        return step


class FakeQuota:
    """A backend quota answering a fixed verdict: refused (a Verdict naming the limit) or admitted."""

    def __init__(self, name: str, refused: str | None, retry_after: float = 2.3) -> None:
        self.rules = Rules(
            f"backend:{name}", f"backend '{name}'", name, requests_per_minute=60, tokens_per_minute=1000
        )
        self.refused = refused
        self.retry_after = retry_after
        self.taken: list[int] = []

    async def take(self, tokens: int) -> Admission | Verdict | None:
        self.taken.append(tokens)
        if self.refused is None:
            return Admission(self.rules, Verdict(), MemoryStore(), 0.0)
        return Verdict(refused=self.refused, retry_after=self.retry_after)


class Chain:
    """A three-target route over fake backends, and the config's policy and timeout tier."""

    def __init__(self, config: Config, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.backends = {b.name: FakeBackend(b, clock) for b in config.backends}
        self.policy = config.failover
        self.tier = config.timeouts.chat
        self.deadline = clock.now + 60
        self.steps: dict[str, RouteTarget] = {}
        for t in config.models[0].chain:
            backend = self.backends[t.backend]
            self.steps[t.backend] = RouteTarget(
                t,
                backend,
                backend.config,
                capabilities=backend.config.capabilities_for(t.model),  # type: ignore[arg-type]
            )

    def a(self) -> FakeBackend:
        return self.backends["a"]

    def alter(self, name: str, **changes: object) -> None:
        self.steps[name] = dataclasses.replace(self.steps[name], **changes)  # type: ignore[arg-type]

    def disable(self, name: str) -> None:
        config = dataclasses.replace(
            self.backends[name].config, enabled=False, disabled_reason="off for test"
        )
        self.alter(name, config=config)

    def route(self, names: tuple[str, ...] = ("a", "b", "c")) -> ModelRoute:
        model = self.config.models[0]
        return ModelRoute(model.name, model, tuple(self.steps[n] for n in names))

    def with_policy(self, **changes: object) -> None:
        self.policy = dataclasses.replace(self.policy, **changes)  # type: ignore[arg-type]

    async def run(
        self, names: tuple[str, ...] = ("a", "b", "c"), attempts: list[Attempt] | None = None, tokens: int = 0
    ) -> failover.Served:
        return await execute(self.route(names), CALL, self.tier, self.policy, self.deadline, attempts, tokens)

    def called(self) -> list[str]:
        return [name for name, b in self.backends.items() for _ in b.calls]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(failover, "time", clock)
    monkeypatch.setattr(breaker_module, "time", clock)  # the circuit's cooldown runs on it too
    return clock


@pytest.fixture
def chain(clock: Clock) -> Chain:
    return Chain(parse_config(CONFIG, Path("/tmp/gateway.yaml")), clock)


def failure(kind: str, **extra: object) -> UpstreamFailure:
    return UpstreamFailure(kind, f"{kind} happened", status=STATUS.get(kind), **extra)  # type: ignore[arg-type]


def set_circuit(breaker: CircuitBreaker, state: str, clock: Clock) -> None:
    """`open`: within its cooldown; `half_open`: open with the cooldown over (the next request probes)."""
    if state == "closed":
        return
    breaker.state = "open"
    breaker.consecutive_failures = 2
    breaker.opened_at = clock.now - (1 if state == "open" else 31)


# -- every failure kind × retry_on × the first target's circuit -----------------------------------------


def expected_error(kind: str) -> type[GatewayError]:
    """What the client gets when `a` fails with `kind` and failover stops there."""
    if kind in ("http_429", "overloaded"):
        return RateLimited
    if kind == "timeout":
        return GatewayTimeout
    return UpstreamError


CASES = [
    (kind, retry_on, circuit)
    for kind in (*KINDS, "ok")
    for retry_on in ("default", "none", "only")
    for circuit in ("closed", "open", "half_open")
]


@pytest.mark.parametrize(("kind", "retry_on", "circuit"), CASES)
async def test_outcome_retry_on_and_circuit(
    chain: Chain, clock: Clock, kind: str, retry_on: str, circuit: str
) -> None:
    # retry_on: the default (every retryable kind), none of them, or only this kind.
    if retry_on == "none":
        chain.with_policy(retry_on=frozenset())
    elif retry_on == "only":
        chain.with_policy(retry_on=frozenset({kind}) & frozenset(RETRYABLE))
    a = chain.a()
    set_circuit(a.breaker, circuit, clock)
    if kind != "ok":
        a.script = [failure(kind)]
    attempts: list[Attempt] = []

    moves_on = kind in ALWAYS_NEXT or kind in chain.policy.retry_on
    if circuit == "open":
        served = await chain.run(attempts=attempts)
        assert chain.called() == ["b"]
        assert [(x.backend, x.outcome) for x in attempts] == [("a", "circuit_open"), ("b", "ok")]
        assert attempts[0].detail == "retry in 29 s"
        assert not attempts[0].tried
        assert served.target is chain.steps["b"]
        assert a.breaker.state == "open"
        return
    if kind == "ok":
        served = await chain.run(attempts=attempts)
        assert served.target is chain.steps["a"]
        assert served.attempts is attempts
        assert [(x.backend, x.outcome, x.status) for x in attempts] == [("a", "ok", 200)]
        assert (a.breaker.state, a.breaker.consecutive_failures, a.breaker.probing) == ("closed", 0, False)
        return
    if kind == "client_error":
        with pytest.raises(BadRequest) as raised:
            await chain.run(attempts=attempts)
        assert raised.value.status == 400
        assert raised.value.extensions["upstream_status"] == 400
        assert chain.called() == ["a"]
    elif moves_on:
        served = await chain.run(attempts=attempts)
        assert served.target is chain.steps["b"]
        assert chain.called() == ["a", "b"]
        assert [(x.backend, x.outcome) for x in attempts] == [("a", kind), ("b", "ok")]
    else:
        with pytest.raises(expected_error(kind)) as raised:
            await chain.run(attempts=attempts)
        assert chain.called() == ["a"]
        assert raised.value.extensions["attempts"] == [
            {"backend": "a", "model": a.calls[0][0], "outcome": kind, "status": STATUS.get(kind)}
        ]
    first = attempts[0]
    assert (first.backend, first.outcome, first.status, first.detail) == (
        "a",
        kind,
        STATUS.get(kind),
        f"{kind} happened",
    )
    assert first.tried
    # The breaker: backend faults count (a probe's failure re-opens at once); the others leave it.
    if kind in BACKEND_FAULTS:
        if circuit == "half_open":
            assert a.breaker.state == "open"
            assert a.breaker.opened_at == clock.now
        else:
            assert (a.breaker.state, a.breaker.consecutive_failures) == ("closed", 1)
    elif circuit == "half_open":
        assert (a.breaker.state, a.breaker.probing) == ("half_open", False)
    else:
        assert (a.breaker.state, a.breaker.consecutive_failures) == ("closed", 0)
    assert a.breaker.probing is False


# -- max_attempts -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("max_attempts", "called"), [(0, 3), (1, 1), (2, 2), (3, 3), (4, 3)])
async def test_max_attempts_bounds_the_backends_contacted(
    chain: Chain, max_attempts: int, called: int
) -> None:
    chain.with_policy(max_attempts=max_attempts)
    for b in chain.backends.values():
        b.script = [failure("http_5xx")]
    attempts: list[Attempt] = []
    with pytest.raises(UpstreamError) as raised:
        await chain.run(attempts=attempts)
    assert chain.called() == ["a", "b", "c"][:called]
    assert [x.outcome for x in attempts] == ["http_5xx"] * called
    assert len(raised.value.extensions["attempts"]) == called


@pytest.mark.parametrize("skip", ["disabled", "circuit_open", "incapable", "quota"])
async def test_skips_do_not_count_for_max_attempts(chain: Chain, clock: Clock, skip: str) -> None:
    chain.with_policy(max_attempts=1)
    if skip == "disabled":
        chain.disable("a")
    elif skip == "circuit_open":
        set_circuit(chain.a().breaker, "open", clock)
    elif skip == "incapable":
        chain.alter("a", capabilities=frozenset())
    else:
        chain.alter("a", quota=FakeQuota("a", "requests_per_minute"))
    chain.backends["b"].script = [failure("http_5xx")]
    attempts: list[Attempt] = []
    with pytest.raises(UpstreamError):
        await chain.run(attempts=attempts)
    assert chain.called() == ["b"]
    assert [x.outcome for x in attempts] == [skip, "http_5xx"]


async def test_max_attempts_reached_after_a_success_elsewhere_is_not_an_error(chain: Chain) -> None:
    chain.with_policy(max_attempts=2)
    chain.a().script = [failure("timeout")]
    served = await chain.run()
    assert served.target is chain.steps["b"]
    assert [x.outcome for x in served.attempts] == ["timeout", "ok"]


# -- the deadline ---------------------------------------------------------------------------------------


async def test_a_deadline_already_past_contacts_nothing(chain: Chain, clock: Clock) -> None:
    chain.deadline = clock.now - 1
    set_circuit(chain.a().breaker, "half_open", clock)
    with pytest.raises(GatewayTimeout) as raised:
        await chain.run()
    assert chain.called() == []
    assert raised.value.extensions["tier"] == "chat"
    assert raised.value.extensions["limit_seconds"] == chain.tier.total
    assert "raise timeouts.chat.total" in raised.value.detail
    assert chain.a().breaker.probing is False  # the probe it was allowed is handed back


@pytest.mark.parametrize(("left", "times_out"), [(TIMER_SLACK_S * 0.8, True), (TIMER_SLACK_S * 1.2, False)])
async def test_the_deadline_counts_timer_slack(
    chain: Chain, clock: Clock, left: float, times_out: bool
) -> None:
    chain.deadline = clock.now + left
    if times_out:
        with pytest.raises(GatewayTimeout):
            await chain.run()
        assert chain.called() == []
    else:
        assert (await chain.run()).target is chain.steps["a"]


async def test_a_deadline_passed_during_an_attempt_stops_failover(chain: Chain, clock: Clock) -> None:
    chain.deadline = clock.now + 10
    a = chain.a()
    a.takes = 11
    a.script = [failure("timeout")]
    attempts: list[Attempt] = []
    with pytest.raises(GatewayTimeout) as raised:
        await chain.run(attempts=attempts)
    assert chain.called() == ["a"]
    assert [x.outcome for x in attempts] == ["timeout"]
    assert "exceeded the chat timeout tier" in raised.value.detail
    assert a.calls[0][1] == AttemptLimits(chain.tier.connect, chain.tier.first_byte, chain.deadline)


@pytest.mark.parametrize("kind", ["http_5xx", "http_429", "connect_error"])
async def test_a_final_failure_past_the_deadline_is_a_timeout(chain: Chain, clock: Clock, kind: str) -> None:
    chain.with_policy(retry_on=frozenset())
    chain.deadline = clock.now + 10
    a = chain.a()
    a.takes = 10
    a.script = [failure(kind)]
    with pytest.raises(GatewayTimeout) as raised:
        await chain.run()
    assert raised.value.extensions["attempts"] == [
        {"backend": "a", "model": a.calls[0][0], "outcome": kind, "status": STATUS.get(kind)}
    ]


async def test_exhausted_chain_within_the_deadline_is_not_a_timeout(chain: Chain, clock: Clock) -> None:
    chain.deadline = clock.now + 10
    for b in chain.backends.values():
        b.takes = 3
        b.script = [failure("http_5xx")]
    with pytest.raises(UpstreamError):
        await chain.run()
    assert chain.called() == ["a", "b", "c"]


async def test_attempt_durations_are_measured(chain: Chain) -> None:
    chain.a().takes = 0.25
    chain.a().script = [failure("http_5xx")]
    chain.backends["b"].takes = 0.5
    served = await chain.run()
    assert [x.duration_ms for x in served.attempts] == [250.0, 500.0]


# -- the breaker over several requests --------------------------------------------------------------


async def test_the_circuit_opens_at_the_threshold_and_a_probe_closes_it(chain: Chain, clock: Clock) -> None:
    a = chain.a()
    a.script = [failure("http_5xx"), failure("http_5xx")]
    for _ in range(2):
        assert (await chain.run()).target is chain.steps["b"]
    assert a.breaker.state == "open"
    served = await chain.run()
    assert [x.outcome for x in served.attempts] == ["circuit_open", "ok"]
    assert len(a.calls) == 2
    clock.now += 30
    served = await chain.run()
    assert served.target is chain.steps["a"]
    assert (a.breaker.state, a.breaker.consecutive_failures) == ("closed", 0)


async def test_a_disabled_breaker_never_skips(chain: Chain, clock: Clock) -> None:
    chain.with_policy(circuit_breaker=dataclasses.replace(chain.policy.circuit_breaker, enabled=False))
    set_circuit(chain.a().breaker, "open", clock)
    assert (await chain.run()).target is chain.steps["a"]


async def test_the_concurrency_limit_does_not_count_for_the_breaker(chain: Chain) -> None:
    a = chain.a()
    a.script = [ConcurrencyLimitReached("queue full"), ConcurrencyLimitReached("queue full")]
    for _ in range(2):
        served = await chain.run()
        assert [x.outcome for x in served.attempts] == ["overloaded", "ok"]
    assert (a.breaker.state, a.breaker.consecutive_failures) == ("closed", 0)


async def test_cancellation_hands_back_the_probe(chain: Chain, clock: Clock) -> None:
    a = chain.a()
    set_circuit(a.breaker, "half_open", clock)

    class Cancelled(BaseException):
        pass

    a.script = [Cancelled()]  # type: ignore[list-item]
    with pytest.raises(Cancelled):
        await chain.run()
    assert (a.breaker.state, a.breaker.probing) == ("half_open", False)
    assert a.breaker.allow(chain.policy.circuit_breaker)  # the next request may probe


# -- the error when the chain is exhausted --------------------------------------------------------------


async def test_all_rate_limited_at_the_end_of_the_chain_is_429_retry_in_1_s(chain: Chain) -> None:
    chain.a().script = [failure("http_429", retry_after="7")]
    chain.backends["b"].script = [failure("overloaded", retry_after="3")]
    chain.backends["c"].script = [failure("http_429", retry_after="5")]
    with pytest.raises(RateLimited) as raised:
        await chain.run()
    # Exhausting the chain relays no backend's Retry-After (each was failed over): 1 s.
    assert raised.value.headers["retry-after"] == "1"
    assert "rate-limited or overloaded" in raised.value.detail


@pytest.mark.parametrize(("retry_after", "header"), [("7", "7"), (None, "1")])
async def test_a_rate_limit_not_failed_over_relays_its_retry_after(
    chain: Chain, retry_after: str | None, header: str
) -> None:
    chain.with_policy(retry_on=frozenset())
    chain.a().script = [failure("http_429", retry_after=retry_after)]
    with pytest.raises(RateLimited) as raised:
        await chain.run()
    assert raised.value.headers["retry-after"] == header
    assert raised.value.status == 429


async def test_mixed_failures_are_an_upstream_error_with_the_path(chain: Chain) -> None:
    chain.a().script = [failure("timeout")]
    chain.backends["b"].script = [failure("http_429")]
    chain.backends["c"].script = [failure("connect_error")]
    with pytest.raises(UpstreamError) as raised:
        await chain.run()
    assert raised.value.status == 502
    assert [x["outcome"] for x in raised.value.extensions["attempts"]] == [
        "timeout",
        "http_429",
        "connect_error",
    ]
    assert (
        "a: timeout happened; b: http_429 happened (HTTP 429); c: connect_error happened"
        in raised.value.detail
    )


async def test_all_timeouts_are_a_gateway_timeout_naming_the_tier(chain: Chain) -> None:
    for b in chain.backends.values():
        b.script = [failure("timeout")]
    with pytest.raises(GatewayTimeout) as raised:
        await chain.run()
    assert "answered in time (chat tier" in raised.value.detail
    assert len(raised.value.extensions["attempts"]) == 3


async def test_a_timeout_and_a_skip_are_a_gateway_timeout(chain: Chain, clock: Clock) -> None:
    set_circuit(chain.a().breaker, "open", clock)
    chain.backends["b"].script = [failure("timeout")]
    with pytest.raises(GatewayTimeout):
        await chain.run(("a", "b"))


async def test_nothing_available_is_503(chain: Chain, clock: Clock) -> None:
    set_circuit(chain.a().breaker, "open", clock)
    chain.disable("b")
    with pytest.raises(ServiceUnavailable) as raised:
        await chain.run(("a", "b"))
    assert raised.value.headers == {"retry-after": "1"}
    assert (
        "no backend is available for model 'chat': a: retry in 29 s; b: off for test" in raised.value.detail
    )


async def test_all_disabled_is_503_without_retry_after(chain: Chain) -> None:
    chain.disable("a")
    with pytest.raises(ServiceUnavailable) as raised:
        await chain.run(("a",))
    assert raised.value.headers == {}


async def test_all_incapable_is_400_naming_the_capability(chain: Chain) -> None:
    chain.alter("a", capabilities=frozenset())
    chain.alter("b", capabilities=frozenset())
    with pytest.raises(UnsupportedCapability) as raised:
        await chain.run(("a", "b"))
    assert raised.value.status == 400
    assert raised.value.extensions["capability"] == "chat"
    assert "it needs capability 'chat', which none of its backends has" in raised.value.detail
    assert chain.called() == []


async def test_incapable_and_disabled_is_400(chain: Chain) -> None:
    chain.alter("a", capabilities=frozenset())
    chain.disable("b")
    with pytest.raises(UnsupportedCapability) as raised:
        await chain.run(("a", "b"))
    assert "b: disabled (off for test)" in raised.value.detail


async def test_incapable_then_failed_is_not_a_capability_error(chain: Chain) -> None:
    chain.alter("a", capabilities=frozenset())
    chain.backends["b"].script = [failure("http_5xx")]
    with pytest.raises(UpstreamError):
        await chain.run(("a", "b"))


async def test_unsupported_before_any_request_is_400(chain: Chain) -> None:
    chain.a().script = [UpstreamFailure("unsupported", "no embeddings here")]
    chain.backends["b"].script = [UpstreamFailure("unsupported", "no embeddings either")]
    attempts: list[Attempt] = []
    with pytest.raises(BadRequest) as raised:
        await chain.run(("a", "b"), attempts=attempts)
    assert type(raised.value) is BadRequest
    assert "model 'chat' cannot serve this request" in raised.value.detail
    assert not any(x.tried for x in attempts)


async def test_unsupported_with_an_open_circuit_is_503(chain: Chain, clock: Clock) -> None:
    chain.a().script = [UpstreamFailure("unsupported", "no embeddings here")]
    set_circuit(chain.backends["b"].breaker, "open", clock)
    with pytest.raises(ServiceUnavailable):
        await chain.run(("a", "b"))


async def test_unsupported_with_a_status_was_tried(chain: Chain) -> None:
    chain.a().script = [failure("unsupported")]
    chain.backends["b"].script = [failure("unsupported")]
    with pytest.raises(UpstreamError):
        await chain.run(("a", "b"))


# -- quotas ------------------------------------------------------------------------------------------


async def test_a_quota_used_up_is_skipped_and_named(chain: Chain) -> None:
    quota = FakeQuota("a", "tokens_per_minute", retry_after=2.3)
    chain.alter("a", quota=quota)
    served = await chain.run(tokens=42)
    skip = served.attempts[0]
    assert (skip.outcome, skip.retry_after, skip.tried) == ("quota", 3, False)
    assert skip.detail == "quota backends.a.limits.tokens_per_minute (1000 per minute) used up; frees in 3 s"
    assert quota.taken == [42]
    assert chain.called() == ["b"]
    assert served.quota is None


async def test_a_quota_admission_is_the_served_charge(chain: Chain) -> None:
    chain.alter("a", quota=FakeQuota("a", None))
    served = await chain.run()
    assert isinstance(served.quota, Admission)


async def test_quotas_used_up_everywhere_are_429_with_the_soonest_retry(chain: Chain) -> None:
    chain.alter("a", quota=FakeQuota("a", "requests_per_minute", retry_after=9))
    chain.alter("b", quota=FakeQuota("b", "requests_per_minute", retry_after=0.2))
    with pytest.raises(RateLimited) as raised:
        await chain.run(("a", "b"))
    assert raised.value.headers["retry-after"] == "1"
    assert "over its quota" in raised.value.detail
    assert "(60 per minute)" in raised.value.detail


@pytest.mark.parametrize(
    ("retry_on", "retry_after", "header"),
    [
        (frozenset(), "4", "4"),
        (frozenset(), "12", "9"),
        (frozenset(), "Wed, 21 Oct 2015 07:28:00 GMT", "1"),
        (frozenset({"http_429"}), "4", "9"),
    ],
)
async def test_a_quota_and_a_rate_limit_take_the_sooner_retry(
    chain: Chain, retry_on: frozenset[str], retry_after: str, header: str
) -> None:
    chain.with_policy(retry_on=retry_on)
    chain.alter("a", quota=FakeQuota("a", "requests_per_minute", retry_after=9))
    chain.backends["b"].script = [failure("http_429", retry_after=retry_after)]
    with pytest.raises(RateLimited) as raised:
        await chain.run(("a", "b"))
    assert raised.value.headers["retry-after"] == header


async def test_a_quota_and_a_server_error_are_an_upstream_error(chain: Chain) -> None:
    chain.alter("a", quota=FakeQuota("a", "requests_per_minute"))
    chain.backends["b"].script = [failure("http_5xx")]
    with pytest.raises(UpstreamError):
        await chain.run(("a", "b"))


async def test_a_quota_skip_hands_back_the_probe(chain: Chain, clock: Clock) -> None:
    set_circuit(chain.a().breaker, "half_open", clock)
    chain.alter("a", quota=FakeQuota("a", "requests_per_minute"))
    await chain.run()
    assert chain.a().breaker.probing is False


# -- client errors ---------------------------------------------------------------------------------


async def test_a_client_error_relays_status_type_and_field(chain: Chain) -> None:
    chain.a().script = [
        UpstreamFailure(
            "client_error", "max_tokens too big", status=422, error_type="invalid_value", param="max_tokens"
        )
    ]
    with pytest.raises(BadRequest) as raised:
        await chain.run()
    error = raised.value
    assert (error.status, error.openai_type, error.anthropic_type) == (422, "invalid_value", "invalid_value")
    assert error.extensions == {"upstream_status": 422, "field": "max_tokens"}
    assert error.detail == "max_tokens too big"


async def test_a_local_client_error_has_no_upstream_status(chain: Chain) -> None:
    chain.a().script = [UpstreamFailure("client_error", "prompt too long")]
    with pytest.raises(BadRequest) as raised:
        await chain.run()
    assert raised.value.status == 400
    assert raised.value.extensions == {}
    assert raised.value.openai_type == "invalid_request_error"


async def test_a_non_4xx_client_error_status_stays_400(chain: Chain) -> None:
    chain.a().script = [UpstreamFailure("client_error", "odd", status=200)]
    with pytest.raises(BadRequest) as raised:
        await chain.run()
    assert raised.value.status == 400
    assert raised.value.extensions == {"upstream_status": 200}


async def test_a_content_filter_refusal_is_content_filtered(chain: Chain) -> None:
    chain.a().script = [ContentFilterRefusal("filtered", ("hate", "violence"), status=400)]
    with pytest.raises(ContentFiltered) as raised:
        await chain.run()
    assert raised.value.extensions["categories"] == ["hate", "violence"]
    assert raised.value.extensions["upstream_status"] == 400
    assert chain.called() == ["a"]


# -- what an attempt records ------------------------------------------------------------------------


async def test_a_billed_failure_records_usage_and_cost(chain: Chain) -> None:
    price = TokenPrice(input=1_000_000, output=2_000_000, cached_input=0, cache_write=0)
    chain.alter("a", price=price)
    usage = Usage(prompt_tokens=1_000, completion_tokens=500)
    chain.a().script = [failure("http_5xx", usage=usage)]
    served = await chain.run()
    billed = served.attempts[0]
    assert billed.billed and billed.usage == usage and billed.price == price
    assert billed.cost_usd == price.cost_usd(usage)
    assert not served.attempts[1].billed
    assert served.attempts[1].cost_usd is None


def test_an_attempt_without_a_price_has_no_cost() -> None:
    attempt = Attempt("a", "m", "http_5xx", usage=Usage(prompt_tokens=1, completion_tokens=1))
    assert attempt.billed and attempt.cost_usd is None


@pytest.mark.parametrize(
    ("outcome", "status", "tried"),
    [
        ("ok", 200, True),
        ("unsupported", None, False),
        ("unsupported", 404, True),
        ("disabled", None, False),
        ("circuit_open", None, False),
        ("quota", None, False),
        ("incapable", None, False),
        ("timeout", None, True),
    ],
)
def test_tried(outcome: str, status: int | None, tried: bool) -> None:
    assert Attempt("a", "m", outcome, status).tried is tried


def test_seconds_of_retry_after() -> None:
    assert failover._seconds("2.5") == 2.5
    assert failover._seconds("-3") == 0.0
    assert failover._seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 1.0
    assert math.isclose(failover._seconds("0"), 0.0)


# -- boundaries -------------------------------------------------------------------------------------


async def test_exactly_at_the_deadline_less_the_slack_is_past_it(chain: Chain, clock: Clock) -> None:
    chain.deadline = 2000.0
    clock.now = chain.deadline - TIMER_SLACK_S
    with pytest.raises(GatewayTimeout):
        await chain.run()
    assert chain.called() == []


async def test_a_final_failure_exactly_at_the_deadline_less_the_slack_is_a_timeout(
    chain: Chain, clock: Clock
) -> None:
    chain.with_policy(retry_on=frozenset())
    chain.deadline = 2000.0
    clock.now = 1990.0
    chain.a().takes = chain.deadline - TIMER_SLACK_S - clock.now
    chain.a().script = [failure("http_5xx")]
    with pytest.raises(GatewayTimeout):
        await chain.run()


async def test_max_attempts_stops_the_walk_before_later_skips(chain: Chain) -> None:
    chain.with_policy(max_attempts=1)
    chain.a().script = [failure("http_5xx")]
    chain.disable("c")
    attempts: list[Attempt] = []
    with pytest.raises(UpstreamError):
        await chain.run(attempts=attempts)
    assert [(x.backend, x.outcome) for x in attempts] == [("a", "http_5xx")]  # c not even listed


async def test_skips_take_no_time(chain: Chain, clock: Clock) -> None:
    set_circuit(chain.a().breaker, "open", clock)
    served = await chain.run()
    assert served.attempts[0].duration_ms == 0.0


@pytest.mark.parametrize("status", [500, 399])
async def test_a_client_error_with_a_non_4xx_status_answers_400(chain: Chain, status: int) -> None:
    chain.a().script = [UpstreamFailure("client_error", "odd", status=status)]
    with pytest.raises(BadRequest) as raised:
        await chain.run()
    assert raised.value.status == 400
    assert raised.value.extensions["upstream_status"] == status


async def test_a_quota_and_an_overload_are_429(chain: Chain) -> None:
    chain.alter("a", quota=FakeQuota("a", "requests_per_minute", retry_after=9))
    chain.backends["b"].script = [failure("overloaded")]
    with pytest.raises(RateLimited) as raised:
        await chain.run(("a", "b"))
    assert "over its quota" in raised.value.detail


# -- what an incapable chain says -------------------------------------------------------------------


async def test_targets_lacking_different_things_say_none_has_everything(chain: Chain) -> None:
    chain.alter("a", capabilities=frozenset())
    chain.alter("b", capabilities=frozenset({"chat"}))
    body = {
        "model": "chat",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    }
    request = openai_protocol.parse_chat_request(body)
    call = UpstreamCall("chat", "openai", body, request, False, "r", "chat")
    assert "tools" in call.needs.capabilities
    with pytest.raises(UnsupportedCapability) as raised:
        await execute(chain.route(("a", "b")), call, chain.tier, chain.policy, chain.deadline)
    assert "none of its backends has everything it needs" in raised.value.detail
    assert raised.value.extensions["capability"] == "chat"  # the first target's refusal names it


async def test_an_incapable_target_is_named_with_its_reason(chain: Chain) -> None:
    chain.alter("a", capabilities=frozenset())
    chain.disable("b")
    with pytest.raises(UnsupportedCapability) as raised:
        await chain.run(("a", "b"))
    assert "(a: lacks capability 'chat'; b: disabled (off for test))" in raised.value.detail
    assert "field" not in raised.value.extensions


def test_a_refused_field_is_named() -> None:
    route = ModelRoute("chat", None, ())  # type: ignore[arg-type]
    attempts = [Attempt("a", "m", "incapable", detail="cannot take an OpenAI field 'service_tier'")]
    path = [{"backend": "a", "model": "m", "outcome": "incapable", "status": None}]
    error = failover._incapable_error(route, attempts, path, [Refusal("x", field="service_tier")])
    assert "it carries 'service_tier', which none of its backends can take" in error.detail
    assert error.extensions["field"] == "service_tier"
    assert "capability" not in error.extensions
    both = failover._incapable_error(
        route, attempts, path, [Refusal("x", capability="vision", field="image_url")]
    )
    assert "it needs capability 'vision'" in both.detail
    assert (both.extensions["capability"], both.extensions["field"]) == ("vision", "image_url")
    mixed = failover._incapable_error(
        route, attempts * 2, path, [Refusal("x", field="service_tier"), Refusal("y", field="store")]
    )
    assert "none of its backends has everything it needs" in mixed.detail
    same_capability = failover._incapable_error(
        route,
        attempts * 2,
        path,
        [Refusal("x", capability="vision"), Refusal("y", capability="vision", field="f")],
    )
    assert "none of its backends has everything it needs" in same_capability.detail


# -- balanced groups ------------------------------------------------------------------------------


class Recorder(Picker):
    """A strategy that always orders the members as listed, and records the hooks failover calls."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.events: list[tuple[object, ...]] = []

    def order(self) -> list[int]:
        return list(range(self.size))

    def started(self, member: int) -> None:
        self.events.append(("started", member))

    def finished(self, member: int, seconds: float, ok: bool) -> None:
        self.events.append(("finished", member, seconds, ok))

    def released(self, member: int) -> None:
        self.events.append(("released", member))


def grouped(
    chain: Chain, picker: Picker | None = None, strategy: str = "weighted"
) -> tuple[ModelRoute, RouteGroup]:
    """Route `chat`: a group of a and b (its strategy's order: a, b), then c."""
    members = (chain.steps["a"], chain.steps["b"])
    config = TargetGroup(strategy, tuple(m.target for m in members))  # type: ignore[arg-type]
    group = RouteGroup(config, 0, members, picker)
    model = chain.config.models[0]
    route = ModelRoute(model.name, model, (*members, chain.steps["c"]), steps=(group, chain.steps["c"]))
    return route, group


async def run_route(
    chain: Chain, route: ModelRoute, attempts: list[Attempt] | None = None
) -> failover.Served:
    return await execute(route, CALL, chain.tier, chain.policy, chain.deadline, attempts)


async def test_a_group_reports_each_attempt_to_its_strategy(chain: Chain) -> None:
    picker = Recorder(2)
    route, _ = grouped(chain, picker)
    chain.a().takes = 0.25
    chain.a().script = [failure("http_5xx")]
    chain.backends["b"].takes = 0.5
    served = await run_route(chain, route)
    assert served.target is chain.steps["b"]
    assert picker.events == [
        ("started", 0),
        ("finished", 0, 0.25, False),
        ("started", 1),
        ("finished", 1, 0.5, True),
    ]
    assert [(x.backend, x.pick.reason if x.pick else None) for x in served.attempts] == [
        ("a", "picked"),
        ("b", "failover"),
    ]
    assert {x.pick.group for x in served.attempts if x.pick} == {0}
    assert {x.pick.strategy for x in served.attempts if x.pick} == {"weighted"}


@pytest.mark.parametrize("kind", ["client_error", "unsupported"])
async def test_a_member_failing_through_no_fault_of_its_own_is_released(chain: Chain, kind: str) -> None:
    picker = Recorder(2)
    route, _ = grouped(chain, picker)
    chain.a().script = [failure(kind)]
    with pytest.raises(GatewayError) if kind == "client_error" else contextlib.nullcontext():
        await run_route(chain, route)
    assert picker.events[:2] == [("started", 0), ("released", 0)]


async def test_a_cancelled_member_is_released(chain: Chain) -> None:
    picker = Recorder(2)
    route, _ = grouped(chain, picker)

    class Cancelled(BaseException):
        pass

    chain.a().script = [Cancelled()]  # type: ignore[list-item]
    with pytest.raises(Cancelled):
        await run_route(chain, route)
    assert picker.events == [("started", 0), ("released", 0)]


async def test_group_members_skipped_then_the_next_step(chain: Chain, clock: Clock) -> None:
    chain.disable("a")
    set_circuit(chain.backends["b"].breaker, "open", clock)
    picker = Recorder(2)
    route, _ = grouped(chain, picker)
    served = await run_route(chain, route)
    assert served.target is chain.steps["c"]
    assert [(x.backend, x.outcome) for x in served.attempts] == [
        ("a", "disabled"),
        ("b", "circuit_open"),
        ("c", "ok"),
    ]
    assert served.attempts[2].pick is None
    assert picker.events == []


async def test_least_busy_counts_the_request_until_the_reply_is_served(chain: Chain) -> None:
    route, group = grouped(chain, strategy="least_busy")
    assert isinstance(group.picker, LeastBusy)
    chain.a().script = [failure("http_5xx")]
    await run_route(chain, route)
    assert group.picker.in_flight == [0, 0]  # the failed one finished, the served one released


async def test_max_attempts_counts_group_members(chain: Chain) -> None:
    chain.with_policy(max_attempts=2)
    route, _ = grouped(chain, Recorder(2))
    for b in chain.backends.values():
        b.script = [failure("http_5xx")]
    with pytest.raises(UpstreamError):
        await run_route(chain, route)
    assert chain.called() == ["a", "b"]


# -- the attempt spans -------------------------------------------------------------------------------


@pytest.fixture
def spans(capfire: CaptureLogfire) -> Iterator[CaptureLogfire]:
    tracing.install(logfire.DEFAULT_LOGFIRE_INSTANCE, owned=False)
    yield capfire
    tracing.uninstall()


def attempt_spans(capfire: CaptureLogfire) -> list[dict[str, object]]:
    return [s["attributes"] for s in capfire.exporter.exported_spans_as_dict() if s["name"] == ATTEMPT_SPAN]


async def test_each_attempt_is_a_span_with_its_outcome(chain: Chain, spans: CaptureLogfire) -> None:
    chain.a().script = [failure("http_429")]
    chain.backends["b"].script = [failure("connect_error")]
    await chain.run()
    found = attempt_spans(spans)
    assert [(s["backend"], s["attempt"], s["outcome"]) for s in found] == [
        ("a", 1, "http_429"),
        ("b", 2, "connect_error"),
        ("c", 3, "ok"),
    ]
    assert found[0]["http.response.status_code"] == 429
    assert "http.response.status_code" not in found[1]
    assert found[0]["backend_type"] == "openai_compatible"


async def test_a_cancelled_attempt_span_says_so(chain: Chain, spans: CaptureLogfire) -> None:
    class Cancelled(BaseException):
        pass

    chain.a().script = [Cancelled()]  # type: ignore[list-item]
    with pytest.raises(Cancelled):
        await chain.run()
    assert [s["outcome"] for s in attempt_spans(spans)] == ["cancelled"]


async def test_a_group_members_span_names_its_group(chain: Chain, spans: CaptureLogfire) -> None:
    route, _ = grouped(chain, Recorder(2))
    await run_route(chain, route)
    [found] = attempt_spans(spans)
    assert (found["group"], found["group.strategy"], found["group.reason"]) == (0, "weighted", "picked")


# -- a model's canary --------------------------------------------------------------------------------


def with_canary(
    chain: Chain, weight: float, route: ModelRoute | None = None
) -> tuple[ModelRoute, RouteCanary]:
    """`route` (default: a, b) with backend c as its canary for `weight` percent of the requests; its
    rollback rules make both windows record, with too few requests to judge."""
    c = chain.steps["c"]
    rules = CanaryRollback(error_rate=0.5, min_requests=1000, window=60)
    canary = RouteCanary("chat", CanaryConfig(c.target, weight, rules), c, clock=chain.clock.monotonic)
    return dataclasses.replace(route or chain.route(("a", "b")), canary=canary), canary


def outcomes(canary: RouteCanary) -> tuple[list[bool], list[bool]]:
    """The canary's window, then the stable side's: each attempt's ok."""
    return [ok for _, ok, _ in canary.canary.samples], [ok for _, ok, _ in canary.stable.samples]


async def test_a_request_in_the_canarys_share_tries_it_first(chain: Chain, spans: CaptureLogfire) -> None:
    route, canary = with_canary(chain, 100)
    served = await run_route(chain, route)
    assert served.target is chain.steps["c"]
    assert [(x.backend, x.pick) for x in served.attempts] == [("c", CANARY_PICK)]
    assert outcomes(canary) == ([True], [])
    [found] = attempt_spans(spans)
    assert "group" not in found
    assert (found["group.strategy"], found["group.reason"]) == ("canary", "canary")


async def test_a_failing_canary_fails_over_to_the_chain_and_each_side_counts(chain: Chain) -> None:
    route, canary = with_canary(chain, 100)
    chain.backends["c"].script = [failure("http_5xx")]
    chain.a().script = [failure("timeout")]
    served = await run_route(chain, route)
    assert served.target is chain.steps["b"]
    assert [(x.backend, x.outcome, x.pick) for x in served.attempts] == [
        ("c", "http_5xx", CANARY_PICK),
        ("a", "timeout", None),
        ("b", "ok", None),
    ]
    assert outcomes(canary) == ([False], [False, True])


async def test_a_client_error_on_the_canary_is_not_held_against_it(chain: Chain) -> None:
    route, canary = with_canary(chain, 100)
    chain.backends["c"].script = [failure("client_error")]
    with pytest.raises(BadRequest):
        await run_route(chain, route)
    assert outcomes(canary) == ([], [])


async def test_requests_outside_the_share_go_down_the_chain(chain: Chain) -> None:
    route, canary = with_canary(chain, 50)
    served = [(await run_route(chain, route)).target for _ in range(4)]
    assert served == [chain.steps["a"], chain.steps["c"], chain.steps["a"], chain.steps["c"]]
    assert outcomes(canary) == ([True, True], [True, True])


async def test_a_canary_before_a_group(chain: Chain) -> None:
    grouped_route, _ = grouped(chain, Recorder(2))
    route, canary = with_canary(chain, 100, grouped_route)
    chain.backends["c"].script = [failure("overloaded")]
    served = await run_route(chain, route)
    assert served.target is chain.steps["a"]
    assert [(x.backend, x.pick.reason if x.pick else None) for x in served.attempts] == [
        ("c", "canary"),
        ("a", "picked"),
    ]
    assert outcomes(canary) == ([False], [True])


async def test_a_group_counts_the_requests_each_member_served(chain: Chain) -> None:
    route, group = grouped(chain, Recorder(2))
    assert group.served == [0, 0]
    chain.a().script = [failure("http_5xx")]
    await run_route(chain, route)
    await run_route(chain, route)
    assert group.served == [1, 1]
