"""Tool calls parsed out of a local model's text, as canonical stream events, token by token.

The model writes a call as text between its format's markers (`tokenizer.tool_call_start` /
`tool_call_end`, e.g. `<tool_call>` and `</tool_call>`); mlx-lm's parser for the format
(`tokenizer.tool_parser`, as `mlx_lm.server` uses it) turns the text between them into a name and
arguments. Text outside calls passes through as `TextDelta`s; a tail that could be the start of a
marker split across tokens is held back, so a marker never leaks as text. A call comes out whole, as
`ToolCallStart` and one `ToolCallDelta`, once its end marker (or the end of the answer) is seen: its
name is only known once its text parses.

A call whose text does not parse, has no name, or names a function that is not among the request's
tools is not a call: its text (markers included) goes out as text, and the answer's finish reason stays
what generation gave (`stop` / `length`). With `parallel_tool_calls: false` only the first call is kept;
later ones are dropped (their text too).
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from typing import Any

from gateway.protocol.canonical import StreamEvent, TextDelta, ToolCallDelta, ToolCallStart

__all__ = ["ToolCallParser", "new_call_id"]

log = logging.getLogger("gateway.mlx")


def new_call_id() -> str:
    """An id in OpenAI's form (`call_` and 24 characters); Anthropic's encoder takes it as it is."""
    return "call_" + secrets.token_hex(12)


class ToolCallParser:
    """Feed it the answer's text deltas; it returns the canonical events they make."""

    def __init__(
        self,
        start: str,
        end: str,
        parse: Callable[[str, Any], Any],
        tools: tuple[dict[str, Any], ...],
        *,
        prefill: str = "",
        single_call: bool = False,
    ) -> None:
        self.start = start
        self.end = end
        self.parse = parse
        self.tools = list(tools)
        self.names = {t["function"]["name"] for t in tools}
        self.single_call = single_call
        #: Calls sent so far.
        self.calls = 0
        self._in_call = False
        self._buffer = ""
        if prefill:
            self.feed(prefill)

    def feed(self, text: str) -> list[StreamEvent]:
        # Inside a call, only the new text (and a marker's length before it) can hold the end marker:
        # each token costs its own length, not the call's.
        searched = max(0, len(self._buffer) - len(self.end) + 1) if self._in_call else 0
        self._buffer += text
        events: list[StreamEvent] = []
        while True:
            if self._in_call:
                at = self._buffer.find(self.end, searched)
                searched = 0
                if at < 0:
                    return events
                body, self._buffer = self._buffer[:at], self._buffer[at + len(self.end) :]
                self._in_call = False
                events += self._call(body, closed=True)
            else:
                at = self._buffer.find(self.start)
                if at < 0:
                    cut = len(self._buffer) - _partial_suffix(self._buffer, self.start)
                    text, self._buffer = self._buffer[:cut], self._buffer[cut:]
                    if text:
                        events.append(TextDelta(text))
                    return events
                if at:
                    events.append(TextDelta(self._buffer[:at]))
                self._buffer = self._buffer[at + len(self.start) :]
                self._in_call = True

    def finish(self) -> list[StreamEvent]:
        """The end of the answer: a call left open is parsed as it is (generation may stop on
        end-of-sequence before the end marker); held-back text goes out."""
        rest, self._buffer = self._buffer, ""
        if self._in_call:
            self._in_call = False
            return self._call(rest, closed=False)
        return [TextDelta(rest)] if rest else []

    def _call(self, body: str, *, closed: bool) -> list[StreamEvent]:
        calls = self._parse(body)
        if calls is None:
            text = self.start + body + (self.end if closed else "")
            return [TextDelta(text)]
        events: list[StreamEvent] = []
        for name, arguments in calls:
            if self.single_call and self.calls:
                break
            events.append(ToolCallStart(self.calls, new_call_id(), name))
            events.append(ToolCallDelta(self.calls, arguments))
            self.calls += 1
        return events

    def _parse(self, body: str) -> list[tuple[str, str]] | None:
        """The (name, arguments JSON text) of each call in `body`; None if it is not a valid call."""
        try:
            parsed = self.parse(body, self.tools)
        except Exception as error:  # each format's parser raises its own errors
            log.info("a local model's tool call did not parse (%s); sent as text", type(error).__name__)
            return None
        calls = []
        for item in parsed if isinstance(parsed, list) else [parsed]:
            name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(name, str) or name not in self.names:
                return None
            arguments = item.get("arguments", {})
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments, ensure_ascii=False)
            calls.append((name, arguments))
        return calls or None


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of `text` that is a proper prefix of `marker`."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0
