"""JSON Patch as source edits, over a corpus of hand-written config files (tests/config/corpus/).

For each file and each kind of operation at every path where it applies:
(a) the bytes outside the edited node are unchanged, (b) the result reads back as the data that the
same patch gives applied to the parsed data (by the small reference applier below), (c) the loader
accepts the result exactly when it accepts that data, (d) the inverse operation restores the
original bytes (where the inverse is an edit that puts them back: see `inverse`).
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yaml.nodes import MappingNode, Node, SequenceNode

from gateway.config.issues import ConfigError
from gateway.config.load import parse_config
from gateway.config.patch import PatchError, apply_patch_text, parse_patch, plan_patch

CORPUS = sorted((Path(__file__).parent / "corpus").glob("*.yaml"))
ENV = {
    "OPENAI_API_KEY": "sk-corpus-secret",
    "ANTHROPIC_API_KEY": "",
    "GW_CLIENT_KEY": "client-key-for-the-corpus",
    "GW_BATCH_KEY": "batch-key-for-the-corpus",
    "GW_ADMIN_KEY": "admin-key-for-the-corpus",
}
ENV_REFERENCE = re.compile(r"(?<!\$)\$\{")


# The test's own reading of YAML: libyaml's parser, which gives the same data and the same marks as
# PyYAML's (the editor under test uses PyYAML's) at a fraction of the time.
def read(text: str) -> Any:
    return yaml.load(text, Loader=yaml.CSafeLoader)


def compose(text: str) -> Node | None:
    return yaml.compose(text, Loader=yaml.CSafeLoader)


# --- a reference JSON Patch applier on plain data (RFC 6902), independent of the editor ---------


def pointer(tokens: tuple[Any, ...]) -> str:
    return "".join("/" + str(t).replace("~", "~0").replace("/", "~1") for t in tokens)


def reference_apply(data: Any, ops: list[dict[str, Any]]) -> Any:
    data = copy.deepcopy(data)
    for op in ops:
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in op["path"].split("/")[1:]]
        if op["op"] in ("move", "copy"):
            source = [t.replace("~1", "/").replace("~0", "~") for t in op["from"].split("/")[1:]]
            value = copy.deepcopy(get(data, source))
            if op["op"] == "move":
                data = remove(data, source)
            data = add(data, tokens, value)
        elif op["op"] == "add":
            data = add(data, tokens, copy.deepcopy(op["value"]))
        elif op["op"] == "remove":
            data = remove(data, tokens)
        elif op["op"] == "replace":
            data = add(remove(data, tokens), tokens, copy.deepcopy(op["value"]))
        elif get(data, tokens) != op["value"]:
            raise AssertionError("test failed")
    return data


def get(data: Any, tokens: list[str]) -> Any:
    for token in tokens:
        data = data[token] if isinstance(data, dict) else data[int(token)]
    return data


def add(data: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = get(data, tokens[:-1])
    if isinstance(parent, dict):
        parent[tokens[-1]] = value
    else:
        parent.insert(len(parent) if tokens[-1] == "-" else int(tokens[-1]), value)
    return data


def remove(data: Any, tokens: list[str]) -> Any:
    parent = get(data, tokens[:-1])
    del parent[tokens[-1] if isinstance(parent, dict) else int(tokens[-1])]
    return data


# --- the corpus ----------------------------------------------------------------------------------


def text_of(path: Path) -> str:
    return path.read_bytes().decode("utf-8-sig")


def nodes(node: Node, tokens: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Node]]:
    yield tokens, node
    if isinstance(node, MappingNode):
        for key, value in node.value:
            if key.tag.endswith(":merge"):
                continue
            yield from nodes(value, (*tokens, key.value))
    elif isinstance(node, SequenceNode):
        for position, item in enumerate(node.value):
            yield from nodes(item, (*tokens, position))


def new_value(old: Any) -> Any:
    if isinstance(old, bool):
        return not old
    if isinstance(old, int):
        return old + 7
    if isinstance(old, str):
        return old + "-v2"
    return "replaced"


def operations(text: str) -> Iterator[tuple[str, list[dict[str, Any]], list[dict[str, Any]] | None]]:
    """(name, patch, inverse patch or None) for every path of the document."""
    root = compose(text.replace("\r\n", "\n"))
    data = read(text)
    for tokens, _node in nodes(root):
        if not tokens:
            continue
        path = pointer(tokens)
        value = get(data, [str(t) for t in tokens])
        parent = get(data, [str(t) for t in tokens[:-1]])
        if not isinstance(value, dict | list):
            new = new_value(value)
            yield (
                f"replace {path}",
                [{"op": "replace", "path": path, "value": new}],
                [{"op": "replace", "path": path, "value": value}],
            )
            if isinstance(value, str) and "${" not in value:
                lines = value + "\nand a second line"
                yield f"replace {path} multi-line", [{"op": "replace", "path": path, "value": lines}], None
        yield f"test {path}", [{"op": "test", "path": path, "value": value}], None
        if isinstance(parent, dict):
            yield f"remove {path}", [{"op": "remove", "path": path}], None
            renamed = pointer((*tokens[:-1], f"{tokens[-1]}_renamed"))
            yield (
                f"rename {path}",
                [{"op": "move", "from": path, "path": renamed}],
                [{"op": "move", "from": renamed, "path": path}],
            )
            copied = pointer((*tokens[:-1], f"{tokens[-1]}_copy"))
            # A copied `${VAR}` is not removed again (removing an environment value is refused).
            carries_env = isinstance(value, str) and "${" in value
            yield (
                f"copy {path}",
                [{"op": "copy", "from": path, "path": copied}],
                (None if carries_env else [{"op": "remove", "path": copied}]),
            )
        else:
            # Its inverse, an add, cannot bring back the removed item's comment or its quoting.
            yield f"remove {path}", [{"op": "remove", "path": path}], None
        if isinstance(value, dict):
            for name, added in [("scalar", "new: value"), ("mapping", {"a": 1, "b": ["x", "y z"]})]:
                at = pointer((*tokens, "added_key"))
                yield (
                    f"add {name} {at}",
                    [{"op": "add", "path": at, "value": added}],
                    [{"op": "remove", "path": at}],
                )
        if isinstance(value, list):
            for index in ("0", "-"):
                at = path + "/" + index
                back = path + "/" + ("0" if index == "0" else str(len(value)))
                for added in ("item", {"backend": "up", "model": "m-2"}):
                    yield (
                        f"add {at} {added}",
                        [{"op": "add", "path": at, "value": added}],
                        [{"op": "remove", "path": back}],
                    )


def span_of_parent(text: str, ops: list[dict[str, Any]]) -> tuple[int, int]:
    """[start, end) of the lines of the edited node's parent collection (where an edit may land)."""
    root = compose(text)
    data = read(text)
    paths = [op["path"] for op in ops] + [op["from"] for op in ops if "from" in op]
    start, end = len(text), 0
    for path in paths:
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in path.split("/")[1:]]
        node = root
        if op_of(ops, path) == "remove" and len(get(data, tokens[:-1])) == 1:
            tokens = tokens[:-1]  # the collection left empty is written `{}` or `[]` in its parent
        for token in tokens[:-1]:
            if isinstance(node, MappingNode):
                node = next(v for k, v in node.value if k.value == token)
            else:
                node = node.value[int(token)]
        start = min(start, text.rfind("\n", 0, node.start_mark.index) + 1)
        line_end = text.find("\n", node.end_mark.index)
        end = max(end, len(text) if line_end == -1 else line_end + 1)
    return start, end


