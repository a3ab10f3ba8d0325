"""The conversation and tools as chat templates take them, from either protocol's request."""

from __future__ import annotations

import pytest

from gateway.backends.mlx.prompt import template_messages, template_tools
from gateway.backends.upstream import UpstreamFailure
from gateway.protocol import anthropic as anthropic_protocol
from gateway.protocol import openai as openai_protocol


def test_anthropic_tool_results_become_tool_messages_ahead_of_the_turns_text() -> None:
    request = anthropic_protocol.parse_messages_request(
        {
            "model": "tiny",
            "max_tokens": 5,
            "system": "Be brief.",
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Oslo"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": "Snow"},
                        {"type": "text", "text": "And tomorrow?"},
                    ],
                },
            ],
        }
    )
    assert template_messages(request) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "type": "function",
                    "id": "t1",
                    "function": {"name": "get_weather", "arguments": {"city": "Oslo"}},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "Snow"},
        {"role": "user", "content": "And tomorrow?"},
    ]


def test_openai_arguments_that_are_not_a_json_object_stay_text() -> None:
    request = openai_protocol.parse_chat_request(
        {
            "model": "tiny",
            "messages": [
                {"role": "user", "content": "Go"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
                    ],
                },
                {"role": "tool", "tool_call_id": "c", "content": "error: bad arguments"},
            ],
        }
    )
    messages = template_messages(request)
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == "{oops"
    assert messages[2] == {"role": "tool", "tool_call_id": "c", "content": "error: bad arguments"}


def test_tools_go_in_function_form_and_built_in_tools_are_refused() -> None:
    request = anthropic_protocol.parse_messages_request(
        {
            "model": "tiny",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "Hi"}],
            "tools": [{"name": "f", "description": "F.", "input_schema": {"type": "object"}}],
        }
    )
    assert template_tools(request) == (
        {
            "type": "function",
            "function": {"name": "f", "description": "F.", "parameters": {"type": "object"}},
        },
    )
    search = anthropic_protocol.parse_messages_request(
        {
            "model": "tiny",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "Hi"}],
            "tools": [{"type": "web_search_20250305", "name": "web_search"}],
        }
    )
    with pytest.raises(UpstreamFailure) as refused:
        template_tools(search)
    assert refused.value.kind == "unsupported"
