"""Google credentials for `vertex` backends: Application Default Credentials (google-auth's
`google.auth.default()`: GOOGLE_APPLICATION_CREDENTIALS naming a service-account JSON file, gcloud's
application-default login, the attached service account on Google Cloud), with the cloud-platform
scope, found once when the backend starts; each request carries `Authorization: Bearer <token>`.

The lookup and the token refresh may block (files, the metadata server, the OAuth token endpoint), so
neither runs on the event loop: the lookup runs in a thread at start, and again, at most once a minute,
while it has found nothing; the token is refreshed in a thread, one refresh at a time, when google-auth
says it is expired or about to be (a few minutes before its expiry).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gateway.backends.credential_chain import CredentialChain, MissingCredentials

# google-auth is imported where it is used: only vertex backends need it.

__all__ = ["SCOPE", "GoogleCredentials", "MissingCredentials"]

SCOPE = "https://www.googleapis.com/auth/cloud-platform"


class GoogleCredentials(CredentialChain):
    """The access token of one backend's Application Default Credentials."""

    def __init__(self) -> None:
        super().__init__("Google credentials were not looked up yet")
        self._transport: Any = None

    async def start(self) -> None:
        """Look the credentials up (in a thread). Missing credentials are a failure of each request,
        not of the start, so a reload still succeeds and the chain moves on to its next target."""
        await asyncio.to_thread(self._look_up)

    def _look_up(self) -> None:
        import google.auth
        from google.auth.exceptions import GoogleAuthError
        from google.auth.transport.requests import Request

        self._looked_up_at = time.monotonic()
        try:
            credentials, _ = google.auth.default(scopes=[SCOPE])
        except (GoogleAuthError, ValueError, OSError) as error:
            # The message names a file or the places looked in, never a credential.
            self._missing = (
                "no Google credentials found (set GOOGLE_APPLICATION_CREDENTIALS to a service-account "
                "JSON file, run `gcloud auth application-default login`, or attach a service account): "
                f"{type(error).__name__}: {str(error)[:300]}"
            )
            return
        self._transport = Request()
        self._credentials = credentials

    async def token(self) -> str:
        """A valid access token, refreshed first when it is expired or about to be.
        Raises MissingCredentials."""
        credentials = await self._found()
        if not credentials.valid:
            from google.auth.exceptions import GoogleAuthError

            async with self._lock:
                if not credentials.valid:  # else another request refreshed it while this one waited
                    try:
                        await asyncio.to_thread(credentials.refresh, self._transport)
                    except GoogleAuthError as error:
                        raise MissingCredentials(
                            f"refreshing the Google access token failed: {type(error).__name__}"
                        ) from None
        return str(credentials.token)

    def forget(self, token: str) -> None:
        """Drop `token` (the upstream refused it: revoked, say), so the next request refreshes."""
        credentials = self._credentials
        if credentials is not None and credentials.token == token:
            credentials.token = None
