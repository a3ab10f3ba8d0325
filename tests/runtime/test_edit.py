"""The edit transaction without a server: If-Match, refusal before any write, one swap, the lock."""

from __future__ import annotations

import asyncio
import fcntl
import stat
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from gateway.config.issues import ConfigError
from gateway.config.load import config_version
from gateway.config.writeback import Edit, WriteBackError
from gateway.runtime import configlock
from gateway.runtime.configlock import ConfigLockTimeout, config_file_lock, lock_file_candidates
from gateway.runtime.edit import StaleVersion, WriteBackOff, edit_config, replace_file
from gateway.runtime.live import LiveRuntime, ReloadEvent
from gateway.runtime.watch import watch_config
from tests.conftest import wait_for, writers_lock_held

CONFIG = """\
# Edited by the settings page; comments stay.
backends:
  up: {type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}   # never called
models:
  chat: {chain: [{backend: up}]}
timeouts:
  chat:
    total: 900   # 15 minutes
admin:
  write_back: true
"""

#: Schema-valid, but its prepare fails: a local model loaded at startup from a path with no model.
UNSTARTABLE = CONFIG.replace(
    "models:", "  local:\n    type: mlx\n    path: no-model-here\n    load: startup\nmodels:"
)

CHAT_TOTAL = ("timeouts", "chat", "total")


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG)
    path.chmod(0o640)
    return path


@pytest.fixture
async def live(config_path: Path) -> AsyncIterator[LiveRuntime]:
    runtime = LiveRuntime(config_path, env={})
    await runtime.start()
    yield runtime
    await runtime.close()


def version(path: Path) -> str:
    return config_version(path.read_bytes())


def siblings(path: Path) -> list[str]:
    """The directory's files other than the config and its lock file."""
    return sorted(p.name for p in path.parent.iterdir() if p.name not in (path.name, f".{path.name}.lock"))


async def test_an_edit_is_written_and_applied_in_one_swap(live: LiveRuntime, config_path: Path) -> None:
    first = live.current
    result = await edit_config(live, [Edit(CHAT_TOTAL, 600)], version(config_path), source="ui")
    assert config_path.read_text() == CONFIG.replace("total: 900   # 15", "total: 600   # 15")
    assert result.written and result.version == version(config_path) != result.previous_version
    assert "+    total: 600   # 15 minutes" in result.diff
    assert live.current is result.runtime is not first
    assert live.current.version == result.version and live.current.timeouts.chat.total == 600
    assert live.current.backends["up"] is first.backends["up"], "an unchanged backend is carried over"
    assert (result.event.outcome, result.event.source) == ("applied", "ui")
    assert [(e.source, e.outcome) for e in live.history] == [("startup", "applied"), ("ui", "applied")]
    assert stat.S_IMODE(config_path.stat().st_mode) == 0o640
    assert siblings(config_path) == [], "no temp file left behind"


async def test_a_tiny_float_is_written_as_a_float_and_applied(live: LiveRuntime, config_path: Path) -> None:
    """PyYAML reads `1e-07` as a string: the edit must be written as a float the reload reads back."""
    result = await edit_config(live, [Edit(CHAT_TOTAL, 1e-07)], version(config_path))
    assert "total: 1.0e-07   # 15 minutes" in config_path.read_text()
    assert result.event.outcome == "applied" and live.current.timeouts.chat.total == 1e-07


async def test_the_watcher_finds_the_edit_already_live(live: LiveRuntime, config_path: Path) -> None:
    seen: list[ReloadEvent] = []
    live.listeners.append(seen.append)
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_config(live, stop, debounce_ms=20))
    await wait_for(lambda: live.watching)
    result = await edit_config(live, [Edit(CHAT_TOTAL, 60)], version(config_path))
    await wait_for(lambda: any(e.source == "file" for e in seen))
    stop.set()
    await asyncio.wait_for(watcher, 5)
    assert [(e.source, e.outcome) for e in seen] == [("api", "applied"), ("file", "unchanged")]
    assert live.current is result.runtime
    assert [e.outcome for e in live.history] == ["applied", "applied"]


async def test_a_stale_version_is_refused(live: LiveRuntime, config_path: Path) -> None:
    old = version(config_path)
    config_path.write_text(CONFIG.replace("total: 900", "total: 901"))
    before, current = config_path.read_bytes(), live.current
    with pytest.raises(StaleVersion) as raised:
        await edit_config(live, [Edit(CHAT_TOTAL, 600)], old)
    assert raised.value.current_version == config_version(before)
    assert config_path.read_bytes() == before and live.current is current


