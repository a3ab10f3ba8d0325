"""AuditService below the e2e layer, in process on SQLite files in tmp_path: the request path's
`record`, apply/close across settings (same settings: a no-op; off: no writer), the reading store's
503s, stats summed across writers, the live tail's subscriptions, and the URL redaction in its logs."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.audit import service as service_module
from gateway.audit.query import LogFilter
from gateway.audit.service import SUBSCRIBER_QUEUE, AuditService, LiveSubscription, _redacted
from gateway.errors import ServiceUnavailable

from .conftest import audit_config, make_trail, wait_for


@pytest.fixture
async def service() -> AsyncIterator[AuditService]:
    audit = AuditService()
    yield audit
    await audit.close()  # the writer stops in the fixture, also after a failed assert


def url(tmp_path: Path, name: str = "audit") -> str:
    return f"sqlite://{tmp_path / f'{name}.sqlite3'}"


async def test_before_apply_nothing_is_recorded_and_the_store_is_off(service: AuditService) -> None:
    assert not service.active
    service.record(make_trail())  # no writer: dropped, no error
    assert service.stats() == {"enabled": False}
    with pytest.raises(ServiceUnavailable) as refused:
        await service.store()
    assert "audit.enabled is false" in refused.value.detail


async def test_records_reach_the_database(service: AuditService, tmp_path: Path) -> None:
    await service.apply(audit_config(tmp_path, url(tmp_path)))
    assert service.active
    for i in range(3):
        service.record(make_trail(i))
    await wait_for(lambda: service.stats()["written"] == 3)
    store = await service.store()
    assert store.dialect == "sqlite"
    assert await service.store() is store  # opened once
    stats = service.stats()
    assert (stats["enabled"], stats["recorded"], stats["retention_days"]) == (True, 3, 30)


async def test_applying_the_same_settings_keeps_the_writer(service: AuditService, tmp_path: Path) -> None:
    config = audit_config(tmp_path, url(tmp_path))
    await service.apply(config)
    writer = service.writer
    await service.apply(dataclasses.replace(config))
    assert service.writer is writer


async def test_turning_the_log_off_stops_the_writer(service: AuditService, tmp_path: Path) -> None:
    config = audit_config(tmp_path, url(tmp_path))
    await service.apply(config)
    service.record(make_trail())
    await service.apply(dataclasses.replace(config, enabled=False))
    assert service.writer is None and not service.active
    assert service.stats() == {"enabled": False}
    with pytest.raises(ServiceUnavailable):
        await service.store()


async def test_counters_add_up_across_a_reload(service: AuditService, tmp_path: Path) -> None:
    await service.apply(audit_config(tmp_path, url(tmp_path)))
    for i in range(4):
        service.record(make_trail(i))
    await service.apply(audit_config(tmp_path, url(tmp_path), flush_interval_ms=30))  # a new writer
    service.record(make_trail(9))
    await wait_for(lambda: service.stats()["written"] == 5)
    assert service.stats()["recorded"] == 5


async def test_a_new_database_forgets_the_last_purge(service: AuditService, tmp_path: Path) -> None:
    await service.apply(audit_config(tmp_path, url(tmp_path)))
    service.last_purge = {"at": "2026-01-01T00:00:00+00:00", "deleted": 3}
    await service.apply(audit_config(tmp_path, url(tmp_path), flush_interval_ms=30))
    assert service.last_purge == {"at": "2026-01-01T00:00:00+00:00", "deleted": 3}  # same database
    await service.apply(audit_config(tmp_path, url(tmp_path, "other")))
    assert service.last_purge is None


async def test_an_unreachable_reader_is_503_and_not_retried_at_once(
    service: AuditService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")
    await service.apply(audit_config(tmp_path, f"sqlite://{blocker / 'audit.sqlite3'}"))
    assert service.writer is not None and service.writer.store is None
    now = [100.0]
    monkeypatch.setattr(service_module.time, "monotonic", lambda: now[0])
    with pytest.raises(ServiceUnavailable) as refused:
        await service.store()
    assert "records are buffered" in refused.value.detail
    with pytest.raises(ServiceUnavailable) as again:
        await service.store()
    assert "try again shortly" in again.value.detail  # remembered for REOPEN_AFTER_S
    now[0] += service_module.REOPEN_AFTER_S
    with pytest.raises(ServiceUnavailable) as retried:
        await service.store()
    assert "records are buffered" in retried.value.detail  # tried again


def test_a_subscription_takes_what_matches_and_drops_the_oldest_when_full() -> None:
    closed: list[LiveSubscription] = []
    subscription = LiveSubscription(LogFilter(model="chat"), closed.append)
    subscription.offer({"model": "other", "id": 0})
    assert subscription.queue.empty()
    for i in range(SUBSCRIBER_QUEUE + 2):
        subscription.offer({"model": "chat", "id": i})
    assert subscription.dropped == 2
    assert subscription.queue.get_nowait()["id"] == 2  # type: ignore[index]
    subscription.end()
    items = [subscription.queue.get_nowait() for _ in range(subscription.queue.qsize())]
    assert items[-1] is None
    subscription.close()
    assert closed == [subscription]


def test_end_on_a_full_queue_still_ends() -> None:
    subscription = LiveSubscription(LogFilter(), lambda _: None)
    for i in range(SUBSCRIBER_QUEUE):
        subscription.offer({"id": i})
    subscription.end()
    assert subscription.queue.qsize() == SUBSCRIBER_QUEUE
    items = [subscription.queue.get_nowait() for _ in range(SUBSCRIBER_QUEUE)]
    assert items[0] == {"id": 1} and items[-1] is None


async def test_the_live_tail_hands_new_records_to_subscribers(service: AuditService, tmp_path: Path) -> None:
    await service.apply(audit_config(tmp_path, url(tmp_path)))
    await wait_for(lambda: service.writer is not None and service.writer.store is not None)
    subscription = service.subscribe(LogFilter())
    service.record(make_trail(7))
    record = await subscription.queue.get()
    assert record is not None and record["request_id"] == make_trail(7).request_id
    subscription.close()
    service.end_live()
    late = service.subscribe(LogFilter())
    assert late.queue.get_nowait() is None  # shutting down: a new tail ends at once


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("sqlite:///var/audit.sqlite3", "sqlite:///var/audit.sqlite3"),
        ("postgres://gw:secret@db:5432/audit", "postgres://gw:***@db:5432/audit"),
        ("postgres://gw@db/audit", "postgres://gw@db/audit"),
        ("postgres://gw:p@ss@word@db/audit", "postgres://gw:***@db/audit"),
    ],
)
def test_database_urls_are_logged_without_passwords(given: str, shown: str) -> None:
    assert _redacted(given) == shown
