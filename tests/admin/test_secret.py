"""The session secret: created once next to the config (0600, race-safe), reused after restarts,
or taken from GATEWAY_ADMIN_SECRET; never from gateway.yaml."""

from __future__ import annotations

import multiprocessing
import stat
from pathlib import Path

import pytest
from gateway.admin.secret import ENV_VAR, SECRET_FILE, SessionSecretUnavailable, load_session_secret


def test_created_once_next_to_the_config_and_reused(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("version: 1\n")
    first = load_session_secret(config, env={})
    path = tmp_path / SECRET_FILE
    assert first.source == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text().strip()) == 64
    assert load_session_secret(config, env={}).key == first.key
    assert "***" in repr(first) and first.key.hex() not in repr(first)


def test_the_config_file_does_not_change_the_secret(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("auth: {admin_keys: []}\n")
    before = load_session_secret(config, env={}).key
    config.write_text("auth: {admin_keys: [{name: a, key_sha256: " + "0" * 64 + "}]}\n")
    assert load_session_secret(config, env={}).key == before


def _load(config: str, queue: multiprocessing.Queue) -> None:
    queue.put(load_session_secret(Path(config), env={}).key)


def test_workers_starting_together_agree_on_one_secret(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_load, args=(str(config), queue)) for _ in range(6)]
    for worker in workers:
        worker.start()
    keys = {queue.get(timeout=60) for _ in workers}
    for worker in workers:
        worker.join(30)
    assert len(keys) == 1


def test_the_environment_wins_and_must_be_long(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    secret = load_session_secret(config, env={ENV_VAR: "s" * 40})
    assert secret.source == ENV_VAR
    assert secret.key == load_session_secret(config, env={ENV_VAR: "s" * 40}).key
    assert secret.key != load_session_secret(config, env={ENV_VAR: "t" * 40}).key
    assert not (tmp_path / SECRET_FILE).exists()
    with pytest.raises(SessionSecretUnavailable, match="at least 32"):
        load_session_secret(config, env={ENV_VAR: "short"})


def test_an_unwritable_config_directory_falls_back_to_the_cache(tmp_path: Path) -> None:
    config = tmp_path / "mounted-read-only" / "gateway.yaml"  # cannot be created there
    cache = tmp_path / "cache"
    cache.mkdir()
    secret = load_session_secret(config, env={"GATEWAY_CACHE_DIR": str(cache)})
    assert secret.source == str(cache / "admin-secret")


def test_no_place_for_a_secret_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "missing" / "gateway.yaml"
    with pytest.raises(SessionSecretUnavailable, match=ENV_VAR):
        load_session_secret(config, env={"GATEWAY_CACHE_DIR": str(tmp_path / "also-missing")})
