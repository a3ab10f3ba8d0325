"""Edit gateway.yaml in place for the admin panel, keeping every other byte of the file as it was.

A value that is already in the file is changed by replacing just that scalar's source span (PyYAML
nodes carry start and end marks); a key that is not there yet is inserted as new lines under its
parent. The result is validated as a whole before the file is atomically replaced.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.config.issues import ConfigError, ConfigIssue, Location
from gateway.config.load import config_version, parse_config

__all__ = ["Edit", "StaleVersion", "WriteBackError", "WriteBackResult", "apply_edits", "plan_edits"]

_PLAIN_SAFE = re.compile(r"^[A-Za-z0-9_./@+-][A-Za-z0-9_ ./@+:-]*$")


@dataclass(frozen=True, slots=True)
class Edit:
    """Set the value at `path` (keys of nested mappings) to `value` (a scalar)."""

    path: tuple[str, ...]
    value: str | int | float | bool


@dataclass(frozen=True, slots=True)
class WriteBackResult:
    previous_version: str
    version: str
    diff: str
    written: bool


class WriteBackError(Exception):
    """The edit cannot be made as asked (e.g. the value comes from an environment variable)."""


class StaleVersion(Exception):
    """The file on disk is not the version the edit was made against."""

    def __init__(self, current_version: str) -> None:
        super().__init__(f"the config file changed since it was read; its version is now {current_version}")
        self.current_version = current_version


def plan_edits(
    raw: bytes, path: str | os.PathLike[str], edits: Sequence[Edit], *, env: Mapping[str, str] | None = None
) -> tuple[bytes, str]:
    """The new file content with `edits` applied, and its unified diff. Raises ConfigError if invalid."""
    bom = raw.startswith(b"\xef\xbb\xbf")
    text = raw.decode("utf-8-sig")
    for edit in edits:
        text = _apply(text, edit)
    new_raw = (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")
    config = parse_config(new_raw, path, env=env)  # raises ConfigError: the edit would break the config
    _check_applied(new_raw, edits, str(path))
    del config
    name = Path(path).name
    diff = "".join(
        difflib.unified_diff(
            raw.decode("utf-8-sig").splitlines(keepends=True),
            text.splitlines(keepends=True),
            fromfile=f"a/{name}",
            tofile=f"b/{name}",
        )
    )
    return new_raw, diff


def apply_edits(
    path: str | os.PathLike[str],
    edits: Sequence[Edit],
    expected_version: str,
    *,
    write: bool = True,
    env: Mapping[str, str] | None = None,
) -> WriteBackResult:
    """Apply `edits` to the file at `path` if it is still at `expected_version`.

    Raises StaleVersion (file changed since read), ConfigError (result invalid), WriteBackError.
    With `write=False` nothing is written: the result carries the patch to commit instead.
    """
    file = Path(path)
    real = Path(os.path.realpath(file))  # a Kubernetes-style symlink stays a symlink
    raw = real.read_bytes()
    current = config_version(raw)
    if current != expected_version:
        raise StaleVersion(current)
    new_raw, diff = plan_edits(raw, file, edits, env=env)
    new_version = config_version(new_raw)
    if write and new_raw != raw:
        _atomic_replace(real, new_raw, expected=raw)
    return WriteBackResult(
        previous_version=current, version=new_version, diff=diff, written=write and new_raw != raw
    )


def _atomic_replace(real: Path, content: bytes, *, expected: bytes) -> None:
    """Write `content` to a temp file beside `real`, fsync, keep its mode and owner, rename over it."""
    status = real.stat()
    fd, temp = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
            out.flush()
            os.fchmod(out.fileno(), status.st_mode & 0o7777)
            with contextlib.suppress(PermissionError):
                os.fchown(out.fileno(), status.st_uid, status.st_gid)
            os.fsync(out.fileno())
        # Someone may have saved the file while we validated: never overwrite their change.
        if hashlib.sha256(real.read_bytes()).digest() != hashlib.sha256(expected).digest():
            raise StaleVersion(config_version(real.read_bytes()))
        os.replace(temp, real)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    directory = os.open(real.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _compose(text: str) -> Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        raise WriteBackError(f"the config file is not valid YAML: {error}") from None


def _child(node: Node, key: str) -> tuple[Node, Node] | None:
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.value == key:
                return key_node, value_node
    return None


def _apply(text: str, edit: Edit) -> str:
    root = _compose(text)
    if root is None:
        return text + ("" if text.endswith("\n") or not text else "\n") + _block(edit.path, edit.value, 0)
    node: Node = root
    for depth, key in enumerate(edit.path):
        found = _child(node, key)
        if found is None:
            return _insert(text, node, edit.path[depth:], edit.value, edit.path[:depth])
        node = found[1]
    if not isinstance(node, ScalarNode):
        raise WriteBackError(
            f"{'.'.join(edit.path)} is a {type(node).__name__[:-4].lower()}, not a single value"
        )
    if "${" in node.value:
        raise WriteBackError(
            f"{'.'.join(edit.path)} is set from the environment ({node.value}); change the variable instead"
        )
    start, end = node.start_mark.index, node.end_mark.index
    return text[:start] + _scalar(edit.value, node.style) + text[end:]


def _insert(text: str, parent: Node, keys: tuple[str, ...], value: Any, where: tuple[str, ...]) -> str:
    """Add the missing `keys` (nested) with `value` under the block mapping `parent`."""
    if not isinstance(parent, MappingNode):
        raise WriteBackError(f"cannot add {'.'.join(where + keys)}: its parent is not a mapping")
    if parent.flow_style:
        return _insert_flow(text, parent, keys, value)
    if not parent.value:
        raise WriteBackError(
            f"cannot add {'.'.join(where + keys)} to an empty mapping; edit the file by hand"
        )
    indent = parent.value[0][0].start_mark.column
    last = _last_scalar(parent)
    line_end = text.find("\n", last.end_mark.index)
    if line_end == -1:
        return text + "\n" + _block(keys, value, indent).rstrip("\n")
    return text[: line_end + 1] + _block(keys, value, indent) + text[line_end + 1 :]


def _insert_flow(text: str, parent: MappingNode, keys: tuple[str, ...], value: Any) -> str:
    """`{total: 120}` + connect=5 → `{total: 120, connect: 5}`."""
    entry = _scalar(value, None)
    for key in reversed(keys[1:]):
        entry = f"{{{key}: {entry}}}"
    entry = f"{keys[0]}: {entry}"
    if parent.value:
        at = parent.value[-1][1].end_mark.index
        return text[:at] + ", " + entry + text[at:]
    at = parent.start_mark.index + 1
    return text[:at] + entry + text[at:]


def _last_scalar(node: Node) -> Node:
    while isinstance(node, MappingNode | SequenceNode) and node.value:
        last = node.value[-1]
        node = last[1] if isinstance(node, MappingNode) else last
    return node


def _block(keys: tuple[str, ...], value: Any, indent: int, step: int = 2) -> str:
    lines = []
    for depth, key in enumerate(keys):
        pad = " " * (indent + depth * step)
        if depth == len(keys) - 1:
            lines.append(f"{pad}{key}: {_scalar(value, None)}")
        else:
            lines.append(f"{pad}{key}:")
    return "\n".join(lines) + "\n"


def _scalar(value: Any, style: str | None) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    text = str(value)
    if style == "'":
        return "'" + text.replace("'", "''") + "'"
    if style is None and _PLAIN_SAFE.match(text):
        resolved = yaml.safe_load(text)
        if isinstance(resolved, str) and resolved == text:
            return text
    return json.dumps(text, ensure_ascii=False)


def _check_applied(raw: bytes, edits: Sequence[Edit], name: str) -> None:
    data = yaml.safe_load(raw.decode("utf-8-sig")) or {}
    for edit in edits:
        value: Any = data
        for key in edit.path:
            value = value.get(key) if isinstance(value, dict) else None
        if value != edit.value:
            issue = ConfigIssue(
                name, Location(1, 1), ".".join(edit.path), "the edit did not apply as intended"
            )
            raise ConfigError([issue])
