"""A fake Amazon Bedrock Runtime (Converse, ConverseStream, CountTokens, and InvokeModel for Titan
text embeddings) on loopback, with deterministic replies and the fault injection of `Behaviour`, for
tests and benchmarks.

Like the real service it checks what it is sent: every request must be signed with SigV4 for
service `bedrock` in the fake's region by a key it knows (`TEST_CREDENTIALS`; the signature is
recomputed with botocore), or carry the Bedrock API key `Behaviour.api_key` as a bearer token; the
model id must fit the API's pattern and the body the API model (botocore's bedrock-runtime
service-2.json), plus the rules the service adds (roles alternate, starting with the user; no blank
text; tool blocks need a toolConfig). Refusals come in the service's shape: `{"message": ...}` with
`x-amzn-ErrorType`. Streams are real AWS event-stream frames, each payload padded with a `p` member
as the service pads them. `stream_exception` makes a stream end with an exception frame (e.g.
`throttlingException`) after `stream_exception_after` frames.
"""

from __future__ import annotations

import datetime
import hmac
import random
import re
import secrets
import uuid
import zlib
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from gateway.protocol.eventstream import CONTENT_TYPE, encode_message
from gateway.testing.aws_shapes import ShapeError, check_input, service_model
from gateway.testing.behaviour import (
    TOOL_TOKENS,
    Behaviour,
    FakeError,
    FakeServer,
    Handler,
    count_tokens,
    plan_text,
    reply_words,
    split_fragments,
    tool_arguments,
)

__all__ = ["TEST_CREDENTIALS", "TEST_REGION", "FakeBedrock"]

#: The access key id and secret the fake accepts (never real ones: tests export them as
#: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
TEST_CREDENTIALS = ("AKIDGATEWAYFAKE00001", "fake/secret/key/for/the/gateway/tests/0001")
TEST_REGION = "us-east-1"

_SERVICE = "bedrock-runtime"
_STOP_REASONS = {"end": "end_turn", "length": "max_tokens", "stop_sequence": "stop_sequence"}
_ERROR_TYPES = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)"
    r"/aws4_request, ?SignedHeaders=(?P<headers>[a-z0-9;-]+), ?Signature=(?P<signature>[0-9a-f]{64})$"
)
_MAX_SKEW = datetime.timedelta(minutes=5)


def _text(blocks: Any) -> str:
    """The text of content blocks (and of the tool results among them)."""
    parts: list[str] = []
    for block in blocks if isinstance(blocks, list) else ():
        if "text" in block:
            parts.append(block["text"])
        elif "toolResult" in block:
            parts.append(_text(block["toolResult"].get("content")))
    return " ".join(parts)


