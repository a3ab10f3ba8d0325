"""The Responses API translation below the e2e level: request parsing into the canonical form, what a
request needs of its backend, the response object and the event stream (validated against the
official SDK's types)."""

from __future__ import annotations

import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from gateway.protocol._fields import FieldError
from gateway.protocol.canonical import (
    ChatResponse,
    ImagePart,
    Reasoning,
    ReasoningBlock,
    ReasoningDelta,
    ReasoningPart,
    StreamEnd,
    StreamError,
    StreamStart,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallPart,
    ToolCallStart,
    ToolChoice,
    ToolResultPart,
    Usage,
    UsageEvent,
)
from gateway.protocol.requirements import requirements
from gateway.protocol.responses import (
    ResponsesStreamEncoder,
    encode_response,
    error_after,
    parse_responses_request,
    request_echo,
)
from gateway.protocol.usage import responses_usage, usage_to_responses

EVENTS = TypeAdapter(ResponseStreamEvent)


def test_a_string_input_is_one_user_message_and_instructions_the_system_prompt() -> None:
    req = parse_responses_request(
        {"model": "m", "input": "hi", "instructions": "be brief", "max_output_tokens": 50, "temperature": 0.5}
    )
    assert req.system == "be brief"
    assert [(m.role, m.text) for m in req.messages] == [("user", "hi")]
    assert (req.max_tokens, req.temperature, req.include_usage) == (50, 0.5, True)
    assert req.extra == {}


def test_items_map_to_messages_calls_and_results() -> None:
    req = parse_responses_request(
        {
            "model": "m",
            "input": [
                {"role": "developer", "content": "rules"},
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "look"},
                        {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
                    ],
                },
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"a":1}'},
                {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "one"},
                {
                    "type": "function_call_output",
                    "call_id": "c2",
                    "output": [{"type": "input_text", "text": "two"}],
                },
            ],
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "f"},
        }
    )
    system, user, assistant, tool = req.messages
    assert system.role == "system" and system.text == "rules"
    assert user.content == (TextPart("look"), ImagePart(data="AAAA", media_type="image/png", detail="low"))
    assert assistant.content == (ToolCallPart("c1", "f", '{"a":1}'), ToolCallPart("c2", "g", "{}"))
    assert tool.content == (ToolResultPart("c1", "one"), ToolResultPart("c2", "two"))
    assert req.tool_choice == ToolChoice("tool", "f")
    needs = requirements("chat", "responses", req)
    assert {"chat", "tools", "images"} <= needs.capabilities and needs.native == ()


def test_text_format_becomes_the_structured_output_capability() -> None:
    schema = {"type": "object"}
    req = parse_responses_request(
        {
            "model": "m",
            "input": "x",
            "text": {"format": {"type": "json_schema", "name": "n", "schema": schema, "strict": True}},
        }
    )
    assert req.extra == {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "n", "schema": schema, "strict": True},
        }
    }
    assert "json_schema" in requirements("chat", "responses", req).capabilities


@pytest.mark.parametrize(
    ("body", "native"),
    [
        ({"store": True}, ("store",)),
        ({"previous_response_id": "resp_1"}, ("previous_response_id",)),
        ({"reasoning": {"effort": "minimal"}}, ("reasoning",)),
        ({"tools": [{"type": "web_search"}]}, ("built-in tool 'web_search'",)),
        ({"input": [{"type": "reasoning", "id": "rs_1", "summary": []}]}, ("'reasoning' content part",)),
        ({"store": False, "metadata": {"k": "v"}, "safety_identifier": "u"}, ()),
        ({"truncation": "disabled", "background": False, "include": []}, ()),
        (
            {
                "input": [
                    {
                        "type": "function_call_output",
                        "call_id": "c",
                        "output": [{"type": "input_image", "file_id": "f"}],
                    }
                ]
            },
            ("'input_image' content part",),
        ),
        ({"truncation": "auto", "include": ["reasoning.encrypted_content"]}, ("truncation", "include")),
    ],
)
def test_openai_only_members_are_native(body: dict, native: tuple[str, ...]) -> None:
    req = parse_responses_request({"model": "m", "input": "x", **body})
    needs = requirements("chat", "responses", req)
    assert needs.native == native
    if native:
        assert "OpenAI Responses API" in needs.describe_native(native[0])


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({}, "input"),
        ({"input": []}, "input"),
        ({"input": [{"role": "bot", "content": "x"}]}, "input[0].role"),
        ({"input": "x", "temperature": 5}, "temperature"),
        ({"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
        ({"input": [{"type": "function_call", "name": "f"}]}, "input[0].call_id"),
    ],
)
def test_bad_requests_name_the_member(body: dict, path: str) -> None:
    with pytest.raises(FieldError) as caught:
        parse_responses_request({"model": "m", **body})
    assert path in str(caught.value)


