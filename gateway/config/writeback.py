"""Plan edits of gateway.yaml for the admin panel as text, keeping every other byte of the file.

A value that is already in the file is changed by replacing just that scalar's source span (PyYAML
nodes carry start and end marks); a key that is not there yet is inserted as new lines under its
parent. Planning is pure: `gateway.runtime.edit` validates the result (with every check a reload
makes) and writes the file, under the lock that makes it the only writer.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.config.issues import ConfigError, ConfigIssue, Location
from gateway.config.load import config_version
from gateway.config.yamlsource import CONTROL_CHARACTER

__all__ = [
    "Edit",
    "EditPlan",
    "WriteBackError",
    "plan_commented_edit",
    "plan_edits",
    "scalar_text",
    "unified_diff",
]

_PLAIN_SAFE = re.compile(r"^[A-Za-z0-9_./@+-][A-Za-z0-9_ ./@+:-]*$")


@dataclass(frozen=True, slots=True)
class Edit:
    """Set the value at `path` (keys of nested mappings) to `value` (a scalar)."""

    path: tuple[str, ...]
    value: str | int | float | bool


@dataclass(frozen=True, slots=True)
class EditPlan:
    """The file's content before and after the edits, their versions, and the unified diff."""

    raw: bytes
    new_raw: bytes
    diff: str

    @property
    def version(self) -> str:
        return config_version(self.new_raw)

    @property
    def previous_version(self) -> str:
        return config_version(self.raw)

    @property
    def changes(self) -> bool:
        return self.new_raw != self.raw


class WriteBackError(Exception):
    """The edit cannot be made as asked (e.g. the value comes from an environment variable)."""


