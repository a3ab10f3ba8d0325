"""OpenAI chat requests, member by member: what `parse_chat_request` accepts, refuses (naming the field)
and makes of each message shape, and what `chat_request_to_body` writes for a backend (same protocol,
or a request that came in as Anthropic)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gateway.errors import FieldError
from gateway.protocol.canonical import (
    ChatRequest,
    ImagePart,
    Message,
    RawPart,
    Reasoning,
    ReasoningPart,
    TextPart,
    Tool,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
)
from gateway.protocol.openai_request import chat_request_to_body, parse_chat_request
from gateway.protocol.reasoning import openai_effort

USER = {"role": "user", "content": "hi"}


def chat(*messages: dict[str, Any], **members: Any) -> dict[str, Any]:
    return {"model": "m", "messages": list(messages) or [USER], **members}


def refused(body: dict[str, Any]) -> FieldError:
    with pytest.raises(FieldError) as raised:
        parse_chat_request(body)
    return raised.value


# --- members and their bounds ---------------------------------------------------------------------------

IN_BOUNDS = [
    {"n": 1},
    {"n": 128},
    {"top_logprobs": 0},
    {"top_logprobs": 20},
    {"presence_penalty": -2.0, "frequency_penalty": -2.0},
    {"presence_penalty": 2.0, "frequency_penalty": 2.0},
    {"temperature": 0},
    {"temperature": 0.5},
    {"temperature": 2},
    {"top_p": 0},
    {"top_p": 0.5},
    {"top_p": 1},
    {"stop": ["a", "b", "c", "d"]},
    {"max_completion_tokens": 1},
    {"max_tokens": 1},
]


@pytest.mark.parametrize("members", IN_BOUNDS)
def test_a_member_at_or_inside_its_bounds_is_accepted(members: dict[str, Any]) -> None:
    req = parse_chat_request(chat(**members))
    for name, value in members.items():
        if name in ("n", "top_logprobs", "presence_penalty", "frequency_penalty"):
            assert req.extra[name] == value
        elif name == "stop":
            assert req.stop == tuple(value)
        elif name in ("max_tokens", "max_completion_tokens"):
            assert (req.max_tokens, req.max_tokens_field) == (value, name)
        else:
            assert getattr(req, name) == value


OUT_OF_BOUNDS = [
    ({"n": 0}, "n"),
    ({"n": 129}, "n"),
    ({"top_logprobs": -1}, "top_logprobs"),
    ({"top_logprobs": 21}, "top_logprobs"),
    ({"presence_penalty": -2.5}, "presence_penalty"),
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"frequency_penalty": -2.5}, "frequency_penalty"),
    ({"frequency_penalty": 2.5}, "frequency_penalty"),
    ({"logprobs": "yes"}, "logprobs"),
    ({"store": 1}, "store"),
    ({"logit_bias": {"50256": 101}}, "logit_bias.50256"),
    ({"response_format": "json"}, "response_format"),
    ({"response_format": {}}, "response_format.type"),
    ({"reasoning_effort": 3}, "reasoning_effort"),
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": 2.5}, "temperature"),
    ({"top_p": -0.1}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"max_completion_tokens": 0}, "max_completion_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
]


@pytest.mark.parametrize(("members", "field"), OUT_OF_BOUNDS)
def test_a_member_out_of_its_bounds_is_refused_by_name(members: dict[str, Any], field: str) -> None:
    assert refused(chat(**members)).field == field


def test_the_newer_max_tokens_spelling_wins_and_is_remembered() -> None:
    req = parse_chat_request(chat(max_completion_tokens=10, max_tokens=20))
    assert (req.max_tokens, req.max_tokens_field) == (10, "max_completion_tokens")
    req = parse_chat_request(chat())
    assert (req.max_tokens, req.max_tokens_field) == (None, "max_tokens")


def test_stream_options_give_include_usage_and_forward_the_rest() -> None:
    req = parse_chat_request(chat(stream=True))
    assert req.stream and not req.include_usage and "stream_options" not in req.extra
    req = parse_chat_request(chat(stream_options={"include_usage": True, "continuous_usage_stats": True}))
    assert req.include_usage
    assert req.extra == {"stream_options": {"continuous_usage_stats": True}}
    req = parse_chat_request(chat(stream_options={"include_usage": False}))
    assert not req.include_usage and req.extra == {}


def test_unknown_members_are_forwarded_and_reasoning_effort_is_read() -> None:
    req = parse_chat_request(chat(reasoning_effort="high", metadata={"k": "v"}))
    assert req.extra == {"reasoning_effort": "high", "metadata": {"k": "v"}}
    assert req.reasoning == Reasoning(effort="high")


# --- messages -------------------------------------------------------------------------------------------


def test_leading_system_and_developer_messages_become_the_system_text() -> None:
    req = parse_chat_request(
        chat(
            {"role": "system", "content": "a"},
            {"role": "developer", "content": [{"type": "text", "text": "b"}, {"type": "text", "text": "c"}]},
            USER,
            {"role": "system", "content": "later"},
        )
    )
    assert req.system == "a\n\nb\n\nc"
    assert req.messages == (Message("user", (TextPart("hi"),)), Message("system", (TextPart("later"),)))
    assert parse_chat_request(chat()).system is None


def test_system_content_shapes() -> None:
    req = parse_chat_request(chat(USER, {"role": "system", "content": [{"type": "text", "text": ""}]}))
    assert req.messages[1] == Message("system", (TextPart(""),))
    assert refused(chat({"role": "system"})).field == "messages[0].content"
    assert refused(chat({"role": "system", "content": 5})).field == "messages[0].content"
    bad_part = chat({"role": "system", "content": [{"type": "image_url", "image_url": "x"}]})
    assert refused(bad_part).field == "messages[0].content[0].type"


def test_user_content_shapes() -> None:
    parts = [
        {"type": "text", "text": ""},
        {"type": "image_url", "image_url": "https://x/a.png"},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    ]
    [msg] = parse_chat_request(chat({"role": "user", "content": parts, "name": "ann"})).messages
    assert msg == Message(
        "user", (TextPart(""), ImagePart(url="https://x/a.png"), RawPart("openai", parts[2])), "ann"
    )
    assert refused(chat({"role": "user"})).field == "messages[0].content"
    assert refused(chat({"role": "user", "content": 5})).field == "messages[0].content"
    empty = refused(chat({"role": "user", "content": []}))
    assert (empty.field, empty.detail) == ("messages[0].content", "messages[0].content: must not be empty")


@pytest.mark.parametrize(
    ("image_url", "part"),
    [
        ({"url": "https://x/a.png", "detail": "low"}, ImagePart(url="https://x/a.png", detail="low")),
        ("data:image/png;base64,AAAA", ImagePart(data="AAAA", media_type="image/png")),
        ("data:;base64,AAAA", ImagePart(data="AAAA", media_type=None)),
        ("data:text/plain,hello", ImagePart(url="data:text/plain,hello")),
    ],
)
def test_image_urls(image_url: Any, part: ImagePart) -> None:
    content = [{"type": "image_url", "image_url": image_url}]
    [msg] = parse_chat_request(chat({"role": "user", "content": content})).messages
    assert msg.content == (part,)


def test_a_data_url_without_a_comma_is_refused() -> None:
    content = [{"type": "image_url", "image_url": {"url": "data:image/png;base64"}}]
    assert refused(chat({"role": "user", "content": content})).field == "messages[0].content[0].image_url.url"


def test_tool_messages_and_roles() -> None:
    tool = {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "42"}]}
    [msg] = parse_chat_request(chat(tool)).messages
    assert msg == Message("tool", (ToolResultPart("c1", "42"),))
    assert refused(chat({"role": "tool", "content": "42"})).field == "messages[0].tool_call_id"
    missing = refused(chat({"content": "hi"}))
    assert (missing.field, missing.detail) == ("messages[0].role", "messages[0].role: is required")
    wrong = refused(chat({"role": "robot", "content": "hi"}))
    assert wrong.field == "messages[0].role" and "got 'robot'" in wrong.detail


def assistant(**members: Any) -> Message:
    return parse_chat_request(chat(USER, {"role": "assistant", **members})).messages[1]


CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def test_assistant_content_shapes() -> None:
    assert assistant(content="").content == (TextPart(""),)
    assert assistant(content="", tool_calls=[CALL]).content == (ToolCallPart("c1", "f", "{}"),)
    assert assistant(content="hi", tool_calls=[CALL]).content == (
        TextPart("hi"),
        ToolCallPart("c1", "f", "{}"),
    )
    refusal = {"type": "refusal", "refusal": "no"}
    assert assistant(content=[{"type": "text", "text": ""}, refusal]).content == (
        TextPart(""),
        RawPart("openai", refusal),
    )
    assert assistant(content=[]).content == ()
    assert assistant(function_call={"name": "f", "arguments": "{}"}).content == ()
    for members, field in [
        ({"content": 5}, "messages[1].content"),
        ({"tool_calls": {}}, "messages[1].tool_calls"),
        ({}, "messages[1].content"),
        ({"tool_calls": []}, "messages[1].content"),
        ({"content": None}, "messages[1].content"),
    ]:
        assert refused(chat(USER, {"role": "assistant", **members})).field == field, members


def test_thinking_blocks_are_read_back() -> None:
    thinking = {"type": "thinking", "thinking": "", "signature": "s"}
    redacted = {"type": "redacted_thinking", "data": "d"}
    msg = assistant(content="hi", thinking_blocks=[thinking, redacted])
    assert msg.content == (ReasoningPart("", thinking), ReasoningPart("", redacted), TextPart("hi"))
    for blocks, field in [
        ({}, "messages[1].thinking_blocks"),
        ([{"type": "redacted_thinking"}], "messages[1].thinking_blocks[0].data"),
        ([{"type": "other"}], "messages[1].thinking_blocks[0].type"),
    ]:
        assert (
            refused(chat(USER, {"role": "assistant", "content": "x", "thinking_blocks": blocks})).field
            == field
        )


def test_tool_calls() -> None:
    custom = {"id": "c2", "type": "custom", "custom": {"name": "g", "input": "x"}}
    untyped = {"id": "c3", "function": {"name": "h", "arguments": {"a": 1}}}
    no_arguments = {"id": "c4", "function": {"name": "k"}}
    msg = assistant(tool_calls=[custom, untyped, no_arguments])
    assert msg.content == (
        RawPart("openai", custom),
        ToolCallPart("c3", "h", '{"a":1}'),
        ToolCallPart("c4", "k", ""),
    )
    for call, field in [
        ({"id": "c", "type": 1}, "messages[1].tool_calls[0].type"),
        (
            {"id": "c", "function": {"name": "f", "arguments": 5}},
            "messages[1].tool_calls[0].function.arguments",
        ),
    ]:
        assert refused(chat(USER, {"role": "assistant", "tool_calls": [call]})).field == field


def test_tools() -> None:
    custom = {"type": "custom", "custom": {"name": "grammar"}}
    nameless = {"type": "web_search"}
    function = {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "object"}, "strict": True},
    }
    bare = {"function": {"name": "g", "description": "d"}}
    req = parse_chat_request(chat(tools=[custom, nameless, function, bare]))
    assert req.tools == (
        Tool(name="grammar", raw=custom),
        Tool(name="web_search", raw=nameless),
        Tool(name="f", parameters={"type": "object"}, strict=True),
        Tool(name="g", description="d"),
    )
    assert parse_chat_request(chat()).tools == ()
    assert refused(chat(tools={})).field == "tools"
    assert refused(chat(tools=[{"type": 1}])).field == "tools[0].type"


def test_tool_choice() -> None:
    assert parse_chat_request(chat()).tool_choice is None
    for mode in ("auto", "required", "none"):
        assert parse_chat_request(chat(tool_choice=mode)).tool_choice == ToolChoice(mode)
    named = chat(tool_choice={"type": "function", "function": {"name": "f"}})
    assert parse_chat_request(named).tool_choice == ToolChoice("tool", "f")
    allowed = {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}
    req = parse_chat_request(chat(tool_choice=allowed))
    assert req.tool_choice is None and req.extra == {"tool_choice": allowed}
    assert refused(chat(tool_choice="any")).field == "tool_choice"
    assert refused(chat(tool_choice={"function": {"name": "f"}})).field == "tool_choice.type"


# --- bodies for OpenAI-compatible backends --------------------------------------------------------------


def body_of(req: ChatRequest, **options: Any) -> dict[str, Any]:
    return chat_request_to_body(req, "up", **options)


def test_a_same_protocol_body_carries_every_member_it_was_given() -> None:
    function = {"type": "function", "function": {"name": "f"}}
    custom = {"type": "custom", "custom": {"name": "g"}}
    req = parse_chat_request(
        chat(
            {"role": "system", "content": "sys"},
            USER,
            max_tokens=5,
            temperature=0.5,
            top_p=0.9,
            stop=["x"],
            seed=7,
            user="u",
            stream=True,
            stream_options={"include_usage": True, "continuous_usage_stats": True},
            tools=[function, custom],
            tool_choice={"type": "function", "function": {"name": "f"}},
            parallel_tool_calls=False,
            n=2,
        )
    )
    assert body_of(req) == {
        "n": 2,
        "model": "up",
        "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}],
        "max_tokens": 5,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["x"],
        "seed": 7,
        "user": "u",
        "stream": True,
        "stream_options": {"continuous_usage_stats": True, "include_usage": True},
        "tools": [{"type": "function", "function": {"name": "f"}}, custom],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "parallel_tool_calls": False,
    }


def test_a_minimal_body_has_only_model_and_messages() -> None:
    assert body_of(parse_chat_request(chat())) == {
        "model": "up",
        "messages": [{"role": "user", "content": "hi"}],
    }


def test_stream_without_usage_and_tool_choice_modes() -> None:
    req = parse_chat_request(chat(stream=True, tools=[{"function": {"name": "f"}}], tool_choice="required"))
    body = body_of(req)
    assert body["stream"] is True and "stream_options" not in body
    assert body["tool_choice"] == "required" and "parallel_tool_calls" not in body
    assert "parallel_tool_calls" not in body_of(parse_chat_request(chat(parallel_tool_calls=True)))


def anthropic(req: ChatRequest, **changes: Any) -> ChatRequest:
    return dataclasses.replace(req, source="anthropic", **changes)


def test_another_protocol_s_extras_and_raw_tools_stay_behind_but_top_k_goes() -> None:
    raw_tool = Tool(name="web_search", raw={"type": "web_search_20250305", "name": "web_search"})
    req = anthropic(
        parse_chat_request(chat(max_tokens=9)),
        extra={"top_k": 5, "metadata": {"user_id": "u"}},
        tools=(raw_tool, Tool(name="f", description="d", parameters={"type": "object"}, strict=False)),
    )
    assert body_of(req) == {
        "model": "up",
        "top_k": 5,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 9,
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "f",
                    "description": "d",
                    "parameters": {"type": "object"},
                    "strict": False,
                },
            }
        ],
    }
    assert "top_k" not in body_of(anthropic(parse_chat_request(chat()), extra={"top_k": None}))
    assert "top_k" not in body_of(anthropic(parse_chat_request(chat()), extra={"metadata": {}}))


def test_the_max_tokens_key() -> None:
    same = parse_chat_request(chat(max_completion_tokens=9))
    assert body_of(same)["max_completion_tokens"] == 9
    assert body_of(same, max_tokens_key="max_tokens")["max_tokens"] == 9
    other = anthropic(parse_chat_request(chat(max_tokens=9)))
    assert body_of(other)["max_tokens"] == 9
    thinking = anthropic(other, reasoning=Reasoning(budget_tokens=2048))
    body = body_of(thinking)
    assert body["max_completion_tokens"] == 9 and "max_tokens" not in body
    assert body["reasoning_effort"] == openai_effort(Reasoning(budget_tokens=2048))


def test_reasoning_effort_from_the_client_is_kept_as_sent() -> None:
    req = parse_chat_request(chat(reasoning_effort="minimal"))
    assert req.reasoning is None and body_of(req)["reasoning_effort"] == "minimal"
    req = dataclasses.replace(parse_chat_request(chat(reasoning_effort="high")), reasoning=Reasoning("low"))
    assert body_of(req)["reasoning_effort"] == "high"


def encode(*messages: Message) -> list[dict[str, Any]]:
    req = ChatRequest(model="m", messages=messages, source="anthropic")
    return body_of(req)["messages"]


def test_user_and_tool_messages_are_written_in_openai_shape() -> None:
    image = ImagePart(data="AAAA", media_type="image/jpeg", detail="high")
    openai_raw = RawPart("openai", {"type": "input_audio", "input_audio": {"data": "x"}})
    user = Message(
        "user",
        (
            ToolResultPart("c1", "42"),
            TextPart("see"),
            image,
            ImagePart(url="https://x/a.png"),
            openai_raw,
            RawPart("anthropic", {"type": "document"}),
        ),
        "ann",
    )
    assert encode(user) == [
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "see"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA", "detail": "high"}},
                {"type": "image_url", "image_url": {"url": "https://x/a.png"}},
                openai_raw.data,
            ],
            "name": "ann",
        },
    ]
    only_results = Message("tool", (ToolResultPart("c1", "42"), RawPart("anthropic", {"type": "x"})))
    assert encode(only_results) == [{"role": "tool", "tool_call_id": "c1", "content": "42"}]
    assert encode(Message("user", (TextPart("a"),))) == [{"role": "user", "content": "a"}]
    assert encode(Message("user", (image,))) == [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": image.as_url(), "detail": "high"}}],
        }
    ]
    assert encode(Message("system", (TextPart("a"), TextPart("b")))) == [
        {"role": "system", "content": "a\n\nb"}
    ]


def test_assistant_messages_are_written_in_openai_shape() -> None:
    call = ToolCallPart("c1", "f", "{}")
    wire_call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    custom_call = {"id": "c2", "type": "custom", "custom": {"name": "g", "input": "x"}}
    refusal = {"type": "refusal", "refusal": "no"}

    def one(*parts: Any, name: str | None = None) -> dict[str, Any]:
        [encoded] = encode(Message("assistant", parts, name))
        return encoded

    assert one(TextPart("a")) == {"role": "assistant", "content": "a"}
    assert one(TextPart("a"), TextPart("b")) == {"role": "assistant", "content": "ab"}
    assert one(call, name="bot") == {
        "role": "assistant",
        "content": None,
        "tool_calls": [wire_call],
        "name": "bot",
    }
    assert one() == {"role": "assistant", "content": ""}
    assert one(TextPart("a"), RawPart("openai", refusal), RawPart("openai", custom_call)) == {
        "role": "assistant",
        "content": [{"type": "text", "text": "a"}, refusal],
        "tool_calls": [custom_call],
    }
    assert one(TextPart("a"), RawPart("anthropic", {"type": "x"}), ReasoningPart("t", {})) == {
        "role": "assistant",
        "content": "a",
    }
