"""Credentials a cloud backend finds in its provider's chain (AWS's, Google's) rather than in the
config: looked up off the event loop, since the lookup may block (files, a metadata server, a token
endpoint), in a thread at start and then, while it has found nothing, again at most once a minute.
Missing credentials fail each request (outcome `auth`, so the chain moves on), never the start."""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from typing import Any

__all__ = ["RETRY_LOOKUP_SECONDS", "CredentialChain", "MissingCredentials"]

#: How soon a lookup that found nothing is tried again (by the next request that needs it).
RETRY_LOOKUP_SECONDS = 60.0


class MissingCredentials(Exception):
    """No credentials could be found (or refreshed); the message says where they are looked for."""


class CredentialChain(ABC):
    """One backend's credentials. A subclass's `_look_up()` (run in a thread) sets `_credentials`
    and `_looked_up_at`, or `_missing` (why nothing was found, in words, never a secret)."""

    def __init__(self, not_yet: str) -> None:
        self._credentials: Any = None
        self._looked_up_at: float | None = None
        self._lock = asyncio.Lock()
        #: Why the last lookup found nothing, in words (for the failure a request gets).
        self._missing = not_yet

    @abstractmethod
    def _look_up(self) -> None:
        """Walk the provider's chain once (blocking: called in a thread)."""

    async def _found(self) -> Any:
        """The credentials, looked up again first when none were found and the last try is a minute
        old (one lookup at a time). Raises MissingCredentials."""
        credentials = self._credentials
        if credentials is None:
            looked = self._looked_up_at
            if looked is None or time.monotonic() - looked >= RETRY_LOOKUP_SECONDS:
                async with self._lock:
                    if self._credentials is None:
                        await asyncio.to_thread(self._look_up)
                credentials = self._credentials
            if credentials is None:
                raise MissingCredentials(self._missing)
        return credentials
