"""Run the gateway app inside this process (its connection server on its own event loop in a
thread), for tests that need to see what the app does from the inside: spans captured by a test
exporter, log records.

Same app and server as `gateway serve` (one worker: `gateway.connections` and `gateway.http1`), on a
free loopback port, over real HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from hypercorn.config import Config as HypercornConfig

from gateway.app import create_app
from gateway.config.issues import ConfigError
from gateway.config.load import load_config
from gateway.config.model import ServerTimeouts
from gateway.connections import ConnectionPolicy, serve_connections
from gateway.surfaces.model_api import AuditSink, ModelAPI
from gateway.testing.process import free_port

__all__ = ["InProcessGateway", "gateway_in_thread"]


@dataclass
class InProcessGateway:
    app: ModelAPI
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path


def _policy(config_path: Path, env: Any) -> ConnectionPolicy:
    """The connection policy `gateway serve` would run this file with (`server:`); for a file that
    does not load (a test of the fallback app), generous fixed limits."""
    try:
        server = load_config(config_path, env=env).server
    except ConfigError:
        return ConnectionPolicy(ServerTimeouts(10, 30, 30, 1), 1000, 5)
    return ConnectionPolicy(server.timeouts, server.max_client_connections, server.graceful_shutdown_seconds)


@contextlib.contextmanager
def gateway_in_thread(
    config_path: Path, *, timeout: float = 30, trails: AuditSink | None = None, **app_options: Any
) -> Iterator[InProcessGateway]:
    """Serve `create_app(config_path, **app_options)` on 127.0.0.1 until the block ends.

    `trails`: a sink that receives every finished request's trail (what the audit log, metrics and
    the request log are built from) in place of the audit log, for tests to read."""
    port = free_port()
    app = create_app(config_path, host="127.0.0.1", **app_options)
    if trails is not None:
        app = ModelAPI(app.live, app.fallback, trails, app.telemetry)
    config = HypercornConfig()
    config.accesslog = None
    config.errorlog = None
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen()
    policy = _policy(config_path, app_options.get("env"))
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(serve_connections(app, config, [listener], policy, stop))
        except BaseException as error:  # reported to the test below
            failure.append(error)
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=run, name="gateway-in-process", daemon=True)
    thread.start()
    gateway = InProcessGateway(app, port)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if failure or not thread.is_alive():
                raise RuntimeError(
                    f"the gateway did not start: {failure[0] if failure else 'thread ended'!r}"
                )
            try:
                requests.get(gateway.url("/health"), timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the gateway did not answer within {timeout} s") from None
                time.sleep(0.02)
        yield gateway
    finally:
        if not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
