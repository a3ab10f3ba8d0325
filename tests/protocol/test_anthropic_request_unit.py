"""Anthropic Messages requests refused or kept field by field (`gateway.protocol.anthropic_request`):
each refusal names its field, and what passes through to Anthropic backends is still checked."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import FieldError
from gateway.protocol import anthropic as anthropic_protocol
from gateway.protocol.canonical import RawPart, ReasoningPart, TextPart, ToolResultPart

USER = [{"role": "user", "content": "hi"}]


def parse(**extra: Any) -> Any:
    return anthropic_protocol.parse_messages_request(
        {"model": "m", "max_tokens": 10, "messages": USER, **extra}
    )


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"top_k": -1}, "top_k"),
        ({"top_k": 2**31}, "top_k"),
        ({"temperature": 1.5}, "temperature"),
        ({"thinking": {"type": 5, "budget_tokens": 100}}, "thinking.type"),
        ({"thinking": {"type": "enabled", "budget_tokens": 0}}, "thinking.budget_tokens"),
        ({"thinking": "on"}, "thinking"),
    ],
)
def test_forwarded_members_are_still_checked(extra: dict[str, Any], field: str) -> None:
    with pytest.raises(FieldError) as refused:
        parse(**extra)
    assert refused.value.extensions["field"] == field


def test_valid_forwarded_members_pass() -> None:
    parse(top_k=0, temperature=1.0, thinking={"type": "enabled", "budget_tokens": 1})
    parse(top_k=2**31 - 1)


def test_system_blocks() -> None:
    request = parse(system=[{"type": "text", "text": "be brief"}, {"type": "text", "text": "and kind"}])
    assert request.system == "be brief\n\nand kind"
    assert parse(system=[]).system is None
    with pytest.raises(FieldError) as refused:
        parse(system=[{"type": "image", "text": "x"}])
    assert refused.value.extensions["field"] == "system[0].type"


def test_tool_results_keep_images_and_other_parts() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    messages = [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t1",
                    "content": [{"type": "text", "text": "done"}, image, {"type": "document", "x": 1}],
                }
            ],
        },
    ]
    request = anthropic_protocol.parse_messages_request(
        {"model": "m", "max_tokens": 10, "messages": messages}
    )
    result = request.messages[1].content[0]
    kinds = [type(p).__name__ for p in result.parts]
    assert kinds[0] == "TextPart" and kinds[2] == "RawPart" and kinds[1] != "RawPart"
    assert result.content == "done"


def test_tools_custom_and_server_tools() -> None:
    tools = [
        {"type": "custom", "name": "f", "input_schema": {"type": "object"}},
        {"type": "web_search_20250305", "name": "web_search"},
        {"name": "g", "input_schema": {"type": "object"}},
    ]
    request = parse(tools=tools)
    assert [t.name for t in request.tools] == ["f", "web_search", "g"]
    assert request.tools[1].raw == tools[1]
    assert request.tools[0].raw is None and request.tools[2].raw is None


def refused_field(body: dict[str, Any]) -> FieldError:
    with pytest.raises(FieldError) as refused:
        anthropic_protocol.parse_messages_request(body)
    return refused.value


def test_max_tokens_and_top_p_bounds() -> None:
    assert parse(max_tokens=1).max_tokens == 1
    assert refused_field({"model": "m", "max_tokens": 0, "messages": USER}).field == "max_tokens"
    assert parse(top_p=1.0).top_p == 1.0
    with pytest.raises(FieldError) as refused:
        parse(top_p=1.5)
    assert refused.value.field == "top_p"


def test_empty_text_blocks_are_kept_everywhere() -> None:
    empty = {"type": "text", "text": ""}
    messages = [
        {"role": "user", "content": [empty]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [empty]}]},
    ]
    request = parse(messages=messages, system=[empty])
    assert request.system == "" and request.system_blocks == (TextPart(""),)
    assert request.messages[0].content == (TextPart(""),)
    result = request.messages[2].content[0]
    assert isinstance(result, ToolResultPart) and result.parts == (TextPart(""),) and result.content == ""


def test_a_missing_role_is_required_and_a_wrong_one_named() -> None:
    missing = refused_field({"model": "m", "max_tokens": 1, "messages": [{"content": "hi"}]})
    assert missing.field == "messages[0].role" and missing.detail == "messages[0].role: is required"
    wrong = refused_field({"model": "m", "max_tokens": 1, "messages": [{"role": "system", "content": "hi"}]})
    assert wrong.field == "messages[0].role" and "got 'system'" in wrong.detail


def test_thinking_blocks_are_reasoning_only_in_assistant_messages() -> None:
    thinking = {"type": "thinking", "thinking": "", "signature": "sig"}
    redacted = {"type": "redacted_thinking", "data": "opaque"}
    other = {"type": "server_tool_use", "id": "s1", "name": "web_search", "input": {}}
    messages = [
        {"role": "user", "content": [thinking, redacted]},
        {"role": "assistant", "content": [thinking, redacted, other]},
    ]
    request = parse(messages=messages)
    assert request.messages[0].content == (RawPart("anthropic", thinking), RawPart("anthropic", redacted))
    assert request.messages[1].content == (
        ReasoningPart("", thinking),
        ReasoningPart("", redacted),
        RawPart("anthropic", other),
    )


def test_an_image_from_the_files_api_is_kept_verbatim() -> None:
    image = {"type": "image", "source": {"type": "file", "file_id": "file_1"}}
    request = parse(messages=[{"role": "user", "content": [image]}])
    assert request.messages[0].content == (RawPart("anthropic", image),)


def test_no_tools_is_an_empty_tuple() -> None:
    assert parse().tools == ()
