"""Tools on a local model through the real server: the generated tiny model's output is scripted
(`GATEWAY_TESTING_MLX_SCRIPT`, forced through mlx-lm's real decode loop), so its tool calls come back
to the official SDKs as OpenAI `tool_calls` and Anthropic `tool_use`, streamed or not; `tool_choice`
forces or removes calls; tools, tool calls and tool results reach the prompt by the template's amount."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

# A job whose prompt contains a key generates its text (see gateway/backends/mlx/scripted.py).
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}\n</tool_call>'
SCRIPT = {
    "KEY-WEATHER": "Let me look. " + CALL,
    "KEY-TWO": CALL + "\n" + CALL.replace("get_weather", "get_time").replace("Paris", "Oslo"),
    "KEY-NAMED": '{"city": "Rome"}}\n</tool_call>',
    "KEY-REQUIRED": '{"name": "get_time", "arguments": {"city": "Lima"}}\n</tool_call>',
    "KEY-NONE": "No tools here: " + CALL,
    "KEY-BAD": "<tool_call>\n{oops, not json\n</tool_call>",
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather forecast for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
TOOLS = [WEATHER, TIME]
CLAUDE_TOOLS = [
    {
        "name": t["function"]["name"],
        "description": t["function"]["description"],
        "input_schema": t["function"]["parameters"],
    }
    for t in TOOLS
]


#: A chat template with no tool-call format (mlx-lm finds no tool parser for it).
PLAIN_TEMPLATE = (
    "{%- for message in messages %}{{- message['role'] + ': ' + message['content'] + '\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- 'assistant: ' }}{%- endif %}"
)


@pytest.fixture(scope="module")
def gateway(gateway_server_module, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("local-tools")
    script = folder / "script.json"
    script.write_text(json.dumps(SCRIPT))
    plain = shutil.copytree(tiny_model, folder / "plain")
    config = json.loads((plain / "tokenizer_config.json").read_text())
    (plain / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": PLAIN_TEMPLATE}))
    return gateway_server_module(
        f"""
backends:
  local: {{type: mlx, path: "{tiny_model}"}}
  plain: {{type: mlx, path: "{plain}"}}
models:
  tiny: {{chain: [{{backend: local}}]}}
  plain: {{chain: [{{backend: plain}}]}}
timeouts:
  chat: {{total: 120, first_byte: 60}}