def op_of(ops: list[dict[str, Any]], path: str) -> str:
    return next(op["op"] for op in ops if op["path"] == path or op.get("from") == path)


def valid(text: str, name: str) -> bool:
    try:
        parse_config(text.encode(), name, env=ENV)
    except ConfigError:
        return False
    return True


CASES = [(path, *case) for path in CORPUS for case in operations(text_of(path))]


def test_the_corpus_covers_the_styles() -> None:
    raws = [path.read_bytes() for path in CORPUS]
    assert len(CORPUS) >= 10
    assert any(b"\r\n" in raw for raw in raws) and any(raw.startswith(b"\xef\xbb\xbf") for raw in raws)
    assert sum(not raw.endswith(b"\n") for raw in raws) >= 2
    assert any(b"&" in raw and b"*" in raw for raw in raws)
    assert all(b"#" in raw for raw in raws)
    for path in CORPUS:
        assert valid(text_of(path), path.name), path.name


@pytest.mark.parametrize(
    ("path", "name", "ops", "inverse"), CASES, ids=[f"{c[0].stem}:{c[1]}" for c in CASES]
)
def test_patch_is_a_minimal_source_edit(
    path: Path, name: str, ops: list[dict[str, Any]], inverse: list[dict[str, Any]] | None
) -> None:
    text = text_of(path)
    data = read(text)
    try:
        result = apply_patch_text(text, parse_patch(ops))
    except PatchError as error:
        # Refused only for the documented reasons: an environment reference, or an anchor in use.
        assert error.kind == "refused" and error.index == 0, str(error)
        assert "${" in error.reason or "anchor" in error.reason or "alias" in error.reason, str(error)
        return
    expected = reference_apply(data, ops)
    # (b) the same data as the patch applied to the parsed file
    assert read(result) == expected or (expected == {} and read(result) is None)
    if ops[0]["op"] == "test":
        assert result == text
        return
    # (a) nothing outside the edited node's parent collection changed
    prefix = len(_common_prefix(text, result))
    suffix = len(_common_prefix(text[prefix:][::-1], result[prefix:][::-1]))
    start, end = span_of_parent(text.replace("\r\n", "\n"), ops)
    crlf = "\r\n" in text
    if crlf:
        start += text.replace("\r\n", "\n")[:start].count("\n")
        end += text.replace("\r\n", "\n")[:end].count("\n")
    assert prefix >= start and len(text) - suffix <= end, (text[prefix : len(text) - suffix], result)
    assert ("\r\n" in result) == crlf and (result.endswith("\n") == text.endswith("\n"))
    # (c) the loader accepts the result exactly when it accepts the patched data
    assert valid(result, path.name) == valid(yaml.dump(expected, Dumper=yaml.CSafeDumper), path.name)
    # (d) the inverse edit puts the original bytes back
    if inverse is None:
        return
    restored = apply_patch_text(result, parse_patch(inverse))
    if inverse[0]["op"] != "replace":
        assert restored == text
        return
    # A scalar put back is written in the editor's quoting (`127.0.0.1` comes back as "127.0.0.1"
    # in a file read by YAML 1.2 tools too): only its own text may differ.
    assert read(restored) == data
    if restored == text:
        return
    node = dict(nodes(compose(text)))[tuple(_tokens(inverse[0]["path"]))]
    prefix = len(_common_prefix(text, restored))
    suffix = len(_common_prefix(text[prefix:][::-1], restored[prefix:][::-1]))
    assert prefix >= node.start_mark.index and len(text) - suffix <= node.end_mark.index


