"""`azure_openai` backend: Azure OpenAI, which speaks OpenAI's protocol at deployment URLs.

Requests go to `{base_url}/openai/deployments/{deployment}/{chat/completions|completions|embeddings}`
with `?api-version=` (the chain target's `model` is the deployment name), as the official OpenAI SDK's
`AzureOpenAI` client sends them; the key goes in the `api-key` header, or an Entra ID token as
`Authorization: Bearer`. Bodies and answers are OpenAI's (pass-through, same usage parser). Azure's
own parts: its content filter's refusal (400, `error.code: content_filter`) becomes a
`ContentFilterRefusal` naming the categories that tripped (the request's fault: never failed over), a
filtered answer (`finish_reason: content_filter`) passes through as it came, and a 429's
`retry-after-ms` counts when `retry-after` is absent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson

from gateway.backends.http import HTTPBackend
from gateway.backends.openai import OpenAICompatibleBackend
from gateway.backends.upstream import ContentFilterRefusal, UpstreamFailure
from gateway.config.backends import AzureOpenAISettings
from gateway.protocol.canonical import StreamEvent
from gateway.protocol.openai import OpenAIStreamDecoder

__all__ = ["AzureOpenAIBackend", "AzureStreamDecoder", "content_filter_categories"]

_ENDPOINTS = {"chat": "chat/completions", "completions": "completions", "embeddings": "embeddings"}


class AzureStreamDecoder(OpenAIStreamDecoder):
    """Azure's stream opens with a chunk holding only `prompt_filter_results` (no id, no choices): the
    stream starts at the next one, which carries the answer's id and model."""

    __slots__ = ()

    def feed(self, chunk: Any) -> list[StreamEvent]:
        if (
            isinstance(chunk, dict)
            and not chunk.get("choices")
            and "prompt_filter_results" in chunk
            and not chunk.get("usage")
        ):
            return []
        return super().feed(chunk)


class AzureOpenAIBackend(OpenAICompatibleBackend):
    config: AzureOpenAISettings
    stream_decoder = AzureStreamDecoder

    def default_headers(self) -> dict[str, str]:
        # Not OpenAI's `Authorization: Bearer {api_key}`: Azure takes the key as `api-key`.
        headers = HTTPBackend.default_headers(self)
        if self.config.auth == "entra":
            if self.config.azure_ad_token:
                headers["authorization"] = f"Bearer {self.config.azure_ad_token.reveal()}"
        elif self.config.api_key:
            headers["api-key"] = self.config.api_key.reveal()
        return headers

    def path_for(self, endpoint: str, model: str) -> str | None:
        operation = _ENDPOINTS.get(endpoint)
        if operation is None:
            return None
        version = quote(self.config.api_version, safe="")
        return f"/openai/deployments/{quote(model, safe='')}/{operation}?api-version={version}"

    def status_failure(self, status: int, raw: bytes, headers: Mapping[str, str]) -> UpstreamFailure:
        if status == 400:
            categories = content_filter_categories(raw)
            if categories is not None:
                tripped = ", ".join(categories) if categories else "no category reported"
                return ContentFilterRefusal(
                    f"Azure OpenAI's content filter refused the prompt ({tripped})",
                    tuple(categories),
                    status=status,
                )
        failure = super().status_failure(status, raw, headers)
        if failure.retry_after is None and headers.get("retry-after-ms"):
            failure.retry_after = _seconds_from_ms(headers["retry-after-ms"])
        return failure


def content_filter_categories(raw: bytes) -> list[str] | None:
    """The categories an Azure content-filter error says tripped (`hate (high)`, `jailbreak`), from
    `error.innererror.content_filter_result`; None when the body is not a content-filter error."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or error.get("code") != "content_filter":
        return None
    inner = error.get("innererror")
    results = inner.get("content_filter_result") if isinstance(inner, dict) else None
    if not isinstance(results, dict):
        return []
    tripped = []
    for name, result in results.items():
        if not isinstance(result, dict) or result.get("filtered") is not True:
            continue
        severity = result.get("severity")
        tripped.append(f"{name} ({severity})" if isinstance(severity, str) else str(name))
    return tripped


def _seconds_from_ms(value: str) -> str | None:
    """`retry-after-ms` as whole seconds, rounded up, for the Retry-After the gateway relays."""
    try:
        millis = float(value)
    except ValueError:
        return None
    return str(max(1, math.ceil(millis / 1000))) if millis >= 0 else None
