"""YAML source text: compose it with aliases kept where they are written, measure where a node's text
starts and ends, and write new values in a file's own style (used by `gateway.config.patch`).

Marks are PyYAML's (character offsets of the text). A node's *content end* is just after its last
character (not its trailing comment); its *region end* is after the line break of the line it ends
on, so an entry's region is whole lines, its own trailing comment included.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.config.writeback import scalar_text

__all__ = [
    "AliasRef",
    "FileStyle",
    "TextComposer",
    "block_literal",
    "content_end",
    "entry_lines",
    "file_style",
    "flow_text",
    "is_flow",
    "is_multiline",
    "item_lines",
    "join_lines",
    "line_start",
    "region_end",
    "render_document",
]

#: A `${VAR}` reference alone, written plain (as people write it) when YAML reads it back the same.
_PLAIN_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-[A-Za-z0-9_./@+-]*)?\}")


class AliasRef(Node):
    """An alias (`*name`) where it is written (PyYAML's composer returns the anchored node itself)."""

    id = "alias"

    def __init__(self, name: str, target: Node, start_mark: Any, end_mark: Any) -> None:
        super().__init__("alias", target, start_mark, end_mark)
        self.name = name


class TextComposer(yaml.SafeLoader):
    """Composes nodes as SafeLoader does, but an alias stays an `AliasRef` where it is written, and
    it records which nodes carry an anchor (`anchor_of`, by id) and which anchors an alias uses."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.anchor_of: dict[int, str] = {}
        self.aliased: set[str] = set()

    def compose_node(self, parent: Node | None, index: Any) -> Node:  # type: ignore[override]
        if self.check_event(AliasEvent):
            event = self.peek_event()
            target = super().compose_node(parent, index)
            self.aliased.add(event.anchor)
            return AliasRef(event.anchor, target, event.start_mark, event.end_mark)
        event = self.peek_event()
        node = super().compose_node(parent, index)
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            self.anchor_of[id(node)] = anchor
        return node


def is_flow(node: Node) -> bool:
    return isinstance(node, MappingNode | SequenceNode) and bool(node.flow_style)


def line_start(text: str, index: int) -> int:
    return text.rfind("\n", 0, index) + 1


def content_end(node: Node, text: str) -> int:
    """The index just after the node's last character of content (not its trailing comments)."""
    if isinstance(node, MappingNode | SequenceNode) and not node.flow_style and node.value:
        last = node.value[-1]
        return content_end(last[1] if isinstance(last, tuple) else last, text)
    end = node.end_mark.index
    if isinstance(node, ScalarNode) and node.style in (None, "|", ">"):
        # A block scalar's end mark sits past its line break and any blank lines after it, a plain
        # multi-line scalar's may sit past spaces: its content ends at its last character.
        while end > node.start_mark.index and text[end - 1] in " \n":
            end -= 1
    return end


def region_end(node: Node, text: str) -> int:
    """The index after the line (its comment and line break included) where `node`'s content ends."""
    end = content_end(node, text)
    if end > 0 and text[end - 1] == "\n":
        return end
    line_end = text.find("\n", end)
    return len(text) if line_end == -1 else line_end + 1


@dataclass(frozen=True, slots=True)
class FileStyle:
    #: Spaces per nesting level of mappings, and how far a block sequence under a key is indented.
    step: int = 2
    sequence_indent: int = 2


def file_style(root: Node | None) -> FileStyle:
    step: int | None = None
    sequence: int | None = None
    pending = [root] if root is not None else []
    while pending and (step is None or sequence is None):
        node = pending.pop(0)
        if isinstance(node, MappingNode) and not node.flow_style:
            for key, value in node.value:
                if isinstance(value, MappingNode) and not value.flow_style and value.value:
                    offset = value.value[0][0].start_mark.column - key.start_mark.column
                    if step is None and offset > 0:
                        step = offset
                block_sequence = isinstance(value, SequenceNode) and not value.flow_style
                if block_sequence and value.value and sequence is None:
                    item = value.value[0]
                    # the item's dash sits two columns before a compact item's content
                    sequence = max(0, item.start_mark.column - 2 - key.start_mark.column)
                pending.append(value)
        elif isinstance(node, SequenceNode) and not node.flow_style:
            pending.extend(node.value)
    step = step or 2
    return FileStyle(step, step if sequence is None else sequence)


def flow_text(value: Any, style: str | None = None) -> str:
    """`value` as flow YAML (a scalar with writeback's quoting rules; `{a: 1}`, `[1, 2]`)."""
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{flow_text(str(k))}: {flow_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(flow_text(v) for v in value) + "]"
    if style is None and isinstance(value, str) and _PLAIN_REFERENCE.fullmatch(value):
        with contextlib.suppress(yaml.YAMLError):
            if yaml.safe_load(value) == value:
                return value
    if isinstance(value, str) and (
        "," in value
        or "[" in value
        or "]" in value
        or "{" in value
        or "}" in value
        or "#" in value
        or ": " in value
    ):
        return scalar_text(value, '"')
    return scalar_text(value, style)


def _is_leaf(value: Any) -> bool:
    return not isinstance(value, dict | list) or not value


def entry_lines(key_text: str, value: Any, column: int, style: FileStyle) -> list[str]:
    pad = " " * column
    literal = block_literal(value, column + style.step)
    if literal is not None:
        return [f"{pad}{key_text}: {literal[0]}", *literal[1:]]
    if _is_leaf(value):
        return [f"{pad}{key_text}: {flow_text(value)}"]
    if isinstance(value, dict):
        lines = [f"{pad}{key_text}:"]
        for k, v in value.items():
            lines += entry_lines(flow_text(str(k)), v, column + style.step, style)
        return lines
    lines = [f"{pad}{key_text}:"]
    for item in value:
        lines += item_lines(item, column + style.sequence_indent, style)
    return lines


def item_lines(value: Any, column: int, style: FileStyle) -> list[str]:
    pad = " " * column
    literal = block_literal(value, column + 2)
    if literal is not None:
        return [f"{pad}- {literal[0]}", *literal[1:]]
    if _is_leaf(value):
        return [f"{pad}- {flow_text(value)}"]
    inner = (
        [line for k, v in value.items() for line in entry_lines(flow_text(str(k)), v, column + 2, style)]
        if isinstance(value, dict)
        else [line for item in value for line in item_lines(item, column + 2, style)]
    )
    return [f"{pad}- {inner[0][column + 2 :]}", *inner[1:]]


#: What a literal block scalar can hold as it is: printable text and line breaks, no tab, nothing
#: YAML folds or strips (the other line separators, a byte-order mark).
_LITERAL_SAFE = re.compile(
    r"[\x20-\x7e\n\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]*"
)


def is_multiline(value: Any) -> bool:
    """A string with a line break inside: written as a literal block (`|`) where one fits."""
    return isinstance(value, str) and "\n" in value.rstrip("\n")


def block_literal(value: Any, indent: int) -> list[str] | None:
    """A multi-line string as a literal block: its header (`|` or `|-`) then its lines at `indent`,
    or None when the text cannot be one (it is read back to be sure)."""
    if not is_multiline(value) or not _LITERAL_SAFE.fullmatch(value) or value[0] in " \n":
        return None
    if value.endswith("\n\n") or any(line != line.rstrip(" ") for line in value.split("\n")):
        return None
    header = "|" if value.endswith("\n") else "|-"
    body = [(" " * indent + line) if line else "" for line in value.removesuffix("\n").split("\n")]
    try:
        if yaml.safe_load("k: " + header + "\n" + "\n".join(body) + "\n") != {"k": value}:
            return None
    except yaml.YAMLError:
        return None
    return [header, *body]


def join_lines(lines: list[str], first_pad: str | None = None) -> str:
    if first_pad is not None and lines:
        lines = [lines[0].lstrip(" "), *lines[1:]]
    return "".join(line + "\n" for line in lines)


def render_document(value: Any, style: FileStyle) -> str:
    if isinstance(value, dict) and value:
        return "".join(join_lines(entry_lines(flow_text(str(k)), v, 0, style)) for k, v in value.items())
    if isinstance(value, list) and value:
        return "".join(join_lines(item_lines(v, 0, style)) for v in value)
    return flow_text(value) + "\n"
