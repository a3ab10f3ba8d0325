"""Cloud: round-trip latency and time to first token to each cloud provider the gateway has a backend
type for (OpenAI, Anthropic, Gemini, Azure OpenAI, Amazon Bedrock, Google Cloud Vertex AI), directly and
through the gateway, so the difference is what the gateway adds to a cloud call.

    gateway bench cloud [--requests 10] [--simulate] [--openai-model M] [--anthropic-model M] ...

With a provider's credentials in the environment (`OPENAI_API_KEY`, `ANTHROPIC_API_KEY`,
`GEMINI_API_KEY`, `AZURE_OPENAI_API_KEY` with `AZURE_OPENAI_RESOURCE`, `AWS_ACCESS_KEY_ID` with
`AWS_SECRET_ACCESS_KEY`, `GOOGLE_APPLICATION_CREDENTIALS` with `GOOGLE_CLOUD_PROJECT` and
`GOOGLE_CLOUD_LOCATION`), its real API is called (cheap models, `max_tokens` 16, `--requests` per mode
and way: a few cents at most). A provider without them is *simulated*: the project's fake server for
it, started with realistic cloud latency (`--sim-latency-ms` 300 before the first byte,
`--sim-token-ms` 20 per streamed token), and every row and JSON entry of it says `simulated`.
`--simulate` simulates every provider even with credentials.

The gateway (`gateway serve`, default config otherwise) has one backend of each type (real URLs, or
the fakes'). OpenAI is called on `/v1/chat/completions` and Anthropic on `/v1/messages` (the same
protocol both ways, so the gateway relays the bytes); Gemini, Azure OpenAI, Bedrock and Vertex AI are
called in their own protocol directly and through the gateway's `/v1/chat/completions` (which
translates, so the translation is part of what the gateway adds). Vertex AI's direct calls carry a
bearer token from the same credentials the gateway uses, fetched once with google-auth as the gateway
does (the gateway fetches its own during its warm-up request: neither is measured). Requests alternate
between direct and gateway, one at a time, each way on its own keep-alive connection, after one warm-up
request each (TLS and connection set-up are not measured).
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
from urllib.parse import quote

from gateway.bench.harness.client import new_record, record_one, summarize_records
from gateway.bench.harness.progress import Progress, say
from gateway.bench.harness.results import markdown_table, ms
from gateway.bench.harness.servers import Server, start_fake

from gateway.testing.fake_azure_openai import AZURE_API_VERSION
from gateway.testing.fake_bedrock import TEST_CREDENTIALS, TEST_REGION
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
    "gemini": {
        "label": "Gemini",
        "key_env": "GEMINI_API_KEY",
        "base_url": "https://generativelanguage.googleapis.com",
        "path": "/v1/chat/completions",
        "public_model": "gemini-flash-lite",
        "default_model": "gemini-2.5-flash-lite",
    },
    "azure_openai": {
        "label": "Azure OpenAI",
        "key_env": "AZURE_OPENAI_API_KEY",
        "also_env": ("AZURE_OPENAI_RESOURCE",),
        "base_url": "https://{AZURE_OPENAI_RESOURCE}.openai.azure.com",
        "path": "/v1/chat/completions",
        "public_model": "azure-mini",
        "default_model": "gpt-4o-mini",  # the deployment's name
    },
    "bedrock": {
        "label": "Amazon Bedrock",
        "key_env": "AWS_ACCESS_KEY_ID",
        "also_env": ("AWS_SECRET_ACCESS_KEY",),
        "base_url": "https://bedrock-runtime.{AWS_REGION}.amazonaws.com",
        "path": "/v1/chat/completions",
        "public_model": "bedrock-haiku",
        "default_model": "us.anthropic.claude-3-5-haiku-20241022-v1:0",
    },
    "vertex": {  # a Gemini model, or Claude with a `claude-` model name (`--vertex-model`)
        "label": "Vertex AI",
        "key_env": "GOOGLE_APPLICATION_CREDENTIALS",  # a credentials file (a path, not a secret)
        "also_env": ("GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_LOCATION"),
        "base_url": "https://{GOOGLE_CLOUD_LOCATION}-aiplatform.googleapis.com",
        "path": "/v1/chat/completions",
        "public_model": "vertex-flash",
        "default_model": "gemini-2.5-flash",
    },
}
PROMPT = "Say hello in a few words."
MODES = ("non_streaming", "streaming")
MAX_TOKENS = 16
FULL = {"requests": 10, "sim_latency_ms": 300.0, "sim_token_ms": 20.0}
QUICK = {"requests": 3, "sim_latency_ms": 30.0, "sim_token_ms": 2.0}
SIM_KEY_ENV = "BENCH_SIMULATED_KEY"
#: The simulated Vertex AI's project and region (any will do: the fake takes them from the path).
SIM_VERTEX = {"project": "bench-project", "region": "us-central1"}


def _body(provider: str, model: str, stream: bool) -> bytes:
    """An OpenAI or Anthropic request (what the gateway is sent, and OpenAI and Anthropic directly)."""
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": PROMPT}],
    }
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def _direct(provider: str, target: dict[str, Any], stream: bool) -> tuple[str, bytes, dict[str, str]]:
    """The URL, body and headers of a request to the provider itself, in its own protocol."""
    base, key, model = target["base_url"], target["key"], target["model"]
    if provider == "openai":  # the base URL ends in /v1; the path repeats it
        return (
            base.removesuffix("/v1") + PROVIDERS[provider]["path"],
            _body(provider, model, stream),
            {"authorization": f"Bearer {key}"},
        )
    if provider == "anthropic":
        headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
        return base + PROVIDERS[provider]["path"], _body(provider, model, stream), headers
    if provider == "azure_openai":
        deployment = quote(model, safe="")
        url = f"{base}/openai/deployments/{deployment}/chat/completions?api-version={AZURE_API_VERSION}"
        return url, _body(provider, model, stream), {"api-key": key}
    if provider == "gemini":
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"{base}/v1beta/models/{model}:{method}", _gemini_body(), {"x-goog-api-key": key}
    if provider == "vertex":
        return _vertex_direct(target, stream)
    # bedrock: Converse, signed with SigV4 (a signature holds for minutes: one per mode is enough)
    from botocore.credentials import ReadOnlyCredentials

    from gateway.backends.aws_signing import sign_request

    url = f"{base}/model/{quote(model, safe='')}/{'converse-stream' if stream else 'converse'}"
    body = {
        "messages": [{"role": "user", "content": [{"text": PROMPT}]}],
        "inferenceConfig": {"maxTokens": MAX_TOKENS},
    }
    data = json.dumps(body).encode()
    credentials = ReadOnlyCredentials(key, target["secret"], target.get("token"))
    signed = sign_request(
        credentials, target["region"], "POST", url, data, [("content-type", "application/json")]
    )
    return url, data, {k: v for k, v in signed.headers.items() if k.lower() != "content-type"}


def _gemini_body() -> bytes:
    body = {
        "contents": [{"role": "user", "parts": [{"text": PROMPT}]}],
        "generationConfig": {"maxOutputTokens": MAX_TOKENS},
    }
    return json.dumps(body).encode()


def _vertex_direct(target: dict[str, Any], stream: bool) -> tuple[str, bytes, dict[str, str]]:
    """Vertex AI: Gemini's `generateContent`, or Claude's `rawPredict` (the Messages API body, less
    `model`, with Vertex's `anthropic_version`), with the bearer token."""
    from gateway.backends.vertex import ANTHROPIC_VERSION, publisher_of

    model = target["model"]
    publisher = publisher_of(model)
    path = (
        f"/v1/projects/{target['project']}/locations/{target['region']}"
        f"/publishers/{publisher}/models/{quote(model, safe='@.-_')}"
    )
    headers = {"authorization": f"Bearer {target['key']}"}
    if publisher == "google":
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"{target['base_url']}{path}:{method}", _gemini_body(), headers
    body: dict[str, Any] = {
        "anthropic_version": ANTHROPIC_VERSION,
        "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": PROMPT}],
    }
    if stream:
        body["stream"] = True
    method = "streamRawPredict" if stream else "rawPredict"
    return f"{target['base_url']}{path}:{method}", json.dumps(body).encode(), headers


