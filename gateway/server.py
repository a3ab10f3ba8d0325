"""`gateway serve`: Hypercorn underneath, one process per worker, signals handled by us.

Each worker process builds its own app (own Runtime, own watcher) on sockets the supervisor opened,
so all workers share the port. SIGHUP reloads the config in every worker; SIGTERM drains and stops.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets

from gateway.auth import exposure_issue
from gateway.cache import per_worker_cache_warning
from gateway.config.issues import ConfigError
from gateway.config.load import load_config
from gateway.config.model import ServerTimeouts
from gateway.connections import ConnectionPolicy, serve_connections
from gateway.limits import per_worker_warning
from gateway.telemetry.logging import configure_logging
from gateway.telemetry.metrics import (
    mark_worker_dead,
    prepare_multiprocess_dir,
    remove_multiprocess_dir,
)

__all__ = ["ServeOptions", "event_loop_factory", "serve"]

log = logging.getLogger("gateway.server")


@dataclass(frozen=True, slots=True)
class ServeOptions:
    config_path: Path
    host: str
    port: int
    workers: int
    graceful_seconds: float
    log_level: str
    log_format: str
    timeouts: ServerTimeouts
    max_client_connections: int
    event_loop: str = "auto"


def serve(
    config_path: str | os.PathLike[str], *, host: str | None, port: int | None, workers: int | None
) -> int:
    """Run the gateway until SIGTERM/SIGINT. Returns the process exit code."""
    path = Path(config_path)
    try:
        config = load_config(path)
    except ConfigError as error:
        print(f"gateway: {path} is not valid; not starting.", file=sys.stderr)
        for issue in error.issues:
            print(f"  {issue}", file=sys.stderr)
        return 1
    options = ServeOptions(
        config_path=path,
        host=host or config.server.host,
        port=port if port is not None else config.server.port,
        workers=workers or config.server.workers,
        graceful_seconds=config.server.graceful_shutdown_seconds,
        log_level=config.telemetry.logging.level,
        log_format=config.telemetry.logging.format,
        timeouts=config.server.timeouts,
        max_client_connections=config.server.max_client_connections,
        event_loop=config.server.event_loop,
    )
    try:
        loop_factory = event_loop_factory(options.event_loop)
    except RuntimeError as error:
        print(f"gateway: not starting: {error}", file=sys.stderr)
        return 1
    problem = exposure_issue(config, options.host)
    if problem:
        print(f"gateway: not starting: {problem}", file=sys.stderr)
        return 1
    configure_logging(options.log_level, options.log_format)
    hypercorn = _hypercorn_config(options)
    sockets = hypercorn.create_sockets()
    bound = sockets.insecure_sockets[0].getsockname()
    log.info(
        "gateway listening on http://%s:%s (%d worker(s), config %s, %s event loop)",
        bound[0],
        bound[1],
        options.workers,
        config.version,
        "uvloop" if loop_factory else "asyncio",
        extra={
            "event": "listening",
            "host": bound[0],
            "port": bound[1],
            "workers": options.workers,
            "event_loop": "uvloop" if loop_factory else "asyncio",
        },
    )
    per_worker = per_worker_warning(config, options.workers)
    if per_worker:
        log.warning(per_worker, extra={"event": "limits_per_worker"})
    per_worker = per_worker_cache_warning(config, options.workers)
    if per_worker:
        log.warning(per_worker, extra={"event": "cache_per_worker"})
    if not config.auth.admin_keys:
        _announce_admin_sign_in(path, bound[0], bound[1])
    if options.workers == 1:
        code = _run_worker(options, hypercorn, sockets)
    else:
        code = _supervise(options, hypercorn, sockets)
    log.info("gateway stopped", extra={"event": "stopped", "exit_code": code})
    return code


def _announce_admin_sign_in(config_path: Path, host: str, port: int) -> None:
    """No admin keys: the admin API takes the local admin token (made here before any worker starts).
    Its sign-in URL goes to a terminal only, never through logging: a captured stderr (a container's
    log, a journal) is a file log, and the token would outlive the console in it."""
    from gateway.admin.panel import sign_in_url
    from gateway.admin.secret import TOKEN_ENV_VAR, AdminTokenUnavailable, load_admin_token

    try:
        token = load_admin_token(config_path)
    except AdminTokenUnavailable as error:
        print(
            f"gateway: no admin keys and no local admin token; the admin API refuses everyone: {error}",
            file=sys.stderr,
        )
        return
    if sys.stderr.isatty():
        print(
            f"gateway: admin panel (no admin keys configured): {sign_in_url(host, port, token.value)}",
            file=sys.stderr,
            flush=True,
        )
        return
    where = TOKEN_ENV_VAR if token.source == TOKEN_ENV_VAR else token.source
    log.info(
        "no admin keys configured: sign in at %s with the local admin token from %s",
        sign_in_url(host, port, "<token>"),
        where,
        extra={"event": "admin_token", "token_source": where},
    )


def _hypercorn_config(options: ServeOptions) -> HypercornConfig:
    config = HypercornConfig()
    host = f"[{options.host}]" if ":" in options.host else options.host
    config.bind = [f"{host}:{options.port}"]
    config.graceful_timeout = options.graceful_seconds
    config.accesslog = None
    config.errorlog = None
    # Hypercorn parses HTTP only: gateway.connections accepts, runs the connections and enforces
    # server.timeouts and server.max_client_connections (Hypercorn's keep-alive and read timeouts are unused).
    config.workers = 1
    # Connections arriving in a burst wait in the kernel's accept queue; Hypercorn's 100 overflowed at
    # a few hundred at once (clients then wait for SYN retransmits). The kernel caps it at somaxconn.
    config.backlog = 4096
    return config


def _run_worker(options: ServeOptions, hypercorn: HypercornConfig, sockets: Sockets) -> int:
    """One worker: build the app, serve on `sockets` until told to stop."""
    # A SIGTERM that arrives while this worker is still starting (importing, opening the audit
    # database) is kept and honoured once the loop runs: it must not kill the worker mid-start.
    stop_before_serving: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stop_before_serving.append(signum))

    from gateway.app import create_app

    configure_logging(options.log_level, options.log_format)

    # A gateway allocates many short-lived objects per request and few long-lived ones: collect the
    # young generation less often (measured: p99 at 32 clients 34-37 ms -> 15-22 ms, +3-15% req/s).
    gc.set_threshold(20_000, 50, 100)
    _fit_open_files_limit(options.max_client_connections)

    async def main() -> None:
        app = create_app(options.config_path, host=options.host)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def begin_stopping() -> None:
            stop.set()
            app.fallback.draining = True  # /ready says 503 from now on
            app.fallback.audit.end_live()  # live-tail sockets must not hold the graceful shutdown

        loop.add_signal_handler(signal.SIGTERM, begin_stopping)
        loop.add_signal_handler(signal.SIGINT, begin_stopping)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(app.live.reload("signal")))
        if stop_before_serving:
            begin_stopping()
        policy = ConnectionPolicy(options.timeouts, options.max_client_connections, options.graceful_seconds)
        refused = RefusalReport(app.fallback.telemetry.metrics.connection_refusals)
        await serve_connections(app, hypercorn, list(sockets.insecure_sockets), policy, stop, refused)

    try:
        with asyncio.Runner(loop_factory=event_loop_factory(options.event_loop)) as runner:
            runner.run(main())
    except ConfigError as error:
        # The file changed between the supervisor's check and this worker's start.
        for issue in error.issues:
            print(f"  {issue}", file=sys.stderr)
        return 1
    return 0


class RefusalReport:
    """Counts the requests the connection layer answers itself (408 slow client, 503 draining) and
    says so in the log at most once a minute, however many there are (a slowloris attack would
    otherwise write a line per connection)."""

    def __init__(self, counter: Any, interval_s: float = 60.0) -> None:
        self._counter = counter
        self._interval_s = interval_s
        self._pending: dict[str, int] = {}
        self._since = 0.0

    def __call__(self, reason: str) -> None:
        self._counter.labels(reason=reason).inc()
        self._pending[reason] = self._pending.get(reason, 0) + 1
        now = time.monotonic()
        if now - self._since >= self._interval_s:
            counts = ", ".join(f"{n} {r}" for r, n in sorted(self._pending.items()))
            log.warning(
                "answered before the app (408 slow client, 503 draining): %s",
                counts,
                extra={"event": "connection_refusals", "counts": dict(self._pending)},
            )
            self._pending.clear()
            self._since = now


def _fit_open_files_limit(max_client_connections: int) -> None:
    """Raise this process's open-files limit to its hard limit (connections and upstream pools both
    take descriptors), and warn when even that leaves too little room for `max_client_connections`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError):
            pass
    wanted = max_client_connections + 1024
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning(
            "the open-files limit (%d) leaves too little room for server.max_client_connections %d"
            " (wanted %d); raise the hard limit (ulimit -Hn) or lower server.max_client_connections",
            soft,
            max_client_connections,
            wanted,
            extra={"event": "open_files_limit", "limit": soft, "wanted": wanted},
        )


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """`server.event_loop`: uvloop's loop (`uvloop`, or `auto` where uvloop is installed), else None
    (asyncio's default). Measured on one core: uvloop serves about 10% more requests (PERFORMANCE.md)."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise RuntimeError("server.event_loop is uvloop, but uvloop is not installed") from None
        return None
    return uvloop.new_event_loop


def _worker_entry(options: ServeOptions, hypercorn: HypercornConfig, sockets: Sockets) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when workers stop
    sys.exit(_run_worker(options, hypercorn, sockets))


def _supervise(options: ServeOptions, hypercorn: HypercornConfig, sockets: Sockets) -> int:
    """Start N worker processes, forward SIGHUP/SIGTERM to them, restart one that dies unexpectedly.

    The workers share their Prometheus metrics through a directory made here (before they are
    spawned, so they inherit PROMETHEUS_MULTIPROC_DIR) and removed when the server stops."""
    context = multiprocessing.get_context("spawn")
    stopping = False
    metrics_dir, made_metrics_dir = prepare_multiprocess_dir()
    log.info(
        "workers share their metrics through %s",
        metrics_dir,
        extra={"event": "metrics_directory", "directory": str(metrics_dir)},
    )

    def spawn() -> multiprocessing.process.BaseProcess:
        process = context.Process(target=_worker_entry, args=(options, hypercorn, sockets), daemon=False)
        process.start()
        started = {"event": "worker_started", "worker_pid": process.pid}
        log.info("worker %s started", process.pid, extra=started)
        return process

    workers = [spawn() for _ in range(options.workers)]

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            if not stopping:
                # The workers hold their own descriptors of the listening socket; while this one is
                # open too, the kernel would keep queueing connections nobody accepts, then reset them.
                for sock in sockets.insecure_sockets:
                    sock.close()
            stopping = True
            signum = signal.SIGTERM
        for process in workers:
            if process.pid and process.is_alive():
                os.kill(process.pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)

    exit_code = 0
    while workers:
        multiprocessing.connection.wait([p.sentinel for p in workers], timeout=1.0)
        for index, process in enumerate(list(workers)):
            if process.is_alive():
                continue
            process.join()
            if process.pid is not None:
                mark_worker_dead(process.pid, metrics_dir)
            if stopping:
                workers.remove(process)
                # Killed by the SIGTERM itself: it came before the worker could catch it, so before
                # it served anything (a clean stop, not a failure).
                if process.exitcode != -signal.SIGTERM:
                    exit_code = exit_code or (process.exitcode or 0)
            else:
                log.error(
                    "worker %s exited with %s; starting a new one",
                    process.pid,
                    process.exitcode,
                    extra={"event": "worker_restart"},
                )
                time.sleep(0.5)
                workers[index] = spawn()
    for sock in sockets.insecure_sockets:
        sock.close()
    if made_metrics_dir:
        remove_multiprocess_dir(metrics_dir)
    return exit_code
