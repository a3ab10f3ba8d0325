"""The py-spy summary of `gateway bench overhead --profile`: which samples are the event loop's and
where their time went, read from a raw (collapsed) file as py-spy writes it."""

from __future__ import annotations

from pathlib import Path

from gateway.bench.harness.profiling import summarize_profile

MAIN = "_run_module_as_main (<frozen runpy>:198);main (gateway/cli.py:347)"
UVLOOP = f"{MAIN};Runner.run (asyncio/runners.py:118)"
ASYNCIO = (
    f"{UVLOOP};BaseEventLoop.run_until_complete (asyncio/base_events.py:640)"
    ";BaseEventLoop.run_forever (asyncio/base_events.py:607)"
)
HELPER = "Thread._bootstrap (threading.py:995);_connection_worker_thread (aiosqlite/core.py:63)"


def test_samples_under_uvloop_and_under_asyncio_are_the_loops_and_a_helper_thread_is_not(
    tmp_path: Path,
) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text(
        f"{UVLOOP};H11Protocol.handle (hypercorn/protocol/h11.py:116) 6\n"
        f"{UVLOOP};ModelAPI._serve (gateway/surfaces/model_api.py:370) 2\n"
        f"{UVLOOP};HTTP1._received (gateway/http1.py:260) 1\n"
        f"{ASYNCIO};ClientSession._request (aiohttp/client.py:700) 1\n"
        f"{HELPER} 50\n"
        "H11Protocol._handle_events (hypercorn/protocol/h11.py:178) 7\n"  # a partial stack: no root
    )
    summary = summarize_profile(raw)
    assert summary["samples"] == 10
    shares = {c["name"]: c["samples"] for c in summary["categories"]}
    assert shares == {
        "HTTP server (llhttp, Hypercorn, connections)": 7,
        "our ASGI handler": 2,
        "aiohttp client": 1,
    }
