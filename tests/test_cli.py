"""`gateway check` exit codes and output, `gateway key hash`."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

BROKEN = Path(__file__).parent / "config" / "broken"


def gateway(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, input=stdin
    )


def test_check_valid_file_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("server: {port: 9999}\n")
    result = gateway("check", str(path))
    assert result.returncode == 0
    assert f"{path}: valid" in result.stdout


def test_check_lists_every_error_and_exits_1() -> None:
    result = gateway("check", str(BROKEN / "many_errors.yaml"))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if ": " in line and "error(s)" not in line]
    assert len(lines) == 3
    assert lines[0].endswith("many_errors.yaml:6:9: server.port: must be at most 65535, got 70000")
    assert "3 error(s)" in result.stderr


def test_check_several_files_fails_if_any_fails(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("{}\n")
    result = gateway("check", str(good), str(BROKEN / "tabs.yaml"))
    assert result.returncode == 1
    assert "good.yaml: valid" in result.stdout
    assert "tabs.yaml:3:1: tab character" in result.stderr


def test_check_json_format_is_machine_readable() -> None:
    result = gateway("check", "--format", "json", str(BROKEN / "unknown_backend.yaml"))
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["valid"] is False
    assert report["errors"][0]["line"] == 14
    assert report["errors"][0]["path"] == "models.chat.chain[1].backend"


def test_check_no_env_accepts_unset_variables_with_a_warning() -> None:
    path = BROKEN / "unset_env.yaml"
    assert gateway("check", str(path)).returncode == 1
    result = gateway("check", "--no-env", str(path))
    assert result.returncode == 0, result.stderr
    assert "GATEWAY_TEST_SURELY_UNSET_VAR" in result.stderr


def test_check_warns_about_models_with_no_enabled_target(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(
        "backends:\n  oa: {type: openai, api_key: '${NOPE_KEY:-}'}\n"
        "models:\n  gpt: {chain: [{backend: oa}]}\n"
    )
    result = gateway("check", str(path))
    assert result.returncode == 0
    assert "models.gpt: no enabled target" in result.stderr
    assert "NOPE_KEY" in result.stderr


def test_key_hash_matches_sha256() -> None:
    result = gateway("key", "hash", stdin="s3cret\n")
    assert result.stdout.strip() == hashlib.sha256(b"s3cret").hexdigest()
