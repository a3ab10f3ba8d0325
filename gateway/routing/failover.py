"""Failover along a model's chain: targets in order, under one deadline for the whole request.

A connect error, a timeout before the first byte, 429, 5xx and overload (the backend's, or its
`max_concurrency` queue being full) move to the next target when the config's `failover.retry_on`
lists them; a backend that refuses the gateway's credentials or cannot serve the endpoint always
does; a client error (the request itself is wrong) never does. The gateway's own concurrency limit
does not count for the circuit breaker: a full queue says nothing about the backend's health.
A backend with a quota (`backends.<name>.limits`) past it is skipped (outcome `quota`) without being
called, as the provider would only answer 429. A target lacking a capability the request needs, or
unable to take one of its fields (`gateway.routing.capabilities`), is skipped (outcome `incapable`);
when no enabled target can serve the request the client gets 400 `unsupported-capability`.
A balanced group (`gateway.routing.groups`) is one step whose members are tried in the order its
strategy gives for the request (the pick first), each like a step of its own: skipped when disabled,
incapable, its circuit open or its quota used up; every member tried counts for `max_attempts`.
A model's canary (`gateway.routing.canary`) is tried first for its share of the requests, then the
chain as always; every attempt's outcome goes into the canary's windows, which may roll it back.
Once `execute` returns, the first byte can go to the client and there is no more failover.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from gateway.backends.concurrency import ConcurrencyLimitReached
from gateway.backends.upstream import (
    ALWAYS_NEXT,
    BACKEND_FAULTS,
    AttemptLimits,
    ContentFilterRefusal,
    Reply,
    Stream,
    UpstreamCall,
    UpstreamFailure,
)
from gateway.config.model import CircuitBreakerPolicy, FailoverPolicy, TimeoutTier
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
from gateway.limits import Admission
from gateway.pricing.cost import TokenPrice
from gateway.protocol.canonical import Usage
from gateway.routing.canary import CANARY_PICK, RouteCanary
from gateway.routing.capabilities import Refusal, refusal
from gateway.routing.groups import Affinity, GroupPick, RouteGroup
from gateway.routing.table import ModelRoute, RouteTarget
from gateway.tracing import span

__all__ = ["ATTEMPT_SPAN", "Attempt", "Served", "deadline_exceeded", "execute"]

#: The span of one backend attempt, a child of the request's span (tracing on only).
ATTEMPT_SPAN = "backend attempt"
#: Event-loop timers can fire a little before their time (uvloop's clock counts whole milliseconds):
#: an attempt cut off this close to the request's deadline was cut off by the deadline.
TIMER_SLACK_S = 0.005


@dataclass(frozen=True, slots=True)
class Attempt:
    """One step of the chain: tried (with its outcome) or skipped (disabled, circuit open, quota,
    incapable of serving the request)."""

    backend: str
    model: str
    outcome: str  # "ok", a failure kind, or a skip: "disabled", "circuit_open", "quota", "incapable"
    status: int | None = None
    duration_ms: float = 0.0
    detail: str = ""
    #: A failed attempt the upstream billed: the usage it reported, and the target's price (None:
    #: unknown). The served attempt's usage is the request's own (`RequestTrail.usage`).
    usage: Usage | None = None
    price: TokenPrice | None = None

    @property
    def billed(self) -> bool:
        """Whether this failed attempt was billed by the upstream (it reported usage)."""
        return self.usage is not None

    @property
    def cost_usd(self) -> float | None:
        """What the upstream billed for this failed attempt; None when nothing, or at an unknown price."""
        if self.usage is None or self.price is None:
            return None
        return self.price.cost_usd(self.usage)

    #: For a skip: seconds until the step could be taken again (a quota's window, a circuit's cooldown).
    retry_after: float | None = None
    #: For a member of a balanced group: which group, its strategy, and why this member was tried.
    pick: GroupPick | None = None

    @property
    def tried(self) -> bool:
        """Whether the backend was contacted (not skipped, and not refused before any request)."""
        if self.outcome == "unsupported" and self.status is None:
            return False
        return self.outcome not in _SKIPS


_SKIPS = frozenset({"disabled", "circuit_open", "quota", "incapable"})


@dataclass(slots=True)
class Served:
    result: Reply | Stream
    target: RouteTarget
    attempts: list[Attempt]
    #: The serving backend's quota charge (its tokens are corrected when the request ends), or None.
    quota: Admission | None = None


def deadline_exceeded(tier: TimeoutTier) -> GatewayTimeout:
    return GatewayTimeout(
        f"the request exceeded the {tier.kind} timeout tier (total {tier.total:g} s); if such requests "
        f"legitimately take longer, raise timeouts.{tier.kind}.total in gateway.yaml",
        tier=tier.kind,
        limit_seconds=tier.total,
    )


async def execute(
    route: ModelRoute,
    call: UpstreamCall,
    tier: TimeoutTier,
    policy: FailoverPolicy,
    deadline: float,
    attempts: list[Attempt] | None = None,
    tokens: int = 0,
    affinity: Affinity | None = None,
) -> Served:
    """Try the chain's targets in order until one answers. Raises a GatewayError if none does.

    Each step is appended to `attempts` (a new list when None) as it ends, so a caller holding the
    list sees the path even when the request fails. `tokens`: the estimate of the request's input,
    charged to the quotas of the backends it is sent to. `affinity`: finds the request's key for a
    group's `sticky` setting (None: the request has none)."""
    if attempts is None:
        attempts = []
    breaker_policy = policy.circuit_breaker
    needs = call.needs
    refusals: list[Refusal] = []
    tried = 0
    canary = route.canary
    if canary is not None:
        walk = _canary_walk(route, canary, affinity, breaker_policy)
    elif route.steps:
        walk = _walk(route, affinity, breaker_policy)
    else:
        walk = route.plain_walk
    for step, group, member, pick in walk:
        backend = step.backend
        if not step.config.enabled:
            attempts.append(
                Attempt(
                    backend.name, step.target.model, "disabled", detail=step.config.disabled_reason, pick=pick
                )
            )
            continue
        refused = refusal(needs, step)
        if refused is not None:
            # Before any request, and not the backend's fault: no attempt counted, the breaker untouched.
            refusals.append(refused)
            attempts.append(
                Attempt(backend.name, step.target.model, "incapable", detail=refused.detail, pick=pick)
            )
            continue
        if policy.max_attempts and tried >= policy.max_attempts:
            break
        breaker = backend.breaker
        if not breaker.allow(breaker_policy):
            wait = breaker.retry_in(breaker_policy)
            attempts.append(
                Attempt(
                    backend.name,
                    step.target.model,
                    "circuit_open",
                    detail=f"retry in {wait:.0f} s",
                    pick=pick,
                )
            )
            continue
        if time.monotonic() >= deadline - TIMER_SLACK_S:
            breaker.release_probe()
            raise deadline_exceeded(tier)
        charge: Admission | None = None
        if step.quota is not None:
            taken = await step.quota.take(tokens)
            if type(taken) is Admission:
                charge = taken
            elif taken is not None:  # refused: the quota is used up for now
                breaker.release_probe()
                attempts.append(_quota_skip(step, taken.refused, taken.retry_after, pick))  # type: ignore[union-attr]
                continue
        tried += 1
        if group is not None:
            group.picker.started(member)
        limits = AttemptLimits(connect=tier.connect, first_byte=tier.first_byte, deadline=deadline)
        started = time.monotonic()
        with span(
            ATTEMPT_SPAN,
            backend=backend.name,
            backend_type=step.config.type,
            upstream_model=step.target.model,
            attempt=tried,
        ) as attempt_span:
            if pick is not None:
                if pick.group is not None:
                    attempt_span.set_attribute("group", pick.group)
                attempt_span.set_attribute("group.strategy", pick.strategy)
                attempt_span.set_attribute("group.reason", pick.reason)
            try:
                concurrency = backend.concurrency
                if concurrency is None:
                    result = await backend.send(call, step.target.model, limits)
                else:
                    result = await concurrency.send(backend, call, step.target.model, limits)
            except UpstreamFailure as failure:
                attempt_span.set_attribute("outcome", failure.kind)
                if failure.status:
                    attempt_span.set_attribute("http.response.status_code", failure.status)
                failed: UpstreamFailure | None = failure
            except BaseException:
                attempt_span.set_attribute("outcome", "cancelled")
                breaker.release_probe()
                if group is not None:
                    group.picker.released(member)
                raise
            else:
                attempt_span.set_attribute("outcome", "ok")
                failed = None
        if failed is not None:
            failure = failed
            elapsed = (time.monotonic() - started) * 1000
            attempts.append(
                Attempt(
                    backend.name,
                    step.target.model,
                    failure.kind,
                    failure.status,
                    elapsed,
                    failure.detail,
                    usage=failure.usage,
                    price=step.price,
                    pick=pick,
                )
            )
            if group is not None:
                if failure.kind in BACKEND_FAULTS:
                    group.picker.finished(member, elapsed / 1000, False)
                else:
                    group.picker.released(member)
            if canary is not None and failure.kind in BACKEND_FAULTS:
                canary.observe(pick is CANARY_PICK, False, elapsed)
            if failure.kind in BACKEND_FAULTS and not isinstance(failure, ConcurrencyLimitReached):
                breaker.record_failure(breaker_policy)
            else:
                breaker.release_probe()
            if failure.kind == "client_error":
                raise _client_error(failure) from None
            if failure.kind in ALWAYS_NEXT or failure.kind in policy.retry_on:
                continue
            raise _final_error(route, attempts, tier, deadline, last=failure, refusals=refusals) from None
        breaker.record_success()
        elapsed = (time.monotonic() - started) * 1000
        attempts.append(Attempt(backend.name, step.target.model, "ok", 200, elapsed, pick=pick))
        if canary is not None:
            canary.observe(pick is CANARY_PICK, True, elapsed)
        if group is not None:
            group.picker.finished(member, elapsed / 1000, True)
            group.serving(member, result)
        return Served(result, step, attempts, charge)
    raise _final_error(route, attempts, tier, deadline, last=None, refusals=refusals)


