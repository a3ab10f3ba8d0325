"""The gateway's failure kinds: one exception hierarchy, each class knowing its RFC 9457 problem type.

Handlers raise these; one encoder (`problem_body`) turns them into `application/problem+json`, so no
handler builds an error body by hand.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "PROBLEM_CONTENT_TYPE",
    "BadRequest",
    "ConfigBusy",
    "ConfigRejected",
    "ContentFiltered",
    "Draining",
    "FieldError",
    "Forbidden",
    "GatewayError",
    "GatewayTimeout",
    "HeadersTooLarge",
    "InternalError",
    "InvalidRequest",
    "LimitExceeded",
    "LimitsUnavailable",
    "MethodNotAllowed",
    "ModelNotFound",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionRequired",
    "RateLimited",
    "RequestTimeout",
    "ServiceUnavailable",
    "StaleConfigVersion",
    "Unauthorized",
    "UnsupportedCapability",
    "UnsupportedMediaType",
    "UpstreamError",
    "WriteBackDisabled",
    "problem_body",
]

PROBLEM_CONTENT_TYPE = "application/problem+json"


class GatewayError(Exception):
    """Base of every failure a client may see. Subclasses set `status`, `slug` and `title`."""

    status: int = 500
    slug: str = "internal-error"
    title: str = "Internal error"
    #: The error type name the OpenAI and Anthropic SDKs show; see `problem_body`.
    openai_type: str = "server_error"
    anthropic_type: str = "api_error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})
        self.extensions = extensions

    @property
    def type_uri(self) -> str:
        return f"/problems/{self.slug}"


class BadRequest(GatewayError):
    status, slug, title = 400, "bad-request", "Bad request"
    openai_type, anthropic_type = "invalid_request_error", "invalid_request_error"


class FieldError(BadRequest):
    """A request body member is missing or has the wrong type or value; `field` names it."""

    status, slug, title = 400, "invalid-field", "Invalid request field"

    def __init__(self, field: str, detail: str, **extensions: Any) -> None:
        super().__init__(f"{field}: {detail}", field=field, **extensions)
        self.field = field


class UnsupportedCapability(BadRequest):
    """No target of the model's chain can serve the request: it needs a capability none has, or a field
    only a backend speaking the client's protocol takes (docs/capabilities.md). The extensions
    `capability` or `field` name it, `attempts` holds why each target was skipped."""

    slug, title = "unsupported-capability", "No backend of this model can serve the request"


class ContentFiltered(BadRequest):
    """The backend's content filter refused the prompt (Azure OpenAI); the extension `categories` names
    the filter categories that tripped. Not failed over: another backend would get the same prompt."""

    slug, title = "content-filter", "Refused by the backend's content filter"


class InvalidRequest(GatewayError):
    """The body parsed but cannot be processed (e.g. a config edit that would break the schema)."""

    status, slug, title = 422, "unprocessable", "Unprocessable request"
    openai_type, anthropic_type = "invalid_request_error", "invalid_request_error"


class ConfigRejected(InvalidRequest):
    slug, title = "config-rejected", "Configuration rejected"


class InvalidPatch(BadRequest):
    """A JSON Patch that is malformed (an unknown op, a bad JSON Pointer); `op_index` names the op."""

    slug, title = "invalid-patch", "Invalid JSON Patch"


class PatchNotApplicable(InvalidRequest):
    """A JSON Patch op whose path is not in the file, or an edit refused there (a `${VAR}` value, an
    anchor in use); `op_index` names the op."""

    slug, title = "patch-not-applicable", "JSON Patch cannot be applied"


class PatchTestFailed(GatewayError):
    """A `test` op of a JSON Patch found another value: the config is not in the state the patch expects."""

    status, slug, title = 409, "patch-test-failed", "JSON Patch test failed"
    openai_type, anthropic_type = "invalid_request_error", "invalid_request_error"


class Unauthorized(GatewayError):
    status, slug, title = 401, "unauthorized", "Authentication required"
    openai_type, anthropic_type = "invalid_request_error", "authentication_error"

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail, headers={"www-authenticate": 'Bearer realm="gateway"'}, **extensions)


class Forbidden(GatewayError):
    status, slug, title = 403, "forbidden", "Forbidden"
    openai_type, anthropic_type = "invalid_request_error", "permission_error"


class NotFound(GatewayError):
    status, slug, title = 404, "not-found", "Not found"
    openai_type, anthropic_type = "invalid_request_error", "not_found_error"


class ModelNotFound(NotFound):
    slug, title = "model-not-found", "Model not found"


class MethodNotAllowed(GatewayError):
    status, slug, title = 405, "method-not-allowed", "Method not allowed"
    openai_type, anthropic_type = "invalid_request_error", "invalid_request_error"


class StaleConfigVersion(GatewayError):
    """An edit was made against a config version that is no longer the file on disk."""

    status, slug, title = 409, "stale-config-version", "Configuration changed since it was read"
    openai_type, anthropic_type = "invalid_request_error", "invalid_request_error"


class WriteBackDisabled(GatewayError):
    """`admin.write_back: false`: the edit is valid but must be committed to git by a person."""

    status, slug, title = 409, "write-back-disabled", "Write-back is disabled"
    openai_type, anthropic_type = "invalid_request_error", "invalid_request_error"


class RequestTimeout(GatewayError):
    """The client did not send its request in time (`server.timeouts`)."""

    status, slug, title = 408, "request-timeout", "Request not received in time"
    openai_type, anthropic_type = "invalid_request_error", "invalid_request_error"


class PayloadTooLarge(GatewayError):
    status, slug, title = 413, "payload-too-large", "Request body too large"
    openai_type, anthropic_type = "invalid_request_error", "request_too_large"


class UnsupportedMediaType(GatewayError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"
    openai_type, anthropic_type = "invalid_request_error", "invalid_request_error"


class PreconditionRequired(GatewayError):
    status, slug, title = 428, "precondition-required", "If-Match header required"
    openai_type, anthropic_type = "invalid_request_error", "invalid_request_error"


class HeadersTooLarge(GatewayError):
    """The request head is larger than the HTTP server parses (h11: 16 KiB)."""

    status, slug, title = 431, "headers-too-large", "Request header fields too large"


class RateLimited(GatewayError):
    status, slug, title = 429, "rate-limited", "Too many requests"
    openai_type, anthropic_type = "rate_limit_error", "rate_limit_error"


class LimitExceeded(RateLimited):
    """A client key (or the anonymous callers) is past one of its limits (`auth.client_keys[].limits`,
    `auth.default_limits`); the extensions `limit` and `key` name them."""

    slug, title = "limit-exceeded", "Limit exceeded"

    @property
    def limit(self) -> str:
        return str(self.extensions["limit"])


class InternalError(GatewayError):
    """A bug in the gateway. The detail never carries a stack trace; the logs do."""


class UpstreamError(GatewayError):
    status, slug, title = 502, "upstream-error", "Upstream backend failed"
    openai_type, anthropic_type = "server_error", "api_error"


class ServiceUnavailable(GatewayError):
    status, slug, title = 503, "service-unavailable", "Service unavailable"
    openai_type, anthropic_type = "server_error", "overloaded_error"


class LimitsUnavailable(ServiceUnavailable):
    """The limits store is unreachable and `limits.on_store_down` is deny."""

    slug, title = "limits-unavailable", "Limits store unavailable"


class ConfigBusy(ServiceUnavailable):
    """Another change of the config (in this worker or another) held its lock for too long."""

    slug, title = "config-busy", "Configuration is being changed"


class Draining(ServiceUnavailable):
    """The gateway is shutting down (SIGTERM): it takes no new requests; the client retries elsewhere."""

    slug, title = "draining", "Gateway is shutting down"


class GatewayTimeout(GatewayError):
    status, slug, title = 504, "timeout", "Deadline exceeded"
    openai_type, anthropic_type = "timeout", "timeout_error"


def problem_body(
    error: GatewayError, *, request_id: str, instance: str, protocol: str = "openai"
) -> dict[str, Any]:
    """The RFC 9457 body for `error`.

    Besides the standard members it carries `request_id` and an `error` object: the member the official
    OpenAI and Anthropic SDKs read their exception message from (both read `error.message`; the type
    name is the one the client's SDK knows), so either SDK shows our detail in its usual exception.
    """
    body: dict[str, Any] = {
        "type": error.type_uri,
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "instance": instance,
        "request_id": request_id,
    }
    body.update(error.extensions)
    body["error"] = {
        "message": error.detail,
        "type": error.anthropic_type if protocol == "anthropic" else error.openai_type,
        "code": error.slug,
        "param": error.extensions.get("field"),
        "request_id": request_id,
    }
    return body
