"""Write-back: edits keep every other byte of the file, refuse stale versions and invalid results."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gateway.config.issues import ConfigError
from gateway.config.load import config_version, load_config
from gateway.config.writeback import Edit, StaleVersion, WriteBackError, apply_edits

COMMENTED = """\
# yaml-language-server: $schema=./schema/gateway.schema.json
# Production gateway. Owned by the platform team; edit via PR.

server:
  host: 127.0.0.1   # loopback only
  port: 8080

backends:
  openai:                         # primary
    type: openai
    api_key: ${OPENAI_API_KEY}    # from the secret store
    headers:
      OpenAI-Project: '${OPENAI_PROJECT:-default}'
  anthropic:
    type: anthropic
    api_key: "${ANTHROPIC_API_KEY:-}"

models:
  chat:
    chain:
      - backend: openai
        model: gpt-4o          # fast
      - backend: anthropic
        model: claude-3-5-sonnet-latest

# Timeouts, seconds.
timeouts:
  chat:
    total: 900     # 15 minutes: long tool loops
    connect: 10
  # completions are legacy
  completions: {total: 600}
  embeddings:
    total: 120

admin:
  write_back: true   # the settings UI may edit this file
"""

ENV = {"OPENAI_API_KEY": "sk-real-secret-never-written", "ANTHROPIC_API_KEY": ""}


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(COMMENTED)
    path.chmod(0o640)
    return path


def version(path: Path) -> str:
    return config_version(path.read_bytes())


def test_edit_changes_only_the_value_bytes(config_file: Path) -> None:
    result = apply_edits(
        config_file, [Edit(("timeouts", "chat", "total"), 600)], version(config_file), env=ENV
    )
    after = config_file.read_text()
    assert after == COMMENTED.replace("total: 900     # 15 minutes", "total: 600     # 15 minutes")
    assert result.written and result.version == version(config_file) != result.previous_version
    assert "-    total: 900     # 15 minutes: long tool loops" in result.diff
    assert "+    total: 600     # 15 minutes: long tool loops" in result.diff
    assert "sk-real-secret" not in after and "${OPENAI_API_KEY}" in after
    assert load_config(config_file, env=ENV).timeouts.chat.total == 600


def test_several_edits_in_flow_and_block_style(config_file: Path) -> None:
    edits = [
        Edit(("timeouts", "completions", "total"), 300),
        Edit(("timeouts", "embeddings", "total"), 45.5),
        Edit(("timeouts", "chat", "first_byte"), 30),
    ]
    apply_edits(config_file, edits, version(config_file), env=ENV)
    after = config_file.read_text()
    expected = (
        COMMENTED.replace("completions: {total: 600}", "completions: {total: 300}")
        .replace("    total: 120\n", "    total: 45.5\n")
        .replace("    connect: 10\n", "    connect: 10\n    first_byte: 30\n")
    )
    assert after == expected
    timeouts = load_config(config_file, env=ENV).timeouts
    assert (timeouts.completions.total, timeouts.embeddings.total, timeouts.chat.first_byte) == (
        300,
        45.5,
        30,
    )


def test_inserting_a_missing_key_into_a_flow_mapping(config_file: Path) -> None:
    apply_edits(config_file, [Edit(("timeouts", "completions", "connect"), 5)], version(config_file), env=ENV)
    assert config_file.read_text() == COMMENTED.replace("{total: 600}", "{total: 600, connect: 5}")


def test_inserting_a_whole_missing_section(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("# minimal\nserver:\n  port: 8080  # keep\n")
    apply_edits(path, [Edit(("timeouts", "chat", "total"), 60)], version(path), env={})
    assert path.read_text() == "# minimal\nserver:\n  port: 8080  # keep\ntimeouts:\n  chat:\n    total: 60\n"


def test_stale_edit_is_refused_and_file_untouched(config_file: Path) -> None:
    old = version(config_file)
    config_file.write_text(COMMENTED.replace("port: 8080", "port: 8081"))
    before = config_file.read_bytes()
    with pytest.raises(StaleVersion) as raised:
        apply_edits(config_file, [Edit(("timeouts", "chat", "total"), 600)], old, env=ENV)
    assert raised.value.current_version == version(config_file)
    assert config_file.read_bytes() == before


def test_edit_that_breaks_the_schema_is_refused_and_file_untouched(config_file: Path) -> None:
    before = config_file.read_bytes()
    with pytest.raises(ConfigError) as raised:
        apply_edits(config_file, [Edit(("timeouts", "chat", "total"), -1)], version(config_file), env=ENV)
    assert "timeouts.chat.total: must be greater than 0" in str(raised.value)
    assert config_file.read_bytes() == before
    assert not [p for p in config_file.parent.iterdir() if p.name.endswith(".tmp")]


def test_value_from_environment_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("timeouts:\n  chat:\n    total: ${CHAT_TIMEOUT:-900}\n")
    with pytest.raises(WriteBackError, match="set from the environment"):
        apply_edits(path, [Edit(("timeouts", "chat", "total"), 60)], version(path), env={})


def test_permissions_are_kept(config_file: Path) -> None:
    apply_edits(config_file, [Edit(("timeouts", "chat", "total"), 61)], version(config_file), env=ENV)
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o640


def test_symlinked_config_stays_a_symlink(tmp_path: Path) -> None:
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    (real_dir / "gateway.yaml").write_text("timeouts:\n  chat:\n    total: 900\n")
    link = tmp_path / "gateway.yaml"
    link.symlink_to(real_dir / "gateway.yaml")
    apply_edits(link, [Edit(("timeouts", "chat", "total"), 30)], version(link), env={})
    assert link.is_symlink()
    assert "total: 30" in (real_dir / "gateway.yaml").read_text()


def test_dry_run_returns_the_patch_and_writes_nothing(config_file: Path) -> None:
    before = config_file.read_bytes()
    result = apply_edits(
        config_file, [Edit(("timeouts", "chat", "total"), 600)], version(config_file), write=False, env=ENV
    )
    assert not result.written
    assert result.diff.startswith("--- a/gateway.yaml\n+++ b/gateway.yaml\n")
    assert config_file.read_bytes() == before


def test_crlf_and_bom_survive(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    original = "\ufeff# windows\r\ntimeouts:\r\n  chat:\r\n    total: 900\r\n"
    path.write_bytes(original.encode())
    apply_edits(path, [Edit(("timeouts", "chat", "total"), 5)], version(path), env={})
    assert path.read_bytes() == original.replace("900", "5").encode()


def test_atomic_replace_leaves_no_temp_files(config_file: Path) -> None:
    apply_edits(config_file, [Edit(("timeouts", "chat", "total"), 62)], version(config_file), env=ENV)
    assert sorted(os.listdir(config_file.parent)) == ["gateway.yaml"]
