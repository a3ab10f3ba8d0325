"""Peers: the overhead scenario's load through LiteLLM's proxy as well as through the gateway, in the
same run, on the same fake OpenAI server, reported as a ratio to the gateway.

    gateway bench peers [--install-litellm] [--litellm-venv DIR] [--quick] [--json FILE]

LiteLLM lives in its own virtualenv (by default `bench/.venvs/litellm` in a checkout, git-ignored;
`~/.cache/gateway/bench-venvs/litellm` from an install), never in the gateway's environment:
`--install-litellm` creates it with `python -m venv` and `pip install 'litellm[proxy]'`
(`--litellm-spec` pins another version). Without it, and not asked to install it, the scenario says
so and measures nothing.

The proxy runs offline: `LITELLM_LOCAL_MODEL_COST_MAP=True` (no cost map download), telemetry off,
no database (so no spend log), one worker (`--num_workers 1`), pinned to the gateway's core, with one
model (`openai/gpt-4o-mini`, `api_base` = the fake). It refuses to start without a master key
(LiteLLM 1.10x), so it gets one, and the gateway gets a client key: every request of every phase
carries `Authorization: Bearer <key>` and both check it. Otherwise their defaults (the gateway's
include the SQLite audit log; the overhead scenario's audit-off rows show what that costs).
Each is started, checked with one request, measured and stopped in turn: the load generator, the
phases and the CPU accounting are the overhead scenario's (`harness.phases.LoadBench`).
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from gateway.bench.harness.loadgen import LoadGenerator
from gateway.bench.harness.options import int_list
from gateway.bench.harness.paths import VENVS_DIR
from gateway.bench.harness.phases import (
    MODEL,
    LoadBench,
    best_phase,
    check_answers,
    find_phase,
    start_gateway_server,
)
from gateway.bench.harness.progress import Progress, say
from gateway.bench.harness.results import markdown_table, ms
from gateway.bench.harness.servers import Server, pinned, start_fake, start_http, usable_cpus

from gateway.testing.process import free_port

DEFAULT_VENV = VENVS_DIR / "litellm"
PEERS = ("litellm",)
QUICK = {"duration": 0.3, "warmup": 0.15}


def _executable(venv: Path) -> Path:
    return venv / "bin" / "litellm"


def install_litellm(venv: Path, spec: str) -> None:
    """A virtualenv of its own with LiteLLM's proxy, from the package registry."""
    say(f"installing {spec} into {venv} (a few minutes) ...")
    venv.parent.mkdir(parents=True, exist_ok=True)
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([python, "-m", "pip", "install", "--quiet", spec], check=True)


def litellm_version(venv: Path) -> str | None:
    try:
        out = subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-c",
                "import importlib.metadata as m; print(m.version('litellm'))",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def litellm_config(upstream_port: int) -> str:
    return f"""model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/{MODEL}
      api_base: http://127.0.0.1:{upstream_port}/v1
      api_key: fake-key
litellm_settings:
  telemetry: false
"""


def start_litellm(venv: Path, workdir: Path, upstream_port: int, cpu: int | None, master_key: str) -> Server:
    config = workdir / "litellm.yaml"
    config.write_text(litellm_config(upstream_port))
    port = free_port()
    command = [str(_executable(venv)), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--num_workers", "1"]
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL")
    }
    env |= {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "LITELLM_MASTER_KEY": master_key,
        "NO_PROXY": "127.0.0.1",
    }
    return start_http(
        "litellm",
        pinned(command, cpu),
        port,
        "/health/liveliness",
        workdir / "litellm.log",
        env=env,
        cwd=workdir,
        timeout=180,
        proxies=True,
    )


def _skip(reason: str) -> dict[str, Any]:
    say(f"peers: skipped: {reason}")
    return {
        "peers": {"litellm": {"status": "skipped", "reason": reason}},
        "phases": [],
        "rows": [],
        "requests": 0,
        "failed_requests": 0,
    }


