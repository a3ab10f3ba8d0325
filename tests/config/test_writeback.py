"""Write-back planning: an edit of the file's text keeps every other byte as it was.

The transaction around it (If-Match, validation, the atomic write, the swap) is tested in
tests/runtime/test_edit.py.
"""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config.issues import ConfigError
from gateway.config.load import config_version, parse_config
from gateway.config.writeback import Edit, EditPlan, WriteBackError, plan_commented_edit, plan_edits
from gateway.config.yamlsource import CONTROL_CHARACTER, parse_yaml

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


def plan(text: str | bytes, *edits: Edit) -> EditPlan:
    raw = text.encode() if isinstance(text, str) else text
    return plan_edits(raw, "gateway.yaml", edits)


def test_edit_changes_only_the_value_bytes() -> None:
    result = plan(COMMENTED, Edit(("timeouts", "chat", "total"), 600))
    after = result.new_raw.decode()
    assert after == COMMENTED.replace("total: 900     # 15 minutes", "total: 600     # 15 minutes")
    assert result.changes and result.version == config_version(result.new_raw) != result.previous_version
    assert result.previous_version == config_version(COMMENTED.encode())
    assert "-    total: 900     # 15 minutes: long tool loops" in result.diff
    assert "+    total: 600     # 15 minutes: long tool loops" in result.diff
    assert result.diff.startswith("--- a/gateway.yaml\n+++ b/gateway.yaml\n")
    assert "sk-real-secret" not in after and "${OPENAI_API_KEY}" in after
    assert parse_config(result.new_raw, "gateway.yaml", env=ENV).timeouts.chat.total == 600


def test_several_edits_in_flow_and_block_style() -> None:
    edits = [
        Edit(("timeouts", "completions", "total"), 300),
        Edit(("timeouts", "embeddings", "total"), 45.5),
        Edit(("timeouts", "chat", "first_byte"), 30),
    ]
    after = plan(COMMENTED, *edits).new_raw
    expected = (
        COMMENTED.replace("completions: {total: 600}", "completions: {total: 300}")
        .replace("    total: 120\n", "    total: 45.5\n")
        .replace("    connect: 10\n", "    connect: 10\n    first_byte: 30\n")
    )
    assert after.decode() == expected
    timeouts = parse_config(after, "gateway.yaml", env=ENV).timeouts
    assert (timeouts.completions.total, timeouts.embeddings.total, timeouts.chat.first_byte) == (
        300,
        45.5,
        30,
    )


def test_inserting_a_missing_key_into_a_flow_mapping() -> None:
    after = plan(COMMENTED, Edit(("timeouts", "completions", "connect"), 5)).new_raw.decode()
    assert after == COMMENTED.replace("{total: 600}", "{total: 600, connect: 5}")


def test_inserting_a_whole_missing_section() -> None:
    after = plan("# minimal\nserver:\n  port: 8080  # keep\n", Edit(("timeouts", "chat", "total"), 60))
    assert after.new_raw.decode() == (
        "# minimal\nserver:\n  port: 8080  # keep\ntimeouts:\n  chat:\n    total: 60\n"
    )


def test_planning_does_not_validate_the_result() -> None:
    """The schema is checked once, by the transaction's prepare step, not again here."""
    after = plan(COMMENTED, Edit(("timeouts", "chat", "total"), -1)).new_raw
    assert b"total: -1     # 15 minutes" in after
    with pytest.raises(ConfigError, match=r"timeouts\.chat\.total: must be greater than 0"):
        parse_config(after, "gateway.yaml", env=ENV)


def test_value_from_environment_is_not_overwritten() -> None:
    with pytest.raises(WriteBackError, match="set from the environment"):
        plan("timeouts:\n  chat:\n    total: ${CHAT_TIMEOUT:-900}\n", Edit(("timeouts", "chat", "total"), 60))


