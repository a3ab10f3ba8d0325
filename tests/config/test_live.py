"""Reload semantics without a server: prepare/swap, reuse of unchanged backends, release of old ones."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from watchfiles import Change

from gateway.config.issues import ConfigError
from gateway.runtime.live import LiveRuntime
from gateway.runtime.watch import watch_config
from tests.conftest import wait_for

BASE = """
backends:
  a: {type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
  b: {type: openai_compatible, base_url: "http://127.0.0.1:10/v1"}
  local: {type: mlx, path: models/tiny, load: first_use}
models:
  m1: {chain: [{backend: a}, {backend: local}]}
  m2: {aliases: [two], chain: [{backend: b}]}
"""


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(BASE)
    return path


async def test_start_refuses_an_invalid_file(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("server: {port: nope}\n")
    with pytest.raises(ConfigError):
        await LiveRuntime(path).start()


async def test_unchanged_backends_are_the_same_objects(config_path: Path) -> None:
    live = LiveRuntime(config_path)
    first = await live.start()
    config_path.write_text(BASE.replace("http://127.0.0.1:10/v1", "http://127.0.0.1:11/v1"))
    event = await live.reload("api")
    second = live.current
    assert event.outcome == "applied" and event.rebuilt_backends == ("b",)
    assert second.backends["a"] is first.backends["a"]
    assert second.backends["local"] is first.backends["local"]
    assert second.backends["b"] is not first.backends["b"]
    # The replaced backend is closed once the old Runtime is idle; the kept ones stay open.
    await live.retired()
    assert first.backends["b"].session is None
    assert second.backends["a"].session is not None
    await live.close()


async def test_old_backends_close_only_after_in_flight_requests_finish(config_path: Path) -> None:
    live = LiveRuntime(config_path)
    first = await live.start()
    old_b = first.backends["b"]
    with first.lease():
        config_path.write_text(BASE.replace("10/v1", "12/v1"))
        await live.reload("api")
        # The release has run as far as it can: it waits for the old Runtime's last request.
        await wait_for(lambda: first.usage.idle is not None)
        assert old_b.session is not None, "closed while a request still used it"
    await live.retired()
    assert old_b.session is None
    await live.close()


async def test_invalid_edit_keeps_serving_and_records_the_error(config_path: Path) -> None:
    live = LiveRuntime(config_path)
    first = await live.start()
    config_path.write_text(BASE + "  m3: {chain: [{backend: missing}]}\n")
    event = await live.reload("file")
    assert event.outcome == "rejected"
    assert live.current is first
    assert live.last_error is event
    assert str(event.issues[0]).endswith(
        "models.m3.chain[0].backend: no backend named 'missing' (backends: a, b, local)"
    )
    # Putting the file back clears the error without a rebuild.
    config_path.write_text(BASE)
    assert (await live.reload("file")).outcome == "unchanged"
    assert live.last_error is None and live.current is first
    await live.close()


async def test_same_bytes_is_a_no_op(config_path: Path) -> None:
    live = LiveRuntime(config_path)
    first = await live.start()
    config_path.write_text(BASE)
    assert (await live.reload("signal")).outcome == "unchanged"
    assert live.current is first
    assert [e.outcome for e in live.history] == ["applied"]
    await live.close()


async def test_routes_include_aliases(config_path: Path) -> None:
    live = LiveRuntime(config_path)
    runtime = await live.start()
    assert runtime.routes["two"] is runtime.routes["m2"]
    assert [t.backend.name for t in runtime.routes["m1"].chain] == ["a", "local"]
    await live.close()


async def test_history_records_source_and_versions(config_path: Path) -> None:
    live = LiveRuntime(config_path)
    first = await live.start()
    config_path.write_text(BASE.replace("m2:", "m9:"))
    await live.reload("ui")
    applied = live.history[-1]
    assert (applied.source, applied.previous_version, applied.version) == (
        "ui",
        first.version,
        live.current.version,
    )
    await live.close()


async def test_exposure_check_applies_at_start(config_path: Path) -> None:
    live = LiveRuntime(config_path, host="0.0.0.0")
    with pytest.raises(ConfigError, match="no client keys"):
        await live.start()


KEYED = BASE + 'auth:\n  client_keys: [{name: ci, key: "${CI_CLIENT_KEY}"}]\n'


@pytest.mark.parametrize(
    "exposed",
    [BASE, BASE + "auth: {client_keys: []}\n"],
    ids=["auth-removed", "keys-emptied"],
)
async def test_exposure_check_applies_to_reloads(config_path: Path, exposed: str) -> None:
    """On a non-loopback bind, a reload that would drop the last client key is refused like an invalid
    file: the keyed config keeps serving and the refusal names the fix."""
    config_path.write_text(KEYED)
    env = {"CI_CLIENT_KEY": "sk-client-key-for-the-exposure-test"}
    live = LiveRuntime(config_path, host="0.0.0.0", env=env)
    first = await live.start()
    assert [key.name for key in first.config.auth.client_keys] == ["ci"]
    config_path.write_text(exposed.replace("m2:", "m9:"))
    event = await live.reload("file")
    assert event.outcome == "rejected"
    _rejected_with(live, first, "no client keys are configured")
    assert event.issues[0].path == "auth"
    assert set(live.current.routes) == {"m1", "m2", "two"}, "the old config keeps serving"
    assert [key.name for key in live.current.config.auth.client_keys] == ["ci"]
    # The same file on a loopback bind is not an exposure: the check is about the bind, not the file.
    loopback = LiveRuntime(config_path, host="127.0.0.1", env=env)
    assert "m9" in (await loopback.start()).routes
    await loopback.close()
    await live.close()


async def test_watcher_applies_a_save(config_path: Path) -> None:
    live = LiveRuntime(config_path)
    await live.start()
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_config(live, stop, debounce_ms=50))
    await wait_for(lambda: live.watching)
    config_path.write_text(BASE.replace("m2:", "renamed:"))
    await wait_for(lambda: "renamed" in live.current.routes)
    assert live.current.source == "file"
    stop.set()
    await asyncio.wait_for(watcher, 5)
    assert not live.watching
    await live.close()


async def test_a_prepared_runtime_that_is_discarded_closes_what_it_started(config_path: Path) -> None:
    live = LiveRuntime(config_path)
    first = await live.start()
    changed = BASE.replace("http://127.0.0.1:10/v1", "http://127.0.0.1:13/v1").encode()
    async with live.lock:
        prepared = await live.prepare(changed, "api")
        (new_b,) = prepared.created
        assert new_b.name == "b" and new_b.session is not None and live.current is first
        await live.discard(prepared)
    assert new_b.session is None, "the backend it started is closed"
    assert live.current is first and first.backends["b"].session is not None
    assert [e.outcome for e in live.history] == ["applied"]
    await live.close()


def _rejected_with(live: LiveRuntime, first: object, message: str) -> None:
    """The last reload was refused with `message`, recorded like any other, and nothing changed."""
    event = live.history[-1]
    assert event.outcome == "rejected" and live.last_error is event
    assert any(message in str(issue) for issue in event.issues), event.issues
    assert live.current is first


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "gateway.yaml:1:1: the file has no settings (it is empty or only comments)"),
        (b"# being rewritten\n", "gateway.yaml:1:1: the file has no settings"),
        (b"server: {port: 1}\n", "gateway.yaml:1:1: no models: define at least one"),
        (BASE.split("models:")[0].encode() + b"models: {}\n", "models: no models: define at least one"),
        (b"- a list\n", "gateway.yaml:1:1: the file must be a mapping of settings"),
        (BASE.encode() + b"  m3: \x00\n", "gateway.yaml:9:7: a NUL byte is not allowed"),
        (BASE.encode() + b"  m3: \xff\n", "gateway.yaml:9:7: the file is not UTF-8 text: byte 0xff here"),
        (BASE.encode() + b"  m3: \x1b[0m\n", "gateway.yaml:9:7: the control character U+001B"),
        (
            BASE.encode() + b"  m3: !!binary aGk=\n",
            "gateway.yaml:9:7: models.m3: unsupported YAML tag !!binary",
        ),
    ],
    ids=["empty", "comments", "no-models", "empty-models", "a-list", "nul", "not-utf8", "control", "tag"],
)
async def test_a_file_with_nothing_to_serve_or_unreadable_bytes_is_rejected_and_recorded(
    config_path: Path, content: bytes, message: str
) -> None:
    live = LiveRuntime(config_path)
    first = await live.start()
    config_path.write_bytes(content)
    assert (await live.reload("file")).outcome == "rejected"
    _rejected_with(live, first, message)
    assert [e.outcome for e in live.history] == ["applied", "rejected"]
    await live.close()


async def test_a_directory_in_place_of_the_file_is_rejected_and_recorded(config_path: Path) -> None:
    live = LiveRuntime(config_path)
    first = await live.start()
    config_path.unlink()
    config_path.mkdir()
    assert (await live.reload("file")).outcome == "rejected"
    _rejected_with(live, first, "gateway.yaml:1:1: cannot read file: Is a directory")
    await live.close()


async def test_a_byte_order_mark_is_accepted(config_path: Path) -> None:
    live = LiveRuntime(config_path)
    await live.start()
    config_path.write_bytes(b"\xef\xbb\xbf" + BASE.replace("m2:", "bom:").encode())
    assert (await live.reload("file")).outcome == "applied"
    assert "bom" in live.current.routes
    await live.close()


async def test_an_unexpected_loader_failure_is_still_a_recorded_rejection(
    config_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = LiveRuntime(config_path)
    first = await live.start()

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in the loader")

    monkeypatch.setattr("gateway.runtime.live.parse_config", broken)
    config_path.write_text(BASE.replace("m2:", "m9:"))
    assert (await live.reload("api")).outcome == "rejected"
    _rejected_with(live, first, "the config could not be loaded (RuntimeError)")
    await live.close()


async def _watching(live: LiveRuntime) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_config(live, stop, debounce_ms=50))
    await wait_for(lambda: live.watching)
    return stop, watcher


async def test_truncate_then_write_the_watcher_applies_the_full_write(config_path: Path) -> None:
    """An editor that truncates then writes: the empty state is refused, the write that follows serves."""
    live = LiveRuntime(config_path)
    first = await live.start()
    stop, watcher = await _watching(live)
    with config_path.open("r+b") as file:
        file.truncate(0)
    await wait_for(lambda: live.last_error is not None)  # the watcher saw the empty file, and refused it
    _rejected_with(live, first, "the file has no settings")
    assert set(live.current.routes) == {"m1", "m2", "two"}, "the old config keeps serving"
    config_path.write_text(BASE.replace("m2:", "rewritten:"))
    await wait_for(lambda: "rewritten" in live.current.routes)
    assert live.last_error is None and live.history[-1].outcome == "applied"
    stop.set()
    await asyncio.wait_for(watcher, 5)
    await live.close()


async def test_truncate_then_write_at_once_ends_with_the_full_write(config_path: Path) -> None:
    live = LiveRuntime(config_path)
    await live.start()
    stop, watcher = await _watching(live)
    for tag in ("first", "second", "third"):
        with config_path.open("r+b") as file:  # truncate, then write in place: no rename
            file.truncate(0)
            file.flush()
            os.fsync(file.fileno())
            file.write(BASE.replace("m2:", f"{tag}:").encode())
        await wait_for(lambda tag=tag: tag in live.current.routes)
    assert live.last_error is None
    stop.set()
    await asyncio.wait_for(watcher, 5)
    await live.close()


async def test_a_write_folded_into_the_round_that_saw_the_empty_file_is_still_applied(
    config_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watcher gets one change event for truncate + write, reads the file between the two (empty,
    rejected), and no event follows: it reads the file again and applies the write."""
    live = LiveRuntime(config_path)
    await live.start()
    reload = live.reload

    async def one_event(*args: object, **kwargs: object) -> AsyncIterator[set[object]]:
        config_path.write_bytes(b"")  # truncated...
        yield {(Change.modified, str(config_path))}

    async def reload_then_the_write_lands(source: str) -> object:
        event = await reload(source)
        if not config_path.read_bytes():
            config_path.write_text(BASE.replace("m2:", "written:"))  # ...and written, no new event
        return event

    monkeypatch.setattr("gateway.runtime.watch.awatch", one_event)
    monkeypatch.setattr(live, "reload", reload_then_the_write_lands)
    await watch_config(live, asyncio.Event(), debounce_ms=10)
    assert [e.outcome for e in live.history] == ["applied", "rejected", "applied"]
    assert "written" in live.current.routes and live.last_error is None
    await live.close()