def run(
    *,
    venv: Path,
    duration: float,
    warmup: float,
    clients: list[int],
    cpus: dict[str, int | None],
    retries: int,
    wait_quiet: float,
    progress: Progress | None,
) -> dict[str, Any]:
    version = litellm_version(venv)
    # Both check a key on every request, as a deployment reachable from other machines must:
    # LiteLLM's master key (it refuses to start without one), the gateway's client key.
    key = "sk-bench-" + secrets.token_hex(16)
    if progress:
        progress.add(3 * 2 * len(clients) - 1)
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as directory:
        workdir = Path(directory)
        servers: dict[str, Server] = {}
        try:
            fake = servers["fake"] = start_fake("openai", workdir / "fake.log", cpu=cpus["upstream"])
            with LoadGenerator(cpus["loadgen"]) as loadgen:
                bench = LoadBench(loadgen, servers, warmup, duration, retries, wait_quiet, progress=progress)
                bench.headers = {"Authorization": f"Bearer {key}"}
                for target in ("direct", "gateway", "litellm"):
                    if target == "gateway":
                        servers[target] = start_gateway_server(
                            "gateway",
                            workdir,
                            fake.port,
                            workers=1,
                            audit=True,
                            cpu=cpus["gateway"],
                            client_key=key,
                        )
                    elif target == "litellm":
                        servers[target] = start_litellm(venv, workdir, fake.port, cpus["gateway"], key)
                    try:
                        if target != "direct":
                            check_answers(servers, (target,), headers=bench.headers)
                        for stream in (False, True):
                            for n in clients:
                                bench.measure(target, stream, n)
                    finally:
                        if target != "direct":
                            servers.pop(target).stop()
        finally:
            for server in servers.values():
                server.stop()
    phases = bench.phases
    return {
        "peers": {
            "litellm": {
                "status": "measured",
                "version": version,
                "venv": str(venv),
                "settings": "one worker (--num_workers 1), a master key, no database, "
                "LITELLM_LOCAL_MODEL_COST_MAP=True, telemetry off, pinned to the gateway's core",
            }
        },
        "settings": {
            "duration_s": duration,
            "warmup_s": warmup,
            "clients": clients,
            "cpus": cpus,
            "retries": retries,
            "wait_quiet_s": wait_quiet,
            "gateway": "gateway serve --workers 1, default config (audit log on), "
            "one openai_compatible backend, one client key",
            "auth": "every request carries Authorization: Bearer <key>; both check it",
        },
        "phases": phases,
        "rows": _rows(phases, clients),
        "requests": sum(p["requests"] for p in phases),
        "failed_requests": sum(p["failed"] for p in phases),
    }


def _rows(phases: list[dict[str, Any]], clients: list[int]) -> list[dict[str, Any]]:
    ceiling = {
        m: (best_phase(phases, "direct", m) or {"rps": 0.0})["rps"] for m in ("non_streaming", "streaming")
    }
    rows = []
    for mode, metric in (("non_streaming", "latency_ms"), ("streaming", "ttft_ms")):
        for n in clients:
            found = {t: find_phase(phases, t, mode, n) for t in ("direct", "gateway", "litellm")}
            if any(p is None for p in found.values()):
                continue
            direct, gateway, litellm = found["direct"], found["gateway"], found["litellm"]
            assert direct is not None and gateway is not None and litellm is not None

            def added(p: dict[str, Any], q: str, m: str = metric, d: dict[str, Any] = direct) -> float:
                return round(p[m][q] - d[m][q], 3)

            row = {
                "mode": mode,
                "clients": n,
                "metric": metric,
                **{
                    name: {"p50": p[metric]["p50"], "p99": p[metric]["p99"], "rps": p["rps"]}
                    for name, p in found.items()
                    if p is not None
                },
                "added_ms": {
                    "gateway": {q: added(gateway, q) for q in ("p50", "p99")},
                    "litellm": {q: added(litellm, q) for q in ("p50", "p99")},
                },
                "cpu_us_per_request": {
                    "gateway": gateway["cpu"]["server"]["us_per_request"],
                    "litellm": litellm["cpu"]["server"]["us_per_request"],
                },
                "ceiling_rps": ceiling[mode],
            }
            row["ratio_litellm_to_gateway"] = {
                "rps": round(litellm["rps"] / gateway["rps"], 3) if gateway["rps"] else None,
                "added_p50": (
                    round(row["added_ms"]["litellm"]["p50"] / row["added_ms"]["gateway"]["p50"], 2)
                    if row["added_ms"]["gateway"]["p50"] > 0
                    else None
                ),
                "cpu_per_request": (
                    round(row["cpu_us_per_request"]["litellm"] / row["cpu_us_per_request"]["gateway"], 2)
                    if row["cpu_us_per_request"]["gateway"]
                    else None
                ),
            }
            rows.append(row)
    return rows