def _walk(
    route: ModelRoute, affinity: Affinity | None, policy: CircuitBreakerPolicy
) -> Iterator[tuple[RouteTarget, RouteGroup | None, int, GroupPick | None]]:
    """The chain's targets in the order to try them: a group's members in its strategy's order for this
    request (worked out when failover reaches the group), each with its group, index and pick."""
    for step in route.steps:
        if type(step) is RouteGroup:
            members = step.members
            for member, pick in step.order(affinity, policy):
                yield members[member], step, member, pick
        else:
            yield step, None, 0, None  # type: ignore[misc]


def _canary_walk(
    route: ModelRoute, canary: RouteCanary, affinity: Affinity | None, policy: CircuitBreakerPolicy
) -> Iterator[tuple[RouteTarget, RouteGroup | None, int, GroupPick | None]]:
    """The canary's target first when this request is in its share, then the chain as always."""
    if canary.take():
        yield canary.target, None, 0, CANARY_PICK  # type: ignore[misc]
    if route.steps:
        yield from _walk(route, affinity, policy)
    else:
        yield from route.plain_walk


def _quota_skip(step: RouteTarget, limit: str | None, wait: float, pick: GroupPick | None) -> Attempt:
    assert step.quota is not None
    rules = step.quota.rules
    value = rules.requests_per_minute if limit == "requests_per_minute" else rules.tokens_per_minute
    seconds = max(1, math.ceil(wait))
    return Attempt(
        step.backend.name,
        step.target.model,
        "quota",
        detail=f"quota backends.{rules.name}.limits.{limit} ({value} per minute) used up; "
        f"frees in {seconds} s",
        retry_after=seconds,
        pick=pick,
    )


