"""The config a first run serves, and the starter file `gateway init` writes.

The package carries its default config (`defaults/gateway.yaml`, the repository's `gateway.yaml`).
`gateway serve` in a directory with no `gateway.yaml` serves a copy of it kept in the per-user data
directory: the copy is a file the gateway can watch and write back, and its relative paths (the
generated local model, the audit database, the local admin token) land beside it, not in whatever
directory the command ran in. `gateway init` writes a commented starter to edit instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from gateway.config.schema import SCHEMA_PATH

__all__ = [
    "CONFIG_NAME",
    "DATA_DIR_ENV_VAR",
    "EMBEDDED_DEFAULTS",
    "SCHEMA_NAME",
    "StarterError",
    "data_dir",
    "embedded_config",
    "starter_text",
    "write_starter",
]

CONFIG_NAME = "gateway.yaml"
SCHEMA_NAME = "gateway.schema.json"
#: The embedded defaults (a copy of the repository's gateway.yaml, shipped in the wheel).
EMBEDDED_DEFAULTS = Path(__file__).with_name("defaults") / CONFIG_NAME
#: Where a first run keeps its config, models and audit database, when set.
DATA_DIR_ENV_VAR = "GATEWAY_DATA_DIR"

_SCHEMA_LINE = "# yaml-language-server: $schema="

#: Appended by `gateway init`: what operators add first, commented out, with the command that helps.
_STARTER_TAIL = """
# ---------------------------------------------------------------------------------------------
# Next steps, commented out: uncomment a block where it says. `gateway check` validates this file;
# `gateway schema` prints every setting with its description.
#
# Client keys, needed before anything but this machine may call the gateway. `gateway key new
# NAME` makes a key and prints its entry; the file holds only the key's SHA-256. (a new section)
# auth:
#   client_keys:
#     - name: billing-app
#       key_sha256: <from gateway key new billing-app>
#       models: ["local", "gpt-*"]
#       limits:
#         requests_per_minute: 600
#
# Any OpenAI-compatible server: vLLM, Ollama, LM Studio, a hosted vendor. (under backends:)
#   vllm:
#     type: openai_compatible
#     base_url: http://127.0.0.1:8000/v1
#     api_key: ${VLLM_API_KEY:-}
#
# A public model served by it, falling back to the local model. (under models:)
#   llama:
#     chain:
#       - backend: vllm
#         model: meta-llama/Llama-3.1-8B-Instruct
#       - backend: local
#
# The audit log on PostgreSQL, shared by several instances. (under audit:, replacing database_url)
#   database_url: postgres://gateway@127.0.0.1:5432/gateway
"""


class StarterError(Exception):
    """A first-run file could not be written: the message names the path, the cause and the fix."""


def data_dir() -> Path:
    """The per-user data directory: $GATEWAY_DATA_DIR, else $XDG_DATA_HOME/gateway, else
    ~/.local/share/gateway."""
    chosen = os.environ.get(DATA_DIR_ENV_VAR)
    if chosen:
        return Path(chosen).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "gateway"


def embedded_config() -> tuple[Path, bool]:
    """The data directory's copy of the embedded defaults, made now if it is missing.
    Returns (path, made now). An existing copy is served as it is: the admin panel may have edited it."""
    directory = data_dir()
    path = directory / CONFIG_NAME
    if path.is_file():
        return path, False
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as file:  # never replaces a file that appeared meanwhile
            file.write(EMBEDDED_DEFAULTS.read_text(encoding="utf-8"))
    except FileExistsError:
        return path, False
    except OSError as error:
        raise StarterError(
            f"cannot keep the embedded defaults in {directory}: {error.strerror or error}; set "
            f"{DATA_DIR_ENV_VAR} to a writable directory, or run `gateway init` and serve that file"
        ) from None
    return path, True


def starter_text() -> str:
    """The embedded defaults, with the schema reference pointing at the schema written beside them,
    and the next steps commented out at the end."""
    lines = EMBEDDED_DEFAULTS.read_text(encoding="utf-8").splitlines(keepends=True)
    if lines and lines[0].startswith(_SCHEMA_LINE):
        lines[0] = f"{_SCHEMA_LINE}./{SCHEMA_NAME}\n"
    else:
        lines.insert(0, f"{_SCHEMA_LINE}./{SCHEMA_NAME}\n")
    return "".join(lines) + _STARTER_TAIL


def write_starter(directory: Path, *, force: bool = False) -> list[Path]:
    """Write `gateway.yaml` and its schema into `directory` (made if missing). Refuses to replace an
    existing gateway.yaml unless `force`. Returns the paths written."""
    config = directory / CONFIG_NAME
    schema = directory / SCHEMA_NAME
    if config.exists() and not force:
        raise StarterError(f"{config} exists; not replacing it (edit it, or pass --force to start over)")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        config.write_text(starter_text(), encoding="utf-8")
        schema.write_bytes(SCHEMA_PATH.read_bytes())
    except OSError as error:
        raise StarterError(
            f"cannot write {error.filename or directory}: {error.strerror or error}; "
            "choose a directory you can write (gateway init DIR)"
        ) from None
    return [config, schema]