def table(result: dict[str, Any]) -> str:
    peer = result["peers"]["litellm"]
    if peer["status"] != "measured":
        return f"LiteLLM proxy: skipped: {peer['reason']}"
    rows = []
    for row in result["rows"]:
        ratio = row["ratio_litellm_to_gateway"]
        rows.append(
            [
                "non-streaming latency" if row["mode"] == "non_streaming" else "streaming TTFT",
                row["clients"],
                ms(row["direct"]["p50"]),
                ms(row["gateway"]["p50"]),
                ms(row["litellm"]["p50"]),
                f"{row['added_ms']['gateway']['p50']:+.2f} / {row['added_ms']['gateway']['p99']:+.2f}",
                f"{row['added_ms']['litellm']['p50']:+.2f} / {row['added_ms']['litellm']['p99']:+.2f}",
                f"{row['gateway']['rps']:,.0f}",
                f"{row['litellm']['rps']:,.0f}",
                f"{ratio['rps']:.2f}×" if ratio["rps"] is not None else "–",
                f"{row['cpu_us_per_request']['gateway']:.0f} / {row['cpu_us_per_request']['litellm']:.0f}",
                f"{row['ceiling_rps']:,.0f}",
            ]
        )
    headers = [
        "mode (ms)",
        "clients",
        "direct p50",
        "gateway p50",
        "LiteLLM p50",
        "gateway added p50 / p99",
        "LiteLLM added p50 / p99",
        "gateway req/s",
        "LiteLLM req/s",
        "LiteLLM ÷ gateway req/s",
        "CPU µs / request (gateway / LiteLLM)",
        "ceiling req/s",
    ]
    return f"LiteLLM {peer.get('version') or '(version unknown)'} proxy vs the gateway\n\n" + markdown_table(
        headers, rows
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--install-litellm", action="store_true", help="create the LiteLLM virtualenv first (a download)"
    )
    parser.add_argument(
        "--litellm-venv", type=Path, default=DEFAULT_VENV, help=f"LiteLLM's virtualenv ({DEFAULT_VENV})"
    )
    parser.add_argument(
        "--litellm-spec", default="litellm[proxy]", help="what pip installs ('litellm[proxy]')"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per phase (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per phase (2)")
    parser.add_argument("--clients", type=int_list, default=[1, 8, 32], help="client counts (1,8,32)")
    parser.add_argument(
        "--retries", type=int, default=2, help="re-runs of a phase disturbed by other processes"
    )
    parser.add_argument("--wait-quiet", type=float, default=60.0, help="seconds to wait for a quiet machine")
    parser.add_argument("--gateway-cpu", type=int, default=0, help="core for the gateway and LiteLLM (0)")
    parser.add_argument("--upstream-cpu", type=int, default=1, help="core for the fake server (1)")
    parser.add_argument("--loadgen-cpu", type=int, default=1, help="core for the load generator (1)")


def run_scenario(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    venv: Path = args.litellm_venv
    if args.install_litellm:
        with progress.step("installing LiteLLM"):
            install_litellm(venv, args.litellm_spec)
    if not _executable(venv).exists():
        return _skip(
            f"LiteLLM is not installed in {venv}; run `gateway bench peers --install-litellm` (with "
            f"--litellm-venv DIR for another place) to pip install '{args.litellm_spec}' into a "
            "virtualenv of its own, or point --litellm-venv at an existing one"
        )
    duration, warmup = (QUICK["duration"], QUICK["warmup"]) if args.quick else (args.duration, args.warmup)
    cpus = usable_cpus(
        {"gateway": args.gateway_cpu, "upstream": args.upstream_cpu, "loadgen": args.loadgen_cpu}
    )
    return run(
        venv=venv,
        duration=duration,
        warmup=warmup,
        clients=args.clients,
        cpus=cpus,
        retries=0 if args.quick else args.retries,
        wait_quiet=0.0 if args.quick else args.wait_quiet,
        progress=progress,
    )