def _client_error(failure: UpstreamFailure) -> GatewayError:
    """The backend said the request itself is wrong: tell the client, with the backend's status."""
    # A local model refusing an input has no upstream status to report.
    status = {} if failure.status is None else {"upstream_status": failure.status}
    if isinstance(failure, ContentFilterRefusal):
        return ContentFiltered(failure.detail, categories=list(failure.categories), **status)
    error = BadRequest(failure.detail, **status)
    if failure.param:
        error.extensions["field"] = failure.param
    if failure.status and 400 <= failure.status < 500:
        error.status = failure.status
    if failure.error_type:
        error.openai_type = error.anthropic_type = failure.error_type
    return error


def _final_error(
    route: ModelRoute,
    attempts: list[Attempt],
    tier: TimeoutTier,
    deadline: float,
    last: UpstreamFailure | None,
    refusals: Sequence[Refusal] = (),
) -> GatewayError:
    summary = "; ".join(
        f"{a.backend}: {a.detail or a.outcome}" + (f" (HTTP {a.status})" if a.status else "")
        for a in attempts
    )
    path = [
        {"backend": a.backend, "model": a.model, "outcome": a.outcome, "status": a.status} for a in attempts
    ]
    tried = [a for a in attempts if a.tried]
    if time.monotonic() >= deadline - TIMER_SLACK_S:
        error: GatewayError = deadline_exceeded(tier)
        error.extensions["attempts"] = path
        return error
    if refusals and not tried and all(a.outcome in ("incapable", "disabled") for a in attempts):
        return _incapable_error(route, attempts, path, refusals)
    unable = [a for a in attempts if a.outcome == "unsupported" and a.status is None]
    if unable and not tried and not any(a.outcome == "circuit_open" for a in attempts):
        # Not a failure of anything: no enabled backend of this model can do what was asked.
        return BadRequest(f"model '{route.name}' cannot serve this request: {summary}", attempts=path)
    quota = [a.retry_after or 1.0 for a in attempts if a.outcome == "quota"]
    if quota and all(a.outcome in ("http_429", "overloaded") for a in tried):
        # Quotas used up (and whatever was tried rate-limited): the client may retry when one frees.
        retry = min(quota)
        if tried and last is not None and last.retry_after:
            retry = min(retry, _seconds(last.retry_after))
        return RateLimited(
            f"every backend for model '{route.name}' is over its quota or rate-limited: {summary}",
            attempts=path,
            headers={"retry-after": str(max(1, math.ceil(retry)))},
        )
    if not tried:
        # Skipped: disabled backends and open circuits. Nothing was contacted.
        return ServiceUnavailable(
            f"no backend is available for model '{route.name}': {summary}",
            attempts=path,
            headers=_retry_after(attempts),
        )
    if all(a.outcome in ("http_429", "overloaded") for a in tried):
        retry = last.retry_after if last and last.retry_after else "1"
        return RateLimited(
            f"every backend for model '{route.name}' is rate-limited or overloaded: {summary}",
            attempts=path,
            headers={"retry-after": retry},
        )
    if all(a.outcome == "timeout" for a in tried):
        return GatewayTimeout(
            f"no backend for model '{route.name}' answered in time ({tier.kind} tier: connect "
            f"{tier.connect:g} s, first byte {tier.first_byte:g} s): {summary}",
            attempts=path,
        )
    return UpstreamError(f"every backend for model '{route.name}' failed: {summary}", attempts=path)