def test_the_response_object_follows_the_sdk_types() -> None:
    answer = ChatResponse(
        "x", "m", (TextPart("Hello"), ToolCallPart("call_1", "f", "{}")), "tool_calls", Usage(10, 5, 3)
    )
    echo = request_echo({"metadata": {"k": "v"}, "temperature": 0.2})
    obj = encode_response(answer, "public", echo)
    response = Response.model_validate(obj)
    assert response.id.startswith("resp_") and response.model == "public"
    assert response.output_text == "Hello"
    assert [i.type for i in response.output] == ["message", "function_call"]
    assert response.output[1].call_id == "call_1"  # type: ignore[union-attr]
    assert (response.metadata, response.temperature, response.status) == ({"k": "v"}, 0.2, "completed")
    assert response.usage is not None
    assert response.usage.input_tokens_details.cached_tokens == 3
    assert response.usage.total_tokens == 15


def test_a_length_finish_is_an_incomplete_response() -> None:
    obj = encode_response(ChatResponse("x", "m", (TextPart("Hi"),), "length", Usage(1, 1)), "m")
    assert obj["status"] == "incomplete"
    assert obj["incomplete_details"] == {"reason": "max_output_tokens"}


def test_usage_round_trips() -> None:
    usage = Usage(100, 20, 40)
    assert responses_usage(usage_to_responses(usage)) == usage
    assert usage_to_responses(usage)["output_tokens_details"] == {"reasoning_tokens": 0}
    reasoned = Usage(100, 20, 40, reasoning_tokens=12)
    assert usage_to_responses(reasoned)["output_tokens_details"] == {"reasoning_tokens": 12}
    assert responses_usage(usage_to_responses(reasoned)) == reasoned  # read back on pass-through


def _decode(raw: bytes) -> list[dict]:
    events = []
    for block in raw.split(b"\n\n"):
        if not block:
            continue
        name, data = block.split(b"\n")
        obj = orjson.loads(data.removeprefix(b"data: "))
        assert name == b"event: " + obj["type"].encode()
        EVENTS.validate_python(obj)  # the SDK's own event types accept it
        events.append(obj)
    return events


def test_the_stream_writes_items_in_order_with_sequence_numbers() -> None:
    encoder = ResponsesStreamEncoder("public", request_echo({}))
    raw = b"".join(
        encoder.encode(e)
        for e in (
            StreamStart("x", "m"),
            TextDelta("Hel"),
            TextDelta("lo"),
            ToolCallStart(0, "call_1", "f"),
            ToolCallDelta(0, '{"a":'),
            ToolCallDelta(0, "1}"),
            UsageEvent(Usage(7, 3)),
            StreamEnd("tool_calls"),
        )
    )
    events = _decode(raw)
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = Response.model_validate(events[-1]["response"])
    assert final.output_text == "Hello"
    assert final.output[1].arguments == '{"a":1}'  # type: ignore[union-attr]
    assert final.usage is not None and final.usage.output_tokens == 3
    assert events[9]["output_index"] == 1 and events[13]["item"]["status"] == "completed"


def test_a_failing_stream_ends_with_response_failed_and_nothing_after() -> None:
    encoder = ResponsesStreamEncoder("m")
    raw = encoder.encode(StreamStart("x", "m")) + encoder.encode(TextDelta("Hi"))
    raw += encoder.encode(StreamError("backend broke", "api_error"))
    raw += encoder.encode(TextDelta("more")) + encoder.encode(StreamEnd("stop"))
    events = _decode(raw)
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["message"] == "backend broke"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def test_a_relayed_stream_error_is_numbered_after_its_last_event() -> None:
    last = b'event: response.output_text.delta\ndata: {"type":"x","sequence_number":41}\n\n'
    (event,) = _decode(error_after(last, "gone", "server_error"))
    assert (event["type"], event["sequence_number"], event["message"]) == ("error", 42, "gone")


# --- reasoning -------------------------------------------------------------------------------------------

THINKING = {"type": "thinking", "thinking": "Let me think: 2+2.", "signature": "sig+/=="}
REDACTED = {"type": "redacted_thinking", "data": "opaque/data+=="}


@pytest.mark.parametrize(
    ("reasoning", "expected"),
    [
        ({"effort": "low"}, Reasoning(effort="low")),
        ({"effort": "high", "summary": "auto"}, Reasoning(effort="high")),
        ({"effort": "medium", "generate_summary": "detailed"}, Reasoning(effort="medium")),
        ({"effort": "none"}, None),
        ({"summary": "concise"}, None),
        ({}, None),
    ],
)
def test_a_reasoning_effort_is_canonical(reasoning: dict, expected: Reasoning | None) -> None:
    req = parse_responses_request(
        {"model": "m", "input": "x", "reasoning": reasoning, "max_output_tokens": 9}
    )
    assert req.reasoning == expected
    assert req.extra == {}
    needs = requirements("chat", "responses", req)
    assert needs.native == ()
    assert ("reasoning" in needs.capabilities) is (expected is not None)
    if expected is not None:
        assert needs.field_for("reasoning") == "reasoning"
        assert req.max_tokens_field == "max_completion_tokens"  # what a reasoning chat model takes


