"""Read YAML into plain data while remembering where every key and value sits in the file.

PyYAML's node graph carries start marks; we walk it ourselves so that duplicate keys, `${VAR}`
references and, later, schema errors can all be reported as `file:line:col: path: message`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

from gateway.config.issues import ConfigIssue, Location

__all__ = ["CONTROL_CHARACTER", "ENV_MARK", "LocatedDocument", "parse_yaml", "text_location"]

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
#: The scalar types a config value can have (those of JSON, which the schema describes).
_VALUE_TAGS = {
    _STR_TAG: "a string",
    "tag:yaml.org,2002:int": "an integer",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "true or false",
    "tag:yaml.org,2002:null": "null",
}
#: C0 controls but tab and line breaks, and DEL: refused in keys and values (only an escape such as
#: `"\x00"` can put one there; the raw characters are refused by YAML itself).
CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# ${VAR}, ${VAR:-default} (default when unset or empty), ${VAR-default} (default when unset);
# $${...} is a literal "${...}".
_REFERENCE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")

Path = tuple[str | int, ...]

#: Stands for an environment reference in `LocatedDocument.written` (never in a value: it is refused).
ENV_MARK = "\x00"


@dataclass
class LocatedDocument:
    """Plain data (dicts, lists, scalars) plus the location of each value and each mapping key."""

    data: Any
    values: dict[Path, Location] = field(default_factory=dict)
    keys: dict[Path, Location] = field(default_factory=dict)
    #: Paths whose value came (in whole or part) from the environment, with the variables used.
    from_env: dict[Path, tuple[str, ...]] = field(default_factory=dict)
    #: Environment variables referenced but unset, when they are allowed to be (`gateway check --no-env`).
    unset: set[str] = field(default_factory=set)
    #: For each value in `from_env`, what the file itself holds whatever the environment says: the
    #: text with each `${VAR...}` replaced by its default's text between two `ENV_MARK`s.
    written: dict[Path, str] = field(default_factory=dict)

    def location(self, path: Path) -> Location:
        """Where `path` is in the file: its value, else its key, else the nearest enclosing value."""
        if path in self.values:
            return self.values[path]
        if path in self.keys:
            return self.keys[path]
        for end in range(len(path) - 1, -1, -1):
            if path[:end] in self.values:
                return self.values[path[:end]]
        return Location(1, 1)

    def key_location(self, path: Path) -> Location:
        return self.keys.get(path) or self.location(path)


class _Loader(yaml.SafeLoader):
    pass


def parse_yaml(
    text: str, filename: str, env: Mapping[str, str] | None = None, *, strict_env: bool = True
) -> tuple[LocatedDocument | None, list[ConfigIssue]]:
    """Parse `text`; return the located document and every problem found (syntax, duplicates, env)."""
    environ = os.environ if env is None else env
    loader: _Loader | None = None
    try:
        loader = _Loader(text)  # PyYAML refuses a control character here, before any parsing
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as error:
        return None, [_syntax_issue(error, filename)]
    except ReaderError as error:
        return None, [_character_issue(text, error.position, error.character, filename)]
    except RecursionError:
        return None, [ConfigIssue(filename, Location(1, 1), "", _TOO_DEEP)]
    except yaml.YAMLError as error:  # pragma: no cover - PyYAML raises marked errors for text input
        return None, [ConfigIssue(filename, Location(1, 1), "", f"invalid YAML: {error}")]
    finally:
        if loader is not None:
            loader.dispose()
    doc = LocatedDocument(data=None)
    issues: list[ConfigIssue] = []
    if root is None:  # empty, or only comments: `data` stays None and the caller says what it needs
        return doc, issues
    walker = _Walker(loader, doc, issues, filename, environ, strict_env)
    try:
        doc.data = walker.construct(root, ())
    except RecursionError:
        return None, [ConfigIssue(filename, Location(1, 1), "", _TOO_DEEP)]
    return doc, issues


_TOO_DEEP = "the YAML nests too deeply (lists or mappings hundreds of levels inside each other)"


def text_location(text: str, index: int) -> Location:
    """The line and column (from 1) of character `index` of `text`."""
    line_start = text.rfind("\n", 0, index) + 1
    return Location(text.count("\n", 0, index) + 1, index - line_start + 1)


def _character_issue(text: str, index: int, code: int, filename: str) -> ConfigIssue:
    if code == 0:
        message = "a NUL byte is not allowed in the config file (is it binary, or cut short?); remove it"
    else:
        message = f"the control character U+{code:04X} is not allowed in YAML; remove it"
    return ConfigIssue(filename, text_location(text, index), "", message)


def _syntax_issue(error: yaml.MarkedYAMLError, filename: str) -> ConfigIssue:
    mark = error.problem_mark or error.context_mark
    problem = error.problem or "invalid YAML"
    if "'\\t'" in problem or "\t" in problem:
        message = "tab character: YAML indentation must use spaces, not tabs"
    elif "<stream end>" in problem and error.context_mark is not None:
        # Reported at the end of the file, but the mistake is the bracket or quote left open.
        mark = error.context_mark
        message = f"invalid YAML: unclosed {error.context.removeprefix('while parsing a ')} starting here"
    else:
        context = f" ({error.context})" if error.context else ""
        message = f"invalid YAML: {problem}{context}"
    where = Location(mark.line + 1, mark.column + 1) if mark else Location(1, 1)
    return ConfigIssue(filename, where, "", message)


class _Walker:
    def __init__(
        self,
        loader: _Loader,
        doc: LocatedDocument,
        issues: list[ConfigIssue],
        filename: str,
        env: Mapping[str, str],
        strict_env: bool,
    ) -> None:
        self.loader = loader
        self.doc = doc
        self.issues = issues
        self.filename = filename
        self.env = env
        self.strict_env = strict_env
        self.active: set[int] = set()

    def issue(self, node: Node, path: Path, message: str, column_offset: int = 0) -> None:
        mark = node.start_mark
        where = Location(mark.line + 1, mark.column + 1 + column_offset)
        self.issues.append(ConfigIssue(self.filename, where, ConfigIssue.format_path(path), message))

    def construct(self, node: Node, path: Path) -> Any:
        self.doc.values[path] = Location(node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if id(node) in self.active:  # an alias that contains itself
            self.issue(node, path, "recursive YAML alias")
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return [self.construct(item, (*path, i)) for i, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                return self.mapping(node, path)
        finally:
            self.active.discard(id(node))
        self.issue(node, path, f"unsupported YAML node {node.tag}")  # pragma: no cover
        return None

    def mapping(self, node: MappingNode, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first_seen: dict[str, Node] = {}
        pairs = list(node.value)
        merged: list[tuple[Node, Node]] = []
        for key_node, value_node in pairs:
            if key_node.tag == _MERGE_TAG:
                # `<<: *anchor` merge keys: the mapping's own keys win over merged ones.
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in sources:
                    if isinstance(source, MappingNode):
                        merged.extend(source.value)
                    else:
                        self.issue(source, path, "a merge key (<<) must name a mapping")
        own_keys = set()
        for key_node, value_node in pairs:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.key(key_node, path)
            if key is None:
                continue
            if key in first_seen:
                first = first_seen[key].start_mark.line + 1
                self.issue(key_node, (*path, key), f"duplicate key '{key}' (first defined on line {first})")
                continue
            first_seen[key] = key_node
            own_keys.add(key)
            self.doc.keys[(*path, key)] = Location(
                key_node.start_mark.line + 1, key_node.start_mark.column + 1
            )
            result[key] = self.construct(value_node, (*path, key))
        for key_node, value_node in merged:
            key = self.key(key_node, path)
            if key is None or key in own_keys or key in result:
                continue
            self.doc.keys[(*path, key)] = Location(
                key_node.start_mark.line + 1, key_node.start_mark.column + 1
            )
            result[key] = self.construct(value_node, (*path, key))
        return result

    def key(self, node: Node, path: Path) -> str | None:
        if not isinstance(node, ScalarNode):
            self.issue(node, path, "mapping keys must be plain strings")
            return None
        # The key as written: `on:` or `1:` would otherwise become a bool or an int; keys are names here.
        return self.checked_text(node, path, node.value)

    def checked_text(self, node: ScalarNode, path: Path, text: str) -> str:
        control = CONTROL_CHARACTER.search(text)
        if control is not None:
            self.issue(node, path, f"the control character U+{ord(control.group()):04X} is not allowed here")
        return text

    def typed(self, node: ScalarNode, path: Path) -> Any:
        """The value of a scalar whose text is final: a string, number, boolean or null, as in JSON."""
        if node.tag == _TIMESTAMP_TAG:
            # YAML 1.1 reads `2025-01-31` as a date; a setting is never one (YAML 1.2 keeps the string).
            return self.checked_text(node, path, node.value)
        kind = _VALUE_TAGS.get(node.tag)
        if kind is None:
            standard = "tag:yaml.org,2002:"
            tag = "!!" + node.tag.removeprefix(standard) if node.tag.startswith(standard) else node.tag
            self.issue(
                node, path, f"unsupported YAML tag {tag}: a value is a string, number, true/false or null"
            )
            return None
        try:
            value = self.loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError) as error:
            shown = node.value if len(node.value) <= 40 else node.value[:40] + "..."
            # Python refuses ints of more than 4300 digits (its int/str conversion limit).
            reason = "has too many digits" if "digits" in str(error) else f"is not {kind}"
            self.issue(node, path, f"{shown!r} {reason}")
            return None
        return self.checked_text(node, path, value) if isinstance(value, str) else value

    def scalar(self, node: ScalarNode, path: Path) -> Any:
        if node.tag != _STR_TAG or "$" not in node.value:
            return self.typed(node, path)
        text = node.value
        whole = _REFERENCE.fullmatch(text)
        parts: list[str] = []
        written: list[str] = []
        position = 0
        used_env: list[str] = []
        for match in _REFERENCE.finditer(text):
            parts.append(text[position : match.start()])
            written.append(text[position : match.start()])
            position = match.end()
            escaped, name, operator, default = match.groups()
            if escaped:
                parts.append(match.group(0)[1:])
                written.append(match.group(0)[1:])
                continue
            used_env.append(name)
            written.append(ENV_MARK + (default or "") + ENV_MARK)
            value = self.env.get(name)
            if value is None or (operator == ":-" and value == ""):
                if operator is not None:
                    value = default
                elif self.strict_env:
                    offset = match.start() if node.style is None and "\n" not in text else 0
                    self.issue(
                        node,
                        path,
                        f"environment variable {name} is not set and ${{{name}}} has no default "
                        f"(write ${{{name}:-default}} to give one)",
                        offset,
                    )
                    value = ""
                else:
                    self.doc.unset.add(name)
                    value = ""
            parts.append(value)
        parts.append(text[position:])
        written.append(text[position:])
        result = "".join(parts)
        if used_env:
            self.doc.from_env[path] = tuple(used_env)
            self.doc.written[path] = "".join(written)
        if whole is not None and node.style is None and result != "":
            # A plain scalar that is exactly one reference takes the type of what it resolves to,
            # so `port: ${PORT:-8080}` is the integer 8080, as if it had been written there.
            tag = self.loader.resolve(ScalarNode, result, (True, False))
            return self.typed(ScalarNode(tag, result, node.start_mark, node.end_mark), path)
        return self.checked_text(node, path, result)
