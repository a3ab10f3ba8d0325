"""AuditService across reloads: a change of `audit.database_url` hands records to the new writer
without a gap, and what was spilled for one database is replayed into that one."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.audit.service import AuditService

from .conftest import audit_config, make_entries, uid_counts, wait_for


async def test_records_spilled_for_a_database_are_replayed_into_that_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, service: AuditService
) -> None:
    blocker = tmp_path / "later"  # a file where a directory should be: database `first` cannot open
    blocker.write_text("not a directory")
    first = f"sqlite://{blocker / 'first.sqlite3'}"
    second = f"sqlite://{tmp_path / 'second.sqlite3'}"
    entries = make_entries(50)
    caplog.set_level(logging.WARNING, logger="gateway.audit")
    await service.apply(audit_config(tmp_path, first))
    assert service.writer is not None
    for entry in entries[:30]:
        service.writer.record(entry)
    await service.apply(audit_config(tmp_path, second))  # the first writer stops: its records spill
    assert service.writer is not None
    for entry in entries[30:]:
        service.writer.record(entry)
    await wait_for(lambda: service.writer is not None and service.writer.written == 20)
    await service.apply(audit_config(tmp_path, second, flush_interval_ms=21))  # the second again
    await wait_for(lambda: service.writer is not None and service.writer.db_up)
    assert await uid_counts(second) == {entry.uid: 1 for entry in entries[30:]}
    # Each writer of the second database says what waits for the first.
    waiting = [r for r in caplog.records if getattr(r, "event", None) == "audit_spill_elsewhere"]
    assert waiting and "wait for another audit database" in waiting[-1].getMessage()

    blocker.unlink()
    blocker.mkdir()
    await service.apply(audit_config(tmp_path, first))
    await wait_for(lambda: service.writer is not None and service.writer.replayed == 30)
    await wait_for(lambda: service.stats()["spill_bytes"] == 0)  # the replayed file is deleted
    stats = service.stats()  # the counters of every writer so far, not only the current one's
    assert (stats["recorded"], stats["written"], stats["spilled"], stats["replayed"]) == (50, 20, 30, 30)
    assert stats["lost"] == 0 and stats["spill_bytes"] == 0 and stats["db_up"] is True
    await service.close()
    assert await uid_counts(first) == {entry.uid: 1 for entry in entries[:30]}
    assert await uid_counts(second) == {entry.uid: 1 for entry in entries[30:]}
    assert not list((tmp_path / "spill").iterdir())


async def test_stats_say_the_retention_and_when_its_last_purge_ran(
    tmp_path: Path, service: AuditService
) -> None:
    url = f"sqlite://{tmp_path / 'audit.sqlite3'}"
    await service.apply(audit_config(tmp_path, url))
    # Retention purges once at start, then daily.
    await wait_for(lambda: service.stats()["last_purge"] is not None)
    stats = service.stats()
    assert stats["retention_days"] == service.config.retention_days  # type: ignore[union-attr]
    assert stats["last_purge"]["deleted"] == 0 and stats["last_purge"]["at"].endswith("+00:00")
