"""Limits across reloads of a live config: the counters stay while `limits` is unchanged (and a key's
changed limits apply to them at once); a new `limits` section brings a new store, and the old one is
closed once its last request has finished."""

from __future__ import annotations

from pathlib import Path

from gateway.errors import LimitExceeded
from gateway.limits import ManualClock
from gateway.runtime.live import LiveRuntime

CONFIG = """
auth:
  default_limits: {requests_per_minute: %d}
backends:
  a: {type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
models:
  m: {chain: [{backend: a}]}
"""


async def test_counters_survive_a_reload_and_a_new_store_replaces_the_old(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG % 5)
    live = LiveRuntime(path, env={}, clock=ManualClock())
    first = await live.start()
    rules = first.limits.keys["anonymous"]
    for _ in range(3):
        await first.limits.admit(rules, 0, 30)

    path.write_text(CONFIG % 3)  # the limit lowered below what was already counted
    assert (await live.reload("test")).outcome == "applied"
    second = live.current
    assert second is not None and second.limits.store is first.limits.store
    try:
        await second.limits.admit(second.limits.keys["anonymous"], 0, 30)
        raise AssertionError("admitted past the new limit")
    except LimitExceeded as refused:
        assert refused.limit == "requests_per_minute"

    with second.lease():  # a request still running on the old Runtime holds its store open
        path.write_text(CONFIG % 3 + "limits: {key_prefix: 'other:'}\n")
        assert (await live.reload("test")).outcome == "applied"
        third = live.current
        assert third is not None and third.limits.store is not second.limits.store
        assert second.limits.store._subjects  # type: ignore[attr-defined]  # still open
        # The new store counts from zero.
        assert await third.limits.admit(third.limits.keys["anonymous"], 0, 30) is not None
    for task in list(live._retiring):
        await task
    assert not second.limits.store._subjects  # type: ignore[attr-defined]  # closed
    await live.close()