class FakeBedrock(FakeServer):
    """Fake Bedrock Runtime. `base_url` is the endpoint a `bedrock` backend's `base_url` takes."""

    provider: ClassVar[str] = "bedrock"
    request_id_header: ClassVar[str] = "x-amzn-RequestId"

    def __init__(
        self,
        behaviour: Behaviour | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        region: str = TEST_REGION,
        credentials: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(behaviour, host=host, port=port)
        self.region = region
        #: Access key id -> secret access key, for checking signatures.
        self.credentials = dict(credentials or {TEST_CREDENTIALS[0]: TEST_CREDENTIALS[1]})
        #: Streams end with this exception frame (`throttlingException`, ...) instead of finishing.
        self.stream_exception: str | None = None
        #: Frames sent before `stream_exception` (0: it is the stream's first frame).
        self.stream_exception_after = 0
        #: The last request body accepted (for tests that check the translation on the wire).
        self.last_body: dict[str, Any] | None = None

    def new_request_id(self) -> str:
        return str(uuid.uuid4())

    def api_routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("POST", "/model/{model_id}/converse", self._converse),
            ("POST", "/model/{model_id}/converse-stream", self._converse),
            ("POST", "/model/{model_id}/count-tokens", self._count_tokens),
            ("POST", "/model/{model_id}/invoke", self._invoke),
        ]

    def check_auth(self, request: web.Request, behaviour: Behaviour) -> web.Response | None:
        return None  # a signature covers the body: checked in the handler, once the body is read

    def error_response(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> web.Response:
        kind = code or _ERROR_TYPES.get(
            status, "InternalServerException" if status >= 500 else "ValidationException"
        )
        request_id = self.new_request_id()
        response = self.make_response({"message": message}, status, request_id=request_id)
        response.headers["x-amzn-ErrorType"] = f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"
        return response

    # -- checks the service makes

    def _verify(self, request: web.Request, body: bytes, behaviour: Behaviour) -> None:
        authorization = request.headers.get("authorization", "")
        if authorization.startswith("Bearer "):
            if behaviour.api_key is None or not hmac.compare_digest(
                authorization.removeprefix("Bearer "), behaviour.api_key
            ):
                raise FakeError(
                    403,
                    "Invalid API Key format: Must start with pre-defined prefix",
                    code="UnrecognizedClientException",
                )
            return
        if not authorization:
            raise FakeError(403, "Missing Authentication Token", code="MissingAuthenticationTokenException")
        found = _AUTHORIZATION.fullmatch(authorization)
        if found is None:
            raise FakeError(
                403,
                "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature'",
                code="IncompleteSignatureException",
            )
        secret = self.credentials.get(found["key"])
        if secret is None:
            raise FakeError(
                403,
                "The security token included in the request is invalid.",
                code="UnrecognizedClientException",
            )
        if found["service"] != "bedrock" or found["region"] != self.region:
            raise FakeError(
                403,
                f"Credential should be scoped to a valid region and service ('{self.region}', 'bedrock'), "
                f"not ('{found['region']}', '{found['service']}').",
                code="InvalidSignatureException",
            )
        amz_date = request.headers.get("x-amz-date", "")
        try:
            signed_at = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
        except ValueError:
            raise FakeError(
                403, "Missing or malformed X-Amz-Date", code="IncompleteSignatureException"
            ) from None
        if abs(datetime.datetime.now(datetime.UTC) - signed_at) > _MAX_SKEW or amz_date[:8] != found["date"]:
            raise FakeError(
                403,
                f"Signature expired: {amz_date} is not within 5 minutes of now.",
                code="InvalidSignatureException",
            )
        names = found["headers"].split(";")
        if "host" not in names or "x-amz-date" not in names:
            raise FakeError(403, "'Host' and 'X-Amz-Date' must be signed", code="InvalidSignatureException")
        missing = [name for name in names if name not in request.headers]
        if missing:
            raise FakeError(403, f"Signed header {missing[0]} is missing", code="InvalidSignatureException")
        token = request.headers.get("x-amz-security-token")
        signed = AWSRequest(
            method=request.method,
            url=f"http://{request.headers['host']}{request.raw_path}",
            data=body,
            headers={name: request.headers[name] for name in names},
        )
        signed.context["timestamp"] = amz_date
        auth = SigV4Auth(Credentials(found["key"], secret, token), "bedrock", self.region)
        expected = auth.signature(auth.string_to_sign(signed, auth.canonical_request(signed)), signed)
        if not hmac.compare_digest(expected, found["signature"]):
            raise FakeError(
                403,
                "The request signature we calculated does not match the signature you provided. Check "
                "your AWS Secret Access Key and signing method. Consult the service documentation for "
                "details.",
                code="InvalidSignatureException",
            )

    @staticmethod
    def _check_conversation(body: dict[str, Any]) -> None:
        """What the service checks beyond the API model."""
        messages = body.get("messages") or []
        if not messages:
            raise FakeError(
                400,
                "A conversation must start with a user message. Try again with a "
                "conversation that starts with a user message.",
            )
        expected = "user"
        for i, message in enumerate(messages):
            if message["role"] != expected:
                raise FakeError(
                    400,
                    "A conversation must alternate between user and assistant roles. "
                    "Make sure the conversation alternates between user and assistant roles "
                    "and try again."
                    if i
                    else "A conversation must start with a user message.",
                )
            expected = "assistant" if expected == "user" else "user"
            for j, block in enumerate(message["content"]):
                if "text" in block and not block["text"].strip():
                    raise FakeError(
                        400,
                        f"The text field in the ContentBlock object at messages.{i}."
                        f"content.{j} is blank. Add text to the text field, and try again.",
                    )
                if ("toolUse" in block or "toolResult" in block) and "toolConfig" not in body:
                    raise FakeError(
                        400,
                        "The toolConfig field must be defined when using toolUse and "
                        "toolResult content blocks.",
                    )

    # -- the API

    async def _converse(self, request: web.Request, behaviour: Behaviour) -> web.StreamResponse:
        raw = await request.read()
        self._verify(request, raw, behaviour)
        model = request.match_info["model_id"]
        streaming = request.path.endswith("/converse-stream")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise FakeError(
                400, "Malformed input request, please reformat your input and try again."
            ) from None
        model_shape = service_model(_SERVICE)["shapes"]["ConversationalModelId"]
        if not re.fullmatch(model_shape["pattern"], model) or len(model) > model_shape["max"]:
            raise FakeError(
                400,
                f"1 validation error detected: Value '{model}' at 'modelId' failed to "
                "satisfy constraint: Member must satisfy regular expression pattern",
            )
        try:
            check_input(_SERVICE, "ConverseStream" if streaming else "Converse", body)
        except ShapeError as error:
            raise FakeError(
                400, f"Malformed input request: {error}, please reformat your input and try again."
            ) from None
        self._check_conversation(body)
        self.last_body = body
        return await self._answer(request, behaviour, body, streaming)

    async def _count_tokens(self, request: web.Request, behaviour: Behaviour) -> web.StreamResponse:
        raw = await request.read()
        self._verify(request, raw, behaviour)
        model = request.match_info["model_id"]
        model_shape = service_model(_SERVICE)["shapes"]["FoundationModelVersionIdentifier"]
        if not re.fullmatch(model_shape["pattern"], model) or len(model) > model_shape["max"]:
            raise FakeError(
                400,
                f"1 validation error detected: Value '{model}' at 'modelId' failed to "
                "satisfy constraint: Member must satisfy regular expression pattern",
            )
        try:
            body = orjson.loads(raw)
            check_input(_SERVICE, "CountTokens", body)
        except orjson.JSONDecodeError:
            raise FakeError(
                400, "Malformed input request, please reformat your input and try again."
            ) from None
        except ShapeError as error:
            raise FakeError(
                400, f"Malformed input request: {error}, please reformat your input and try again."
            ) from None
        converse = body["input"].get("converse")
        if converse is None:
            raise FakeError(400, "The fake counts the tokens of Converse input only.")
        self._check_conversation(converse)
        self.last_body = body
        return self.json_response({"inputTokens": self._prompt_tokens(converse)}, behaviour)

    async def _invoke(self, request: web.Request, behaviour: Behaviour) -> web.StreamResponse:
        """InvokeModel for Amazon Titan text embeddings (v1: 1536 dimensions; v2: 256, 512 or 1024),
        with a deterministic unit vector per text."""
        raw = await request.read()
        self._verify(request, raw, behaviour)
        model = request.match_info["model_id"]
        if not model.startswith("amazon.titan-embed-text-"):
            raise FakeError(400, f"The fake serves InvokeModel for Titan text embeddings only, not {model}.")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise FakeError(
                400, "Malformed input request, please reformat your input and try again."
            ) from None
        v1 = model.startswith("amazon.titan-embed-text-v1")
        allowed = {"inputText"} if v1 else {"inputText", "dimensions", "normalize", "embeddingTypes"}
        extra = sorted(set(body) - allowed) if isinstance(body, dict) else []
        if not isinstance(body, dict) or extra:
            raise FakeError(
                400,
                f"Malformed input request: extraneous key [{extra[0] if extra else '#'}] is "
                "not permitted, please reformat your input and try again.",
            )
        text = body.get("inputText")
        if not isinstance(text, str) or not text:
            raise FakeError(400, "Malformed input request: #: required key [inputText] not found")
        size = 1536 if v1 else body.get("dimensions", 1024)
        if size not in (256, 512, 1024, 1536):
            raise FakeError(400, "Malformed input request: #/dimensions: 1000 is not a valid enum value")
        self.last_body = body
        rng = random.Random(zlib.crc32(text.encode()))
        vector = [rng.gauss(0, 1) for _ in range(size)]
        norm = sum(v * v for v in vector) ** 0.5
        answer = {"embedding": [v / norm for v in vector], "inputTextTokenCount": count_tokens(text)}
        return self.json_response(answer, behaviour)

    @staticmethod
    def _prompt_tokens(body: dict[str, Any]) -> int:
        """The fakes' count of a Converse input: words of the system and messages, plus each tool's."""
        system = " ".join(block.get("text", "") for block in body.get("system") or ())
        tools = [t for t in (body.get("toolConfig") or {}).get("tools", ()) if "toolSpec" in t]
        tokens = count_tokens(system) + sum(count_tokens(_text(m["content"])) for m in body["messages"])
        return tokens + TOOL_TOKENS * len(tools)

    async def _answer(
        self, request: web.Request, behaviour: Behaviour, body: dict[str, Any], streaming: bool
    ) -> web.StreamResponse:
        messages = body["messages"]
        tool_config = body.get("toolConfig") or {}
        tools = [t["toolSpec"] for t in tool_config.get("tools", ()) if "toolSpec" in t]
        input_tokens = self._prompt_tokens(body)
        inference = body.get("inferenceConfig") or {}
        last = messages[-1]
        result = next((b["toolResult"] for b in last["content"] if "toolResult" in b), None)
        tool = None
        if result is None and last["role"] == "user" and tools:
            choice = tool_config.get("toolChoice") or {}
            named = choice.get("tool", {}).get("name")
            tool = next((t for t in tools if t["name"] == named), tools[0])

        if tool is not None:
            args = tool_arguments(tool["inputSchema"].get("json"))
            fragments = split_fragments(orjson.dumps(args).decode())
            use_id = "tooluse_" + secrets.token_urlsafe(16).replace("-", "_")
            content: list[dict[str, Any]] = [
                {"toolUse": {"toolUseId": use_id, "name": tool["name"], "input": args}}
            ]
            start: dict[str, Any] | None = {"toolUse": {"toolUseId": use_id, "name": tool["name"]}}
            deltas = [{"toolUse": {"input": f}} for f in fragments]
            output_tokens, stop_reason = len(fragments), "tool_use"
        else:
            if result is not None:
                words = f"Tool result received: {_text(result.get('content'))[:20]}".split()
            else:
                seed = next((_text(m["content"]) for m in reversed(messages) if m["role"] == "user"), "")
                words = reply_words(seed, behaviour.reply_tokens)
            plan = plan_text(words, inference.get("maxTokens"), inference.get("stopSequences") or ())
            content = [{"text": plan.text}]
            start = None
            deltas = [{"text": piece} for piece in plan.pieces]
            output_tokens, stop_reason = plan.tokens, _STOP_REASONS[plan.finish]
        usage = self._usage(input_tokens, output_tokens, behaviour)
        if not streaming:
            answer: dict[str, Any] = {
                "output": {"message": {"role": "assistant", "content": content}},
                "stopReason": stop_reason,
                "usage": usage,
                "metrics": {"latencyMs": 12},
            }
            if behaviour.no_answer:
                answer["output"] = {}
            return self.json_response(answer, behaviour)

        head = [self._frame("messageStart", {"role": "assistant"})]
        if start is not None:
            head.append(self._frame("contentBlockStart", {"start": start, "contentBlockIndex": 0}))
        tokens = [self._frame("contentBlockDelta", {"delta": d, "contentBlockIndex": 0}) for d in deltas]
        tail = [
            self._frame("contentBlockStop", {"contentBlockIndex": 0}),
            self._frame("messageStop", {"stopReason": stop_reason}),
            self._frame("metadata", {"usage": usage, "metrics": {"latencyMs": 12}}),
        ]
        return await self._send_frames(request, behaviour, head, tokens, tail)

    @staticmethod
    def _usage(input_tokens: int, output_tokens: int, behaviour: Behaviour) -> dict[str, Any]:
        """TokenUsage: with a prompt cache, inputTokens counts only what was neither read from nor
        written to it, and totalTokens counts everything, as the service reports."""
        read, written = behaviour.prompt_cache(input_tokens)
        usage = {
            "inputTokens": input_tokens - read - written,
            "outputTokens": output_tokens,
            "totalTokens": input_tokens + output_tokens,
        }
        if behaviour.cached_tokens or behaviour.cache_creation_tokens:
            usage["cacheReadInputTokens"] = read
            usage["cacheWriteInputTokens"] = written
        return usage

    @staticmethod
    def _frame(event: str, payload: dict[str, Any], message_type: str = "event") -> bytes:
        # The service pads every payload with a `p` member of varying length.
        padded = {**payload, "p": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0"[: 1 + len(event)]}
        kind = ":event-type" if message_type == "event" else ":exception-type"
        headers = {kind: event, ":content-type": "application/json", ":message-type": message_type}
        return encode_message(headers, orjson.dumps(padded))

    async def _send_frames(
        self,
        request: web.Request,
        behaviour: Behaviour,
        head: list[bytes],
        tokens: list[bytes],
        tail: list[bytes],
    ) -> web.StreamResponse:
        frames = [*head, *tokens, *tail]
        first_token, end_token = len(head), len(head) + len(tokens)
        if self.stream_exception is not None:
            cut = self.stream_exception_after
            message = {"message": f"Injected {self.stream_exception} from the fake server."}
            frames = [*frames[:cut], self._frame(self.stream_exception, message, "exception")]
        if behaviour.malformed and frames:
            i = 1 if len(frames) > 1 else 0
            broken = bytearray(frames[i])
            broken[-5] ^= 0xFF  # the payload's last byte: the message CRC no longer matches
            frames[i] = bytes(broken)
        return await self.stream_frames(request, behaviour, frames, first_token, end_token, CONTENT_TYPE)
