"""Failover: what a client sees when the first backend of a chain is dead, failing, hanging or slow,
before the circuit breaker opens and after.

    gateway bench failover [--quick] [--json FILE] [--clients 4] [--requests 50] [--first-byte 2]

One fake OpenAI server (`python -m gateway.testing openai`) plays every upstream: the healthy
secondary, and each faulty primary through the `x-fake-behaviour` header that the primary's backend
sends with every request (`headers:` in its config). One gateway serves a model per case and mode,
each chain `[primary, secondary]` with a primary of its own (breakers are per backend, so every case
starts with a closed circuit):

- `dead`: the primary's port refuses connections (nothing listens there).
- `failing`: the primary answers HTTP 500.
- `hanging`: the primary accepts the request and never answers; the attempt ends at
  `timeouts.chat.first_byte` (`--first-byte`, 2 s here; the default config's is 120 s).
- `slow`: the primary answers, slowly (`--slow-latency-ms` before the first byte, under the
  first-byte timeout, then `--slow-token-ms` per streamed token): not a failure, so no failover.
- `healthy`: the secondary alone (the same chain without a primary): the baseline.
- `direct`: the same requests to the fake itself, no gateway: what the client and fake cost.

For each case, non-streaming and streaming, `--clients` concurrent clients send `--requests`
requests each, one after another. Each request is put in a phase by what the gateway's response
headers say: `x-gateway-backend` (who served) and `x-gateway-attempts` (backends contacted):
`before_open` (the primary was tried and failed, then the secondary served), `after_open` (the
primary was skipped: its circuit is open; `failover.circuit_breaker.failure_threshold` = 5, the
default, and a cooldown longer than the run, so no probe happens meanwhile), `primary` (the
primary served). The breaker's state at the end is read from `/metrics`.
Every request must succeed (the secondary is healthy); the exit status is 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import tempfile
from pathlib import Path
from typing import Any

from gateway.bench.harness.client import run_requests, summarize_records
from gateway.bench.harness.options import scenario_settings
from gateway.bench.harness.progress import Progress, say
from gateway.bench.harness.results import markdown_table, ms
from gateway.bench.harness.servers import Server, closed_port, start_fake

from gateway.testing.process import start_gateway

MODEL = "gpt-4o-mini"
REPLY_TOKENS = 16
MODES = ("non_streaming", "streaming")
FULL = {"clients": 4, "requests": 50, "first_byte": 2.0, "slow_latency_ms": 200.0, "slow_token_ms": 50.0}
QUICK = {"clients": 2, "requests": 6, "first_byte": 0.5, "slow_latency_ms": 20.0, "slow_token_ms": 2.0}
FAILURE_THRESHOLD = 5
COOLDOWN_SECONDS = 3600
CASES = {
    "direct": "no gateway: the client straight to the fake",
    "healthy": "secondary alone, nothing failing (baseline)",
    "dead": "primary dead (connection refused)",
    "failing": "primary failing (HTTP 500)",
    "hanging": "primary hanging (no first byte)",
    "slow": "primary slow-streaming",
}
PHASES = ("before_open", "after_open", "primary", "baseline")


def _short(mode: str) -> str:
    return "ns" if mode == "non_streaming" else "st"


def _behaviours(settings: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
    """The `x-fake-behaviour` each faulty primary sends (None: the dead one, on a closed port)."""
    return {
        "dead": None,
        "failing": {"status": 500},
        "hanging": {"hang": True},
        "slow": {"latency_ms": settings["slow_latency_ms"], "token_delay_ms": settings["slow_token_ms"]},
    }


def gateway_config(fake_port: int, dead_port: int, settings: dict[str, Any]) -> str:
    fake = f"http://127.0.0.1:{fake_port}/v1"
    lines = ["backends:", f'  secondary: {{type: openai_compatible, base_url: "{fake}"}}']
    models = ["models:"]
    for mode in MODES:
        models.append(f"  healthy-{_short(mode)}: {{chain: [{{backend: secondary, model: {MODEL}}}]}}")
    for case, behaviour in _behaviours(settings).items():
        for mode in MODES:
            name = f"{case}-{_short(mode)}"
            if behaviour is None:
                lines.append(
                    f'  {name}: {{type: openai_compatible, base_url: "http://127.0.0.1:{dead_port}/v1"}}'
                )
            else:
                header = json.dumps(behaviour).replace("'", "''")
                lines.append(
                    f'  {name}: {{type: openai_compatible, base_url: "{fake}", '
                    f"headers: {{x-fake-behaviour: '{header}'}}}}"
                )
            chain = f"[{{backend: {name}, model: {MODEL}}}, {{backend: secondary, model: {MODEL}}}]"
            models.append(f"  {name}: {{chain: {chain}}}")
    return "\n".join(
        [
            *lines,
            *models,
            "timeouts:",
            f"  chat: {{total: 300, connect: 2, first_byte: {settings['first_byte']}}}",
            "failover:",
            f"  circuit_breaker: {{failure_threshold: {FAILURE_THRESHOLD}, "
            f"cooldown_seconds: {COOLDOWN_SECONDS}}}",
            "reload: {watch: false}",
            "",
        ]
    )


def _phase_of(record: dict[str, Any], case: str, primary: str) -> str:
    if record["error"]:
        return "failed"
    if case in ("direct", "healthy"):
        return "baseline"
    if record["backend"] == primary:
        return "primary"
    return "before_open" if (record["attempts"] or 0) >= 2 else "after_open"


def _breaker_states(base_url: str) -> dict[str, float]:
    """`gateway_circuit_breaker_state` per backend (0 closed, 1 half-open, 2 open)."""
    import requests

    text = requests.get(base_url + "/metrics", timeout=10).text
    pattern = r'^gateway_circuit_breaker_state\{backend="([^"]+)"\} ([0-9.]+)'
    return {name: float(value) for name, value in re.findall(pattern, text, re.M)}


def measure_case(
    case: str, mode: str, *, gateway_url: str, fake_url: str, settings: dict[str, Any]
) -> dict[str, Any]:
    stream = mode == "streaming"
    model = f"{case}-{_short(mode)}"
    body: dict[str, Any] = {
        "model": MODEL if case == "direct" else model,
        "messages": [{"role": "user", "content": "Say hello in a few words."}],
        "max_tokens": REPLY_TOKENS,
    }
    if stream:
        body["stream"] = True
    url = (fake_url if case == "direct" else gateway_url) + "/v1/chat/completions"
    records = run_requests(
        url,
        json.dumps(body).encode(),
        clients=settings["clients"],
        per_client=settings["requests"],
        stream=stream,
        timeout=120,
    )
    primary = model if case not in ("direct", "healthy") else None
    for record in records:
        record["phase"] = _phase_of(record, case, primary or "")
    failed = [r for r in records if r["error"]]
    phases = {}
    for phase in PHASES:
        chosen = [r for r in records if r["phase"] == phase and not r["error"]]
        if chosen:
            phases[phase] = summarize_records(chosen) | {"first_start_s": chosen[0]["start_s"]}
    skipped = [i for i, r in enumerate(records) if r["phase"] == "after_open"]
    served_secondary = sum(1 for r in records if not r["error"] and r["backend"] == "secondary")
    result = {
        "case": case,
        "mode": mode,
        "label": CASES[case],
        "model": body["model"],
        "primary": primary,
        "requests": len(records),
        "failed": len(failed),
        "errors": [r["error"] for r in failed][:5],
        "served_by": {
            "primary": sum(1 for r in records if not r["error"] and primary and r["backend"] == primary),
            "secondary": served_secondary if case != "direct" else 0,
        },
        "all": summarize_records(records),
        "phases": phases,
        "breaker": {
            "opened": bool(skipped),
            "primary_failures_before_open": sum(1 for r in records if r["phase"] == "before_open"),
            "first_request_skipping_primary": skipped[0] if skipped else None,
        },
        # Every request: start (s from the case's start), phase, backend, attempts, latency, TTFT.
        "request_log": [
            [
                r["start_s"],
                r["phase"],
                r["backend"],
                r["attempts"],
                r["latency_ms"],
                r["ttft_ms"],
                r["status"],
            ]
            for r in records
        ],
    }
    return result


def run(settings: dict[str, Any], progress: Progress | None = None) -> dict[str, Any]:
    cases: list[dict[str, Any]] = []
    if progress:
        progress.add(len(CASES) * len(MODES) - 1)
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as directory:
        workdir = Path(directory)
        fake: Server | None = None
        gateway = None
        try:
            fake = start_fake("openai", workdir / "fake.log", reply_tokens=REPLY_TOKENS)
            config = workdir / "gateway.yaml"
            config.write_text(gateway_config(fake.port, closed_port(), settings))
            gateway = start_gateway(config)
            for case in CASES:
                for mode in MODES:
                    label = f"{case}, {mode.replace('_', '-')}"
                    with progress.step(label) if progress else contextlib.nullcontext():
                        found = measure_case(
                            case,
                            mode,
                            gateway_url=gateway.base_url,
                            fake_url=f"http://127.0.0.1:{fake.port}",
                            settings=settings,
                        )
                    if found["primary"]:
                        found["breaker"]["state_after"] = _breaker_states(gateway.base_url).get(
                            found["primary"]
                        )
                    cases.append(found)
                    _say(found)
        finally:
            if gateway is not None:
                gateway.stop()
            if fake is not None:
                fake.stop()
    return {
        "settings": settings
        | {
            "failure_threshold": FAILURE_THRESHOLD,
            "cooldown_seconds": COOLDOWN_SECONDS,
            "reply_tokens": REPLY_TOKENS,
            "connect_timeout_s": 2,
        },
        "request_log_fields": ["start_s", "phase", "backend", "attempts", "latency_ms", "ttft_ms", "status"],
        "cases": cases,
        "requests": sum(c["requests"] for c in cases),
        "failed_requests": sum(c["failed"] for c in cases),
    }


def _say(case: dict[str, Any]) -> None:
    parts = []
    for phase, summary in case["phases"].items():
        metric = summary.get("ttft_ms", summary["latency_ms"])
        parts.append(f"{phase} {summary['requests']} p50 {metric['p50']:.1f} ms")
    say(
        f"  {case['case']:<8} {case['mode']:<13} served by secondary {case['served_by']['secondary']:>3}: "
        + ", ".join(parts)
        + (f"  FAILED {case['failed']}: {case['errors'][:1]}" if case["failed"] else "")
    )


PHASE_LABELS = {
    "baseline": "–",
    "before_open": "before the breaker opens",
    "after_open": "after it opened",
    "primary": "served by the primary",
}


def table(result: dict[str, Any]) -> str:
    rows = []
    for case in result["cases"]:
        for phase, summary in case["phases"].items():
            ttft = summary.get("ttft_ms")
            rows.append(
                [
                    case["label"],
                    "streaming" if case["mode"] == "streaming" else "non-streaming",
                    PHASE_LABELS[phase],
                    summary["requests"],
                    f"{case['served_by']['secondary']} / {case['requests']}"
                    if case["case"] != "direct"
                    else "–",
                    ms(summary["latency_ms"]["p50"], 1),
                    ms(summary["latency_ms"]["p99"], 1),
                    ms(ttft["p50"], 1) if ttft else "–",
                    ms(ttft["p99"], 1) if ttft else "–",
                ]
            )
        if case["failed"]:
            rows.append([case["label"], case["mode"], "FAILED", case["failed"], "", "", "", "", ""])
    headers = [
        "case",
        "mode",
        "phase",
        "requests",
        "served by secondary (of all)",
        "latency p50 (ms)",
        "latency p99 (ms)",
        "TTFT p50 (ms)",
        "TTFT p99 (ms)",
    ]
    settings = result["settings"]
    head = (
        f"{settings['clients']} clients × {settings['requests']} requests per case and mode; "
        f"first_byte {settings['first_byte']:g} s, failure_threshold {settings['failure_threshold']}, "
        f"slow primary: {settings['slow_latency_ms']:g} ms to first byte "
        f"+ {settings['slow_token_ms']:g} ms/token"
    )
    return head + "\n\n" + markdown_table(headers, rows, numeric_from=3)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, help=f"concurrent clients ({FULL['clients']})")
    parser.add_argument(
        "--requests", type=int, help=f"requests per client per case and mode ({FULL['requests']})"
    )
    parser.add_argument(
        "--first-byte", type=float, help=f"timeouts.chat.first_byte, seconds ({FULL['first_byte']})"
    )
    parser.add_argument("--slow-latency-ms", type=float, help="slow primary: ms before its first byte (200)")
    parser.add_argument("--slow-token-ms", type=float, help="slow primary: ms per streamed token (50)")


def run_scenario(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    settings = scenario_settings(args, QUICK, FULL)
    if settings["slow_latency_ms"] / 1000 >= settings["first_byte"]:
        raise SystemExit("--slow-latency-ms must stay under --first-byte (a slow primary is not a dead one)")
    return run(settings, progress)
