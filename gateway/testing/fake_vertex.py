"""A fake Google Cloud Vertex AI server on loopback: Gemini models (publisher google:
`generateContent`, `streamGenerateContent?alt=sse`, `countTokens`, and `predict` for text embedding
models) and Anthropic's Claude models
(publisher anthropic: `rawPredict`, `streamRawPredict`, `count-tokens:rawPredict`) under
`/v1/projects/{project}/locations/{location}/publishers/{publisher}/models/{model}:{method}`, with the
fault injection of `Behaviour`, for tests.

It is its own OAuth token endpoint too (`POST /token`, the JWT-bearer grant a service account uses):
`service_account(path)` writes a service-account JSON file with a fresh RSA key whose `token_uri` is
this server, the endpoint checks the signed assertion against that key's public half and issues a
short-lived access token, and every API request must carry one (`Authorization: Bearer`), as Vertex
does, or get 401 UNAUTHENTICATED (`revoke_tokens()` forgets those issued); `permission_denied` answers
403 PERMISSION_DENIED to a valid token too, as for a service account without the permission. Errors
have Google's shape, `{"error": {"code", "message", "status"}}`.

The answers and request checks are the fake Gemini and Anthropic servers' (`FakeGemini`,
`FakeAnthropic`), plus what Vertex asks for on top: a `role` on each Gemini content, and for Claude
`anthropic_version: vertex-2023-10-16` in the body, no `model` in it (the path names it) and a
`stream` that matches the method.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from pathlib import Path
from typing import Any, ClassVar

import orjson
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from gateway.testing.behaviour import Behaviour, FakeError, FakeServer, Handler, count_tokens
from gateway.testing.fake_anthropic import FakeAnthropic
from gateway.testing.fake_gemini import FakeGemini
from gateway.testing.fake_openai import embedding

__all__ = ["ANTHROPIC_VERSION", "FakeVertex"]

ANTHROPIC_VERSION = "vertex-2023-10-16"
_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_AUDIENCE = "https://oauth2.googleapis.com/token"
_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
_PREFIX = "/v1/projects/{project}/locations/{location}/publishers"
_COUNT_FIELDS = frozenset(
    {"contents", "systemInstruction", "tools", "generationConfig", "instances", "model"}
)


#: The Messages API body a Claude request stands for (the model from the path, the version taken out).
_BODY = web.RequestKey("vertex_body", dict)


class _ClaudeOnVertex(FakeAnthropic):
    """FakeAnthropic reading the body the Vertex handler prepared; the version was in the body."""

    def api_version(self, request: web.Request) -> str | None:
        return ANTHROPIC_VERSION

    async def read_json(self, request: web.Request) -> dict[str, Any]:  # type: ignore[override]
        return request[_BODY]


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class FakeVertex(FakeServer):
    """Fake Vertex AI; `base_url` is the host root (the gateway adds `/v1/projects/...`)."""

    provider: ClassVar[str] = "vertex"
    request_id_header: ClassVar[str] = "x-goog-request-id"

    def __init__(self, behaviour: Behaviour | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(behaviour, host=host, port=port)
        self._gemini = FakeGemini(behaviour)
        self._claude = _ClaudeOnVertex(behaviour)
        #: Public keys of the service accounts `service_account` made, by client email.
        self._keys: dict[str, rsa.RSAPublicKey] = {}
        #: Access tokens issued -> when they expire (time.monotonic()).
        self._tokens: dict[str, float] = {}
        #: The lifetime of the tokens `/token` issues, in seconds (the real endpoint's is an hour).
        self.token_lifetime = 3600
        #: Seconds `/token` waits before it answers (a slow token endpoint).
        self.token_latency = 0.0
        #: How many access tokens `/token` has issued.
        self.tokens_issued = 0
        #: Answer every API request 403 PERMISSION_DENIED, valid token or not: the service account
        #: lacks the permission (no Vertex AI User role on the project).
        self.permission_denied = False
        #: The last generate or Claude messages request's body, as sent (Gemini's in camelCase).
        self.last_body: dict[str, Any] | None = None

    # -- credentials

    def service_account(self, path: Path, project: str = "test-project") -> Path:
        """Write a service-account JSON file (a new RSA key) whose token endpoint is this server."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        email = f"gateway-{secrets.token_hex(4)}@{project}.iam.gserviceaccount.com"
        self._keys[email] = key.public_key()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        info = {
            "type": "service_account",
            "project_id": project,
            "private_key_id": secrets.token_hex(20),
            "private_key": pem,
            "client_email": email,
            "client_id": str(secrets.randbelow(10**20)),
            "token_uri": f"{self.url}/token",
        }
        path.write_bytes(orjson.dumps(info))
        return path

    def revoke_tokens(self) -> None:
        """Forget every access token issued: requests carrying one get 401 until they fetch another."""
        self._tokens.clear()

    # -- FakeServer hooks

    def api_routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("POST", "/token", self._token),
            ("POST", _PREFIX + "/google/models/{target}", self._google),
            ("POST", _PREFIX + "/anthropic/models/{target}", self._anthropic),
        ]

    def _wrap(self, handler: Handler) -> Any:
        if handler == self._token:  # the OAuth endpoint: no API auth, no injected faults
            return self._token
        return super()._wrap(handler)

    def check_auth(self, request: web.Request, behaviour: Behaviour) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else None
        expires = self._tokens.get(token) if token else None
        if expires is None or expires <= time.monotonic():
            return self.error_response(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
                "cookie or other valid authentication credential.",
            )
        if self.permission_denied:
            return self.error_response(
                403,
                f"Permission 'aiplatform.endpoints.predict' denied on resource "
                f"'//aiplatform.googleapis.com/projects/{request.match_info.get('project', '')}' "
                "(or it may not exist).",
            )
        return None

    def error_response(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> web.Response:
        return self._gemini.error_response(status, message)

    # -- the OAuth token endpoint

    async def _token(self, request: web.Request, behaviour: Behaviour | None = None) -> web.Response:
        if self.token_latency:
            await asyncio.sleep(self.token_latency)
        form = await request.post()
        if form.get("grant_type") != _JWT_BEARER:
            return _oauth_error("unsupported_grant_type", "Invalid grant_type.")
        assertion = form.get("assertion")
        claims = self._verify(assertion if isinstance(assertion, str) else "")
        if claims is None:
            return _oauth_error("invalid_grant", "Invalid JWT Signature.")
        now = time.time()
        # google-auth names Google's endpoint as the audience, whatever the file's token_uri.
        if claims.get("aud") not in (_AUDIENCE, f"{self.url}/token"):
            return _oauth_error("invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        if _SCOPE not in str(claims["scope"]).split():
            return _oauth_error("invalid_scope", "The cloud-platform scope is required here.")
        if not (claims.get("iat", now + 600) <= now + 300 and now < claims.get("exp", 0) <= now + 3900):
            return _oauth_error("invalid_grant", "Invalid JWT: Token must be a short-lived token.")
        token = "ya29.fake-" + secrets.token_urlsafe(24)
        self._tokens[token] = time.monotonic() + self.token_lifetime
        self.tokens_issued += 1
        body = {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    def _verify(self, assertion: str) -> dict[str, Any] | None:
        """The claims of a JWT signed (RS256) by a service account of this fake, else None."""
        try:
            head, payload, signature = assertion.split(".")
            header = orjson.loads(_b64decode(head))
            claims = orjson.loads(_b64decode(payload))
            key = self._keys.get(claims.get("iss"))
            if header.get("alg") != "RS256" or key is None:
                return None
            key.verify(
                _b64decode(signature), f"{head}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except (ValueError, InvalidSignature, AttributeError):
            return None
        return claims if isinstance(claims, dict) else None

    # -- publisher google (Gemini)

    async def _google(self, request: web.Request, behaviour: Behaviour) -> web.StreamResponse:
        model, _, method = request.match_info["target"].partition(":")
        body = await self._gemini.read_json(request)
        for i, content in enumerate(body.get("contents") or ()):
            if isinstance(content, dict) and content.get("role") not in ("user", "model"):
                raise FakeError(400, f"contents[{i}].role: Please use a valid role: user, model.")
        if method == "countTokens":
            unknown = set(body) - _COUNT_FIELDS
            if unknown:
                raise FakeError(400, f'Invalid JSON payload received. Unknown name "{min(unknown)}"')
            prompt, _ = self._gemini._read_request(body)
            return self.json_response({"totalTokens": prompt}, behaviour)
        if method == "predict":
            return self._predict(model, body, behaviour)
        if method not in ("generateContent", "streamGenerateContent"):
            raise FakeError(404, f"Method not found: {method or '(none)'}")
        self.last_body = body
        return await self._gemini._model_method(request, behaviour)

    def _predict(self, model: str, body: dict[str, Any], behaviour: Behaviour) -> web.Response:
        """A text embedding model's `:predict`: one prediction per instance."""
        instances, parameters = body.get("instances"), body.get("parameters") or {}
        if not isinstance(instances, list) or not instances:
            raise FakeError(400, "instances: must not be empty")
        if model.startswith("gemini-embedding") and len(instances) > 1:
            raise FakeError(400, f"Only one instance is allowed per request for {model}.")
        if len(instances) > 250:
            raise FakeError(400, "Too many instances: at most 250 per request.")
        dims = parameters.get("outputDimensionality", 768)
        if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= 3072:
            raise FakeError(400, "outputDimensionality must be between 1 and 3072")
        predictions = []
        for i, instance in enumerate(instances):
            text = instance.get("content") if isinstance(instance, dict) else None
            if not isinstance(text, str):
                raise FakeError(400, f"instances[{i}].content: a string is required")
            statistics = {"token_count": count_tokens(text), "truncated": False}
            predictions.append(
                {"embeddings": {"values": embedding(text.encode(), dims), "statistics": statistics}}
            )
        characters = sum(len(instance["content"]) for instance in instances)
        return self.json_response(
            {"predictions": predictions, "metadata": {"billableCharacterCount": characters}}, behaviour
        )

    # -- publisher anthropic (Claude)

    async def _anthropic(self, request: web.Request, behaviour: Behaviour) -> web.StreamResponse:
        model, _, method = request.match_info["target"].partition(":")
        body = await FakeServer.read_json(request)
        if body.get("anthropic_version") != ANTHROPIC_VERSION:
            raise FakeError(400, f"anthropic_version: Input should be '{ANTHROPIC_VERSION}'")
        counting = model == "count-tokens"
        if counting:
            if method != "rawPredict":
                raise FakeError(404, f"Method not found: {method}")
        elif "model" in body:
            raise FakeError(400, "model: Extra inputs are not permitted")
        elif method not in ("rawPredict", "streamRawPredict"):
            raise FakeError(404, f"Method not found: {method or '(none)'}")
        elif bool(body.get("stream")) != (method == "streamRawPredict"):
            raise FakeError(400, f"stream: {method} takes stream: {method == 'streamRawPredict'}")
        if not counting:
            self.last_body = dict(body)
        del body["anthropic_version"]
        request[_BODY] = body if counting else {"model": model, **body}
        if counting:
            return await self._claude._count_tokens(request, behaviour)
        return await self._claude._messages(request, behaviour)


def _oauth_error(error: str, description: str) -> web.Response:
    body = {"error": error, "error_description": description}
    return web.Response(body=orjson.dumps(body), status=400, content_type="application/json")
