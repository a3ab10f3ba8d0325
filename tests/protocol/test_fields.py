"""The field table: every top-level request field of each client protocol has a class, every field the
official SDKs can send is in it (a new SDK field fails here until it is classified), and
docs/fields.md is written from it."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from anthropic.types import message_count_tokens_params, message_create_params
from anthropic.types.beta import message_count_tokens_params as beta_count_tokens_params
from anthropic.types.beta import message_create_params as beta_message_create_params
from openai.types import completion_create_params, embedding_create_params
from openai.types.chat import completion_create_params as chat_create_params
from openai.types.responses import response_create_params

from gateway.config.capabilities import CAPABILITIES
from gateway.protocol.fields import (
    ANTHROPIC_BLOCKS,
    ANTHROPIC_COUNT_TOKENS,
    ANTHROPIC_MESSAGES,
    FIELD_TABLES,
    OPENAI_CHAT,
    OPENAI_COMPLETIONS,
    OPENAI_EMBEDDINGS,
    OPENAI_PARTS,
    RESPONSES,
    RESPONSES_ITEMS,
    markdown_tables,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "fields.md"
C, N, I = "canonical", "native", "ignored"  # noqa: E741

EXPECTED = {
    "openai chat": (
        OPENAI_CHAT,
        {
            "model": C, "messages": C, "max_completion_tokens": C, "max_tokens": C, "temperature": C,
            "top_p": C, "stop": C, "stream": C, "stream_options": C, "tools": "capability:tools",
            "tool_choice": C, "parallel_tool_calls": C, "seed": I, "user": C, "n": "capability:n",
            "logprobs": "capability:logprobs", "top_logprobs": "capability:logprobs",
            "logit_bias": "capability:logit_bias", "presence_penalty": "capability:penalties",
            "frequency_penalty": "capability:penalties", "response_format": "capability:json_object",
            "store": N, "metadata": I, "service_tier": N, "prediction": N, "audio": N, "modalities": N,
            "reasoning_effort": "capability:reasoning", "web_search_options": N, "verbosity": N,
            "prompt_cache_key": N,
            "prompt_cache_retention": N, "prompt_cache_options": N, "safety_identifier": N,
            "moderation": N, "function_call": N, "functions": N,
        },
    ),
    "openai completions": (
        OPENAI_COMPLETIONS,
        {
            "model": C, "prompt": C, "max_tokens": C, "temperature": C, "top_p": C, "stop": C,
            "stream": C, "stream_options": C, "seed": I, "user": C, "n": "capability:n",
            "logprobs": "capability:logprobs", "logit_bias": "capability:logit_bias",
            "presence_penalty": "capability:penalties", "frequency_penalty": "capability:penalties",
            "best_of": N, "echo": N, "suffix": N,
        },
    ),
    "openai embeddings": (
        OPENAI_EMBEDDINGS,
        {"model": C, "input": C, "dimensions": C, "encoding_format": C, "user": C},
    ),
    "anthropic messages": (
        ANTHROPIC_MESSAGES,
        {
            "model": C, "messages": C, "system": C, "max_tokens": C, "temperature": C, "top_p": C,
            "stop_sequences": C, "stream": C, "tools": "capability:tools", "tool_choice": C,
            "metadata": C, "top_k": "capability:top_k", "cache_control": I,
            "thinking": "capability:reasoning", "container": N, "mcp_servers": N, "service_tier": N,
            "context_management": N,
            "output_config": N, "output_format": N, "inference_geo": N, "speed": N, "diagnostics": N,
            "user_profile_id": N, "workspace_id": N, "billing_policy": N, "compaction": N,
            "fallback_credit_token": N, "fallbacks": N, "thread": N,
        },
    ),
    "anthropic count_tokens": (
        ANTHROPIC_COUNT_TOKENS,
        {
            "model": C, "messages": C, "system": C, "tools": "capability:tools", "tool_choice": C,
            "cache_control": I, "thinking": "capability:reasoning", "mcp_servers": N, "context_management": N,
            "output_config": N, "output_format": N, "speed": N, "user_profile_id": N,
            "workspace_id": N, "billing_policy": N, "compaction": N,
        },
    ),
    "responses": (
        RESPONSES,
        {
            "model": C, "input": C, "instructions": C, "max_output_tokens": C, "temperature": C,
            "top_p": C, "stream": C, "stream_options": I, "tools": "capability:tools", "tool_choice": C,
            "parallel_tool_calls": C, "text": "capability:json_schema", "user": C, "metadata": I,
            "store": N, "previous_response_id": N, "conversation": N, "reasoning": "capability:reasoning",
            "include": N, "background": N, "prompt": N, "truncation": N, "service_tier": N, "top_logprobs": N,
            "max_tool_calls": N, "safety_identifier": I, "prompt_cache_key": I,
            "prompt_cache_retention": N, "prompt_cache_options": N, "context_management": N,
            "background_options": N, "access_programs": N, "image": N, "moderation": N,
        },
    ),
    "responses items": (
        RESPONSES_ITEMS,
        {
            "message": C, "function_call": "capability:tools", "function_call_output": "capability:tools",
            "reasoning": N, "item_reference": N,
        },
    ),
    "openai parts": (
        OPENAI_PARTS,
        {"text": C, "image_url": "capability:images", "input_audio": N, "file": N, "refusal": N},
    ),
    "anthropic blocks": (
        ANTHROPIC_BLOCKS,
        {
            "text": C, "image": "capability:images", "tool_use": "capability:tools",
            "tool_result": "capability:tools", "document": N, "search_result": N, "thinking": N,
            "redacted_thinking": N, "server_tool_use": N, "web_search_tool_result": N,
            "web_fetch_tool_result": N, "code_execution_tool_result": N,
            "bash_code_execution_tool_result": N, "text_editor_code_execution_tool_result": N,
            "tool_search_tool_result": N, "container_upload": N, "mcp_tool_use": N, "mcp_tool_result": N,
        },
    ),
}  # fmt: skip


@pytest.mark.parametrize("table", list(EXPECTED))
def test_each_field_has_its_class(table: str) -> None:
    rules, expected = EXPECTED[table]
    assert {name: rule.label for name, rule in rules.items()} == expected


def test_capability_fields_name_known_capabilities_and_ignored_ones_say_why() -> None:
    for table in FIELD_TABLES.values():
        for name, rule in table.items():
            if rule.kind == "capability":
                assert rule.capability in CAPABILITIES, name
            if rule.kind == "ignored":
                assert len(rule.note) > 20, f"{name}: an ignored field says why"


def _sdk_fields(*params: type) -> set[str]:
    # `betas` is the anthropic-beta header, not a body member; `stream` is in the streaming variants.
    return {name for cls in params for name in typing.get_type_hints(cls)} - {"betas"}


SDK_PARAMS = [
    (
        OPENAI_CHAT,
        (
            chat_create_params.CompletionCreateParamsStreaming,
            chat_create_params.CompletionCreateParamsNonStreaming,
        ),
    ),
    (
        OPENAI_COMPLETIONS,
        (
            completion_create_params.CompletionCreateParamsStreaming,
            completion_create_params.CompletionCreateParamsNonStreaming,
        ),
    ),
    (OPENAI_EMBEDDINGS, (embedding_create_params.EmbeddingCreateParams,)),
    (
        RESPONSES,
        (
            response_create_params.ResponseCreateParamsStreaming,
            response_create_params.ResponseCreateParamsNonStreaming,
        ),
    ),
    (
        ANTHROPIC_MESSAGES,
        (
            message_create_params.MessageCreateParamsStreaming,
            beta_message_create_params.MessageCreateParamsStreaming,
        ),
    ),
    (
        ANTHROPIC_COUNT_TOKENS,
        (
            message_count_tokens_params.MessageCountTokensParams,
            beta_count_tokens_params.MessageCountTokensParams,
        ),
    ),
]


@pytest.mark.parametrize(
    ("table", "params"),
    SDK_PARAMS,
    ids=["chat", "completions", "embeddings", "responses", "messages", "count"],
)
def test_every_field_the_sdk_can_send_is_classified(table, params) -> None:
    missing = sorted(_sdk_fields(*params) - set(table))
    assert not missing, f"classify these new SDK fields in gateway/protocol/fields.py: {missing}"


def test_the_doc_is_written_from_the_table() -> None:
    text = DOC.read_text()
    start, end = "<!-- generated: fields tables -->\n", "<!-- end of generated tables -->"
    assert start in text and end in text
    generated = text.split(start, 1)[1].split(end, 1)[0]
    assert generated.strip() == markdown_tables().strip(), (
        "docs/fields.md is out of date: paste gateway.protocol.fields.markdown_tables() between its markers"
    )