@pytest.mark.parametrize(
    "reasoning",
    [
        {"effort": "minimal"},
        {"effort": "xhigh"},
        {"effort": "low", "summary": "verbose"},
        {"effort": "low", "x": 1},
    ],
)
def test_reasoning_without_a_mapping_stays_native(reasoning: dict) -> None:
    req = parse_responses_request({"model": "m", "input": "x", "reasoning": reasoning})
    assert req.reasoning is None
    assert req.extra == {"reasoning": reasoning}
    assert requirements("chat", "responses", req).native == ("reasoning",)


def test_the_effort_reaches_a_chat_backend_in_its_spelling() -> None:
    from gateway.protocol.openai_request import chat_request_to_body

    req = parse_responses_request(
        {"model": "m", "input": "x", "reasoning": {"effort": "high"}, "max_output_tokens": 500}
    )
    body = chat_request_to_body(req, "up")
    assert (body["reasoning_effort"], body["max_completion_tokens"]) == ("high", 500)
    assert "reasoning" not in body and "max_tokens" not in body


def test_thinking_is_a_reasoning_item_before_the_answer() -> None:
    answer = ChatResponse(
        "x",
        "m",
        (
            ReasoningPart("Let me think: 2+2.", THINKING),
            ReasoningPart("", REDACTED),
            TextPart("4"),
            ToolCallPart("call_1", "f", "{}"),
        ),
        "tool_calls",
        Usage(10, 5, reasoning_tokens=4),
    )
    obj = encode_response(answer, "m", request_echo({"reasoning": {"effort": "low", "summary": "auto"}}))
    response = Response.model_validate(obj)
    assert [i.type for i in response.output] == ["reasoning", "reasoning", "message", "function_call"]
    thought, redacted = response.output[0], response.output[1]
    assert thought.id.startswith("rs_") and thought.summary == [] and thought.status == "completed"  # type: ignore[union-attr]
    assert [(c.type, c.text) for c in thought.content] == [("reasoning_text", "Let me think: 2+2.")]  # type: ignore[union-attr]
    assert redacted.content == []  # type: ignore[union-attr]
    assert thought.encrypted_content.startswith("gw1:")  # type: ignore[union-attr]
    assert response.reasoning is not None and response.reasoning.effort == "low"
    assert response.usage is not None and response.usage.output_tokens_details.reasoning_tokens == 4
    # Sent back (as the SDK's `model_dump` writes it), the items give back the blocks byte for byte.
    items = [i.model_dump(exclude_none=True) for i in response.output]
    req = parse_responses_request(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "q"},
                *items,
                {"type": "function_call_output", "call_id": "call_1", "output": "ok"},
            ],
        }
    )
    user, assistant, tool = req.messages
    assert (user.role, assistant.role, tool.role) == ("user", "assistant", "tool")
    first, second, text, call = assistant.content
    assert first == ReasoningPart("Let me think: 2+2.", THINKING, "anthropic")
    assert orjson.dumps(first.block) == orjson.dumps(THINKING)  # type: ignore[union-attr]
    assert second == ReasoningPart("", REDACTED, "anthropic")
    assert (type(text), type(call)) == (TextPart, ToolCallPart)
    needs = requirements("chat", "responses", req)
    assert needs.native == ()
    assert needs.foreign == ("anthropic", "'thinking' content part")  # Anthropic backends only


def test_a_reasoning_item_with_a_forged_marker_is_a_400() -> None:
    with pytest.raises(FieldError) as caught:
        parse_responses_request(
            {
                "model": "m",
                "input": [{"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gw1:!!"}],
            }
        )
    assert "input[0].encrypted_content" in str(caught.value)


def test_streamed_thinking_is_a_reasoning_item_then_the_message() -> None:
    encoder = ResponsesStreamEncoder("public", request_echo({"reasoning": {"effort": "low"}}))
    raw = b"".join(
        encoder.encode(e)
        for e in (
            StreamStart("x", "m"),
            ReasoningDelta("Let me think: "),
            ReasoningDelta("2+2."),
            ReasoningBlock(THINKING),
            ReasoningBlock(REDACTED),
            TextDelta("4"),
            UsageEvent(Usage(7, 3, reasoning_tokens=2)),
            StreamEnd("stop"),
        )
    )
    events = _decode(raw)
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[2]["item"]["type"] == "reasoning" and events[2]["output_index"] == 0
    assert {e["item_id"] for e in events[3:8]} == {events[2]["item"]["id"]}
    assert events[6]["text"] == "Let me think: 2+2."
    done = events[8]["item"]
    assert done["encrypted_content"].startswith("gw1:") and done["status"] == "completed"
    assert events[10]["item"]["content"] == [] and events[10]["output_index"] == 1
    assert events[11]["output_index"] == 2 and events[13]["output_index"] == 2
    final = Response.model_validate(events[-1]["response"])
    assert [i.type for i in final.output] == ["reasoning", "reasoning", "message"]
    assert final.output_text == "4"
    assert final.output[0].content[0].text == "Let me think: 2+2."  # type: ignore[union-attr]
    # The streamed item restores the same block as the whole answer's.
    req = parse_responses_request({"model": "m", "input": [{"role": "user", "content": "q"}, done]})
    assert req.messages[1].content == (ReasoningPart("Let me think: 2+2.", THINKING, "anthropic"),)
