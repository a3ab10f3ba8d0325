"""AuditStore.backend_outcomes (the admin status page's recent error rates) on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.audit.store import AuditStore

from .conftest import make_entry


def _step(backend: str, outcome: str, status: int | None = None) -> dict:
    return {"backend": backend, "model": "m", "outcome": outcome, "status": status, "duration_ms": 1.0}


async def test_counts_every_step_of_recent_failover_paths(database_url: str) -> None:
    store = await AuditStore.open(database_url)
    try:
        now = datetime.now(UTC)
        await store.insert(
            [
                make_entry(1, ts=now, failover_path=[_step("a", "http_5xx", 500), _step("b", "ok", 200)]),
                make_entry(2, ts=now, failover_path=[_step("a", "timeout"), _step("b", "ok", 200)]),
                make_entry(
                    3, ts=now, failover_path=[_step("a", "circuit_open"), _step("b", "http_5xx", 503)]
                ),
                make_entry(4, ts=now, status="rejected", failover_path=[]),
                # Older than the window: not counted.
                make_entry(5, ts=now - timedelta(hours=1), failover_path=[_step("c", "ok", 200)]),
            ]
        )
        counts = await store.backend_outcomes(now - timedelta(minutes=15))
        assert counts == {
            "a": {"http_5xx": 1, "timeout": 1, "circuit_open": 1},
            "b": {"ok": 2, "http_5xx": 1},
        }
        assert await store.backend_outcomes(now + timedelta(seconds=1)) == {}
    finally:
        await store.close()
