"""Write-back planning, case by case: the file shapes and value styles the examples of
`test_writeback.py` do not reach (an empty file, no final line break, flow mappings to grow, quoting
kept as the file had it, the diff's last-line marker, an edit that did not land)."""

from __future__ import annotations

import pytest

from gateway.config.issues import ConfigError, Location
from gateway.config.writeback import Edit, EditPlan, plan_commented_edit, plan_edits, scalar_text

TOTAL = ("timeouts", "chat", "total")


def plan(text: str, *edits: Edit) -> EditPlan:
    return plan_edits(text.encode(), "gateway.yaml", edits)


def test_an_empty_file_gets_the_whole_section() -> None:
    assert plan("", Edit(TOTAL, 60)).new_raw == b"timeouts:\n  chat:\n    total: 60\n"


def test_a_file_of_comments_only_gets_the_section_on_a_line_of_its_own() -> None:
    after = plan("# nothing set yet", Edit(TOTAL, 60)).new_raw
    assert after == b"# nothing set yet\ntimeouts:\n  chat:\n    total: 60\n"
    after = plan("# nothing set yet\n", Edit(TOTAL, 60)).new_raw
    assert after == b"# nothing set yet\ntimeouts:\n  chat:\n    total: 60\n"


def test_a_key_added_to_a_file_without_a_final_line_break() -> None:
    after = plan("server:\n  port: 8080", Edit(("server", "host"), "localhost")).new_raw
    assert after == b"server:\n  port: 8080\n  host: localhost"


def test_a_missing_nested_section_added_to_a_flow_mapping() -> None:
    after = plan("timeouts: {chat: {total: 5}}\n", Edit(("timeouts", "embeddings", "total"), 60)).new_raw
    assert after == b"timeouts: {chat: {total: 5}, embeddings: {total: 60}}\n"


def test_a_key_added_to_an_empty_flow_mapping() -> None:
    assert plan("timeouts: {}\n", Edit(TOTAL, 60)).new_raw == b"timeouts: {chat: {total: 60}}\n"


def test_a_string_keeps_the_quoting_the_file_gave_it() -> None:
    source = "a: 'single'\nb: \"double\"\nc: plain\n"
    after = plan(source, Edit(("a",), "x"), Edit(("b",), "y"), Edit(("c",), "z")).new_raw
    assert after == b"a: 'x'\nb: \"y\"\nc: z\n"


@pytest.mark.parametrize(
    ("text", "written"),
    [("gpt-4o", "gpt-4o"), ("1e5", '"1e5"'), ("yes", '"yes"'), ("trailing ", '"trailing "')],
)
def test_a_new_plain_string_is_quoted_only_when_plain_would_read_differently(text: str, written: str) -> None:
    assert scalar_text(text, None) == written
    assert plan("a: 1\n", Edit(("b",), text)).new_raw == f"a: 1\nb: {written}\n".encode()


def test_whole_floats_are_written_as_integers_below_1e15_and_as_floats_from_there() -> None:
    assert scalar_text(999_999_999_999_999.0, None) == "999999999999999"
    assert scalar_text(1e15, None) == "1000000000000000.0"
    assert scalar_text(-1e15, None) == "-1000000000000000.0"


def test_the_diff_marks_a_last_line_without_a_line_break_and_only_that() -> None:
    with_break = plan("a: 1\nb: 2\n", Edit(("b",), 3)).diff
    assert with_break == "--- a/gateway.yaml\n+++ b/gateway.yaml\n@@ -1,2 +1,2 @@\n a: 1\n-b: 2\n+b: 3\n"
    without = plan("a: 1\nb: 2", Edit(("b",), 3)).diff
    marker = "\\ No newline at end of file\n"
    assert without == (
        f"--- a/gateway.yaml\n+++ b/gateway.yaml\n@@ -1,2 +1,2 @@\n a: 1\n-b: 2\n{marker}+b: 3\n{marker}"
    )


def test_an_edit_that_did_not_land_is_an_error_at_the_top_of_the_file() -> None:
    """A duplicated key: the edit changes the first, the loader reads the last."""
    with pytest.raises(ConfigError) as raised:
        plan("t:\n  x: 900\n  x: 800\n", Edit(("t", "x"), 60))
    [issue] = raised.value.issues
    assert (issue.file, issue.location, issue.path) == ("gateway.yaml", Location(1, 1), "t.x")
    assert issue.message == "the edit did not apply as intended"


def test_a_commented_edit_of_the_first_value_after_a_blank_first_line() -> None:
    after = plan_commented_edit(b"\nweight: 5\n", "gateway.yaml", Edit(("weight",), 0), "why").new_raw
    assert after == b"\n# why\nweight: 0\n"
