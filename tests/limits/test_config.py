"""The limits' settings as the loader and `gateway check` see them: a Redis password comes from the
environment, and a memory store under several workers is said to count per worker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config.issues import ConfigError
from gateway.config.load import parse_config
from gateway.limits import per_worker_warning

BASE = """
backends:
  a: {type: openai_compatible, base_url: "http://127.0.0.1:1/v1"}
models:
  m: {chain: [{backend: a}]}
"""


def load(text: str, env: dict[str, str] | None = None):
    return parse_config(text.encode(), Path("/srv/gw/gateway.yaml"), env=env or {})


def test_a_redis_password_written_in_the_file_is_refused_without_being_shown() -> None:
    with pytest.raises(ConfigError) as raised:
        load(BASE + "limits: {store: 'redis://:hunter2@redis.internal:6379/0'}\n")
    text = str(raised.value)
    assert "limits.store: a literal password in this URL is refused" in text
    assert "write `redis://:${LIMITS_STORE_PASSWORD}@redis.internal:6379/0`" in text
    assert "hunter2" not in text


def test_a_redis_password_from_the_environment_is_accepted_and_never_printed() -> None:
    config = load(BASE + "limits: {store: 'redis://:${REDIS_PASSWORD}@h:6379/0'}\n", {"REDIS_PASSWORD": "pw"})
    assert config.limits.store == "redis://:pw@h:6379/0"
    assert "pw@" not in repr(config.limits)
    defaults = load(BASE).limits
    assert (defaults.store, defaults.on_store_down, defaults.store_timeout_ms, defaults.key_prefix) == (
        "memory",
        "allow",
        250,
        "gateway:",
    )


LIMITED = BASE + "auth: {default_limits: {requests_per_minute: 10}}\n"


def test_a_memory_store_under_several_workers_is_said_to_count_per_worker() -> None:
    warning = per_worker_warning(load(LIMITED), 4)
    assert warning is not None and "each worker counts alone" in warning and "4 times" in warning
    assert per_worker_warning(load(LIMITED), 1) is None
    assert per_worker_warning(load(BASE), 4) is None  # nothing limited: nothing to say
    shared = LIMITED + "limits: {store: 'redis://127.0.0.1:6379/0'}\n"
    assert per_worker_warning(load(shared), 4) is None
    quota = BASE.replace('/v1"}', '/v1", limits: {tokens_per_minute: 1000}}')
    assert per_worker_warning(load(quota), 2) is not None


def test_gateway_check_warns_about_counting_per_worker(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(LIMITED + "server: {workers: 3}\n")
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "warning: limits.store is memory and 3 workers serve: each worker counts alone" in result.stderr
