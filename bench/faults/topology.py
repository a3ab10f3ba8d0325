"""What a faults run starts on loopback: four fake upstreams (an OpenAI and an Anthropic primary,
which the phases break, and a healthy secondary of each, where failover goes), each a process on a
fixed port so it can be killed and started again where the gateway expects it; the gateway's config
(written again by the phases that edit it); and the gateway itself, stopped and started again on
its port by the phases that signal it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from gateway.bench.harness.proc import descendants
from gateway.bench.harness.servers import Server, start_listening

from gateway.testing.process import GatewayProcess, free_port, start_gateway

__all__ = ["ADMIN_KEY", "GatewayConfig", "Topology", "Upstream"]

#: The bench's admin key (the admin API answers admin keys only).
ADMIN_KEY = "bench-faults-admin-key-0123456789"
#: The variable the Anthropic backends' key is read from (a literal key in the file is refused).
FAKE_KEY_VARIABLE = "GATEWAY_BENCH_FAKE_KEY"
ADMIN_KEY_SHA256 = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
UPSTREAM_MODEL = {"openai": "gpt-4o-mini", "anthropic": "claude-3-5-haiku-latest"}


@dataclass
class Upstream:
    """A fake provider in its own process on a fixed port."""

    name: str
    provider: str
    port: int
    log: Path
    token_delay_ms: float
    server: Server | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "gateway.testing", self.provider, "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--reply-tokens", "16"]
        if self.token_delay_ms:
            command += ["--token-delay-ms", str(self.token_delay_ms)]
        self.server = start_listening(self.name, command, self.log)

    def kill(self) -> None:
        """SIGKILL: the upstream vanishes mid-request (its connections reset)."""
        if self.server is not None:
            self.server.process.send_signal(signal.SIGKILL)
            self.server.process.wait(10)
            self.server = None

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def behave(self, **fields: Any) -> None:
        """Merge fields into the fake's behaviour."""
        response = requests.patch(self.url + "/_fake/behaviour", data=json.dumps(fields), timeout=10)
        response.raise_for_status()


@dataclass
class GatewayConfig:
    """The gateway.yaml of a run, as data: the phases change a field and write it again."""

    upstreams: dict[str, Upstream]
    audit_url: str
    failover: bool = True
    first_byte_s: float = 1.5
    flush_interval_ms: int = 200
    buffer_records: int = 500
    graceful_s: float = 10.0
    description: str = "faults bench"
    server: dict[str, str] = field(default_factory=dict)  # more `server.*` settings, as YAML values

    def text(self) -> str:
        lines = [
            "# Written by `gateway bench faults`.",
            "server:",
            f"  graceful_shutdown_seconds: {self.graceful_s}",
            *(f"  {key}: {value}" for key, value in self.server.items()),
            "auth:",
            f'  admin_keys: [{{name: bench, key_sha256: "{ADMIN_KEY_SHA256}"}}]',
            "backends:",
        ]
        for name, upstream in self.upstreams.items():
            if upstream.provider == "openai":
                lines.append(f'  {name}: {{type: openai_compatible, base_url: "{upstream.url}/v1"}}')
            else:
                key = "${" + FAKE_KEY_VARIABLE + "}"
                lines.append(f'  {name}: {{type: anthropic, base_url: "{upstream.url}", api_key: "{key}"}}')
        lines.append("models:")
        for model, provider in (("chat", "openai"), ("claude", "anthropic")):
            backends = [f"{provider}-primary"] + ([f"{provider}-secondary"] if self.failover else [])
            chain = ", ".join(f"{{backend: {b}, model: {UPSTREAM_MODEL[provider]}}}" for b in backends)
            lines.append(f'  {model}: {{description: "{self.description}", chain: [{chain}]}}')
        lines += [
            "timeouts:",
            f"  chat: {{total: 30, connect: 1, first_byte: {self.first_byte_s}}}",
            "failover:",
            "  circuit_breaker: {failure_threshold: 5, cooldown_seconds: 1}",
            "audit:",
            f'  database_url: "{self.audit_url}"',
            f"  flush_interval_ms: {self.flush_interval_ms}",
            f"  buffer_records: {self.buffer_records}",
            "reload: {watch: true, debounce_ms: 50}",
        ]
        return "\n".join(lines) + "\n"


def version_of(data: bytes) -> str:
    """The gateway's config version: the first 16 hex digits of the file's SHA-256."""
    return hashlib.sha256(data).hexdigest()[:16]


@dataclass
class Topology:
    workdir: Path
    token_delay_ms: float
    workers: int = 1
    upstreams: dict[str, Upstream] = field(default_factory=dict)
    gateway: GatewayProcess | None = None
    port: int = field(default_factory=free_port)

    @property
    def config_path(self) -> Path:
        return self.workdir / "gateway.yaml"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_upstreams(self) -> None:
        for provider in ("openai", "anthropic"):
            for role in ("primary", "secondary"):
                name = f"{provider}-{role}"
                upstream = Upstream(
                    name, provider, free_port(), self.workdir / f"{name}.log", self.token_delay_ms
                )
                upstream.start()
                self.upstreams[name] = upstream

    def primaries(self) -> list[Upstream]:
        return [u for name, u in self.upstreams.items() if name.endswith("-primary")]

    def start_gateway(self) -> None:
        env = {"GATEWAY_CACHE_DIR": str(self.workdir / "cache"), FAKE_KEY_VARIABLE: "fake-key"}
        self.gateway = start_gateway(
            self.config_path, workers=self.workers, env=env, port=self.port, timeout=60
        )

    async def restart_gateway(self) -> float:
        """Start the gateway again on its port; seconds until it answered."""
        started = asyncio.get_running_loop().time()
        await asyncio.to_thread(self.start_gateway)
        return asyncio.get_running_loop().time() - started

    def signal_gateway(self, sig: int) -> None:
        """Send `sig` to the gateway; SIGKILL goes to its worker processes as well (none survives)."""
        assert self.gateway is not None
        pid = self.gateway.process.pid
        targets = [pid, *descendants(pid)] if sig == signal.SIGKILL else [pid]
        for target in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, sig)

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop(timeout=30)
        for upstream in self.upstreams.values():
            upstream.stop()

    def admin(self, path: str) -> requests.Response:
        return requests.get(
            self.base_url + path, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
        )
