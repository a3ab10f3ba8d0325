"""A worker hearing another worker's canary rollback, without a server: through the shared directory's
note, or through the decider's write-back reloaded here before the note arrived (either way the
worker says so once, and a changed canary is left alone)."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from gateway.runtime.canary import CanaryRollbacks, fingerprint
from gateway.runtime.live import LiveRuntime

CONFIG = """\
backends:
  stable: {type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}   # never called
  fresh: {type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
models:
  chat:
    chain: [{backend: stable}]
    canary: {target: {backend: fresh, model: chat-2}, weight: WEIGHT, rollback: {error_rate: 0.05, min_requests: 10}}
"""  # noqa: E501


async def started(tmp_path: Path, weight: int) -> LiveRuntime:
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG.replace("WEIGHT", str(weight)))
    live = LiveRuntime(path, env={})
    await live.start()
    return live


@pytest.fixture
async def judged(tmp_path: Path) -> AsyncIterator[LiveRuntime]:
    """The canary as every worker had it when one of them judged it: weight 50."""
    (tmp_path / "judged").mkdir()
    live = await started(tmp_path / "judged", 50)
    yield live
    await live.close()


def note(shared: Path, live: LiveRuntime, *, weight: float = 50.0, pid: int | None = None) -> dict:
    """The note another worker leaves when it rolls the canary back."""
    canary = live.current.routes["chat"].canary
    assert canary is not None
    entry = {
        "id": "4242-1",
        "model": "chat",
        "at": "2026-12-03T10:00:00+00:00",
        "rule": "error_rate",
        "reason": "error rate 20.0% against 0.0% (allowed: 5.0% more)",
        "canary": {"requests": 10, "errors": 2, "error_rate": 0.2, "p95_ms": 5.0},
        "stable": {"requests": 10, "errors": 0, "error_rate": 0.0, "p95_ms": 5.0},
        "weight": weight,
        "fingerprint": fingerprint("chat", canary.config),
        "target": {"backend": "fresh", "model": "chat-2"},
        "decided_by": os.getpid() + 1 if pid is None else pid,
        "written": None,
        "patch": None,
        "error": None,
    }
    shared.mkdir(exist_ok=True)
    (shared / "canary-rollback-4242-1.json").write_bytes(orjson.dumps(entry))
    return entry


def heard(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == "canary_rolled_back_by_peer"]


async def test_a_peers_note_rolls_the_canary_back_here_once(
    judged: LiveRuntime, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    counted: list[tuple[str, str]] = []
    rollbacks = CanaryRollbacks(judged, lambda model, rule: counted.append((model, rule)), tmp_path / "w")
    note(tmp_path / "w", judged)
    canary = judged.current.routes["chat"].canary
    assert canary is not None and canary.weight == 50
    with caplog.at_level(logging.INFO, logger="gateway.routing"):
        await rollbacks.hear()
        await rollbacks.hear()  # the same note again (the decider rewrites it): nothing new
    assert canary.weight == 0 and canary.rolled_back is not None
    assert canary.rolled_back.rule == "error_rate"
    assert [(r.model, r.via) for r in heard(caplog)] == [("chat", "peer")]
    assert counted == [("chat", "peer")]
    assert [e["id"] for e in rollbacks.history] == ["4242-1"]


async def test_the_write_back_reloaded_before_the_note_counts_as_heard(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "before").mkdir()
    before = await started(tmp_path / "before", 50)
    (tmp_path / "after").mkdir()
    after = await started(tmp_path / "after", 0)  # the file as the decider wrote it
    try:
        rollbacks = CanaryRollbacks(after, None, tmp_path / "w")
        note(tmp_path / "w", before)
        with caplog.at_level(logging.INFO, logger="gateway.routing"):
            await rollbacks.hear()
        assert [(r.model, r.via) for r in heard(caplog)] == [("chat", "config")]
        canary = after.current.routes["chat"].canary
        assert canary is not None and canary.weight == 0
    finally:
        await before.close()
        await after.close()


async def test_a_changed_canary_is_not_the_one_judged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "before").mkdir()
    before = await started(tmp_path / "before", 50)
    (tmp_path / "now").mkdir()
    now = await started(tmp_path / "now", 30)  # a person set a new weight meanwhile: a new canary
    try:
        rollbacks = CanaryRollbacks(now, None, tmp_path / "w")
        note(tmp_path / "w", before)
        with caplog.at_level(logging.INFO, logger="gateway.routing"):
            await rollbacks.hear()
        canary = now.current.routes["chat"].canary
        assert canary is not None and canary.weight == 30 and canary.rolled_back is None
        assert heard(caplog) == []
    finally:
        await before.close()
        await now.close()


async def test_a_workers_own_note_is_not_heard_again(judged: LiveRuntime, tmp_path: Path) -> None:
    rollbacks = CanaryRollbacks(judged, None, tmp_path / "w")
    note(tmp_path / "w", judged, pid=os.getpid())
    await rollbacks.hear()
    canary = judged.current.routes["chat"].canary
    assert canary is not None and canary.rolled_back is None
