"""The benchmark's gateway-wide lock (`gateway.admin.bench_lock`) on real lock files: one holder at a
time, the others told who holds it, free again once released or once the holder's process is gone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gateway.admin.bench_lock import BenchLock, bench_lock_candidates


def test_one_holder_at_a_time_and_the_others_are_told_who(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    first, second = BenchLock(config), BenchLock(config)
    assert first.holder() is None
    assert first.take({"id": "run-1", "backend": "up", "admin": "ops", "pid": 1}) is None
    assert bench_lock_candidates(config)[0] == tmp_path / ".gateway.yaml.bench.lock"
    assert second.take({"id": "run-2"}) == {"id": "run-1", "backend": "up", "admin": "ops", "pid": 1}
    assert second.holder() == {"id": "run-1", "backend": "up", "admin": "ops", "pid": 1}
    first.release()
    first.release()  # twice is harmless
    assert second.holder() is None
    assert second.take({"id": "run-2"}) is None
    second.release()


def test_a_holder_that_dies_leaves_the_lock_free(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    script = (
        "import sys\n"
        "from gateway.admin.bench_lock import BenchLock\n"
        f"lock = BenchLock({str(config)!r})\n"
        "assert lock.take({'id': 'run-9', 'pid': 9}) is None\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert BenchLock(config).holder() == {"id": "run-9", "pid": 9}
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
        if holder.stdin is not None:
            holder.stdin.close()
    lock = BenchLock(config)
    assert lock.holder() is None  # the kernel released it with the process; its record is stale
    assert lock.take({"id": "run-10"}) is None
    lock.release()
