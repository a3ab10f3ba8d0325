"""Bedrock ConverseStream events ⇄ canonical stream events (mapping rules: `bedrock`).

The events arrive as event-stream frames (`gateway.protocol.eventstream`), each named by its member
of the API's `ConverseStreamOutput` union: `messageStart`, `contentBlockStart` (tool calls only),
`contentBlockDelta` (text, or a fragment of a tool call's input JSON), `contentBlockStop`,
`messageStop` (the stop reason), then `metadata` (usage, metrics). Usage comes after the stop, so
`StreamEnd` is held back until `metadata` (or the end of the body) and every usage report precedes
it. An exception member (`throttlingException`, `modelStreamErrorException`, ...) ends the stream as a
`StreamError`; `exception` keeps its API name, so a backend can tell one that came before anything
else (and still fail over).
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.protocol._maps import finish_from_bedrock
from gateway.protocol.canonical import (
    StreamEnd,
    StreamError,
    StreamEvent,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    UpstreamProtocolError,
    UsageEvent,
)
from gateway.protocol.usage import bedrock_usage

__all__ = ["EXCEPTION_TYPES", "BedrockStreamDecoder"]

#: The stream union's exception members, and the error type name a client is told for each.
EXCEPTION_TYPES: dict[str, str] = {
    "throttlingException": "rate_limit_error",
    "serviceUnavailableException": "overloaded_error",
    "internalServerException": "api_error",
    "modelStreamErrorException": "api_error",
    "validationException": "invalid_request_error",
}


class BedrockStreamDecoder:
    """Turns ConverseStream events into canonical events; `feed_data(payload, event_name)` per frame,
    then `finish()` when the body ends (raises if it ended before `messageStop`)."""

    __slots__ = (
        "_done",
        "_id",
        "_reason",
        "_single_tool_call",
        "_started",
        "_stop_sequence",
        "_tools",
        "exception",
    )

    def __init__(self, response_id: str, *, stop_sequence: str | None = None, single_tool_call: bool = False):
        self._id = response_id
        self._stop_sequence = stop_sequence
        self._single_tool_call = single_tool_call
        self._started = False
        self._done = False
        self._reason: Any = None  # set by messageStop
        self._tools: dict[int, int] = {}  # content block index -> canonical tool-call index
        #: The API name of the exception that ended the stream, or None.
        self.exception: str | None = None

    def feed_data(self, data: bytes, event: bytes | None = None) -> list[StreamEvent]:
        if self._done:
            return []
        name = (event or b"").decode("utf-8", "replace")
        try:
            payload = orjson.loads(data or b"{}")
        except orjson.JSONDecodeError as e:
            raise UpstreamProtocolError(f"backend stream event {name!r} is not JSON: {data[:200]!r}") from e
        try:
            return self._feed(name, payload)
        except (KeyError, TypeError, AttributeError) as e:
            raise UpstreamProtocolError(
                f"malformed ConverseStream event {name!r} from the backend ({type(e).__name__}: {e})"
            ) from e

    def _feed(self, name: str, event: dict[str, Any]) -> list[StreamEvent]:
        if name == "contentBlockDelta" and self._started:
            delta = event["delta"]
            if "text" in delta:
                text = delta["text"]
                return [TextDelta(text)] if text else []
            if "toolUse" in delta:
                tool = self._tools.get(event["contentBlockIndex"])
                fragment = delta["toolUse"]["input"]
                return [ToolCallDelta(tool, fragment)] if tool is not None and fragment else []
            return []  # reasoningContent, citation...: no canonical form
        if name == "messageStart":
            self._started = True
            return [StreamStart(self._id, "")]
        if name in EXCEPTION_TYPES or name.endswith("Exception") or name.endswith("Error"):
            self._done = True
            self.exception = name
            message = event.get("message") if isinstance(event, dict) else None
            kind = EXCEPTION_TYPES.get(name, "api_error")
            return [StreamError(f"{name}: {message or 'upstream error'}", kind)]
        if not self._started:
            raise UpstreamProtocolError(f"backend stream sent {name!r} before messageStart")
        if name == "contentBlockStart":
            start = event["start"]
            if "toolUse" in start:
                if self._single_tool_call and self._tools:
                    return []
                use = start["toolUse"]
                tool = self._tools[event["contentBlockIndex"]] = len(self._tools)
                return [ToolCallStart(tool, use["toolUseId"], use["name"])]
            return []
        if name == "messageStop":
            self._reason = event["stopReason"]
            return []
        if name == "metadata":
            usage = bedrock_usage(event.get("usage"))
            out: list[StreamEvent] = [UsageEvent(usage)] if usage is not None else []
            if self._reason is not None:
                out.append(self._end())
            return out
        return []  # contentBlockStop, and members added to the API later

    def _end(self) -> StreamEnd:
        self._done = True
        stop = self._stop_sequence if self._reason == "stop_sequence" else None
        return StreamEnd(finish_from_bedrock(self._reason), stop)

    def finish(self) -> list[StreamEvent]:
        """The body ended: the held-back end if `messageStop` came (with no `metadata` after it),
        else raises: the stream was cut short."""
        if self._done:
            return []
        if self._reason is not None:
            return [self._end()]
        self._done = True
        raise UpstreamProtocolError("backend stream ended before messageStop")