""",
        env={"GATEWAY_TESTING_MLX_SCRIPT": str(script)},
    )


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path) -> Any:
    """The model's tokenizer as the engine loads it (mlx-lm's wrapper): the expected prompts."""
    from mlx_lm.utils import load_tokenizer

    return load_tokenizer(tiny_model)


def oai(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url("/v1"), api_key="x", max_retries=0)


def claude(gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.base_url, api_key="x", max_retries=0)


def ask(key: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"What is the weather in Paris? {key}"}]


def test_a_call_comes_back_as_openai_tool_calls(gateway) -> None:
    answer = oai(gateway).chat.completions.create(
        model="tiny", messages=ask("KEY-WEATHER"), tools=TOOLS, max_tokens=200, temperature=0
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me look. "
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "days": 2}


def test_a_streamed_call_comes_back_as_openai_tool_call_deltas(gateway) -> None:
    chunks = list(
        oai(gateway).chat.completions.create(
            model="tiny", messages=ask("KEY-TWO"), tools=TOOLS, max_tokens=200, temperature=0, stream=True
        )
    )
    calls: dict[int, dict[str, str]] = {}
    text = ""
    for chunk in chunks:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        text += delta.content or ""
        for part in delta.tool_calls or []:
            call = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += part.id or ""
            call["name"] += (part.function.name or "") if part.function else ""
            call["arguments"] += (part.function.arguments or "") if part.function else ""
    assert "<tool_call>" not in text and "tool_call" not in text
    assert [calls[i]["name"] for i in sorted(calls)] == ["get_weather", "get_time"]
    assert json.loads(calls[1]["arguments"]) == {"city": "Oslo", "days": 2}
    assert calls[0]["id"] != calls[1]["id"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_parallel_tool_calls_false_keeps_the_first_call(gateway) -> None:
    answer = oai(gateway).chat.completions.create(
        model="tiny",
        messages=ask("KEY-TWO"),
        tools=TOOLS,
        parallel_tool_calls=False,
        max_tokens=200,
        temperature=0,
    )
    assert [c.function.name for c in answer.choices[0].message.tool_calls] == ["get_weather"]


def test_a_call_comes_back_as_anthropic_tool_use_streamed_or_not(gateway) -> None:
    client = claude(gateway)
    request = {"model": "tiny", "max_tokens": 200, "messages": ask("KEY-WEATHER"), "tools": CLAUDE_TOOLS}
    whole = client.messages.create(**request)
    with client.messages.stream(**request) as stream:
        streamed = stream.get_final_message()
    for message in (whole, streamed):
        assert message.stop_reason == "tool_use"
        text, use = message.content
        assert text.type == "text" and text.text == "Let me look. "
        assert use.type == "tool_use" and use.name == "get_weather"
        assert use.input == {"city": "Paris", "days": 2}


def test_a_named_tool_choice_makes_the_continuation_that_call(gateway) -> None:
    answer = oai(gateway).chat.completions.create(
        model="tiny",
        messages=ask("KEY-NAMED"),
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=200,
        temperature=0,
    )
    (call,) = answer.choices[0].message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Rome"})
    assert answer.choices[0].finish_reason == "tool_calls"
    message = claude(gateway).messages.create(
        model="tiny",
        max_tokens=200,
        messages=ask("KEY-NAMED"),
        tools=CLAUDE_TOOLS,
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    assert [(b.type, b.name, b.input) for b in message.content] == [
        ("tool_use", "get_weather", {"city": "Rome"})
    ]


def test_required_tool_choice_makes_the_continuation_a_call(gateway) -> None:
    with claude(gateway).messages.stream(
        model="tiny",
        max_tokens=200,
        messages=ask("KEY-REQUIRED"),
        tools=CLAUDE_TOOLS,
        tool_choice={"type": "any"},
    ) as stream:
        message = stream.get_final_message()
    assert message.stop_reason == "tool_use"
    assert [(b.type, b.name, b.input) for b in message.content] == [
        ("tool_use", "get_time", {"city": "Lima"})
    ]


def test_tool_choice_none_is_plain_text_on_the_no_tools_prompt(gateway) -> None:
    client = oai(gateway)
    answer = client.chat.completions.create(
        model="tiny", messages=ask("KEY-NONE"), tools=TOOLS, tool_choice="none", max_tokens=200, temperature=0
    )
    plain = client.chat.completions.create(
        model="tiny", messages=ask("KEY-NONE"), max_tokens=200, temperature=0
    )
    assert answer.choices[0].message.tool_calls is None
    assert answer.choices[0].message.content == SCRIPT["KEY-NONE"]  # no parsing: the call text is text
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.prompt_tokens == plain.usage.prompt_tokens


def test_a_malformed_call_comes_back_as_text(gateway) -> None:
    answer = oai(gateway).chat.completions.create(
        model="tiny", messages=ask("KEY-BAD"), tools=TOOLS, max_tokens=200, temperature=0
    )
    assert answer.choices[0].message.tool_calls is None
    assert answer.choices[0].message.content == SCRIPT["KEY-BAD"]
    assert answer.choices[0].finish_reason == "stop"


def test_tools_reach_the_prompt_by_the_templates_amount(gateway, tokenizer) -> None:
    client = oai(gateway)
    messages = [{"role": "user", "content": "Hello there"}]
    with_tools = client.chat.completions.create(model="tiny", messages=messages, tools=TOOLS, max_tokens=1)
    without = client.chat.completions.create(model="tiny", messages=messages, max_tokens=1)
    expected = tokenizer.apply_chat_template(messages, tools=TOOLS, add_generation_prompt=True)
    assert with_tools.usage.prompt_tokens == len(expected)
    assert without.usage.prompt_tokens == len(
        tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    )
    assert with_tools.usage.prompt_tokens > without.usage.prompt_tokens + 50  # the tool list is in it


def test_a_tool_result_round_trip_renders_into_the_prompt(gateway, tokenizer) -> None:
    question = {"role": "user", "content": "Weather in Paris, please?"}
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    history = [
        question,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 24 C"},
    ]
    client = oai(gateway)
    before = client.chat.completions.create(model="tiny", messages=[question], tools=TOOLS, max_tokens=1)
    after = client.chat.completions.create(model="tiny", messages=history, tools=TOOLS, max_tokens=1)
    template_call = {**call, "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    expected = tokenizer.apply_chat_template(
        [question, {**history[1], "content": "", "tool_calls": [template_call]}, history[2]],
        tools=TOOLS,
        add_generation_prompt=True,
    )
    assert after.usage.prompt_tokens == len(expected)
    rendered = tokenizer.decode(expected)
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in rendered
    assert "<tool_response>\nSunny, 24 C\n</tool_response>" in rendered
    assert after.usage.prompt_tokens > before.usage.prompt_tokens
    # The same history from an Anthropic client (tool_use / tool_result blocks) is the same prompt.
    count = claude(gateway).messages.count_tokens(
        model="tiny",
        tools=CLAUDE_TOOLS,
        messages=[
            question,
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "Sunny, 24 C"}],
            },
        ],
    )
    assert count.input_tokens == after.usage.prompt_tokens


def test_a_model_without_a_tool_call_format_refuses_tools(gateway) -> None:
    client = oai(gateway)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="plain", messages=ask("x"), tools=TOOLS, max_tokens=4)
    assert "tool-call format" in refused.value.response.json()["detail"]
    assert refused.value.response.headers["content-type"].startswith("application/problem+json")
    # Without tools, or with tool_choice none (the tools leave the prompt), it answers.
    answer = client.chat.completions.create(
        model="plain", messages=ask("x"), tools=TOOLS, tool_choice="none", max_tokens=4
    )
    assert answer.choices[0].finish_reason in ("stop", "length")


def test_a_named_tool_that_is_not_offered_is_the_clients_error(gateway) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        oai(gateway).chat.completions.create(
            model="tiny",
            messages=ask("x"),
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "launch"}},
            max_tokens=4,
        )
    assert "launch" in refused.value.response.json()["detail"]