async def test_an_invalid_result_is_refused_before_any_write(live: LiveRuntime, config_path: Path) -> None:
    before, current = config_path.read_bytes(), live.current
    with pytest.raises(ConfigError) as raised:
        await edit_config(live, [Edit(CHAT_TOTAL, -1)], version(config_path))
    assert "timeouts.chat.total: must be greater than 0" in str(raised.value)
    assert config_path.read_bytes() == before and siblings(config_path) == []
    assert live.current is current and live.last_error is None and len(live.history) == 1


async def test_an_edit_the_reload_would_reject_is_refused(live: LiveRuntime, config_path: Path) -> None:
    current = live.current
    config_path.write_text(UNSTARTABLE)
    rejected = await live.reload("file")  # what the watcher does with the outside edit
    assert rejected.outcome == "rejected" and live.last_error is rejected
    before = config_path.read_bytes()
    with pytest.raises(ConfigError) as raised:
        await edit_config(live, [Edit(CHAT_TOTAL, 600)], config_version(before))
    (issue,) = raised.value.issues
    assert (issue.path, issue.location.line, issue.location.column) == ("backends.local", 4, 3)
    assert "backend failed to start: no model at" in issue.message
    assert config_path.read_bytes() == before and siblings(config_path) == []
    assert live.current is current
    # The refused edit is not a reload: the file's own rejection stays the last error.
    assert live.last_error is rejected and list(live.history)[-1] is rejected


async def test_a_value_from_the_environment_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG.replace("total: 900", "total: ${CHAT_TIMEOUT:-900}"))
    live = LiveRuntime(path, env={})
    await live.start()
    with pytest.raises(WriteBackError, match="set from the environment"):
        await edit_config(live, [Edit(CHAT_TOTAL, 60)], version(path))
    await live.close()


async def test_write_back_off_returns_the_patch_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG.replace("write_back: true", "write_back: false"))
    live = LiveRuntime(path, env={})
    current = await live.start()
    before = path.read_bytes()
    with pytest.raises(WriteBackOff) as raised:
        await edit_config(live, [Edit(CHAT_TOTAL, 300)], version(path))
    assert raised.value.diff.startswith("--- a/gateway.yaml\n+++ b/gateway.yaml\n")
    assert "+    total: 300   # 15 minutes" in raised.value.diff
    assert raised.value.previous_version == config_version(before)
    assert path.read_bytes() == before and live.current is current
    # Still validated: an invalid result is refused rather than offered as a patch.
    with pytest.raises(ConfigError, match="must be greater than 0"):
        await edit_config(live, [Edit(CHAT_TOTAL, -5)], version(path))
    await live.close()


async def test_the_value_already_there_is_unchanged(live: LiveRuntime, config_path: Path) -> None:
    current = live.current
    result = await edit_config(live, [Edit(CHAT_TOTAL, 900)], version(config_path))
    assert not result.written and result.diff == "" and result.event.outcome == "unchanged"
    assert live.current is current and len(live.history) == 1


async def test_a_symlinked_config_stays_a_symlink(tmp_path: Path) -> None:
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    (real_dir / "gateway.yaml").write_text(CONFIG)
    link = tmp_path / "gateway.yaml"
    link.symlink_to(real_dir / "gateway.yaml")
    live = LiveRuntime(link, env={})
    await live.start()
    await edit_config(live, [Edit(CHAT_TOTAL, 30)], version(link))
    assert link.is_symlink()
    assert "total: 30   # 15" in (real_dir / "gateway.yaml").read_text()
    await live.close()


