"""Cloud: round-trip latency and time to first token to OpenAI and Anthropic, directly and through
the gateway, so the difference is what the gateway adds to a cloud call.

    gateway bench cloud [--requests 10] [--simulate] [--openai-model M] [--anthropic-model M]

With `OPENAI_API_KEY` / `ANTHROPIC_API_KEY` in the environment, the provider's real API is called
(cheap models, `max_tokens` 16, `--requests` per mode and way: a few cents at most). A provider
without its key is *simulated*: the project's fake server for it, started with realistic cloud
latency (`--sim-latency-ms` 300 before the first byte, `--sim-token-ms` 20 per streamed token), and
every row and JSON entry of it says `simulated`. `--simulate` simulates both even with keys.

The gateway (`gateway serve`, default config otherwise) has an `openai` and an `anthropic` backend
(real URLs, or the fakes'); OpenAI is called on `/v1/chat/completions`, Anthropic on `/v1/messages`
(the same protocol both ways, so the gateway relays the bytes). Requests alternate between direct
and gateway, one at a time, each way on its own keep-alive connection, after one warm-up request
each (TLS and connection set-up are not measured).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.bench.harness.client import new_record, record_one, summarize_records
from gateway.bench.harness.progress import Progress, say
from gateway.bench.harness.results import markdown_table, ms
from gateway.bench.harness.servers import Server, start_fake

from gateway.testing.process import start_gateway

PROVIDERS = {
    "openai": {
        "label": "OpenAI",
        "key_env": "OPENAI_API_KEY",
        "base_url": "https://api.openai.com/v1",
        "path": "/v1/chat/completions",
        "public_model": "gpt-4o-mini",
        "default_model": "gpt-4o-mini",
    },
    "anthropic": {
        "label": "Anthropic",
        "key_env": "ANTHROPIC_API_KEY",
        "base_url": "https://api.anthropic.com",
        "path": "/v1/messages",
        "public_model": "claude-haiku",
        "default_model": "claude-3-5-haiku-latest",
    },
}
MODES = ("non_streaming", "streaming")
MAX_TOKENS = 16
FULL = {"requests": 10, "sim_latency_ms": 300.0, "sim_token_ms": 20.0}
QUICK = {"requests": 3, "sim_latency_ms": 30.0, "sim_token_ms": 2.0}
SIM_KEY_ENV = "BENCH_SIMULATED_KEY"


def _direct_url(provider: str, base_url: str) -> str:
    # OpenAI's base URL ends in /v1; the path repeats it.
    path = PROVIDERS[provider]["path"]
    return base_url.removesuffix("/v1") + path


def _body(provider: str, model: str, stream: bool) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": "Say hello in a few words."}],
    }
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def _direct_headers(provider: str, key: str) -> dict[str, str]:
    if provider == "openai":
        return {"authorization": f"Bearer {key}"}
    return {"x-api-key": key, "anthropic-version": "2023-06-01"}


def gateway_config(targets: dict[str, dict[str, Any]]) -> str:
    lines = ["backends:"]
    for provider, target in targets.items():
        key_env = SIM_KEY_ENV if target["simulated"] else PROVIDERS[provider]["key_env"]
        lines.append(
            f'  {provider}: {{type: {provider}, base_url: "{target["base_url"]}", api_key: "${{{key_env}}}"}}'
        )
    lines.append("models:")
    for provider, target in targets.items():
        public = PROVIDERS[provider]["public_model"]
        lines.append(f"  {public}: {{chain: [{{backend: {provider}, model: {target['model']}}}]}}")
    lines += ["timeouts:", "  chat: {total: 120, first_byte: 60}", "reload: {watch: false}", ""]
    return "\n".join(lines)


async def _interleaved(
    ways: dict[str, tuple[str, bytes, dict[str, str]]], stream: bool, requests: int
) -> dict[str, list[dict[str, Any]]]:
    """`requests` per way, alternating the ways' order each round; one warm-up request each first."""
    import aiohttp

    records: dict[str, list[dict[str, Any]]] = {name: [] for name in ways}
    sessions = {
        name: aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1), timeout=aiohttp.ClientTimeout(total=120)
        )
        for name in ways
    }
    try:
        t0 = time.perf_counter()
        names = list(ways)
        for round_ in range(-1, requests):
            order = names if round_ % 2 == 0 else list(reversed(names))
            for name in order:
                url, body, headers = ways[name]
                record = new_record(round=round_)
                await record_one(
                    sessions[name],
                    url,
                    body,
                    {"content-type": "application/json"} | headers,
                    stream,
                    record,
                    t0,
                )
                if round_ >= 0:
                    records[name].append(record)
    finally:
        for session in sessions.values():
            await session.close()
    return records


