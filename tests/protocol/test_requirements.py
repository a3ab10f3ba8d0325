"""What a request needs of its backend: capabilities and native fields, from its canonical form."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.protocol.anthropic_request import parse_count_tokens_request, parse_messages_request
from gateway.protocol.openai_legacy import parse_completion_request, parse_embedding_request
from gateway.protocol.openai_request import parse_chat_request
from gateway.protocol.requirements import Requirements, requirements

USER = [{"role": "user", "content": "hello"}]
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def openai_chat(**members: Any) -> Requirements:
    body = {"model": "m", "messages": USER, **members}
    return requirements("chat", "openai", parse_chat_request(body))


def anthropic_chat(**members: Any) -> Requirements:
    body = {"model": "m", "max_tokens": 8, "messages": USER, **members}
    return requirements("chat", "anthropic", parse_messages_request(body))


def test_a_plain_chat_needs_chat_only() -> None:
    assert openai_chat() == Requirements("chat", "openai", frozenset({"chat"}))
    assert anthropic_chat().capabilities == {"chat"}


@pytest.mark.parametrize(
    ("members", "capability"),
    [
        ({"tools": [TOOL]}, "tools"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, IMAGE]}]}, "images"),
        ({"response_format": {"type": "json_object"}}, "json_object"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "json_schema"),
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "logprobs"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"presence_penalty": 0.5}, "penalties"),
        ({"frequency_penalty": -1}, "penalties"),
    ],
)
def test_each_openai_chat_capability(members: dict[str, Any], capability: str) -> None:
    needs = openai_chat(**members)
    assert needs.capabilities == {"chat", capability}
    assert needs.native == ()


@pytest.mark.parametrize(
    "members",
    [
        {"n": 1},
        {"logprobs": False},
        {"top_logprobs": 0},
        {"logit_bias": {}},
        {"presence_penalty": 0, "frequency_penalty": 0.0},
        {"response_format": {"type": "text"}},
        {"store": False},
        {"modalities": ["text"]},
        {"metadata": {"tag": "x"}},
        {"seed": 7, "user": "u", "temperature": 0.5, "parallel_tool_calls": True},
        {"service_tier": None},
    ],
)
def test_values_that_ask_for_nothing_need_nothing(members: dict[str, Any]) -> None:
    assert openai_chat(**members) == Requirements("chat", "openai", frozenset({"chat"}))


def test_tool_calls_and_results_in_the_history_need_tools() -> None:
    history = [
        *USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    assert openai_chat(messages=history).capabilities == {"chat", "tools"}


def test_an_image_in_an_anthropic_tool_result_needs_images_and_tools() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    messages = [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [image]}]},
    ]
    needs = anthropic_chat(messages=messages)
    assert needs.capabilities == {"chat", "tools", "images"}
    # OpenAI tool messages carry text only: the image reaches an Anthropic backend, no other.
    assert needs.native == ("image in a tool result",)


def test_anthropic_top_k_and_native_fields() -> None:
    needs = anthropic_chat(top_k=5, thinking={"type": "enabled", "budget_tokens": 1024}, cache_control={})
    assert needs.capabilities == {"chat", "top_k", "reasoning"}
    assert needs.native == ()
    assert needs.field_for("reasoning") == "thinking" and needs.field_for("top_k") == "top_k"
    assert anthropic_chat(thinking={"type": "adaptive"}).native == ("thinking",)
    assert anthropic_chat(thinking={"type": "disabled"}).capabilities == {"chat"}


def test_reasoning_effort_maps_or_is_native() -> None:
    for effort in ("low", "medium", "high"):
        needs = openai_chat(reasoning_effort=effort)
        assert needs.capabilities == {"chat", "reasoning"} and needs.native == ()
        assert needs.field_for("reasoning") == "reasoning_effort"
    assert openai_chat(reasoning_effort="none").capabilities == {"chat"}
    for effort in ("minimal", "xhigh"):
        needs = openai_chat(reasoning_effort=effort)
        assert needs.capabilities == {"chat"} and needs.native == ("reasoning_effort",)


def test_thinking_blocks_sent_back_need_their_protocol() -> None:
    block = {"type": "thinking", "thinking": "hmm", "signature": "sig"}
    assistant = {"role": "assistant", "content": "x", "thinking_blocks": [block]}
    needs = openai_chat(
        messages=[{"role": "user", "content": "q"}, assistant, {"role": "user", "content": "more"}]
    )
    assert needs.foreign == ("anthropic", "'thinking' content part") and needs.native == ()
    history = [{"role": "user", "content": "q"}, {"role": "assistant", "content": [block]}]
    needs = anthropic_chat(messages=[*history, {"role": "user", "content": "more"}])
    assert needs.native == ("'thinking' content part",) and needs.foreign is None


def test_native_fields_parts_and_tools_are_named() -> None:
    audio = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    needs = openai_chat(
        messages=[{"role": "user", "content": [{"type": "text", "text": "x"}, audio]}],
        tools=[{"type": "custom", "custom": {"name": "grammar"}}],
        service_tier="flex",
        store=True,
        vendor_thing=1,
        tool_choice={"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}},
    )
    assert needs.native == (
        "built-in tool 'custom'",
        "'input_audio' content part",
        "service_tier",
        "store",
        "vendor_thing",
        "tool_choice",
    )
    assert needs.describe_native("service_tier") == "'service_tier' (an OpenAI field)"
    assert needs.describe_native("'input_audio' content part") == "an OpenAI 'input_audio' content part"


def test_anthropic_blocks_outside_the_canonical_form_are_native() -> None:
    messages = [
        {"role": "user", "content": [{"type": "document", "source": {"type": "text", "data": "x"}}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"}]},
        {"role": "user", "content": "go on"},
    ]
    needs = anthropic_chat(messages=messages, tools=[{"type": "web_search_20250305", "name": "web_search"}])
    assert needs.native == (
        "built-in tool 'web_search_20250305'",
        "'document' content part",
        "'thinking' content part",
    )
    assert needs.capabilities == {"chat", "tools"}


def test_count_tokens_counts_as_chat() -> None:
    body = {"model": "m", "messages": USER}
    assert requirements("count_tokens", "anthropic", parse_count_tokens_request(body)).capabilities == {
        "chat"
    }


def test_completions_and_embeddings() -> None:
    plain = parse_completion_request({"model": "m", "prompt": "x"})
    assert requirements("completions", "openai", plain).capabilities == {"completions"}
    rich = parse_completion_request(
        {"model": "m", "prompt": "x", "n": 2, "logprobs": 0, "echo": True, "best_of": 1, "suffix": "y"}
    )
    needs = requirements("completions", "openai", rich)
    assert needs.capabilities == {"completions", "n", "logprobs"}
    assert needs.native == ("echo", "suffix")
    embedding = parse_embedding_request({"model": "m", "input": "x", "dimensions": 8})
    assert requirements("embeddings", "openai", embedding) == Requirements(
        "embeddings", "openai", frozenset({"embeddings"})
    )


def test_vllm_ignore_eos_is_native_to_openai() -> None:
    assert openai_chat(ignore_eos=True).native == ("ignore_eos",)
