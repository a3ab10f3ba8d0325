"""The stream parser of local models' tool calls: markers split across deltas never leak as text, text
around calls passes through, several calls come out in order, and a malformed call stays text."""

from __future__ import annotations

import json

from mlx_lm.tool_parsers import json_tools

from gateway.backends.mlx.tools import ToolCallParser
from gateway.protocol.canonical import StreamEvent, TextDelta, ToolCallDelta, ToolCallStart

TOOLS = (
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
)
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def parser(**options: object) -> ToolCallParser:
    return ToolCallParser("<tool_call>", "</tool_call>", json_tools.parse_tool_call, TOOLS, **options)  # type: ignore[arg-type]


def run(deltas: list[str], **options: object) -> list[StreamEvent]:
    p = parser(**options)
    events = [e for d in deltas for e in p.feed(d)]
    return events + p.finish()


def one_char_at_a_time(text: str) -> list[str]:
    return list(text)


def summary(events: list[StreamEvent]) -> list[tuple[str, str]]:
    """Adjacent text joined; each call as ("call", name + arguments)."""
    out: list[tuple[str, str]] = []
    for e in events:
        if type(e) is TextDelta:
            if out and out[-1][0] == "text":
                out[-1] = ("text", out[-1][1] + e.text)
            else:
                out.append(("text", e.text))
        elif type(e) is ToolCallStart:
            out.append(("call", e.name))
        elif type(e) is ToolCallDelta:
            out[-1] = ("call", out[-1][1] + " " + e.arguments)
    return out


def test_a_marker_split_across_every_character_never_leaks_as_text() -> None:
    events = run(one_char_at_a_time("Let me check. " + CALL + " Done."))
    assert summary(events) == [
        ("text", "Let me check. "),
        ("call", 'get_weather {"city": "Paris"}'),
        ("text", " Done."),
    ]
    assert all("<" not in e.text for e in events if type(e) is TextDelta)


def test_text_that_only_looks_like_a_marker_start_is_released() -> None:
    assert summary(run(["a <tool", "s> b <", "tool_c"])) == [("text", "a <tools> b <tool_c")]


def test_two_calls_get_indexes_in_order_and_their_own_ids() -> None:
    second = CALL.replace("get_weather", "get_time").replace("Paris", "Oslo")
    events = run([CALL[:5], CALL[5:] + "\n" + second[:20], second[20:]])
    starts = [e for e in events if type(e) is ToolCallStart]
    assert [(s.index, s.name) for s in starts] == [(0, "get_weather"), (1, "get_time")]
    assert starts[0].id != starts[1].id and all(s.id.startswith("call_") for s in starts)
    deltas = [e for e in events if type(e) is ToolCallDelta]
    arguments = [(d.index, json.loads(d.arguments)) for d in deltas]
    assert arguments == [(0, {"city": "Paris"}), (1, {"city": "Oslo"})]
    assert summary(events)[1] == ("text", "\n")


def test_parallel_tool_calls_false_keeps_the_first_call_only() -> None:
    events = run([CALL, CALL.replace("get_weather", "get_time")], single_call=True)
    assert [e.name for e in events if type(e) is ToolCallStart] == ["get_weather"]


def test_invalid_json_and_unknown_tools_stay_text() -> None:
    bad = "<tool_call>\n{not json}\n</tool_call>"
    unknown = CALL.replace("get_weather", "rm_rf")
    p = parser()
    events = [e for d in [bad, " and ", unknown] for e in p.feed(d)] + p.finish()
    assert summary(events) == [("text", bad + " and " + unknown)]
    assert p.calls == 0


def test_a_call_cut_off_before_its_end_marker_is_parsed_at_the_end() -> None:
    events = run([CALL.removesuffix("\n</tool_call>")])
    assert summary(events) == [("call", 'get_weather {"city": "Paris"}')]
    truncated = CALL[:30]
    assert summary(run([truncated])) == [("text", truncated)]


def test_a_prefilled_opening_is_part_of_the_parsed_call() -> None:
    prefill = '<tool_call>\n{"name": "get_weather", "arguments": '
    events = run(['{"city": "Rome"}}\n</tool_call>'], prefill=prefill)
    assert summary(events) == [("call", 'get_weather {"city": "Rome"}')]