def _google_token(credentials_file: str) -> str:
    """An access token for the credentials in `credentials_file`, as the gateway gets one (google-auth,
    the cloud-platform scope): what the direct Vertex AI calls carry."""
    import google.auth
    from google.auth.transport.requests import Request

    from gateway.backends.google_credentials import SCOPE

    credentials, _ = google.auth.load_credentials_from_file(credentials_file, scopes=[SCOPE])
    credentials.refresh(Request())
    return str(credentials.token)


def _gateway_body(provider: str, stream: bool) -> bytes:
    return _body(provider, PROVIDERS[provider]["public_model"], stream)


def _backend_yaml(provider: str, target: dict[str, Any]) -> str:
    key_env = SIM_KEY_ENV if target["simulated"] else PROVIDERS[provider]["key_env"]
    fields = f'type: {provider}, base_url: "{target["base_url"]}"'
    if provider == "bedrock":  # credentials from the AWS chain (the environment)
        return f"{{{fields}, region: {target['region']}}}"
    if provider == "vertex":  # Google's Application Default Credentials (the environment)
        return f'{{{fields}, project: "{target["project"]}", region: "{target["region"]}"}}'
    if provider == "azure_openai":
        fields += f', api_version: "{AZURE_API_VERSION}"'
    return f'{{{fields}, api_key: "${{{key_env}}}"}}'