def _added(direct: dict[str, Any], gateway: dict[str, Any], metric: str) -> dict[str, float] | None:
    if metric not in direct or metric not in gateway:
        return None
    return {q: round(gateway[metric][q] - direct[metric][q], 3) for q in ("p50", "p99")}


def run(settings: dict[str, Any], progress: Progress | None = None) -> dict[str, Any]:
    targets: dict[str, dict[str, Any]] = {}
    fakes: dict[str, Server] = {}
    results: list[dict[str, Any]] = []
    if progress:
        progress.add(len(PROVIDERS) * len(MODES) - 1)
    with tempfile.TemporaryDirectory(prefix="bench-cloud-") as directory:
        workdir = Path(directory)
        gateway = None
        try:
            for provider, info in PROVIDERS.items():
                key = os.environ.get(info["key_env"], "")
                model = settings[f"{provider}_model"]
                if key and not settings["simulate"]:
                    targets[provider] = {
                        "simulated": False,
                        "base_url": info["base_url"],
                        "key": key,
                        "model": model,
                    }
                    continue
                fake = fakes[provider] = start_fake(
                    provider,
                    workdir / f"fake-{provider}.log",
                    reply_tokens=MAX_TOKENS,
                    latency_ms=settings["sim_latency_ms"],
                    token_delay_ms=settings["sim_token_ms"],
                    name=f"fake-{provider}",
                )
                base = f"http://127.0.0.1:{fake.port}" + ("/v1" if provider == "openai" else "")
                targets[provider] = {"simulated": True, "base_url": base, "key": "simulated", "model": model}
            config = workdir / "gateway.yaml"
            config.write_text(gateway_config(targets))
            gateway = start_gateway(config, env={SIM_KEY_ENV: "simulated"})
            for provider, target in targets.items():
                info = PROVIDERS[provider]
                entry: dict[str, Any] = {
                    "provider": provider,
                    "simulated": target["simulated"],
                    "source": (
                        f"simulated: the fake {info['label']} server, {settings['sim_latency_ms']:g} ms "
                        f"to the first byte, {settings['sim_token_ms']:g} ms per streamed token"
                        if target["simulated"]
                        else f"live: {info['base_url']} (key from {info['key_env']})"
                    ),
                    "model": target["model"],
                    "requests_per_mode": settings["requests"],
                    "modes": {},
                }
                for mode in MODES:
                    stream = mode == "streaming"
                    with (
                        progress.step(f"{provider}, {mode.replace('_', '-')}")
                        if progress
                        else contextlib.nullcontext()
                    ):
                        ways = {
                            "direct": (
                                _direct_url(provider, target["base_url"]),
                                _body(provider, target["model"], stream),
                                _direct_headers(provider, target["key"]),
                            ),
                            "gateway": (
                                gateway.base_url + info["path"],
                                _body(provider, info["public_model"], stream),
                                {},
                            ),
                        }
                        found = asyncio.run(_interleaved(ways, stream, settings["requests"]))
                    direct, through = summarize_records(found["direct"]), summarize_records(found["gateway"])
                    wrong = [r for r in found["gateway"] if not r["error"] and r["backend"] != provider]
                    entry["modes"][mode] = {
                        "direct": direct,
                        "gateway": through,
                        "added_latency_ms": _added(direct, through, "latency_ms"),
                        "added_ttft_ms": _added(direct, through, "ttft_ms"),
                        "errors": [r["error"] for rs in found.values() for r in rs if r["error"]][:5],
                        "served_by_other_backend": len(wrong),
                    }
                    say(
                        f"  {provider:<9} {mode:<13} direct p50 {direct['latency_ms']['p50']:.1f} ms, "
                        f"gateway p50 {through['latency_ms']['p50']:.1f} ms"
                        + ("  (simulated)" if target["simulated"] else "")
                    )
                entry["failed"] = sum(
                    m["direct"]["failed"] + m["gateway"]["failed"] + m["served_by_other_backend"]
                    for m in entry["modes"].values()
                )
                results.append(entry)
        finally:
            if gateway is not None:
                gateway.stop()
            for fake in fakes.values():
                fake.stop()
    return {
        "simulated": any(p["simulated"] for p in results),
        "settings": settings | {"max_tokens": MAX_TOKENS},
        "providers": results,
        "requests": sum(
            m[way]["requests"] for p in results for m in p["modes"].values() for way in ("direct", "gateway")
        ),
        "failed_requests": sum(p["failed"] for p in results),
    }