def _tokens(path: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in path.split("/")[1:]]


def test_a_failing_test_op_changes_nothing_and_names_its_index() -> None:
    text = text_of(CORPUS[0])
    patch = [
        {"op": "replace", "path": "/timeouts/chat/total", "value": 1},
        {"op": "test", "path": "/timeouts/chat/connect", "value": 11},
    ]
    with pytest.raises(PatchError) as caught:
        apply_patch_text(text, parse_patch(patch))
    assert (caught.value.index, caught.value.path, caught.value.kind) == (1, "/timeouts/chat/connect", "test")


def _common_prefix(a: str, b: str) -> str:
    end = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        end += 1
    return a[:end]


PAIRS = [(path, [case[1] for case in operations(text_of(path))]) for path in CORPUS]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_several_operations_in_one_patch_equal_the_reference(data: st.DataObject) -> None:
    """Operations applied one after another on the re-read text give what the reference gives; a
    patch the reference cannot apply is refused whole."""
    path, patches = data.draw(st.sampled_from(PAIRS))
    ops = [
        op for patch in data.draw(st.lists(st.sampled_from(patches), min_size=2, max_size=4)) for op in patch
    ]
    text = text_of(path)
    try:
        expected = reference_apply(read(text), ops)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, AssertionError):
        expected = None
    try:
        result = apply_patch_text(text, parse_patch(ops))
    except PatchError as error:
        if expected is not None:  # refused only for the documented reasons
            assert error.kind == "refused", str(error)
        return
    assert expected is not None, f"the editor applied a patch the reference cannot: {ops}"
    assert read(result) == expected or (expected == {} and read(result) is None)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_the_diff_is_a_patch_git_apply_takes(path: Path, tmp_path: Path) -> None:
    """The diff `admin.write_back: false` hands back, applied by git to the original file, gives the
    edited bytes (CRLF, a byte-order mark, a last line without a line break included)."""
    raw = path.read_bytes()
    data = read(text_of(path))
    first, last = next(iter(data)), list(data)[-1]
    ops = [
        {"op": "add", "path": f"/{last}/zz_added", "value": 1}
        if isinstance(data[last], dict)
        else {"op": "add", "path": "/zz_added", "value": 1},
        {"op": "move", "from": f"/{first}", "path": f"/{first}_renamed"},
    ]
    plan = plan_patch(raw, path.name, parse_patch(ops))
    (tmp_path / path.name).write_bytes(raw)
    (tmp_path / "change.patch").write_bytes(plan.diff.encode())
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "apply", "--check", "change.patch"], cwd=tmp_path, check=True)
    subprocess.run(["git", "apply", "change.patch"], cwd=tmp_path, check=True)
    assert (tmp_path / path.name).read_bytes() == plan.new_raw