async def test_crlf_and_bom_survive_the_write(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    original = "\ufeff# windows\r\n" + CONFIG.replace("\n", "\r\n")
    path.write_bytes(original.encode())
    live = LiveRuntime(path, env={})
    await live.start()
    await edit_config(live, [Edit(CHAT_TOTAL, 5)], version(path))
    assert path.read_bytes() == original.replace("total: 900", "total: 5").encode()
    assert live.current.timeouts.chat.total == 5
    await live.close()


async def test_two_workers_with_the_same_if_match_one_wins(config_path: Path) -> None:
    """Two LiveRuntimes on one file stand for two worker processes (flock is per open file)."""
    workers = [LiveRuntime(config_path, env={}), LiveRuntime(config_path, env={})]
    for worker in workers:
        await worker.start()
    expected = version(config_path)
    outcomes = await asyncio.gather(
        edit_config(workers[0], [Edit(CHAT_TOTAL, 100)], expected),
        edit_config(workers[1], [Edit(CHAT_TOTAL, 200)], expected),
        return_exceptions=True,
    )
    (won,) = [o for o in outcomes if not isinstance(o, BaseException)]
    (lost,) = [o for o in outcomes if isinstance(o, BaseException)]
    assert isinstance(lost, StaleVersion) and lost.current_version == won.version == version(config_path)
    assert f"total: {won.runtime.timeouts.chat.total:g}   # 15" in config_path.read_text()
    for worker in workers:
        await worker.close()


def test_replace_file_never_overwrites_a_save_made_meanwhile(config_path: Path) -> None:
    read = config_path.read_bytes()
    config_path.write_text(CONFIG.replace("900", "901"))  # a person saved after the read
    with pytest.raises(StaleVersion):
        replace_file(config_path, read.replace(b"900", b"5"), expected=read)
    assert "total: 901" in config_path.read_text() and siblings(config_path) == []


# -- the lock ------------------------------------------------------------------------------------


@pytest.fixture
def holder(config_path: Path) -> Iterator[Callable[[], None]]:
    """Another process holding the config's writers' lock; call it to let go."""
    with writers_lock_held(config_path) as release:
        yield release


async def test_the_edit_waits_for_the_lock_without_blocking_the_loop(
    live: LiveRuntime, config_path: Path, holder: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    refused: list[int] = []
    real_flock = configlock.fcntl.flock

    def flock(fd: int, operation: int) -> None:
        try:
            real_flock(fd, operation)
        except BlockingIOError:
            refused.append(operation)
            raise

    monkeypatch.setattr(configlock.fcntl, "flock", flock)
    edit = asyncio.create_task(edit_config(live, [Edit(CHAT_TOTAL, 42)], version(config_path)))
    # The edit tries the lock, is refused and tries again while this coroutine runs on the same loop:
    # it waits without blocking (a blocking flock would stall the loop and this test with it).
    await wait_for(lambda: len(refused) >= 2)
    assert not edit.done() and all(op & fcntl.LOCK_NB for op in refused)
    assert "total: 900" in config_path.read_text(), "nothing written while another writer holds the lock"
    holder()  # the other writer finishes
    result = await asyncio.wait_for(edit, 5)
    assert result.event.outcome == "applied" and "total: 42" in config_path.read_text()


async def test_the_wait_for_the_lock_is_bounded(
    live: LiveRuntime, config_path: Path, holder: Callable[[], None]
) -> None:
    before, current = config_path.read_bytes(), live.current
    with pytest.raises(ConfigLockTimeout, match="another change of the config is in progress"):
        await edit_config(live, [Edit(CHAT_TOTAL, 42)], version(config_path), lock_wait=0.2)
    assert config_path.read_bytes() == before and live.current is current


async def test_write_back_off_needs_no_writers_lock(config_path: Path, holder: Callable[[], None]) -> None:
    """Nothing is written, so a read-only container with nowhere to put a lock file still gets its patch."""
    config_path.write_text(CONFIG.replace("write_back: true", "write_back: false"))
    live = LiveRuntime(config_path, env={})
    await live.start()
    with pytest.raises(WriteBackOff):
        await edit_config(live, [Edit(CHAT_TOTAL, 300)], version(config_path), lock_wait=0.2)
    await live.close()


async def test_a_reload_in_progress_in_this_worker_holds_the_edit_back(
    live: LiveRuntime, config_path: Path
) -> None:
    async with live.lock:  # as a reload does while it prepares
        with pytest.raises(ConfigLockTimeout, match="this worker's reload lock"):
            await edit_config(live, [Edit(CHAT_TOTAL, 42)], version(config_path), lock_wait=0.1)
    assert not live.lock.locked(), "the edit let go of nothing it did not take"
    result = await edit_config(live, [Edit(CHAT_TOTAL, 42)], version(config_path))
    assert result.event.outcome == "applied"


async def test_the_lock_file_falls_back_when_the_config_directory_is_unusable(tmp_path: Path) -> None:
    config = tmp_path / "not-a-directory" / "gateway.yaml"  # no lock file can be created beside it
    (tmp_path / "not-a-directory").write_text("")
    env = {"GATEWAY_CACHE_DIR": str(tmp_path / "cache")}
    async with config_file_lock(config, timeout=1, env=env) as path:
        assert path.parent == tmp_path / "cache" and path.name.startswith("gateway.yaml-")
        assert path == lock_file_candidates(config, env)[1]
        # Held: a second taker (another open file, as another process would have) must wait.
        with pytest.raises(ConfigLockTimeout):
            async with config_file_lock(config, timeout=0.05, env=env):
                pass
    async with config_file_lock(config, timeout=1, env=env):
        pass  # released on exit


def test_the_lock_file_is_beside_the_config_first(config_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = lock_file_candidates(config_path, {})[0]
    assert first == config_path.parent / ".gateway.yaml.lock"
    # Every worker resolves the same path, however the config path was spelled.
    monkeypatch.chdir(config_path.parent)
    assert lock_file_candidates("gateway.yaml", {})[0] == first
