"""CLI: run a fake provider in its own process (for benchmarks), until SIGTERM or SIGINT.

    python -m gateway.testing openai|anthropic|gemini|azure_openai|bedrock|vertex --host 127.0.0.1 \
        --port 0 [--latency-ms X ...] [--service-account PATH]

Prints `listening on http://HOST:PORT` (the real port when 0 was asked) once it accepts connections.
The fake Vertex AI accepts only the access tokens it issued to its own service accounts:
`--service-account PATH` writes one (a JSON file for GOOGLE_APPLICATION_CREDENTIALS whose token_uri is
this process) before that line is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from gateway.testing.behaviour import Behaviour, FakeServer
from gateway.testing.fake_anthropic import FakeAnthropic
from gateway.testing.fake_azure_openai import FakeAzureOpenAI
from gateway.testing.fake_bedrock import FakeBedrock
from gateway.testing.fake_gemini import FakeGemini
from gateway.testing.fake_openai import FakeOpenAI
from gateway.testing.fake_vertex import FakeVertex

FAKES: dict[str, type[FakeServer]] = {
    "openai": FakeOpenAI,
    "anthropic": FakeAnthropic,
    "gemini": FakeGemini,
    "azure_openai": FakeAzureOpenAI,
    "bedrock": FakeBedrock,
    "vertex": FakeVertex,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m gateway.testing",
        description="Run a fake OpenAI, Anthropic, Gemini, Azure, Bedrock or Vertex AI server.",
    )
    p.add_argument("provider", choices=sorted(FAKES))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--latency-ms", type=float, default=0.0, help="delay before the response headers")
    p.add_argument("--token-delay-ms", type=float, default=0.0, help="delay before each streamed token")
    p.add_argument("--reply-tokens", type=int, default=16, help="words in a generated reply")
    p.add_argument("--status", type=int, default=None, help="fail every request with this HTTP status")
    p.add_argument("--fail-first-n", type=int, default=0, help="fail only the first N requests")
    p.add_argument("--hang", action="store_true", help="accept requests and never answer")
    p.add_argument("--drop-after-chunks", type=int, default=None, help="cut streams after N SSE frames")
    p.add_argument("--malformed", action="store_true", help="answer 200 with a broken body")
    p.add_argument("--api-key", default=None, help="require this API key")
    p.add_argument(
        "--service-account",
        type=Path,
        default=None,
        help="vertex: write a service-account JSON file whose tokens this fake accepts",
    )
    args = p.parse_args(argv)
    if args.service_account is not None and args.provider != "vertex":
        p.error("--service-account is for the vertex fake only")
    return args


async def serve(args: argparse.Namespace) -> None:
    fields = vars(args).copy()
    provider, host, port = fields.pop("provider"), fields.pop("host"), fields.pop("port")
    service_account = fields.pop("service_account")
    server = FAKES[provider](Behaviour(**fields), host=host, port=port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        if isinstance(server, FakeVertex) and service_account is not None:
            server.service_account(service_account)
        print(f"listening on {server.url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        asyncio.run(serve(args))
    except ValueError as exc:  # a bad behaviour value
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
