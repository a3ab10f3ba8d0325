"""The systemd unit (examples/systemd/gateway.service): hardened, reloads with SIGHUP, stops after the
gateway's drain; `systemd-analyze verify` where it exists."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from gateway.config.schema import load_schema

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "examples" / "systemd" / "gateway.service"


def service() -> dict[str, list[str]]:
    """The [Service] section: each key with all its values (a key may repeat)."""
    values: dict[str, list[str]] = {}
    section = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def one(key: str) -> str:
    [value] = service()[key]
    return value


def test_the_unit_has_its_three_sections() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    assert parser.sections() == ["Unit", "Service", "Install"]
    assert parser["Install"]["WantedBy"] == "multi-user.target"


def test_it_is_hardened() -> None:
    assert one("NoNewPrivileges") == "yes"
    assert one("ProtectSystem") == "strict"
    assert one("ProtectHome") == "yes"
    assert one("PrivateTmp") == "yes"
    assert one("CapabilityBoundingSet") == ""
    assert one("User") not in ("root", "0")


def test_state_goes_to_the_state_directory_and_write_back_to_the_config_directory() -> None:
    assert one("StateDirectory") == "gateway"
    assert one("WorkingDirectory") == "/var/lib/gateway"
    assert one("Environment") == "GATEWAY_CACHE_DIR=/var/lib/gateway"
    config = re.search(r"--config (\S+)", one("ExecStart"))
    assert config is not None
    assert one("ReadWritePaths") == str(Path(config.group(1)).parent)  # write-back renames a file there


def test_reload_is_sighup_and_stop_waits_longer_than_the_drain() -> None:
    assert one("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one("KillSignal") == "SIGTERM"
    assert one("Restart") == "on-failure"
    server = load_schema()["properties"]["server"]["properties"]
    drain = server["graceful_shutdown_seconds"]["default"]
    assert int(one("TimeoutStopSec")) > drain


def test_the_config_is_checked_before_start() -> None:
    assert one("ExecStartPre").endswith("gateway check /etc/gateway/gateway.yaml")
    assert one("ExecStart").startswith("/usr/local/bin/gateway serve --config /etc/gateway/gateway.yaml")


def test_the_deployment_doc_shows_the_paths_the_unit_uses() -> None:
    doc = (ROOT / "docs" / "deployment.md").read_text()
    assert "examples/systemd/gateway.service" in doc
    blocks = re.findall(r"```yaml\n(.*?)```", doc, flags=re.S)
    absolute = [b for b in blocks if "sqlite:///var/lib/gateway/" in b]
    assert absolute, "docs/deployment.md shows a config with its state in /var/lib/gateway"
    assert all(yaml.safe_load(block) is not None for block in absolute)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that each command exists: the gateway's executable here stands in for /usr/local/bin's.
    gateway = shutil.which("gateway") or "/bin/true"
    unit = tmp_path / "gateway.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/gateway", gateway))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    # Unknown or misspelt settings are only warned about: any output is a failure.
    assert result.stdout.strip() == result.stderr.strip() == "", result.stderr
