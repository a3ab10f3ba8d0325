"""Reasoning across the protocols: the one table mapping OpenAI's `reasoning_effort` to Anthropic's
thinking budget and back, what each protocol's reasoning field asks of a backend, and how an answer's
thinking is shown to an OpenAI chat client. docs/reasoning.md is written from this module.

Only what has a faithful mapping crosses protocols:

* OpenAI `reasoning_effort` `low` / `medium` / `high` ⇄ Anthropic `thinking: {type: enabled,
  budget_tokens}`: an effort becomes the budget of `EFFORT_BUDGETS`; a budget becomes the highest effort
  whose budget it reaches (below 2048: low, below 4096: medium, else high).
* `reasoning_effort: none` and `thinking: {type: disabled}` ask for nothing beyond a plain request.
* Anything else (`minimal`, `xhigh`, `max`; Anthropic `adaptive`) has no counterpart: it stays a native
  field, which only a backend speaking the client's protocol takes (the others are skipped, 400 naming the
  field when none is left).

Anthropic counts thinking in `max_tokens` (the budget must be below it), as OpenAI counts reasoning in
`max_completion_tokens`: a client's cap is kept, and the budget is lowered to fit under it (never below
Anthropic's minimum of 1024: such a request cannot be served by an Anthropic backend). A client that
gave no cap gets the budget plus the gateway's default answer length.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal

from gateway.protocol.canonical import Reasoning, ReasoningEffort

__all__ = [
    "EFFORT_BUDGETS",
    "MIN_BUDGET",
    "REASONING_FIELDS",
    "anthropic_reasoning",
    "anthropic_thinking",
    "effort_for_budget",
    "openai_effort",
    "openai_reasoning",
    "reasoning_need",
    "responses_reasoning",
    "thinking_text",
]

#: OpenAI effort → Anthropic thinking budget (tokens). The same figures LiteLLM uses.
EFFORT_BUDGETS: Mapping[ReasoningEffort, int] = MappingProxyType({"low": 1024, "medium": 2048, "high": 4096})
#: Anthropic's smallest thinking budget.
MIN_BUDGET = 1024
#: The request fields that ask for reasoning, by client protocol.
REASONING_FIELDS: Mapping[str, str] = MappingProxyType(
    {"openai": "reasoning_effort", "anthropic": "thinking", "responses": "reasoning"}
)
#: The Responses API's `reasoning.summary` (and its deprecated alias `generate_summary`) values: all
#: accepted off OpenAI, where the thinking itself is returned as the item's `content`, not a summary.
SUMMARIES = frozenset({"auto", "concise", "detailed"})

Need = Literal["reasoning", "native"] | None


def effort_for_budget(budget: int) -> ReasoningEffort:
    """The highest effort whose budget `budget` reaches (low below the medium budget)."""
    chosen: ReasoningEffort = "low"
    for effort, tokens in EFFORT_BUDGETS.items():
        if budget >= tokens:
            chosen = effort
    return chosen


def openai_reasoning(value: Any) -> Reasoning | None:
    """The canonical reasoning of an OpenAI `reasoning_effort` value, None when it has no mapping."""
    return Reasoning(effort=value) if value in EFFORT_BUDGETS else None


def anthropic_reasoning(value: Any) -> Reasoning | None:
    """The canonical reasoning of an Anthropic `thinking` value, None when it has no mapping."""
    if isinstance(value, dict) and value.get("type") == "enabled":
        budget = value.get("budget_tokens")
        if type(budget) is int:
            return Reasoning(budget_tokens=budget)
    return None


def responses_reasoning(value: Any) -> tuple[Reasoning | None, bool]:
    """The canonical reasoning of a Responses API `reasoning` object, and whether the object maps at all:
    (None, True) asks for nothing (no effort, or `none`); (_, False) has no faithful counterpart (an
    effort such as `minimal`, an unknown member or summary value): it stays native."""
    if not isinstance(value, dict):
        return None, False
    for key, given in value.items():
        if key in ("summary", "generate_summary"):
            if given is not None and given not in SUMMARIES:
                return None, False
        elif key != "effort":
            return None, False
    effort = value.get("effort")
    if effort is None or effort == "none":
        return None, True
    reasoning = openai_reasoning(effort)
    return reasoning, reasoning is not None


def reasoning_need(field: str, value: Any) -> Need:
    """What a reasoning field's value asks of a backend: the `reasoning` capability (it maps), nothing
    (`none`, `disabled`), or `native` (no faithful mapping: only the client's protocol takes it)."""
    if field == "reasoning_effort":
        if value == "none":
            return None
        return "reasoning" if openai_reasoning(value) is not None else "native"
    if field == "reasoning":
        reasoning, maps = responses_reasoning(value)
        if not maps:
            return "native"
        return "reasoning" if reasoning is not None else None
    if isinstance(value, dict) and value.get("type") == "disabled":
        return None
    return "reasoning" if anthropic_reasoning(value) is not None else "native"


def openai_effort(reasoning: Reasoning) -> ReasoningEffort:
    """`reasoning` as an OpenAI `reasoning_effort`."""
    if reasoning.effort is not None:
        return reasoning.effort
    return effort_for_budget(reasoning.budget_tokens or MIN_BUDGET)


def anthropic_thinking(
    reasoning: Reasoning, max_tokens: int | None, default_max_tokens: int
) -> tuple[dict[str, Any], int] | None:
    """Anthropic's `thinking` member and the `max_tokens` to send with it, or None when the client's cap
    leaves no room for the smallest budget."""
    budget = reasoning.budget_tokens if reasoning.budget_tokens is not None else None
    if budget is None:
        budget = EFFORT_BUDGETS[reasoning.effort or "low"]
    if max_tokens is None:
        return {"type": "enabled", "budget_tokens": budget}, budget + default_max_tokens
    budget = min(budget, max_tokens - 1)
    if budget < MIN_BUDGET:
        return None
    return {"type": "enabled", "budget_tokens": budget}, max_tokens


def thinking_text(block: Mapping[str, Any]) -> str:
    """The readable text of an Anthropic thinking block ("" for a redacted one)."""
    text = block.get("thinking") if block.get("type") == "thinking" else None
    return text if isinstance(text, str) else ""
