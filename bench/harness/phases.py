"""Closed-loop load phases against servers on loopback, for the overhead and peers scenarios: the
small chat completion they send (to the fake OpenAI server directly, through the gateway, through a
peer), the gateway configured on that fake, and `LoadBench`, which runs each phase with the load
generator (`loadgen`) and reads the CPU every process spent from /proc.

The machine may be shared: before each phase `LoadBench` waits (up to `wait_quiet` s) for other
processes to leave the cores, records the CPU they used meanwhile (`foreign_cpu_cores`), and runs the
phase again (`retries`) when that was more than `FOREIGN_LIMIT` of a core; the least disturbed run
is kept.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.bench.harness.loadgen import LoadGenerator
from gateway.bench.harness.proc import machine_busy_seconds, own_cpu_seconds, tree_cpu_seconds
from gateway.bench.harness.progress import Progress, say
from gateway.bench.harness.servers import Server

from gateway.testing.process import start_gateway

__all__ = [
    "BODY",
    "FOREIGN_LIMIT",
    "MODEL",
    "PATH",
    "REPLY_TOKENS",
    "LoadBench",
    "best_phase",
    "check_answers",
    "find_phase",
    "gateway_config",
    "start_gateway_server",
]

MODEL = "gpt-4o-mini"
REPLY_TOKENS = 16
PATH = "/v1/chat/completions"
BODY = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Say hello in a few words."}],
    "max_tokens": REPLY_TOKENS,
}
#: Responses a phase measures at least (its window is extended for them on a slow machine).
MIN_REQUESTS = 20
#: Cores' worth of CPU that other processes may use during a phase before it is run again.
FOREIGN_LIMIT = 0.1


#: Limits no bench load reaches, so every kind is checked and charged on every request and none refuses.
BENCH_LIMITS = (
    "{requests_per_minute: 100000000, tokens_per_minute: 100000000000, concurrent_requests: 100000, "
    "budget_usd: {per_day: 1000000000, per_month: 1000000000}}"
)


def gateway_config(
    upstream_port: int,
    *,
    audit: bool = True,
    client_key_env: str | None = None,
    limits_store: str | None = None,
    cache_store: str | None = None,
    shadow: bool = False,
) -> str:
    """One `openai_compatible` backend on the fake (priced, so every request has a cost); the audit log
    as configured by default unless off; with `client_key_env`, one client key read from that variable
    (requests must carry it); with `limits_store` (`memory` or a Redis URL), that key has limits of
    every kind (`BENCH_LIMITS`) counted in that store; with `cache_store`, the model's answers are
    cached (exact, any temperature: after the first request every one is a hit) in that store; with
    `shadow`, every request is also copied (`models.<m>.shadow`, sample_rate 1) to a second backend on
    the same fake."""
    text = f"""backends:
  fake:
    type: openai_compatible
    base_url: "http://127.0.0.1:{upstream_port}/v1"
    prices: {{{MODEL}: {{input: 0.15, output: 0.6, cached_input: 0.075}}}}
models:
  {MODEL}: {{chain: [{{backend: fake, model: {MODEL}}}]{_model_cache(cache_store)}{_shadow(shadow)}}}