def table(result: dict[str, Any]) -> str:
    rows = []
    for provider in result["providers"]:
        label = f"{PROVIDERS[provider['provider']]['label']} {provider['model']}"
        source = "**simulated**" if provider["simulated"] else "live"
        for mode, found in provider["modes"].items():
            direct, gateway = found["direct"], found["gateway"]
            added, added_ttft = found["added_latency_ms"], found["added_ttft_ms"]
            rows.append(
                [
                    label,
                    source,
                    "streaming" if mode == "streaming" else "non-streaming",
                    direct["requests"],
                    f"{ms(direct['latency_ms']['p50'], 1)} / {ms(direct['latency_ms']['p99'], 1)}",
                    f"{ms(gateway['latency_ms']['p50'], 1)} / {ms(gateway['latency_ms']['p99'], 1)}",
                    f"{added['p50']:+.1f}" if added else "–",
                    ms(direct["ttft_ms"]["p50"], 1) if "ttft_ms" in direct else "–",
                    ms(gateway["ttft_ms"]["p50"], 1) if "ttft_ms" in gateway else "–",
                    f"{added_ttft['p50']:+.1f}" if added_ttft else "–",
                ]
            )
    headers = [
        "provider, model",
        "source",
        "mode",
        "requests each way",
        "direct p50 / p99 (ms)",
        "gateway p50 / p99 (ms)",
        "added p50",
        "direct TTFT p50",
        "gateway TTFT p50",
        "added TTFT p50",
    ]
    note = ""
    if result["simulated"]:
        note = (
            "\n\nSimulated rows ran against the project's fake servers with cloud-like latency, not the "
            "providers: they show what the gateway adds, not what OpenAI or Anthropic take."
        )
    return markdown_table(headers, rows, numeric_from=3) + note


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--requests", type=int, help=f"requests per provider, mode and way ({FULL['requests']})"
    )
    parser.add_argument("--simulate", action="store_true", help="use the fake servers even when keys are set")
    parser.add_argument("--openai-model", default=PROVIDERS["openai"]["default_model"])
    parser.add_argument("--anthropic-model", default=PROVIDERS["anthropic"]["default_model"])
    parser.add_argument("--sim-latency-ms", type=float, help="simulated: ms before the first byte (300)")
    parser.add_argument("--sim-token-ms", type=float, help="simulated: ms per streamed token (20)")


def run_scenario(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    settings: dict[str, Any] = dict(QUICK if args.quick else FULL)
    for key in ("requests", "sim_latency_ms", "sim_token_ms"):
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    settings |= {
        "simulate": args.simulate,
        "openai_model": args.openai_model,
        "anthropic_model": args.anthropic_model,
    }
    return run(settings, progress)
