"""The baseline servers of the overhead scenario, each run in its own process:

    python -m gateway.bench.baselines trivial|proxy --upstream URL

`trivial`: Hypercorn alone, answering a fixed chat completion: what the server itself costs.
`proxy`: Hypercorn + one aiohttp session relaying to the upstream, no gateway logic: the least a
Hypercorn + aiohttp gateway must do. Both print `listening on http://127.0.0.1:PORT`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

__all__ = ["main"]

MODEL = "gpt-4o-mini"

_FIXED_REPLY = json.dumps(
    {
        "id": "chatcmpl-0123456789abcdef01234567",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "across ancient hills where old stories wait for curious travellers "
                    "to find hidden paths toward warm",
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 6, "completion_tokens": 16, "total_tokens": 22},
    },
    separators=(",", ":"),
).encode()


def _baseline_app(kind: str, upstream: str) -> Any:
    """`trivial`: read the body, answer a fixed chat completion. `proxy`: POST the body to `upstream`
    with one aiohttp session and relay the answer: the least a Hypercorn + aiohttp gateway must do."""
    import aiohttp

    state: dict[str, Any] = {}

    async def read_body(receive: Any) -> bytes:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    if kind == "proxy":
                        state["session"] = aiohttp.ClientSession(
                            connector=aiohttp.TCPConnector(limit=100),
                            timeout=aiohttp.ClientTimeout(total=None),
                        )
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if "session" in state:
                        await state["session"].close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = await read_body(receive)
        status, content_type, reply = 200, b"application/json", _FIXED_REPLY
        if kind == "proxy":
            async with state["session"].post(
                upstream + scope["path"], data=body, headers={"content-type": "application/json"}
            ) as response:
                reply = await response.read()
                status = response.status
                content_type = response.headers.get("content-type", "application/json").encode()
        headers = [(b"content-type", content_type), (b"content-length", str(len(reply)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": reply})

    return app


def serve(kind: str, upstream: str) -> int:
    """Serve a baseline app with Hypercorn as `gateway serve` runs it (one worker, no access log)."""
    from hypercorn.asyncio.run import worker_serve
    from hypercorn.config import Config
    from hypercorn.utils import wrap_app

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    config.keep_alive_timeout = 75
    sockets = config.create_sockets()
    port = sockets.insecure_sockets[0].getsockname()[1]

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.call_soon(lambda: print(f"listening on http://127.0.0.1:{port}", flush=True))
        app = wrap_app(_baseline_app(kind, upstream), 0, "asgi")
        await worker_serve(app, config, sockets=sockets, shutdown_trigger=stop.wait)

    asyncio.run(main())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.bench.baselines", description=__doc__.splitlines()[0]
    )
    parser.add_argument("kind", choices=["trivial", "proxy"])
    parser.add_argument("--upstream", default="", help="the fake server's URL (proxy)")
    args = parser.parse_args(argv)
    return serve(args.kind, args.upstream)


if __name__ == "__main__":
    sys.exit(main())