"""
    if shadow:
        text = text.replace(
            "models:\n",
            f'  fake-shadow: {{type: openai_compatible, base_url: "http://127.0.0.1:{upstream_port}/v1"}}\n'
            "models:\n",
        )
    if cache_store:
        text += f'cache: {{store: "{cache_store}"}}\n'
    if client_key_env:
        limits = f", limits: {BENCH_LIMITS}" if limits_store else ""
        text += f'auth: {{client_keys: [{{name: bench, key: "${{{client_key_env}}}"{limits}}}]}}\n'
    if limits_store:
        text += f'limits: {{store: "{limits_store}"}}\n'
    return text if audit else text + "audit: {enabled: false}\n"


def _shadow(shadow: bool) -> str:
    return f", shadow: {{target: {{backend: fake-shadow, model: {MODEL}}}, sample_rate: 1}}" if shadow else ""


def _model_cache(store: str | None) -> str:
    return ", cache: {mode: exact, any_temperature: true}" if store else ""


def start_gateway_server(
    name: str,
    workdir: Path,
    upstream_port: int,
    *,
    workers: int,
    audit: bool,
    cpu: int | None,
    client_key: str | None = None,
    limits_store: str | None = None,
    cache_store: str | None = None,
    shadow: bool = False,
) -> Server:
    """`gateway serve` on the fake, in its own directory (its audit database lives next to its config)."""
    directory = workdir / name
    directory.mkdir(exist_ok=True)
    config = directory / "gateway.yaml"
    key_env = "BENCH_CLIENT_KEY" if client_key else None
    config.write_text(
        gateway_config(
            upstream_port,
            audit=audit,
            client_key_env=key_env,
            limits_store=limits_store,
            cache_store=cache_store,
            shadow=shadow,
        )
    )
    env = {"BENCH_CLIENT_KEY": client_key} if client_key else None
    gateway = start_gateway(config, workers=workers, cpu=cpu, env=env)
    return Server(name, gateway.port, gateway.process, gateway.stop, proxies=True)


@dataclass
class LoadBench:
    """Runs phases against the servers by name ("direct" is the fake itself) and keeps them."""

    loadgen: LoadGenerator
    servers: dict[str, Server]
    warmup: float
    duration: float
    retries: int = 2
    wait_quiet: float = 0.0
    phases: list[dict[str, Any]] = field(default_factory=list)
    progress: Progress | None = None
    headers: dict[str, str] = field(default_factory=dict)  # sent with every request (an API key)
    #: Headers for one target only (instead of `headers`): a variant that needs a key.
    target_headers: dict[str, dict[str, str]] = field(default_factory=dict)

    def measure(self, target: str, stream: bool, clients: int, *, record: bool = True) -> dict[str, Any]:
        """One phase against `target` (direct, gateway, a variant, a baseline, a peer).

        A phase during which other processes on the machine used more than `FOREIGN_LIMIT` of a core
        (someone's test run, say) is run again, up to `retries` times; the least disturbed is kept."""
        label = f"{target} {'streaming' if stream else 'non-streaming'}, {clients} clients"
        step = self.progress.step(label) if self.progress else contextlib.nullcontext()
        with step:
            attempts = []
            for _ in range(1 + self.retries):
                self._wait_for_quiet()
                phase = self._phase(target, stream, clients)
                attempts.append(phase)
                if phase["foreign_cpu_cores"] <= FOREIGN_LIMIT:
                    break
                say(f"  (other processes used {phase['foreign_cpu_cores']:.2f} cores during that phase)")
        phase = min(attempts, key=lambda p: p["foreign_cpu_cores"])
        phase["runs"] = len(attempts)
        if record:
            self.phases.append(phase)
        return phase

    def _ours(self) -> float:
        return sum(tree_cpu_seconds(s.pid) for s in self.servers.values()) + tree_cpu_seconds(
            self.loadgen.pid
        )

    def _foreign_cores(self, seconds: float) -> float:
        """Cores' worth of CPU that processes other than ours used over the next `seconds`."""
        ours_before, machine_before = self._ours(), machine_busy_seconds()
        time.sleep(seconds)
        spent = machine_busy_seconds() - machine_before - (self._ours() - ours_before)
        return max(0.0, spent) / seconds

    def _wait_for_quiet(self) -> None:
        """Before a phase, wait (up to `wait_quiet` seconds) for other processes to leave the cores."""
        deadline = time.monotonic() + self.wait_quiet
        told = False
        while time.monotonic() < deadline:
            foreign = self._foreign_cores(1.0)
            if foreign <= FOREIGN_LIMIT:
                return
            if not told:
                say(f"  (waiting for other processes to go quiet: {foreign:.2f} cores)")
                told = True

    def _phase(self, target: str, stream: bool, clients: int) -> dict[str, Any]:
        server = self.servers["fake" if target == "direct" else target]
        upstream = self.servers["fake"] if server.proxies else None
        body = dict(BODY, stream=True) if stream else BODY
        watched = {"server": server} | ({"upstream": upstream} if upstream else {})
        before = {role: tree_cpu_seconds(s.pid) for role, s in watched.items()}
        ours_before = self._ours() + own_cpu_seconds()
        machine_before = machine_busy_seconds()
        started = time.perf_counter()
        result = self.loadgen.run(
            {
                "host": "127.0.0.1",
                "port": server.port,
                "path": PATH,
                "body": json.dumps(body),
                "stream": stream,
                "concurrency": clients,
                "warmup": self.warmup,
                "duration": self.duration,
                "min_requests": MIN_REQUESTS,
                "headers": self.target_headers.get(target, self.headers),
            }
        )
        elapsed = time.perf_counter() - started
        ours_spent = self._ours() + own_cpu_seconds() - ours_before
        foreign = max(0.0, machine_busy_seconds() - machine_before - ours_spent) / elapsed
        answered = max(1, result.get("answered", result["requests"]))
        cpu = {}
        for role, watched_server in watched.items():
            spent = tree_cpu_seconds(watched_server.pid) - before[role]
            cpu[role] = {
                "process": watched_server.name,
                "busy": round(spent / elapsed, 3),
                "us_per_request": round(spent / answered * 1e6, 1),
            }
        phase = {
            "target": target,
            "mode": "streaming" if stream else "non_streaming",
            "clients": clients,
            **result,
            "cpu": cpu,
            "foreign_cpu_cores": round(foreign, 3),
        }
        label = f"{target:<17} {phase['mode']:<13} {clients:>3} clients"
        metric = phase.get("ttft_ms", phase["latency_ms"])
        say(
            f"  {label}: {phase['rps']:>8.0f} req/s  p50 {metric['p50']:.3f} ms  p99 {metric['p99']:.3f} ms"
            + (f"  FAILED {phase['failed']}" if phase["failed"] else "")
        )
        return phase


def find_phase(phases: list[dict[str, Any]], target: str, mode: str, clients: int) -> dict[str, Any] | None:
    return next(
        (p for p in phases if (p["target"], p["mode"], p["clients"]) == (target, mode, clients)), None
    )


def best_phase(phases: list[dict[str, Any]], target: str, mode: str) -> dict[str, Any] | None:
    candidates = [p for p in phases if p["target"] == target and p["mode"] == mode]
    return max(candidates, key=lambda p: p["rps"]) if candidates else None


def check_answers(
    servers: dict[str, Server],
    names: tuple[str, ...] = ("fake", "gateway"),
    headers: dict[str, str] | None = None,
) -> None:
    """One request each way: every server must answer what the fake answers (the gateway from it)."""
    import requests

    for name in names:
        url = f"http://127.0.0.1:{servers[name].port}{PATH}"
        response = requests.post(url, json=BODY, headers=headers, timeout=60)
        if response.status_code != 200 or response.json().get("object") != "chat.completion":
            raise RuntimeError(f"{name} did not answer the request: {response.status_code} {response.text}")
        if name.startswith("gateway") and response.headers.get("x-gateway-backend") != "fake":
            raise RuntimeError(f"{name} did not answer from the fake backend")
