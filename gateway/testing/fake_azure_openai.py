"""A fake Azure OpenAI resource on loopback: the fake OpenAI API (`FakeOpenAI`: its replies, usage and
fault injection) at Azure's deployment URLs, with Azure's checks and its content filter.

`/openai/deployments/{deployment}/{chat/completions|completions|embeddings}` answer only with the
accepted `api-version` query (else 404 `Resource not found`, as Azure does). The credential
`behaviour.api_key` names is checked in the `api-key` header, or (`auth = "entra"`) as
`Authorization: Bearer`. The answers carry Azure's `prompt_filter_results` (a stream opens with a
chunk holding only them). Set `prompt_filter` (category -> severity) to refuse prompts with Azure's
400 `content_filter` error, or `filter_completion` to answer 200 with `finish_reason: content_filter`
and no content. A 429 carries `retry-after-ms`, and `retry-after` unless `retry_after_seconds` is off.
Every deployment request is recorded in `seen` (path, api-version, which credential header came).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import orjson
from aiohttp import web

from gateway.testing.behaviour import Behaviour, Handler
from gateway.testing.fake_openai import FakeOpenAI

__all__ = ["AZURE_API_VERSION", "FakeAzureOpenAI", "SeenRequest"]

#: The api-version the fake accepts unless told another.
AZURE_API_VERSION = "2024-10-21"
_CATEGORIES = ("hate", "self_harm", "sexual", "violence")
_FILTERED_MESSAGE = (
    "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. "
    "Please modify your prompt and retry."
)


@dataclass(frozen=True, slots=True)
class SeenRequest:
    path: str
    deployment: str
    api_version: str | None
    #: "api-key", "bearer" or None: which credential header the request carried.
    credential: str | None
    #: The body's `model`, as sent (Azure ignores it: the deployment decides).
    body_model: str | None


class FakeAzureOpenAI(FakeOpenAI):
    """Fake Azure OpenAI. `base_url` is the resource endpoint (no /openai), as `AzureOpenAI` takes it."""

    provider: ClassVar[str] = "azure_openai"
    request_id_header: ClassVar[str] = "apim-request-id"

    def __init__(self, behaviour: Behaviour | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(behaviour, host=host, port=port)
        self.api_version = AZURE_API_VERSION
        self.auth: Literal["api_key", "entra"] = "api_key"
        #: Category -> severity: prompts are refused with Azure's content-filter error naming them.
        self.prompt_filter: dict[str, str] | None = None
        #: Answers are filtered: 200, `finish_reason: content_filter`, no content.
        self.filter_completion = False
        self.retry_after_seconds = True
        self.seen: list[SeenRequest] = []

    @property
    def base_url(self) -> str:
        return self.url

    def api_routes(self) -> list[tuple[str, str, Handler]]:
        prefix = "/openai/deployments/{deployment}"
        return [
            ("POST", prefix + "/chat/completions", self._azure(self._chat)),
            ("POST", prefix + "/completions", self._azure(self._completions)),
            ("POST", prefix + "/embeddings", self._azure(self._embeddings)),
        ]

    def check_auth(self, request: web.Request, behaviour: Behaviour) -> web.Response | None:
        if behaviour.api_key is None:
            return None
        if self.auth == "entra":
            good = request.headers.get("Authorization") == f"Bearer {behaviour.api_key}"
        else:
            good = request.headers.get("api-key") == behaviour.api_key
        if good:
            return None
        message = (
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a "
            "valid key for an active subscription and use a correct regional API endpoint for your "
            "resource."
        )
        return self.make_response({"error": {"code": "401", "message": message}}, 401)

    def make_response(self, obj: Any, status: int = 200, *, request_id: str | None = None) -> web.Response:
        response = super().make_response(obj, status, request_id=request_id)
        if status == 429:
            response.headers["retry-after-ms"] = "1500"
            if self.retry_after_seconds:
                response.headers["retry-after"] = "2"
            else:
                response.headers.popall("retry-after", None)
        return response

    def _azure(self, handler: Handler) -> Handler:
        async def run(request: web.Request, behaviour: Behaviour) -> web.StreamResponse:
            version = request.query.get("api-version")
            body = await self.read_json(request)
            credential = (
                "api-key"
                if "api-key" in request.headers
                else "bearer"
                if request.headers.get("Authorization", "").startswith("Bearer ")
                else None
            )
            model = body.get("model")
            deployment = request.match_info["deployment"]
            self.seen.append(
                SeenRequest(
                    request.path, deployment, version, credential, model if isinstance(model, str) else None
                )
            )
            if version != self.api_version:
                return self.make_response({"error": {"code": "404", "message": "Resource not found"}}, 404)
            is_chat = request.path.endswith("/chat/completions")
            if self.prompt_filter and not request.path.endswith("/embeddings"):
                return self._prompt_filtered(self.prompt_filter)
            if self.filter_completion and is_chat:
                return await self._completion_filtered(request, body, deployment)
            return await handler(request, behaviour)

        return run

    def _prompt_filtered(self, tripped: dict[str, str]) -> web.Response:
        results: dict[str, Any] = {
            name: {"filtered": name in tripped, "severity": tripped.get(name, "safe")} for name in _CATEGORIES
        }
        results["jailbreak"] = {"filtered": False, "detected": False}
        error = {
            "message": _FILTERED_MESSAGE,
            "type": None,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": results},
        }
        return self.make_response({"error": error}, 400)

    async def _completion_filtered(
        self, request: web.Request, body: dict[str, Any], deployment: str
    ) -> web.StreamResponse:
        filtered = {name: {"filtered": name == "violence", "severity": "safe"} for name in _CATEGORIES}
        filtered["violence"]["severity"] = "medium"
        usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        head = {
            "id": "chatcmpl-" + secrets.token_hex(12),
            "created": int(time.time()),
            "model": deployment,
            "prompt_filter_results": _prompt_results(),
        }
        if body.get("stream") is not True:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": None},
                "finish_reason": "content_filter",
                "logprobs": None,
                "content_filter_results": filtered,
            }
            answer = {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
            return self.make_response(answer)
        obj = {**head, "object": "chat.completion.chunk"}
        choice = {"index": 0, "delta": {}, "finish_reason": "content_filter"}
        choice["content_filter_results"] = filtered
        frames = [
            _frame({**obj, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
            _frame({**obj, "choices": [choice]}),
            _frame({**obj, "choices": [], "usage": usage}),
            b"data: [DONE]\n\n",
        ]
        return await self.send_sse(request, Behaviour(), frames[:1], [], frames[1:])

    async def send_sse(
        self,
        request: web.Request,
        behaviour: Behaviour,
        head: list[bytes],
        tokens: list[bytes],
        tail: list[bytes],
    ) -> web.StreamResponse:
        if request.path.endswith("/chat/completions"):
            opening = {"choices": [], "created": 0, "id": "", "model": "", "object": ""}
            head = [_frame({**opening, "prompt_filter_results": _prompt_results()}), *head]
        return await super().send_sse(request, behaviour, head, tokens, tail)

    def json_response(self, obj: Any, behaviour: Behaviour) -> web.Response:
        if isinstance(obj, dict) and obj.get("object") == "chat.completion":
            obj = {**obj, "prompt_filter_results": _prompt_results()}
        return super().json_response(obj, behaviour)


def _prompt_results() -> list[dict[str, Any]]:
    safe = {name: {"filtered": False, "severity": "safe"} for name in _CATEGORIES}
    return [{"prompt_index": 0, "content_filter_results": safe}]


def _frame(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"
