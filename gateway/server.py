"""`gateway serve`: Hypercorn underneath, one process per worker, signals handled by us.

Each worker process builds its own app (own Runtime, own watcher) on sockets the supervisor opened,
so all workers share the port. SIGHUP reloads the config in every worker; SIGTERM drains and stops.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import resource
import shutil
import signal
import sys
import tempfile
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
from gateway.runtime.canary import WORKERS_DIR_ENV
from gateway.telemetry.logging import configure_logging
from gateway.telemetry.metrics import (
    mark_worker_dead,
    prepare_multiprocess_dir,
    remove_multiprocess_dir,
)

__all__ = ["ReadyAnnouncement", "ServeOptions", "StartError", "event_loop_factory", "serve"]

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
    #: Tracebacks of a failed start (one line without).
    debug: bool = False


def serve(
    config_path: str | os.PathLike[str],
    *,
    host: str | None,
    port: int | None,
    workers: int | None,
    debug: bool = False,
) -> int:
    """Run the gateway until SIGTERM/SIGINT. Returns the process exit code.

    A start that fails says why in one line on standard error, naming the fix, and returns 1 (the
    traceback too with `debug`)."""
    try:
        return _serve(Path(config_path), host, port, workers, debug)
    except StartError as error:
        _say_fatal(str(error), debug)
        return 1
    except Exception as error:  # a failed start is one line, not a traceback
        _say_fatal(f"{type(error).__name__}: {error}", debug)
        return 1


class StartError(Exception):
    """A start that cannot go on: the message names the cause and the fix."""


def _say_fatal(message: str, debug: bool) -> None:
    if debug:
        import traceback

        traceback.print_exc(file=sys.stderr)
    elif logging.getLogger().handlers:
        log.critical("not starting: %s", message, extra={"event": "start_failed"})
        _flush_logs()
        return
    print(f"gateway: not starting: {message}", file=sys.stderr, flush=True)


def _serve(path: Path, host: str | None, port: int | None, workers: int | None, debug: bool) -> int:
    try:
        config = load_config(path)
    except ConfigError as error:
        issues = error.issues
        print(
            f"gateway: not starting: {path} is not valid ({len(issues)} error(s); fix them, "
            f"`gateway check {path}` says the same):",
            file=sys.stderr,
        )
        for issue in issues:
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
        debug=debug,
    )
    try:
        loop_factory = event_loop_factory(options.event_loop)
    except RuntimeError as error:
        raise StartError(str(error)) from None
    problem = exposure_issue(config, options.host)
    if problem:
        raise StartError(problem)
    configure_logging(options.log_level, options.log_format)
    hypercorn = _hypercorn_config(options)
    sockets = _bind(hypercorn, options.host, options.port)
    bound = sockets.insecure_sockets[0].getsockname()
    log.info(
        "gateway bound to %s:%s, starting %d worker(s) (config %s, %s event loop)",
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
    sign_in = None if config.auth.admin_keys else _admin_sign_in(path, bound[0], bound[1])
    announce = ReadyAnnouncement(bound[0], bound[1], options.workers, sign_in)
    if options.workers == 1:
        code = _run_worker(options, hypercorn, sockets, announce)
    else:
        code = _supervise(options, hypercorn, sockets, announce)
    log.info("gateway stopped", extra={"event": "stopped", "exit_code": code})
    return code


def _bind(hypercorn: HypercornConfig, host: str, port: int) -> Sockets:
    """The listening sockets, or a StartError saying why the address cannot be had and what to do."""
    try:
        return hypercorn.create_sockets()
    except OSError as error:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if error.errno == errno.EADDRINUSE:
            why = (
                f"the address is in use: another program (or gateway) listens there (`ss -ltnp "
                f"'sport = :{port}'` shows which); stop it, or choose another port (--port, server.port)"
            )
        elif error.errno == errno.EACCES:
            why = (
                "permission denied: ports below 1024 need root or CAP_NET_BIND_SERVICE; choose a port "
                "of 1024 or more (--port, server.port)"
            )
        elif error.errno == errno.EADDRNOTAVAIL:
            why = "no interface of this machine has that address; choose one it has (--host, server.host)"
        else:
            why = f"{error.strerror or error}; check --host/--port (server.host, server.port)"
        raise StartError(f"cannot listen on {where}: {why}") from None


def _admin_sign_in(config_path: Path, host: str, port: int) -> str | None:
    """No admin keys: the admin API takes the local admin token, made here before any worker starts.
    Returns the panel's sign-in URL when standard error is a terminal (said with the ready line);
    otherwise only where the token is goes to the log: a captured stderr (a container's log, a
    journal) is a file log, and the token would outlive the console in it."""
    from gateway.admin.panel import sign_in_url
    from gateway.admin.secret import TOKEN_ENV_VAR, AdminTokenUnavailable, load_admin_token

    try:
        token = load_admin_token(config_path)
    except AdminTokenUnavailable as error:
        log.warning(
            "no admin keys and no local admin token; the admin API refuses everyone: %s",
            error,
            extra={"event": "admin_token_unavailable"},
        )
        return None
    if sys.stderr.isatty():
        return sign_in_url(host, port, token.value)
    where = TOKEN_ENV_VAR if token.source == TOKEN_ENV_VAR else token.source
    log.info(
        "no admin keys configured: sign in at %s with the local admin token from %s",
        sign_in_url(host, port, "<token>"),
        where,
        extra={"event": "admin_token", "token_source": where},
    )
    return None


@dataclass(frozen=True, slots=True)
class ReadyAnnouncement:
    """The line said once every worker answers: where the model API and the admin panel are."""

    host: str
    port: int
    workers: int
    #: The panel's sign-in link with the local admin token (to a terminal only, never to the log).
    sign_in: str | None = None

    def say(self) -> None:
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        base = f"http://{host}:{self.port}"
        log.info(
            "gateway ready: model API %s/v1, admin panel %s/admin/ (%d worker(s))",
            base,
            base,
            self.workers,
            extra={"event": "ready", "model_api": f"{base}/v1", "admin_panel": f"{base}/admin/"},
        )
        _flush_logs()
        if self.sign_in:
            print(f"gateway: sign in to the admin panel: {self.sign_in}", file=sys.stderr, flush=True)


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


def _run_worker(
    options: ServeOptions,
    hypercorn: HypercornConfig,
    sockets: Sockets,
    ready: ReadyAnnouncement | multiprocessing.connection.Connection,
) -> int:
    """One worker: build the app, serve on `sockets` until told to stop. Once it answers, it says
    the ready line (the only worker) or tells the supervisor (`ready` is then a pipe's end)."""
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
        on_ready = ready.say if isinstance(ready, ReadyAnnouncement) else lambda: ready.send(os.getpid())
        await serve_connections(
            app, hypercorn, list(sockets.insecure_sockets), policy, stop, refused, on_ready=on_ready
        )

    try:
        with asyncio.Runner(loop_factory=event_loop_factory(options.event_loop)) as runner:
            runner.run(main())
    except ConfigError as error:
        # The file changed between the supervisor's check and this worker's start.
        issues = error.issues
        print(
            f"gateway: not starting: {options.config_path} is not valid ({len(issues)} error(s)):",
            file=sys.stderr,
        )
        for issue in issues:
            print(f"  {issue}", file=sys.stderr)
        return 1
    finally:
        _flush_logs()  # the last lines wait for the handler's next write; a worker exits with os._exit
    return 0


def _flush_logs() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()


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


def _worker_entry(
    options: ServeOptions,
    hypercorn: HypercornConfig,
    sockets: Sockets,
    ready: multiprocessing.connection.Connection,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when workers stop
    try:
        code = _run_worker(options, hypercorn, sockets, ready)
    except Exception as error:  # a failed start is one line, not a traceback
        _say_fatal(f"worker {os.getpid()}: {type(error).__name__}: {error}", options.debug)
        code = 1
    sys.exit(code)


def _supervise(
    options: ServeOptions, hypercorn: HypercornConfig, sockets: Sockets, announce: ReadyAnnouncement
) -> int:
    """Start N worker processes, forward SIGHUP/SIGTERM to them, restart one that dies unexpectedly.
    The ready line is said once all N answer; a worker that dies before then stops the start (exit 1:
    restarting it would repeat the same failure forever).

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

    # Where the workers tell each other what one decided alone (a canary rolled back).
    workers_dir = tempfile.mkdtemp(prefix="gateway-workers-")
    os.environ[WORKERS_DIR_ENV] = workers_dir  # inherited by the workers spawned after this
    readiness, ready_end = context.Pipe(duplex=False)
    ready: set[int] = set()
    announced = False

    def spawn() -> multiprocessing.process.BaseProcess:
        process = context.Process(
            target=_worker_entry, args=(options, hypercorn, sockets, ready_end), daemon=False
        )
        process.start()
        started = {"event": "worker_started", "worker_pid": process.pid}
        log.info("worker %s started", process.pid, extra=started)
        return process

    workers: list[multiprocessing.process.BaseProcess] = []

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

    # The handlers come first: a SIGTERM while the workers are being spawned (a deploy rolled back at
    # once) must stop them, not kill this process and leave them running.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    for _ in range(options.workers):
        if stopping:
            break
        workers.append(spawn())
    if stopping:  # a signal that came while one was starting did not reach that one
        forward(signal.SIGTERM, None)

    exit_code = 0
    while workers:
        multiprocessing.connection.wait([readiness, *(p.sentinel for p in workers)], timeout=1.0)
        while readiness.poll():
            ready.add(readiness.recv())
        if not announced and not stopping and len(ready) >= options.workers:
            announced = True
            announce.say()
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
            elif not announced:
                log.critical(
                    "not starting: worker %s exited with %s before it could answer; stopping the others",
                    process.pid,
                    process.exitcode,
                    extra={"event": "start_failed", "worker_pid": process.pid},
                )
                exit_code = 1
                forward(signal.SIGTERM, None)
                workers.remove(process)
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
    readiness.close()
    ready_end.close()
    if made_metrics_dir:
        remove_multiprocess_dir(metrics_dir)
    shutil.rmtree(workers_dir, ignore_errors=True)
    return exit_code
