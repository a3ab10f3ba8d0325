"""AWS request signing for `bedrock` backends: credentials from the usual AWS chain (botocore's:
environment, profile, web identity, SSO, container and instance roles), found once when the backend
starts, and each request signed with Signature Version 4 (botocore's `SigV4Auth`).

The lookup may block (files, the instance metadata service, an STS call), so it never runs on the
event loop: the chain is walked in a thread at start, and again, at most once a minute, while it has
found nothing. Temporary credentials are refreshed in a thread too, when botocore says they are about
to expire; signing itself is a few HMACs over the request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from gateway.backends.credential_chain import CredentialChain, MissingCredentials

if TYPE_CHECKING:
    from botocore.credentials import ReadOnlyCredentials

# botocore is imported where it is used: it takes a while to import, and only bedrock backends need it.

__all__ = ["SIGNING_NAME", "AWSSigner", "MissingCredentials", "Signed", "sign_request"]

#: The service name Bedrock Runtime is signed under (its API model's `signingName`).
SIGNING_NAME = "bedrock"


class AWSSigner(CredentialChain):
    """Signs requests for one backend with the credentials its profile (or the default chain) gives."""

    def __init__(self, profile: str | None, region: str | None) -> None:
        self.profile = profile
        self.region = region
        super().__init__("AWS credentials were not looked up yet")

    async def start(self) -> None:
        """Walk the credential chain (in a thread). Raises MissingCredentials when no region is known;
        missing credentials are a failure of each request instead, so a reload still succeeds and the
        chain moves on to its next target."""
        await asyncio.to_thread(self._look_up)
        if self.region is None:
            where = f"profile '{self.profile}'" if self.profile else "AWS_REGION or the AWS config file"
            raise MissingCredentials(f"no AWS region: set `region` on the backend (or in {where})")

    def _look_up(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError
        from botocore.session import Session

        self._looked_up_at = time.monotonic()
        try:
            session = Session(profile=self.profile)
            if self.region is None:
                self.region = session.get_config_variable("region")
            credentials = session.get_credentials()
        except (BotoCoreError, ClientError) as error:
            self._missing = f"the AWS credential chain failed: {type(error).__name__}: {error}"
            return
        if credentials is None:
            where = f"profile '{self.profile}'" if self.profile else "the default AWS chain"
            self._missing = (
                f"no AWS credentials found in {where} (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "AWS_PROFILE, ~/.aws/credentials, SSO, a container or instance role)"
            )
        self._credentials = credentials

    async def _frozen(self) -> ReadOnlyCredentials:
        credentials = await self._found()
        refresh_needed = getattr(credentials, "refresh_needed", None)
        if refresh_needed is not None and refresh_needed():
            from botocore.exceptions import BotoCoreError, ClientError

            # Temporary credentials near their expiry: botocore refreshes them (maybe an STS or
            # metadata call) inside get_frozen_credentials, so that runs in a thread, one at a time.
            async with self._lock:
                if not refresh_needed():  # another request refreshed them while this one waited
                    return credentials.get_frozen_credentials()
                try:
                    return await asyncio.to_thread(credentials.get_frozen_credentials)
                except (BotoCoreError, ClientError) as error:
                    raise MissingCredentials(
                        f"refreshing the AWS credentials failed: {type(error).__name__}"
                    ) from None
        return credentials.get_frozen_credentials()

    async def sign(self, method: str, url: str, body: bytes, headers: Mapping[str, str]) -> dict[str, str]:
        """The headers to send with a request to `url` (its path already percent-encoded as sent):
        `headers` plus X-Amz-Date, X-Amz-Security-Token (temporary credentials) and Authorization.
        Raises MissingCredentials."""
        frozen = await self._frozen()
        return sign_request(frozen, self.region or "", method, url, body, headers.items()).headers


@dataclass(frozen=True, slots=True)
class Signed:
    """A signed request's headers, and the two texts its signature was computed over."""

    headers: dict[str, str]
    canonical_request: str
    string_to_sign: str


def sign_request(
    credentials: ReadOnlyCredentials,
    region: str,
    method: str,
    url: str,
    body: bytes,
    headers: Iterable[tuple[str, str]],
    *,
    service: str = SIGNING_NAME,
    at: datetime | None = None,
) -> Signed:
    """Sign one request with SigV4 at `at` (now when None): the steps of botocore's
    `SigV4Auth.add_auth`, with the clock passed in so that AWS's published test vectors can check it.
    A header named twice in `headers` is sent (and signed) twice."""
    from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
    from botocore.awsrequest import AWSRequest

    request = AWSRequest(method=method, url=url, data=body)
    for name, value in headers:
        request.headers[name] = value  # appends: HTTPHeaders keeps every value
    request.context["timestamp"] = (at or datetime.now(UTC)).strftime(SIGV4_TIMESTAMP)
    auth = SigV4Auth(credentials, service, region)
    auth._modify_request_before_signing(request)  # X-Amz-Date (and the session token) replace any sent
    canonical_request = auth.canonical_request(request)
    string_to_sign = auth.string_to_sign(request, canonical_request)
    auth._inject_signature_to_request(request, auth.signature(string_to_sign, request))
    return Signed(dict(request.headers.items()), canonical_request, string_to_sign)