def plan_edits(raw: bytes, path: str | os.PathLike[str], edits: Sequence[Edit]) -> EditPlan:
    """The file content `raw` with `edits` applied, and its diff. Nothing is validated here beyond
    the edits having landed as meant (the caller runs the config pipeline once, on `new_raw`).

    Raises WriteBackError (the edit cannot be made in this file) or ConfigError (it did not land).
    """
    bom = raw.startswith(b"\xef\xbb\xbf")
    try:
        original = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise WriteBackError(f"the config file is not UTF-8 text ({error.reason})") from None
    text = original
    for edit in edits:
        text = _apply(text, edit)
    new_raw = (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")
    _check_applied(text, edits, str(path))
    return EditPlan(raw, new_raw, unified_diff(original, text, path, bom=bom))


def plan_commented_edit(raw: bytes, path: str | os.PathLike[str], edit: Edit, comment: str) -> EditPlan:
    """`edit` as `plan_edits` makes it, plus a comment line above the edited value's line (in that
    line's indentation): a change the gateway makes by itself says in the file when and why. Nothing
    at all when the value already is `edit.value` (so a second worker's same edit changes nothing)."""
    plan = plan_edits(raw, path, [edit])
    if not plan.changes:
        return plan
    bom = raw.startswith(b"\xef\xbb\xbf")
    original = raw.decode("utf-8-sig")
    node = _compose(original)
    for key in edit.path:
        found = _child(node, key) if node is not None else None
        if found is None:  # pragma: no cover - plan_edits found it
            raise WriteBackError(f"{'.'.join(edit.path)} is not in the file")
        node = found[1]
    assert node is not None
    start = original.rfind("\n", 0, node.start_mark.index) + 1  # the value's line
    indent = original[start : len(original) - len(original[start:].lstrip(" "))]
    text = plan.new_raw.decode("utf-8-sig")
    note = " ".join(comment.split())  # one line, whatever the comment holds
    text = f"{text[:start]}{indent}# {note}\n{text[start:]}"
    new_raw = (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")
    _check_applied(text, [edit], str(path))
    return EditPlan(raw, new_raw, unified_diff(original, text, path, bom=bom))


def unified_diff(before: str, after: str, path: str | os.PathLike[str], *, bom: bool = False) -> str:
    """The unified diff from `before` to `after` as `git apply` takes it (`a/<name>`, `b/<name>`;
    a last line without a line break is marked so; `bom`: the file starts with a byte-order mark,
    which the first line's context must hold)."""
    name = Path(path).name
    if bom:
        before, after = "\ufeff" + before, "\ufeff" + after
    lines = []
    for line in difflib.unified_diff(
        before.splitlines(keepends=True),
        after.splitlines(keepends=True),
        fromfile=f"a/{name}",
        tofile=f"b/{name}",
    ):
        lines.append(line)
        if not line.endswith("\n"):
            lines.append("\n\\ No newline at end of file\n")
    return "".join(lines)


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
    return text[:start] + scalar_text(edit.value, node.style) + text[end:]


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
    entry = scalar_text(value, None)
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
            lines.append(f"{pad}{key}: {scalar_text(value, None)}")
        else:
            lines.append(f"{pad}{key}:")
    return "\n".join(lines) + "\n"


def scalar_text(value: Any, style: str | None) -> str:
    """`value` as YAML source that our loader (PyYAML, YAML 1.1) reads back as the same value, and that
    YAML 1.2 tools (editors, yq) read the same way too."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        try:
            return str(value)
        except ValueError:  # past Python's int/str digit limit, which the loader has too
            raise WriteBackError("the integer has too many digits") from None
    if isinstance(value, float):
        return _float(value)
    text = str(value)
    control = CONTROL_CHARACTER.search(text)
    if control is not None:
        raise WriteBackError(f"the value contains the control character U+{ord(control.group()):04X}")
    if style == "'" and not _NEEDS_ESCAPE.search(text):
        return "'" + text.replace("'", "''") + "'"
    if style is None and _PLAIN_SAFE.match(text) and not _LOOKS_TYPED.match(text):
        try:
            resolved = yaml.safe_load(text)
        except yaml.YAMLError:
            resolved = None
        if isinstance(resolved, str) and resolved == text:
            return text
    return _double_quoted(text)


def _float(value: float) -> str:
    if not math.isfinite(value):
        raise WriteBackError(f"{value} is not a finite number")
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    text = repr(value)
    # YAML 1.1 reads `1e-07` as a string: its floats need a dot in the mantissa (`1.0e-07`).
    mantissa, e, exponent = text.partition("e")
    if e and "." not in mantissa:
        text = f"{mantissa}.0e{exponent}"
    return text


# A plain scalar that YAML 1.1 or 1.2 could read as a number, a boolean or null is quoted, whatever
# PyYAML alone would make of it (`1e5` is a string to PyYAML but a number to a YAML 1.2 editor).
_LOOKS_TYPED = re.compile(
    r"^(?:[-+.]?[0-9]|[-+]?\.(?:inf|nan)$|(?:y|n|yes|no|on|off|true|false|null)$)", re.IGNORECASE
)
# What a quoted scalar must escape: quotes' own escapes aside, anything outside YAML's printable set,
# plus the characters YAML treats as line breaks (they would be folded) and the byte-order mark.
_NEEDS_ESCAPE = re.compile(r"[^\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]|[\u2028\u2029\ufeff]")


def _double_quoted(text: str) -> str:
    def escape(match: re.Match[str]) -> str:
        code = ord(match.group())
        if code < 0x100:
            return f"\\x{code:02x}"
        return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"

    body = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + _NEEDS_ESCAPE.sub(escape, body) + '"'


def _check_applied(text: str, edits: Sequence[Edit], name: str) -> None:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return  # not YAML any more: the config pipeline reports where, with file:line:col
    for edit in edits:
        value: Any = data
        for key in edit.path:
            value = value.get(key) if isinstance(value, dict) else None
        if value != edit.value:
            issue = ConfigIssue(
                name, Location(1, 1), ".".join(edit.path), "the edit did not apply as intended"
            )
            raise ConfigError([issue])
