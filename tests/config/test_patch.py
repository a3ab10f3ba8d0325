"""JSON Patch as source edits: the placement rules, one by one, with the exact text they give."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from gateway.config.load import config_version
from gateway.config.patch import PatchError, apply_patch_text, parse_patch, plan_patch

FILE = """\
backends:
  openai:                         # primary
    type: openai
    api_key: ${OPENAI_API_KEY}    # from the secret store
models:
  chat:
    chain:
      - backend: openai
        model: gpt-4o          # fast
      - backend: openai
        model: gpt-4o-mini
    aliases: [a, b]
timeouts:
  chat: &tier
    total: 900     # 15 minutes
  completions: *tier
  embeddings: {total: 120}
"""


def patched(*ops: dict[str, Any], text: str = FILE) -> str:
    return apply_patch_text(text, parse_patch(list(ops)))


def refused(*ops: dict[str, Any], text: str = FILE) -> PatchError:
    with pytest.raises(PatchError) as caught:
        patched(*ops, text=text)
    return caught.value


def test_a_scalar_replace_changes_only_its_text() -> None:
    after = patched({"op": "replace", "path": "/models/chat/chain/0/model", "value": "gpt-4.1"})
    assert after == FILE.replace("model: gpt-4o          # fast", "model: gpt-4.1          # fast")


def test_a_new_key_goes_after_its_siblings_in_their_indentation() -> None:
    after = patched({"op": "add", "path": "/backends/openai/organization", "value": "org-1"})
    assert after == FILE.replace(
        "    api_key: ${OPENAI_API_KEY}    # from the secret store\n",
        "    api_key: ${OPENAI_API_KEY}    # from the secret store\n    organization: org-1\n",
    )


def test_a_new_mapping_value_is_written_as_block_yaml() -> None:
    value = {"chain": [{"backend": "openai", "model": "o1"}], "aliases": ["yes", "x y"]}
    after = patched({"op": "add", "path": "/models/reasoning", "value": value})
    assert after == FILE.replace(
        "    aliases: [a, b]\n",
        "    aliases: [a, b]\n  reasoning:\n    chain:\n      - backend: openai\n        model: o1\n"
        '    aliases:\n      - "yes"\n      - x y\n',
    )


def test_inserting_into_a_flow_collection_keeps_it_flow() -> None:
    after = patched(
        {"op": "add", "path": "/timeouts/embeddings/connect", "value": 5},
        {"op": "add", "path": "/models/chat/aliases/1", "value": "c"},
        {"op": "add", "path": "/models/chat/aliases/-", "value": "d e"},
    )
    assert "  embeddings: {total: 120, connect: 5}\n" in after
    assert "    aliases: [a, c, b, d e]\n" in after


def test_removing_an_item_removes_its_lines_and_its_comment() -> None:
    after = patched({"op": "remove", "path": "/models/chat/chain/0"})
    assert after == FILE.replace("      - backend: openai\n        model: gpt-4o          # fast\n", "")


def test_a_move_between_keys_of_one_mapping_is_a_rename_in_place() -> None:
    after = patched({"op": "move", "from": "/backends/openai", "path": "/backends/primary"})
    assert after == FILE.replace(
        "  openai:                         # primary", "  primary:                         # primary"
    )


def test_an_environment_value_is_replaced_only_by_another_reference() -> None:
    error = refused({"op": "replace", "path": "/backends/openai/api_key", "value": "sk-literal"})
    assert (error.index, error.path, error.kind) == (0, "/backends/openai/api_key", "refused")
    assert "${OPENAI_API_KEY}" in str(error)
    error = refused({"op": "remove", "path": "/backends/openai/api_key"})
    assert "OPENAI_API_KEY" in str(error) and error.kind == "refused"
    after = patched({"op": "replace", "path": "/backends/openai/api_key", "value": "${OPENAI_KEY_2}"})
    assert "    api_key: ${OPENAI_KEY_2}    # from the secret store\n" in after


def test_an_anchor_in_use_is_not_edited() -> None:
    error = refused({"op": "replace", "path": "/timeouts/chat/total", "value": 600})
    assert "&tier" in str(error) and error.kind == "refused"
    error = refused({"op": "add", "path": "/timeouts/completions/connect", "value": 5})
    assert "*tier" in str(error)


def test_the_patch_applies_whole_or_not_at_all() -> None:
    error = refused(
        {"op": "replace", "path": "/timeouts/embeddings/total", "value": 60},
        {"op": "test", "path": "/models/chat/chain/1/model", "value": "other"},
    )
    assert (error.index, error.path, error.kind) == (1, "/models/chat/chain/1/model", "test")
    error = refused({"op": "add", "path": "/nothing/here", "value": 1})
    assert error.index == 0 and error.kind == "missing"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"op": "add"}, "a JSON Patch is a JSON array"),
        ([{"op": "frobnicate", "path": "/a"}], "op must be one of"),
        ([{"op": "add", "path": "a", "value": 1}], "starts with /"),
        ([{"op": "add", "path": "/a~2", "value": 1}], "~0"),
        ([{"op": "add", "path": "/a"}], "needs a value"),
        ([{"op": "move", "path": "/a"}], "needs from"),
        ([{"op": "remove", "path": "/a", "value": 1}], "takes no member value"),
        ([{"op": "move", "from": "/a", "path": "/a/b"}], "into itself"),
        ([{"op": "test", "path": "", "value": 1}] * 1001, "at most 1000 operations"),
    ],
)
def test_malformed_patches_are_refused(body: Any, message: str) -> None:
    with pytest.raises(PatchError, match=message):
        parse_patch(body)


def test_pointer_escapes() -> None:
    text = "headers:\n  a/b: x\n  c~d: y\n"
    after = patched(
        {"op": "replace", "path": "/headers/a~1b", "value": "z"},
        {"op": "remove", "path": "/headers/c~0d"},
        text=text,
    )
    assert after == "headers:\n  a/b: z\n"


def test_crlf_bom_and_final_line_are_kept() -> None:
    raw = b"\xef\xbb\xbfa:\r\n  b: 1\r\n  c: 2"
    plan = plan_patch(raw, "gateway.yaml", parse_patch([{"op": "add", "path": "/a/d", "value": 3}]))
    assert plan.new_raw == b"\xef\xbb\xbfa:\r\n  b: 1\r\n  c: 2\r\n  d: 3"
    assert plan.previous_version == config_version(raw)
    assert "\\ No newline at end of file" in plan.diff


def test_the_documented_placement_example_is_what_the_editor_does() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "config-edits.md").read_text()
    section = doc.split("Adding `first_byte` to this fragment:")[1]
    before, after = re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)[:2]
    patch = json.loads(re.search(r"with `(\[.*?\])` gives", section, re.DOTALL).group(1).replace("\n", " "))
    assert patched(*patch, text=before) == after


def test_a_key_after_a_block_scalar_goes_before_the_blank_line() -> None:
    text = "a:\n  d: >\n    folded\n    text\n\nb: 1\n"
    assert patched({"op": "add", "path": "/a/e", "value": 2}, text=text) == (
        "a:\n  d: >\n    folded\n    text\n  e: 2\n\nb: 1\n"
    )


def test_setting_the_value_a_key_already_has_leaves_the_text() -> None:
    text = "a:\n  host: '127.0.0.1'   # quoted by hand\n"
    assert patched({"op": "replace", "path": "/a/host", "value": "127.0.0.1"}, text=text) == text
    assert patched({"op": "add", "path": "/a/host", "value": "127.0.0.1"}, text=text) == text


def test_a_merged_key_is_refused_with_the_reason() -> None:
    text = "base: &b {x: 1}\nc:\n  <<: *b\n  y: 2\n"
    error = refused({"op": "replace", "path": "/c/x", "value": 3}, text=text)
    assert "merge" in str(error) and error.kind == "refused"


def test_a_rewritten_entry_keeps_the_comment_of_its_first_line() -> None:
    text = "server:\n  port: 8080   # the usual port\n  host: x\n"
    assert patched({"op": "replace", "path": "/server/port", "value": {"a": 1}}, text=text) == (
        "server:\n  port:   # the usual port\n    a: 1\n  host: x\n"
    )
    text = "a:   # note\n  x: 1\nb: 2\n"
    assert patched({"op": "replace", "path": "/a", "value": 5}, text=text) == "a: 5   # note\nb: 2\n"


def test_a_new_key_is_quoted_like_its_siblings() -> None:
    text = "\"a\":\n  'x': 1\n  'y': 2\n\"b\": 3\n"
    after = patched(
        {"op": "add", "path": "/a/z", "value": 3}, {"op": "add", "path": "/c", "value": 4}, text=text
    )
    assert after == "\"a\":\n  'x': 1\n  'y': 2\n  'z': 3\n\"b\": 3\n\"c\": 4\n"


def test_a_multi_line_string_is_a_literal_block_in_block_context() -> None:
    text = "models:\n  chat:\n    description: short   # shown in /v1/models\n    chain: []\n"
    after = patched({"op": "replace", "path": "/models/chat/description", "value": "one\ntwo\n"}, text=text)
    assert after == (
        "models:\n  chat:\n    description: |   # shown in /v1/models\n      one\n      two\n    chain: []\n"
    )
    flow = patched({"op": "add", "path": "/m/b", "value": "a\nb"}, text="m: {a: 1}\n")
    assert flow == 'm: {a: 1, b: "a\\x0ab"}\n'
