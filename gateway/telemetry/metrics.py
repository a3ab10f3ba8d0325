"""Prometheus metrics: per-request counters and histograms, and gauges of the process's state.

One `GatewayMetrics` per app. With `gateway serve --workers N` the supervisor points
`PROMETHEUS_MULTIPROC_DIR` at a directory of its own before spawning the workers: every worker then
writes its values there (prometheus_client's multiprocess mode) and a scrape answered by any worker
reports the whole process group. Without it, values live in this app's own registry.

Request metrics are updated once, when a request ends (`observe`). Gauges of state that changes
elsewhere (circuit breakers, local engine queues, the audit writer) are copied in by `sync`: at each
scrape, and every few seconds in multiprocess mode so the other workers' values stay current.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

if TYPE_CHECKING:
    from gateway.routing.table import Runtime
    from gateway.routing.trail import RequestTrail

__all__ = [
    "BREAKER_STATES",
    "MULTIPROC_ENV",
    "GatewayMetrics",
    "mark_worker_dead",
    "prepare_multiprocess_dir",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Seconds. LLM requests run from milliseconds (errors, cached answers) to many minutes.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: `gateway_circuit_breaker_state` values.
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
#: The `model` label of a request naming no configured model (bounded: clients choose the name).
UNKNOWN_MODEL = "unknown"
_AUDIT_COUNTERS = ("written", "spilled", "replayed", "lost")


class GatewayMetrics:
    def __init__(self, multiprocess_dir: str | None = None) -> None:
        if multiprocess_dir is None:
            multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        self.multiprocess_dir = multiprocess_dir
        # `*_created` series (one timestamp per counter child) double the exposition for nothing a
        # dashboard uses; multiprocess mode has none. (A process-wide switch of prometheus_client.)
        disable_created_metrics()
        # In multiprocess mode values go to files, read back at scrape; nothing registers here.
        registry = None if multiprocess_dir else CollectorRegistry()
        self.registry = registry
        self.requests = Counter(
            "gateway_requests",
            "Model-API requests finished, by public model, serving backend, surface (openai or "
            "anthropic), endpoint and status (success, error, timeout, rejected).",
            ["model", "backend", "surface", "endpoint", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "gateway_request_duration_seconds",
            "Time from a request's arrival to its last byte (streams included).",
            ["model", "backend", "status"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "gateway_time_to_first_token_seconds",
            "Time from a streamed request's arrival to its first event sent to the client.",
            ["model", "backend"],
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "gateway_tokens",
            "Tokens as reported by the backends: direction input (prompt) or output (completion); "
            "reasoning: the part of output spent reasoning (already counted in output).",
            ["model", "backend", "direction"],
            registry=registry,
        )
        self.cost = Counter(
            "gateway_cost_usd",
            "USD spent, by public model, serving backend and client key (its name): each request's "
            "usage at its backend's price, plus failed attempts the upstream billed. Requests of "
            "unknown cost (a model priced nowhere) are not counted; the audit log holds them as null.",
            ["model", "backend", "client"],
            registry=registry,
        )
        self.failovers = Counter(
            "gateway_failovers",
            "Backend attempts beyond the first of a request (each one a failover to the next target).",
            ["model"],
            registry=registry,
        )
        self.attempts = Counter(
            "gateway_backend_attempts",
            "Steps of failover chains, by backend and outcome: ok, a failure kind (http_5xx, timeout, "
            "connect_error, http_429, overloaded, auth, unsupported, client_error), or a skip "
            "(circuit_open, disabled, quota, incapable).",
            ["backend", "outcome"],
            registry=registry,
        )
        self.limit_rejections = Counter(
            "gateway_limit_rejections",
            "Requests refused with 429 by a client key's limit (`limit`: requests_per_minute, "
            "tokens_per_minute, concurrent_requests, budget_usd.per_day, budget_usd.per_month; "
            "`client`: the key's name, or anonymous).",
            ["limit", "client"],
            registry=registry,
        )
        self.quota_skips = Counter(
            "gateway_backend_quota_skips",
            "Chain steps skipped because the backend's quota (backends.<name>.limits) was used up.",
            ["backend"],
            registry=registry,
        )
        self.limit_store_errors = Counter(
            "gateway_limit_store_errors",
            "Calls to the limits store (Redis) that failed or timed out (limits.store_timeout_ms); "
            "each admission among them followed limits.on_store_down.",
            registry=registry,
        )
        self.shadow_requests = Counter(
            "gateway_shadow_requests",
            "Shadow copies of model requests (models.<m>.shadow) by outcome: success, error (circuit "
            "open and quota included), timeout, cancelled (shutdown), dropped (max_concurrency copies "
            "were already running; never sent).",
            ["model", "target", "outcome"],
            registry=registry,
        )
        self.canary_rollbacks = Counter(
            "gateway_canary_rollbacks",
            "Canaries rolled back (models.<m>.canary) by the rule that held: error_rate or "
            "p95_latency_ms (decided by this worker), or peer (told by another worker).",
            ["model", "rule"],
            registry=registry,
        )
        self.cache_requests = Counter(
            "gateway_cache_requests",
            "Chat requests by what the response cache did: hit (served from it, no upstream call), "
            "miss, bypass (the client said no-cache), off (the model's cache is off, or the request "
            "is not deterministic).",
            ["model", "result"],
            registry=registry,
        )
        self.cache_saved_tokens = Counter(
            "gateway_cache_saved_tokens",
            "Tokens (input + output) of the stored answers that cache hits served instead of a backend.",
            ["model"],
            registry=registry,
        )
        self.cache_saved_usd = Counter(
            "gateway_cache_saved_usd",
            "USD the cache hits did not spend: the stored answers' usage at their backends' prices.",
            ["model"],
            registry=registry,
        )
        self.cache_entries = Gauge(
            "gateway_cache_entries",
            "Answers in the response cache (memory store; with several workers, the sum of theirs).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.cache_bytes = Gauge(
            "gateway_cache_bytes",
            "Bytes of answers in the response cache (memory store).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.cache_store_errors = Counter(
            "gateway_cache_store_errors",
            "Calls to the cache store (Redis) that failed or timed out (cache.store_timeout_ms); each "
            "lookup among them was a miss.",
            registry=registry,
        )
        self.in_flight = Gauge(
            "gateway_in_flight_requests",
            "Model-API requests being served now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.breaker = Gauge(
            "gateway_circuit_breaker_state",
            "Circuit breaker of each backend: 0 closed, 1 half-open (a probe may go), 2 open. With "
            "several workers, the worst state any worker sees.",
            ["backend"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.queue_depth = Gauge(
            "gateway_local_queue_depth",
            "Requests waiting to join a local model's running batch.",
            ["backend"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.batch_size = Gauge(
            "gateway_local_batch_size",
            "Sequences in a local model's running batch.",
            ["backend"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.connection_refusals = Counter(
            "gateway_connection_refusals",
            "Requests the connection layer answered before the model API saw them, by reason: "
            "head_timeout and body_timeout (408, server.timeouts), draining (503 during a SIGTERM "
            "drain). They have no audit record.",
            ["reason"],
            registry=registry,
        )
        self.reloads = Counter(
            "gateway_config_reloads",
            "Config loads after startup (file watch, SIGHUP, admin API), by outcome: applied, "
            "rejected, unchanged. Every worker reloads, so N workers count N per change.",
            ["outcome"],
            registry=registry,
        )
        self.config_info = Gauge(
            "gateway_config_info",
            "1 for the config version being served (the hash of gateway.yaml), 0 for earlier ones.",
            ["version"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.audit_buffered = Gauge(
            "gateway_audit_buffered_records",
            "Audit records waiting in memory for the database.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.audit_db_up = Gauge(
            "gateway_audit_database_up",
            "1 when the audit database answers (with several workers: every worker's does).",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.audit_spill_bytes = Gauge(
            "gateway_audit_spill_bytes",
            "Bytes of audit records in spill files waiting to be replayed into the audit database.",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.audit_records = Counter(
            "gateway_audit_records",
            "Audit records by what became of them: written to the database, spilled to disk while it "
            "was down, replayed from the spill files, lost.",
            ["outcome"],
            registry=registry,
        )
        self.audit_failed_batches = Counter(
            "gateway_audit_failed_batches",
            "Audit batches the database refused or could not take.",
            registry=registry,
        )
        #: Label values → the children they select: `labels()` validates and locks on every call.
        self._children: dict[tuple[str, ...], tuple[Any, ...]] = {}
        self._attempt_children: dict[tuple[str, str], Any] = {}
        self._failover_children: dict[str, Any] = {}
        self._cost_children: dict[tuple[str, str, str], Any] = {}
        self._rejection_children: dict[tuple[str, str], Any] = {}
        self._quota_children: dict[str, Any] = {}
        self._cache_children: dict[tuple[str, str], Any] = {}
        #: The cache store last synced and its error count then.
        self._cache_seen: tuple[int, int] = (0, 0)
        #: The limits store last synced and its error count then (a new store counts from zero).
        self._store_seen: tuple[int, int] = (0, 0)
        self._version: str | None = None
        self._audit_seen: dict[str, int] = {}
        self._gauge_backends: set[str] = set()

    # -- the end of a request ------------------------------------------------------------------

    def observe(self, trail: RequestTrail, status: str, latency: float, routes: Mapping[str, Any]) -> None:
        """Count one finished request (called once, from the end of `ModelAPI.__call__`)."""
        model = trail.model
        if model is None:
            model = ""
        elif model not in routes:
            model = UNKNOWN_MODEL
        backend = trail.backend or ""
        key = (model, backend, trail.surface, trail.endpoint, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(model, backend, trail.surface, trail.endpoint, status),
                self.duration.labels(model, backend, status),
                self.ttft.labels(model, backend),
                self.tokens.labels(model, backend, "input"),
                self.tokens.labels(model, backend, "output"),
            )
        requests, duration, ttft, tokens_in, tokens_out = children
        requests.inc()
        duration.observe(latency)
        if trail.first_byte_at is not None:
            ttft.observe(trail.first_byte_at - trail.started)
        usage = trail.usage
        if usage is not None:
            if usage.prompt_tokens:
                tokens_in.inc(usage.prompt_tokens)
            if usage.completion_tokens:
                tokens_out.inc(usage.completion_tokens)
            if usage.reasoning_tokens:  # rare: a child looked up only when there is something to count
                self.tokens.labels(model, backend, "reasoning").inc(usage.reasoning_tokens)
        cost = trail.cost_usd
        if cost is not None:
            spender = (model, backend, trail.client_key or "")
            child = self._cost_children.get(spender)
            if child is None:
                child = self._cost_children[spender] = self.cost.labels(*spender)
            child.inc(cost)
        if trail.cache is not None:
            self._observe_cache(model, trail)
        limit = trail.limit_name
        if limit is not None:
            refused = (limit, trail.client_key or "")
            child = self._rejection_children.get(refused)
            if child is None:
                child = self._rejection_children[refused] = self.limit_rejections.labels(*refused)
            child.inc()
        attempts = trail.attempts
        if attempts:
            tried = 0
            for attempt in attempts:
                if attempt.tried:
                    tried += 1
                elif attempt.outcome == "quota":
                    skips = self._quota_children.get(attempt.backend)
                    if skips is None:
                        skips = self._quota_children[attempt.backend] = self.quota_skips.labels(
                            attempt.backend
                        )
                    skips.inc()
                step = (attempt.backend, attempt.outcome)
                child = self._attempt_children.get(step)
                if child is None:
                    child = self._attempt_children[step] = self.attempts.labels(*step)
                child.inc()
            if tried > 1:
                failovers = self._failover_children.get(model)
                if failovers is None:
                    failovers = self._failover_children[model] = self.failovers.labels(model)
                failovers.inc(tried - 1)

    def _observe_cache(self, model: str, trail: RequestTrail) -> None:
        outcome = (model, trail.cache or "")
        child = self._cache_children.get(outcome)
        if child is None:
            child = self._cache_children[outcome] = self.cache_requests.labels(*outcome)
        child.inc()
        if trail.saved_tokens:
            self.cache_saved_tokens.labels(model).inc(trail.saved_tokens)
        if trail.saved_usd:
            self.cache_saved_usd.labels(model).inc(trail.saved_usd)

    # -- state copied in ---------------------------------------------------------------------------

    def on_reload(self, outcome: str, version: str | None) -> None:
        """Count a reload after startup (`outcome`: applied, unchanged, rejected)."""
        self.reloads.labels(outcome).inc()
        if outcome == "applied" and version:
            self.set_version(version)

    def set_version(self, version: str) -> None:
        if version == self._version:
            return
        if self._version is not None:
            self.config_info.labels(self._version).set(0)
        self.config_info.labels(version).set(1)
        self._version = version

    def sync(self, runtime: Runtime | None, audit_stats: Mapping[str, Any]) -> None:
        """Copy the state of breakers, local engines and the audit writer into the gauges."""
        if runtime is not None:
            self.set_version(runtime.version)
            policy = runtime.config.failover.circuit_breaker
            names = set(runtime.backends)
            for name, backend in runtime.backends.items():
                self.breaker.labels(name).set(BREAKER_STATES[backend.breaker.current_state(policy)])
                local = backend.describe().get("local")
                if local is not None:
                    self.queue_depth.labels(name).set(local["queued"])
                    self.batch_size.labels(name).set(local["active"])
            if not self.multiprocess_dir:  # (in multiprocess mode a series cannot be removed)
                for gone in self._gauge_backends - names:
                    for gauge in (self.breaker, self.queue_depth, self.batch_size):
                        with contextlib.suppress(KeyError):
                            gauge.remove(gone)
            self._gauge_backends = names
            self._sync_limits(runtime)
            self._sync_cache(runtime)
        self._sync_audit(audit_stats)

    def _sync_limits(self, runtime: Runtime) -> None:
        store = runtime.limits.store
        errors = int(store.status()["errors"])
        seen_store, seen_errors = self._store_seen
        delta = errors - seen_errors if id(store) == seen_store else errors
        if delta > 0:
            self.limit_store_errors.inc(delta)
        self._store_seen = (id(store), errors)

    def _sync_cache(self, runtime: Runtime) -> None:
        if runtime.cache is None:
            return
        store = runtime.cache.store
        status = store.status()
        self.cache_entries.set(status.get("entries", 0))
        self.cache_bytes.set(status.get("bytes", 0))
        errors = int(status["errors"])
        seen_store, seen_errors = self._cache_seen
        delta = errors - seen_errors if id(store) == seen_store else errors
        if delta > 0:
            self.cache_store_errors.inc(delta)
        self._cache_seen = (id(store), errors)

    def _sync_audit(self, stats: Mapping[str, Any]) -> None:
        if not stats.get("enabled"):
            self.audit_buffered.set(0)
            self.audit_spill_bytes.set(0)
            return
        self.audit_buffered.set(stats.get("buffered", 0))
        self.audit_db_up.set(1 if stats.get("db_up") else 0)
        self.audit_spill_bytes.set(stats.get("spill_bytes", 0))
        seen = self._audit_seen
        # A writer restarted by a reload starts its counts again from zero.
        restarted = stats.get("recorded", 0) < seen.get("recorded", 0)
        for key in (*_AUDIT_COUNTERS, "failed_batches"):
            value = int(stats.get(key, 0))
            delta = value if restarted else value - seen.get(key, 0)
            if delta > 0:
                if key == "failed_batches":
                    self.audit_failed_batches.inc(delta)
                else:
                    self.audit_records.labels(key).inc(delta)
            seen[key] = value
        seen["recorded"] = int(stats.get("recorded", 0))

    # -- exposition --------------------------------------------------------------------------------

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition (Prometheus text, or OpenMetrics if `accept` asks) and its content type."""
        if self.multiprocess_dir:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)
        else:
            assert self.registry is not None
            registry = self.registry
        encoder, content_type = choose_encoder(accept or "")
        return encoder(registry), content_type


# -- the supervisor's side (gateway serve --workers N) ---------------------------------------------


def prepare_multiprocess_dir(run_dir: str | os.PathLike[str] | None = None) -> tuple[Path, bool]:
    """The directory the workers share their metrics through, empty, and whether it was created here
    (and so is removed at exit). An operator's `PROMETHEUS_MULTIPROC_DIR` is used if set; files a
    previous server left there are removed, or their counts would be added to this one's."""
    configured = os.environ.get(MULTIPROC_ENV)
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
        return path, False
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="gateway-metrics-", dir=run_dir))
    os.environ[MULTIPROC_ENV] = str(path)  # inherited by the workers spawned after this
    return path, True


def mark_worker_dead(pid: int, path: Path) -> None:
    """Drop a dead worker's live gauges (in-flight, breaker states…); its counters stay counted."""
    mark_process_dead(pid, str(path))


def remove_multiprocess_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