def test_a_mapping_is_not_replaced_by_a_value() -> None:
    with pytest.raises(WriteBackError, match=r"timeouts\.chat is a mapping, not a single value"):
        plan(COMMENTED, Edit(("timeouts", "chat"), 60))


def test_a_file_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(WriteBackError, match="not UTF-8"):
        plan(b"timeouts:\n  chat:\n    total: 900 # \xff\n", Edit(("timeouts", "chat", "total"), 60))


def test_crlf_and_bom_survive() -> None:
    original = "\ufeff# windows\r\ntimeouts:\r\n  chat:\r\n    total: 900\r\n"
    after = plan(original.encode(), Edit(("timeouts", "chat", "total"), 5)).new_raw
    assert after == original.replace("900", "5").encode()


def test_setting_the_value_already_there_changes_nothing() -> None:
    result = plan(COMMENTED, Edit(("timeouts", "chat", "total"), 900))
    assert not result.changes and result.diff == "" and result.version == result.previous_version


# Values the settings form can send: every one must be written as YAML that the loader reads back as
# that same value (PyYAML reads YAML 1.1, where `1e-07` is a string and `yes` a boolean).
TRICKY_STRINGS = [
    "yes",
    "No",
    "on",
    "y",
    "1e5",
    "0x10",
    "0o17",
    "1_000",
    ".5",
    "+1",
    "-",
    ".inf",
    ".NaN",
    "null",
    "~",
    "",
    " padded ",
    "@scope",
    "a: b",
    "a #b",
    "it's",
    'say "hi"',
    "tab\there",
    "line\nbreak",
    "next\x85line",
    "sep\u2028",
    "\ufeffbom",
    "gpt-4o",
]


def _read_back(raw: bytes, path: tuple[str, ...]) -> object:
    """The value at `path` as the config loader's own YAML reader sees it."""
    doc, issues = parse_yaml(raw.decode("utf-8-sig"), "gateway.yaml", ENV)
    assert doc is not None and not issues, issues
    value = doc.data
    for key in path:
        value = value[key]
    return value


def test_small_and_large_floats_are_written_as_floats_the_loader_reads() -> None:
    for value in (1e-07, 5e-324, 1e16, 1.5e300, 123456.789):
        after = plan(COMMENTED, Edit(("timeouts", "chat", "total"), value)).new_raw
        assert _read_back(after, ("timeouts", "chat", "total")) == value, after
    after = plan(COMMENTED, Edit(("timeouts", "chat", "total"), 1e-07)).new_raw
    assert b"total: 1.0e-07     # 15 minutes" in after
    assert parse_config(after, "gateway.yaml", env=ENV).timeouts.chat.total == 1e-07


def test_large_integers_round_trip_and_one_past_the_digit_limit_is_refused() -> None:
    for value in (2**64, -(2**70), 10**300):
        after = plan(COMMENTED, Edit(("timeouts", "chat", "total"), value)).new_raw
        assert _read_back(after, ("timeouts", "chat", "total")) == value
    with pytest.raises(WriteBackError, match="too many digits"):
        plan(COMMENTED, Edit(("timeouts", "chat", "total"), 10**5000))


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_a_value_that_is_not_a_finite_number_is_refused(value: float) -> None:
    with pytest.raises(WriteBackError, match="not a finite number"):
        plan(COMMENTED, Edit(("timeouts", "chat", "total"), value))


@pytest.mark.parametrize("text", TRICKY_STRINGS)
@pytest.mark.parametrize("where", [("models", "chat", "description"), ("server", "host"), ("new", "key")])
def test_strings_that_look_like_other_types_stay_strings(text: str, where: tuple[str, ...]) -> None:
    source = "server:\n  host: 'quoted'\nmodels:\n  chat:\n    description: plain\n"
    after = plan(source, Edit(where, text)).new_raw
    assert _read_back(after, where) == text, after


