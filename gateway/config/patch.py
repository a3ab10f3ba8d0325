"""Apply an RFC 6902 JSON Patch to gateway.yaml as text: each operation is a minimal source edit.

Every byte outside the edited node stays as it was: comments beside untouched values, quoting,
`${VAR}` references, line endings (CRLF stays CRLF), a byte-order mark, a missing final newline.

Placement rules (docs/config-edits.md):

- `replace` of a scalar by a scalar changes only the scalar's text (its quoting style kept when the
  value allows). Any other replace re-writes the entry (its key text kept) in the file's style.
- `add` of a new mapping key puts it after the mapping's last entry, at the indentation of its
  siblings; in a flow mapping (`{a: 1}`) it is appended inside the braces, in flow style. `add` to a
  sequence inserts the item before the one at that index (`-` appends after the last one), with the
  same dash column (block) or inside the brackets (flow).
- `remove` deletes the entry's lines (its own trailing comment with it); in a flow collection, the
  item and one separating comma. Removing the only entry of a collection leaves `{}` or `[]`.
- `move` between two keys of one mapping renames the key in place; other moves are a remove then an
  add. `copy` is an add of the value read at `from`.
- New values are written as block YAML in the file's indentation (flow inside flow collections);
  strings are quoted only when needed, with the rules of `gateway.config.writeback`.
- A scalar set from the environment (`${VAR}`) is never replaced by content: `replace` of it needs a
  value that is itself a `${...}` reference, `remove` of it is refused (remove the entry that holds
  it, or change the variable). `move` and `copy` carry the reference.
- A node with an anchor (`&name`) that an alias (`*name`) uses elsewhere is not edited, nor anything
  inside it, nor a path through an alias: the edit would change both places, or neither.

The whole patch applies or nothing does; each failure names the operation's index and path.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.config.writeback import EditPlan, WriteBackError, unified_diff
from gateway.config.yamltext import (
    AliasRef,
    FileStyle,
    TextComposer,
    content_end,
    entry_lines,
    file_style,
    flow_text,
    is_flow,
    is_multiline,
    item_lines,
    join_lines,
    line_start,
    region_end,
    render_document,
)

__all__ = ["MAX_OPERATIONS", "PatchError", "PatchOp", "apply_patch_text", "parse_patch", "plan_patch"]

_OPS = ("add", "remove", "replace", "move", "copy", "test")
#: Each operation re-reads the file's text: a patch is an edit by a person or a panel, not a bulk load.
MAX_OPERATIONS = 1000
_REFERENCE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True, slots=True)
class PatchOp:
    op: str
    path: str
    value: Any = None
    from_: str | None = None


class PatchError(WriteBackError):
    """Operation `index` (from 0; -1 for the patch as a whole) cannot be applied; nothing of the patch
    was."""

    def __init__(self, index: int, path: str, message: str, *, kind: str = "invalid") -> None:
        super().__init__(message if index < 0 else f"operation {index} ({path or '/'}): {message}")
        self.index = index
        self.path = path
        self.reason = message
        #: "invalid" (a malformed operation or pointer), "test" (a `test` op failed), "refused" (the
        #: edit cannot be made in this file: `${VAR}`, an alias), "missing" (no such path).
        self.kind = kind


def parse_patch(body: Any) -> list[PatchOp]:
    """A JSON Patch document (already JSON-decoded) as operations. Raises PatchError."""
    if not isinstance(body, list):
        raise PatchError(-1, "", "a JSON Patch is a JSON array of operations")
    if len(body) > MAX_OPERATIONS:
        raise PatchError(-1, "", f"a patch holds at most {MAX_OPERATIONS} operations")
    ops = []
    for index, item in enumerate(body):
        if not isinstance(item, dict):
            raise PatchError(index, "", "each operation is a JSON object")
        op, path = item.get("op"), item.get("path")
        if op not in _OPS:
            raise PatchError(index, str(path or ""), f"op must be one of {', '.join(_OPS)}")
        if not isinstance(path, str):
            raise PatchError(index, "", "path must be a JSON Pointer string")
        _tokens(path, index)
        allowed = {"op", "path"} | ({"value"} if op in ("add", "replace", "test") else set())
        allowed |= {"from"} if op in ("move", "copy") else set()
        unknown = sorted(set(item) - allowed)
        if unknown:
            raise PatchError(index, path, f"{op} takes no member {', '.join(unknown)}")
        if op in ("add", "replace", "test") and "value" not in item:
            raise PatchError(index, path, f"{op} needs a value")
        source = item.get("from")
        if op in ("move", "copy"):
            if not isinstance(source, str):
                raise PatchError(index, path, f"{op} needs from, a JSON Pointer string")
            _tokens(source, index)
            if op == "move" and path.startswith(source + "/"):
                raise PatchError(index, path, "a value cannot be moved into itself")
        ops.append(PatchOp(op, path, item.get("value"), source))
    return ops


def _tokens(pointer: str, index: int) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(index, pointer, "a JSON Pointer is empty or starts with /")
    if re.search(r"~[^01]|~$", pointer):
        raise PatchError(index, pointer, "~ in a JSON Pointer is escaped as ~0 (and / as ~1)")
    return [token.replace("~1", "/").replace("~0", "~") for token in pointer[1:].split("/")]


def plan_patch(raw: bytes, path: str | os.PathLike[str], ops: Sequence[PatchOp]) -> EditPlan:
    """The file content `raw` with the patch applied, and its diff. Raises PatchError."""
    bom = raw.startswith(b"\xef\xbb\xbf")
    try:
        original = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise WriteBackError(f"the config file is not UTF-8 text ({error.reason})") from None
    text = apply_patch_text(original, ops)
    new_raw = (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")
    return EditPlan(raw, new_raw, unified_diff(original, text, path, bom=bom))


def apply_patch_text(text: str, ops: Sequence[PatchOp]) -> str:
    """`text` (a YAML document) with every operation of the patch applied as a source edit."""
    crlf = "\r\n" in text and "\n" not in text.replace("\r\n", "")
    work = text.replace("\r\n", "\n") if crlf else text
    no_final_newline = bool(work) and not work.endswith("\n")
    if no_final_newline:
        work += "\n"
    for index, op in enumerate(ops):
        work = _Editor(work, index, op.path).apply(op)
    if no_final_newline and work.endswith("\n"):
        work = work[:-1]
    return work.replace("\n", "\r\n") if crlf else work


# ---------------------------------------------------------------------------------------------------
# One operation


@dataclass(slots=True)
class _Step:
    """A node reached by a pointer: its parent, the key node (mappings) and the value node."""

    parent: Node | None
    key: Node | None
    node: Node | None
    token: str


class _Editor:
    def __init__(self, text: str, index: int, pointer: str) -> None:
        self.text = text
        self.index = index
        self.pointer = pointer
        loader = TextComposer(text)
        try:
            self.root = loader.get_single_node()
        except yaml.YAMLError as error:
            raise WriteBackError(f"the config file is not valid YAML: {error}") from None
        finally:
            loader.dispose()
        self.anchor_of = loader.anchor_of
        self.aliased = loader.aliased
        self.data = _load(text)

    def fail(self, message: str, kind: str = "invalid", path: str | None = None) -> PatchError:
        return PatchError(self.index, self.pointer if path is None else path, message, kind=kind)

    # -- entry points ------------------------------------------------------------------------------

    def apply(self, op: PatchOp) -> str:
        tokens = _tokens(op.path, self.index)
        expected = copy.deepcopy(self.data)
        if op.op == "test":
            found, value = _get(self.data, tokens)
            if not found:
                raise self.fail("no value at this path", "missing")
            if not _json_equal(value, op.value):
                raise self.fail("test failed: the value is not the one given", "test")
            return self.text
        if op.op == "add":
            _, parent = _get(self.data, tokens[:-1])
            if (
                isinstance(parent, dict)
                and tokens
                and _json_equal(parent.get(tokens[-1], _Unequal), op.value)
            ):
                return self.text  # the key already holds this value: its text stays as it is
            expected = _data_add(expected, tokens, op.value, self)
            result = self.add(tokens, op.value)
        elif op.op == "remove":
            expected = _data_remove(expected, tokens, self)
            result = self.remove(tokens)
        elif op.op == "replace":
            found, _ = _get(self.data, tokens)
            if not found:
                raise self.fail("no value at this path to replace", "missing")
            if _json_equal(_get(self.data, tokens)[1], op.value):
                return self.text  # already this value: its text stays as it is
            expected = _data_replace(expected, tokens, op.value)
            result = self.replace(tokens, op.value)
        else:
            source = _tokens(op.from_ or "", self.index)
            found, value = _get(self.data, source)
            if not found:
                raise self.fail(f"no value at from ({op.from_})", "missing")
            if op.op == "move":
                if source == tokens:
                    return self.text
                expected = _data_add(_data_remove(expected, source, self), tokens, value, self)
                result = self.move(source, tokens, value)
            else:
                expected = _data_add(expected, tokens, value, self)
                result = self.add(tokens, value, carried=True)
        self._check(result, expected)
        return result

    def _check(self, result: str, expected: Any) -> None:
        try:
            got = _load(result)
        except yaml.YAMLError:
            got = _Unequal
        if got is None and expected == {}:
            got = {}
        if not _json_equal(got, expected):
            raise self.fail(
                "this edit cannot be made as text in this file (it would not read back as "
                "the patched value); edit the file by hand",
                "refused",
            )

    # -- navigation --------------------------------------------------------------------------------

    def step(self, tokens: list[str], *, for_add: bool = False) -> _Step:
        """The node at `tokens`: for `add`, its parent must exist, the node itself need not."""
        if self.root is None:
            raise self.fail("the file is empty", "missing")
        parent: Node | None = None
        key: Node | None = None
        node: Node | None = self.root
        token = ""
        for depth, token in enumerate(tokens):
            assert node is not None
            self._guard_alias(node)
            last = depth == len(tokens) - 1
            parent, key = node, None
            if isinstance(node, MappingNode):
                match = [(k, v) for k, v in node.value if isinstance(k, ScalarNode) and k.value == token]
                if match:
                    key, node = match[-1]
                elif last and for_add:
                    node = None
                else:
                    merged = any(
                        isinstance(k, ScalarNode) and k.tag.endswith(":merge") for k, _ in node.value
                    )
                    if merged and _get(self.data, tokens[: depth + 1])[0]:
                        raise self.fail(
                            "the key comes from a merge (<<) of an anchor; edit the anchor", "refused"
                        )
                    raise self.fail(f"no key {token!r} here", "missing")
            elif isinstance(node, SequenceNode):
                if token == "-" and last and for_add:
                    node = None
                    continue
                if not re.fullmatch(r"0|[1-9][0-9]*", token):
                    raise self.fail(f"{token!r} is not a sequence index")
                position = int(token)
                if position < len(node.value):
                    node = node.value[position]
                elif last and for_add and position == len(node.value):
                    node = None
                else:
                    raise self.fail(f"index {position} is past the end of the sequence", "missing")
            else:
                raise self.fail(f"cannot go into a single value with {token!r}", "missing")
        return _Step(parent, key, node, token)

    def _guard_alias(self, node: Node) -> None:
        if isinstance(node, AliasRef):
            raise self.fail(
                f"the path goes through the alias *{node.name}; edit its anchor &{node.name} instead",
                "refused",
            )
        anchor = self.anchor_of.get(id(node))
        if anchor is not None and anchor in self.aliased:
            raise self.fail(
                f"the node has the anchor &{anchor}, which an alias (*{anchor}) uses "
                "elsewhere; an edit here would change both places",
                "refused",
            )

    def _guard_subtree(self, node: Node) -> None:
        """Refuse to drop or rewrite a node holding an anchor that an alias uses."""
        if isinstance(node, AliasRef):
            return
        self._guard_alias(node)
        if isinstance(node, MappingNode):
            for key, value in node.value:
                self._guard_subtree(key)
                self._guard_subtree(value)
        elif isinstance(node, SequenceNode):
            for item in node.value:
                self._guard_subtree(item)

    def _guard_env(self, node: Node, value: Any = None, *, removing: bool = False) -> None:
        if not isinstance(node, ScalarNode):
            return
        names = _REFERENCE.findall(node.value)
        if not names:
            return
        if removing:
            raise self.fail(
                f"the value is set from the environment (${{{names[0]}}}); remove the entry "
                "that holds it or change the variable instead",
                "refused",
            )
        if not (isinstance(value, str) and _REFERENCE.search(value)):
            raise self.fail(
                f"the value is set from the environment (${{{names[0]}}}): it is replaced "
                "only by another ${...} reference; change the variable instead",
                "refused",
            )

    # -- operations --------------------------------------------------------------------------------

    def replace(self, tokens: list[str], value: Any) -> str:
        if not tokens:
            if self.root is not None:
                self._guard_subtree(self.root)
            return render_document(value, self.style())
        step = self.step(tokens)
        assert step.node is not None
        self._guard_subtree(step.node)
        self._guard_env(step.node, value)
        return self._replace_node(step, value)

    def _replace_node(self, step: _Step, value: Any) -> str:
        node, parent = step.node, step.parent
        assert node is not None and parent is not None
        text = self.text
        scalar_new = not isinstance(value, dict | list) or not value
        # A multi-line string in block context is re-written as a literal block (`|`), below.
        literal = is_multiline(value) and not parent.flow_style and not is_flow(node)
        if isinstance(node, ScalarNode | AliasRef) and scalar_new and not literal:
            style = node.style if isinstance(node, ScalarNode) else None
            start, end = node.start_mark.index, content_end(node, text)
            rendered = flow_text(value, style if style in ("'", '"') else None)
            trail = text[start:end][len(text[start:end].rstrip("\n")) :]
            return text[:start] + rendered + trail + text[end:]
        if is_flow(node) or parent.flow_style:
            start, end = node.start_mark.index, content_end(node, text)
            return text[:start] + flow_text(value) + text[end:]
        # A block entry re-written in whole: its key text (or dash) kept, the value in block style.
        start, end, column = self._block_region(step)
        style = self.style()
        if isinstance(parent, MappingNode):
            assert step.key is not None
            key_text = text[step.key.start_mark.index : step.key.end_mark.index]
            lines = entry_lines(key_text, value, column, style)
        else:
            lines = item_lines(value, column, style)
        lines[0] += self._first_line_comment(step)
        first_pad = "" if text[line_start(text, start) : start].strip() else None
        return text[:start] + join_lines(lines, first_pad) + text[end:]

    def _first_line_comment(self, step: _Step) -> str:
        """The comment on the entry's first line (`port: 8080   # the usual port`, `chat:  # note`),
        with the spaces before it, or "": a re-written entry keeps it."""
        text = self.text
        assert step.node is not None
        head = step.key if step.key is not None else step.node
        line_end = text.find("\n", head.start_mark.index)
        line_end = len(text) if line_end == -1 else line_end
        value_end = content_end(step.node, text)
        if step.node.start_mark.index < line_end and value_end <= line_end:
            after = text[value_end:line_end]  # the value sits on this line: what follows it
        elif step.key is not None:
            after = text[step.key.end_mark.index : line_end].lstrip().removeprefix(":")
        else:
            return ""
        match = re.fullmatch(r"\s+#.*", after)
        return match.group() if match else ""

    def add(self, tokens: list[str], value: Any, *, carried: bool = False) -> str:
        if not tokens:
            return self.replace(tokens, value)
        step = self.step(tokens, for_add=True)
        parent = step.parent
        assert parent is not None
        if isinstance(parent, MappingNode) and step.node is not None:
            self._guard_subtree(step.node)
            if not carried:
                self._guard_env(step.node, value)
            return self._replace_node(step, value)
        self._guard_alias(parent)
        text = self.text
        style = self.style()
        if isinstance(parent, MappingNode):
            # Keys quoted alike (all `"x":` or all `'x':`) get a new sibling quoted the same way.
            key_styles = {key.style for key, _ in parent.value if isinstance(key, ScalarNode)}
            key_style = key_styles.pop() if len(key_styles) == 1 else None
            entry_key = flow_text(step.token, key_style if key_style in ("'", '"') else None)
            if parent.flow_style or not parent.value:
                return self._flow_insert(parent, f"{entry_key}: {flow_text(value)}", len(parent.value))
            column = parent.value[0][0].start_mark.column
            last_value = parent.value[-1][1]
            at = region_end(last_value, text)
            return text[:at] + join_lines(entry_lines(entry_key, value, column, style)) + text[at:]
        if not isinstance(parent, SequenceNode):
            raise self.fail("the parent is a single value, not a mapping or a sequence", "missing")
        position = len(parent.value) if step.token == "-" else int(step.token)
        if parent.flow_style or not parent.value:
            return self._flow_insert(parent, flow_text(value), position)
        dash = self._dash(parent.value[0])
        column = dash - line_start(text, dash)
        if position < len(parent.value):
            at = line_start(text, self._dash(parent.value[position]))
        else:
            at = region_end(parent.value[-1], text)
        return text[:at] + join_lines(item_lines(value, column, style)) + text[at:]

    def remove(self, tokens: list[str], *, carried: bool = False) -> str:
        if not tokens:
            raise self.fail("the whole document cannot be removed")
        step = self.step(tokens)
        parent, node = step.parent, step.node
        assert parent is not None and node is not None
        self._guard_alias(parent)
        self._guard_subtree(node)
        if not carried:
            self._guard_env(node, removing=True)
        text = self.text
        entries = parent.value
        count = len(entries)
        if count == 1 and not parent.flow_style and parent is not self.root:
            # The collection becomes empty: `{}` / `[]` in place of its block.
            grand_tokens = tokens[:-1]
            empty: Any = {} if isinstance(parent, MappingNode) else []
            return self._replace_node(self.step(grand_tokens), empty)
        position = next(i for i, e in enumerate(entries) if (e[1] if isinstance(e, tuple) else e) is node)
        if parent.flow_style:

            def start_of(entry: Any) -> int:
                return (entry[0] if isinstance(entry, tuple) else entry).start_mark.index

            def end_of(entry: Any) -> int:
                return content_end(entry[1] if isinstance(entry, tuple) else entry, text)

            if position + 1 < count:
                return text[: start_of(entries[position])] + text[start_of(entries[position + 1]) :]
            if position > 0:
                return text[: end_of(entries[position - 1])] + text[end_of(entries[position]) :]
            return text[: start_of(entries[position])] + text[end_of(entries[position]) :]
        start, end, _ = self._block_region(step)
        if text[line_start(text, start) : start].strip():  # `- a: 1` compact: the next key moves up
            return text[:start] + text[entries[position + 1][0].start_mark.index :]
        return text[:start] + text[end:]

    def move(self, source: list[str], target: list[str], value: Any) -> str:
        if source[:-1] == target[:-1] and source and target:
            step = self.step(source)
            if isinstance(step.parent, MappingNode) and step.key is not None:
                self._guard_alias(step.parent)
                text = self.text
                if _get(self.data, target)[0]:
                    text = _Editor(text, self.index, self.pointer).remove(target)
                    step = _Editor(text, self.index, self.pointer).step(source)
                assert step.key is not None
                key_style = step.key.style if isinstance(step.key, ScalarNode) else None
                rendered = flow_text(target[-1], key_style if key_style in ("'", '"') else None)
                return text[: step.key.start_mark.index] + rendered + text[step.key.end_mark.index :]
        step = self.step(source)
        assert step.node is not None
        self._guard_subtree(step.node)
        editor = _Editor(self.remove(source, carried=True), self.index, self.pointer)
        return editor.add(target, value, carried=True)

    # -- text geometry -------------------------------------------------------------------------------

    def _flow_insert(self, parent: Node, entry: str, position: int) -> str:
        text = self.text
        entries = parent.value
        if not entries:
            if not parent.flow_style:  # pragma: no cover - a block collection always has an entry
                raise self.fail("cannot add to an empty block collection")
            at = parent.start_mark.index + 1
            return text[:at] + entry + text[at:]
        if position < len(entries):
            first = entries[position]
            at = (first[0] if isinstance(first, tuple) else first).start_mark.index
            return text[:at] + entry + ", " + text[at:]
        last = entries[-1]
        at = content_end(last[1] if isinstance(last, tuple) else last, text)
        return text[:at] + ", " + entry + text[at:]

    def _dash(self, item: Node) -> int:
        """The index of the `-` that starts block sequence item `item`."""
        text = self.text
        at = item.start_mark.index - 1
        while at >= 0 and text[at] in " \n":
            at -= 1
        if at < 0 or text[at] != "-":
            raise self.fail("cannot find the dash of this sequence item", "refused")
        if text[line_start(text, at) : at].strip():
            raise self.fail("a sequence item shares its line with another (`- - x`); edit by hand", "refused")
        return at

    def _block_region(self, step: _Step) -> tuple[int, int, int]:
        """[start, end) of a block entry's text (whole lines but for a compact first key) and the
        column of its key or dash."""
        text = self.text
        assert step.node is not None
        if isinstance(step.parent, MappingNode):
            assert step.key is not None
            start = step.key.start_mark.index
            column = step.key.start_mark.column
            if not text[line_start(text, start) : start].strip():
                start = line_start(text, start)
        else:
            dash = self._dash(step.node)
            start = line_start(text, dash)
            column = dash - start
        return start, region_end(step.node, text), column

    def style(self) -> FileStyle:
        return file_style(self.root)


# ---------------------------------------------------------------------------------------------------
# The same patch on plain data: what the edited text must read back as


class _UnequalType:
    pass


_Unequal = _UnequalType()


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _get(data: Any, tokens: list[str]) -> tuple[bool, Any]:
    for token in tokens:
        if isinstance(data, dict) and token in data:
            data = data[token]
        elif isinstance(data, list) and re.fullmatch(r"0|[1-9][0-9]*", token) and int(token) < len(data):
            data = data[int(token)]
        else:
            return False, None
    return True, data


def _data_add(data: Any, tokens: list[str], value: Any, editor: _Editor) -> Any:
    if not tokens:
        return copy.deepcopy(value)
    found, parent = _get(data, tokens[:-1])
    if not found:
        raise editor.fail("the parent of the path does not exist", "missing")
    token = tokens[-1]
    if isinstance(parent, dict):
        parent[token] = copy.deepcopy(value)
    elif isinstance(parent, list):
        if token == "-":
            parent.append(copy.deepcopy(value))
        elif re.fullmatch(r"0|[1-9][0-9]*", token) and int(token) <= len(parent):
            parent.insert(int(token), copy.deepcopy(value))
        else:
            raise editor.fail(
                f"{token!r} is not an index of the sequence (0 to {len(parent)} or -)", "missing"
            )
    else:
        raise editor.fail("the parent of the path is a single value", "missing")
    return data


def _data_remove(data: Any, tokens: list[str], editor: _Editor) -> Any:
    found, _ = _get(data, tokens)
    if not found or not tokens:
        raise editor.fail("no value at this path to remove", "missing")
    _, parent = _get(data, tokens[:-1])
    if isinstance(parent, dict):
        del parent[tokens[-1]]
    else:
        del parent[int(tokens[-1])]
    return data


def _data_replace(data: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return copy.deepcopy(value)
    _, parent = _get(data, tokens[:-1])
    parent[tokens[-1] if isinstance(parent, dict) else int(tokens[-1])] = copy.deepcopy(value)
    return data


def _load(text: str) -> Any:
    return yaml.safe_load(text)