def _credentials_from(provider: str) -> str:
    info = PROVIDERS[provider]
    if provider == "vertex":
        return (
            "credentials from GOOGLE_APPLICATION_CREDENTIALS, project GOOGLE_CLOUD_PROJECT, "
            "region GOOGLE_CLOUD_LOCATION"
        )
    return f"key from {info['key_env']}"


def gateway_config(targets: dict[str, dict[str, Any]]) -> str:
    lines = ["backends:"]
    for provider, target in targets.items():
        lines.append(f"  {provider}: {_backend_yaml(provider, target)}")
    lines.append("models:")
    for provider, target in targets.items():
        public = PROVIDERS[provider]["public_model"]
        lines.append(f'  {public}: {{chain: [{{backend: {provider}, model: "{target["model"]}"}}]}}')
    lines += ["timeouts:", "  chat: {total: 120, first_byte: 60}", "reload: {watch: false}", ""]
    return "\n".join(lines)


async def _interleaved(
    ways: dict[str, tuple[str, bytes, dict[str, str]]], stream: bool, requests: int
) -> dict[str, list[dict[str, Any]]]:
    """`requests` per way, alternating the ways' order each round; one warm-up request each first."""
    import aiohttp
    import yarl

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
                    yarl.URL(url, encoded=True),  # sent as signed: Bedrock's %3A stays encoded
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
            gateway_env = {SIM_KEY_ENV: "simulated"}
            for provider, info in PROVIDERS.items():
                key = os.environ.get(info["key_env"], "")
                model = settings[f"{provider}_model"]
                live = all(os.environ.get(name) for name in (info["key_env"], *info.get("also_env", ())))
                if live and not settings["simulate"]:
                    region = (
                        os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
                    )
                    base = info["base_url"].format_map({**os.environ, "AWS_REGION": region})
                    targets[provider] = {"simulated": False, "base_url": base, "key": key, "model": model}
                    if provider == "vertex":
                        location = os.environ["GOOGLE_CLOUD_LOCATION"]
                        if location == "global":  # the global endpoint has no region in its host
                            targets[provider]["base_url"] = "https://aiplatform.googleapis.com"
                        targets[provider] |= {
                            "key": _google_token(key),
                            "project": os.environ["GOOGLE_CLOUD_PROJECT"],
                            "region": location,
                        }
                    if provider == "bedrock":
                        targets[provider] |= {
                            "secret": os.environ["AWS_SECRET_ACCESS_KEY"],
                            "token": os.environ.get("AWS_SESSION_TOKEN"),
                            "region": region,
                        }
                    continue
                account = workdir / "google" / "service-account.json" if provider == "vertex" else None
                if account is not None:
                    account.parent.mkdir()
                fake = fakes[provider] = start_fake(
                    provider,
                    workdir / f"fake-{provider}.log",
                    reply_tokens=MAX_TOKENS,
                    latency_ms=settings["sim_latency_ms"],
                    token_delay_ms=settings["sim_token_ms"],
                    name=f"fake-{provider}",
                    service_account=account,
                )
                base = f"http://127.0.0.1:{fake.port}" + ("/v1" if provider == "openai" else "")
                targets[provider] = {"simulated": True, "base_url": base, "key": "simulated", "model": model}
                if provider == "bedrock":  # the fake's test keys, through the AWS chain of the gateway
                    targets[provider] |= {"key": TEST_CREDENTIALS[0], "secret": TEST_CREDENTIALS[1]}
                    targets[provider]["region"] = TEST_REGION
                    gateway_env |= {
                        "AWS_ACCESS_KEY_ID": TEST_CREDENTIALS[0],
                        "AWS_SECRET_ACCESS_KEY": TEST_CREDENTIALS[1],
                        "AWS_SESSION_TOKEN": "",
                        "AWS_EC2_METADATA_DISABLED": "true",
                    }
                if account is not None:  # the fake's service account, and nothing else of Google's
                    targets[provider] |= {"key": _google_token(str(account)), **SIM_VERTEX}
                    gateway_env |= {
                        "GOOGLE_APPLICATION_CREDENTIALS": str(account),
                        "CLOUDSDK_CONFIG": str(account.parent / "gcloud"),
                        "NO_GCE_CHECK": "True",
                    }
            config = workdir / "gateway.yaml"
            config.write_text(gateway_config(targets))
            gateway = start_gateway(config, env=gateway_env)
            for provider, target in targets.items():
                info = PROVIDERS[provider]
                entry: dict[str, Any] = {
                    "provider": provider,
                    "simulated": target["simulated"],
                    "source": (
                        f"simulated: the fake {info['label']} server, {settings['sim_latency_ms']:g} ms "
                        f"to the first byte, {settings['sim_token_ms']:g} ms per streamed token"
                        if target["simulated"]
                        else f"live: {target['base_url']} ({_credentials_from(provider)})"
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
                            "direct": _direct(provider, target, stream),
                            "gateway": (gateway.base_url + info["path"], _gateway_body(provider, stream), {}),
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
            "providers: they show what the gateway adds, not what the providers take."
        )
    return markdown_table(headers, rows, numeric_from=3) + note


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--requests", type=int, help=f"requests per provider, mode and way ({FULL['requests']})"
    )
    parser.add_argument("--simulate", action="store_true", help="use the fake servers even when keys are set")
    parser.add_argument("--openai-model", default=PROVIDERS["openai"]["default_model"])
    parser.add_argument("--anthropic-model", default=PROVIDERS["anthropic"]["default_model"])
    parser.add_argument("--gemini-model", default=PROVIDERS["gemini"]["default_model"])
    parser.add_argument(
        "--azure-deployment", dest="azure_openai_model", default=PROVIDERS["azure_openai"]["default_model"]
    )
    parser.add_argument("--bedrock-model", default=PROVIDERS["bedrock"]["default_model"])
    parser.add_argument(
        "--vertex-model",
        default=PROVIDERS["vertex"]["default_model"],
        help="a Gemini model, or a Claude model (claude-...@version) on Vertex AI",
    )
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
        "gemini_model": args.gemini_model,
        "azure_openai_model": args.azure_openai_model,
        "bedrock_model": args.bedrock_model,
        "vertex_model": args.vertex_model,
    }
    return run(settings, progress)