@pytest.mark.parametrize("text", ["nul\x00", "del\x7f", "bell\x07"])
def test_a_control_character_the_loader_refuses_is_refused(text: str) -> None:
    with pytest.raises(WriteBackError, match="control character"):
        plan(COMMENTED, Edit(("models", "chat", "description"), text))


@settings(max_examples=300, deadline=None)
@given(
    value=st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.integers(),
        st.booleans(),
        st.text(),
        st.sampled_from(TRICKY_STRINGS),
    ),
    block=st.booleans(),
)
def test_write_back_then_load_gives_the_same_value(value: object, block: bool) -> None:
    source = "timeouts:\n  chat:\n    total: 900\n" if block else "timeouts: {chat: {total: 900}}\n"
    path = ("timeouts", "chat", "total")
    if isinstance(value, str) and CONTROL_CHARACTER.search(value):
        with pytest.raises(WriteBackError, match="control character"):
            plan(source, Edit(path, value))
        return
    after = plan(source, Edit(path, value)).new_raw  # type: ignore[arg-type]
    read = _read_back(after, path)
    assert read == value
    # A whole float may be written as an integer (`5.0` → `5`): equal, and the schema's number.
    assert isinstance(value, float) or type(read) is type(value)


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0, max_value=86400, exclude_min=True))
def test_every_valid_timeout_written_back_loads_as_that_timeout(seconds: float) -> None:
    after = plan(COMMENTED, Edit(("timeouts", "embeddings", "total"), seconds)).new_raw
    assert parse_config(after, "gateway.yaml", env=ENV).timeouts.embeddings.total == seconds


WEIGHT = Edit(("models", "chat", "canary", "weight"), 0)
BLOCK_CANARY = """\
models:
  chat:
    chain: [{backend: a}]
    canary:
      target: {backend: b}
      weight: 5   # five percent
      rollback: {error_rate: 0.05}
"""


def test_a_commented_edit_changes_the_value_and_adds_one_comment_line_above_it() -> None:
    plan = plan_commented_edit(BLOCK_CANARY.encode(), "gateway.yaml", WEIGHT, "rolled back:\nerror rate 20%")
    assert plan.new_raw.decode() == BLOCK_CANARY.replace(
        "      weight: 5", "      # rolled back: error rate 20%\n      weight: 0"
    )
    assert [line for line in plan.diff.splitlines() if line[:1] in "+-" and line[1:2] not in "+-"] == [
        "-      weight: 5   # five percent",
        "+      # rolled back: error rate 20%",
        "+      weight: 0   # five percent",
    ]


def test_a_commented_edit_of_a_flow_mapping_puts_the_comment_above_its_line() -> None:
    text = "models:\n  chat:\n    chain: [{backend: a}]\n    canary: {target: {backend: b}, weight: 5}\n"
    plan = plan_commented_edit(text.encode("utf-8"), "gateway.yaml", WEIGHT, "why")
    assert plan.new_raw.decode() == text.replace("    canary:", "    # why\n    canary:").replace("5}", "0}")
    assert yaml.safe_load(plan.new_raw)["models"]["chat"]["canary"]["weight"] == 0


def test_a_commented_edit_already_made_changes_nothing_and_keeps_a_bom() -> None:
    done = plan_commented_edit(b"\xef\xbb\xbf" + BLOCK_CANARY.encode(), "gateway.yaml", WEIGHT, "why")
    assert done.changes and done.new_raw.startswith(b"\xef\xbb\xbfmodels:")
    again = plan_commented_edit(done.new_raw, "gateway.yaml", WEIGHT, "again")
    assert not again.changes and again.diff == ""


def test_a_commented_edit_of_a_value_from_the_environment_is_refused() -> None:
    text = BLOCK_CANARY.replace("weight: 5", "weight: ${CANARY_WEIGHT}")
    with pytest.raises(WriteBackError, match="set from the environment"):
        plan_commented_edit(text.encode(), "gateway.yaml", WEIGHT, "why")
