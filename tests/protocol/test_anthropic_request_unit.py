"""Anthropic Messages requests refused or kept field by field (`gateway.protocol.anthropic_request`):
each refusal names its field, and what passes through to Anthropic backends is still checked."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import FieldError
from gateway.protocol import anthropic as anthropic_protocol

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