def _incapable_error(
    route: ModelRoute, attempts: list[Attempt], path: list[dict[str, object]], refusals: Sequence[Refusal]
) -> UnsupportedCapability:
    """No enabled target can serve the request: a 400 naming what it needs (the first target's refusal
    names it in the extensions; each target's own reason follows in the detail)."""
    first = refusals[0]
    alike = all(r.capability == first.capability and r.field == first.field for r in refusals)
    named: dict[str, str] = {}
    if first.capability is not None:
        named["capability"] = first.capability
    if first.field is not None:  # a capability a vendor refuses names its field too
        named["field"] = first.field
    if alike and first.capability is not None:
        need = f"it needs capability '{first.capability}', which none of its backends has"
    elif alike and first.field is not None:
        need = f"it carries '{first.field}', which none of its backends can take"
    else:
        need = "none of its backends has everything it needs"
    reasons = "; ".join(
        f"{a.backend}: {a.detail}" if a.outcome == "incapable" else f"{a.backend}: disabled ({a.detail})"
        for a in attempts
    )
    return UnsupportedCapability(
        f"model '{route.name}' cannot serve this request: {need} ({reasons})", attempts=path, **named
    )


def _seconds(retry_after: str) -> float:
    """A Retry-After value in seconds (an HTTP date, which it may also be, counts as 1 s)."""
    try:
        return max(0.0, float(retry_after))
    except ValueError:
        return 1.0


def _retry_after(attempts: list[Attempt]) -> dict[str, str]:
    return {"retry-after": "1"} if any(a.outcome == "circuit_open" for a in attempts) else {}
