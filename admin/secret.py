"""The key that signs admin panel sessions, and the local admin token: each the same in every worker
and across restarts, and never derived from gateway.yaml (whose key hashes may be public in git).

Where it comes from, first match wins:

1. `GATEWAY_ADMIN_SECRET` in the environment (for several hosts or pods behind one address: give them
   all the same value, e.g. from a Kubernetes Secret);
2. `.gateway-admin-secret` next to the config file, created on first start (random, mode 0600);
3. `admin-secret` in `$GATEWAY_CACHE_DIR` (default `~/.cache/gateway`), when the config's directory
   is read-only (a ConfigMap mount).

The local admin token (`load_admin_token`), the admin credential while `auth.admin_keys` is empty,
comes the same way: `GATEWAY_ADMIN_TOKEN`, else `.gateway-admin-token` next to the config, else
`admin-token` in the cache directory.

Creation is race-safe: workers starting together all try `O_CREAT | O_EXCL`; one wins and writes,
the others read what it wrote.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ENV_VAR",
    "SECRET_FILE",
    "TOKEN_ENV_VAR",
    "TOKEN_FILE",
    "AdminToken",
    "AdminTokenUnavailable",
    "SessionSecret",
    "SessionSecretUnavailable",
    "load_admin_token",
    "load_session_secret",
]

log = logging.getLogger("gateway.admin")

ENV_VAR = "GATEWAY_ADMIN_SECRET"
SECRET_FILE = ".gateway-admin-secret"
TOKEN_ENV_VAR = "GATEWAY_ADMIN_TOKEN"
TOKEN_FILE = ".gateway-admin-token"
#: Shortest `GATEWAY_ADMIN_SECRET` (and `GATEWAY_ADMIN_TOKEN`) accepted (characters).
MIN_ENV_LENGTH = 32
_HEX_LENGTH = 64  # 32 random bytes, hex
#: How long a reader waits for a concurrent creator to finish writing the file.
_WRITE_WAIT_S = 2.0


class SessionSecretUnavailable(Exception):
    """No secret could be read or created; admin panel sign-in is off until one is provided."""


@dataclass(frozen=True, slots=True)
class SessionSecret:
    key: bytes = b""
    #: Where it came from, for the startup log: the variable's name or the file's path.
    source: str = ""

    def __repr__(self) -> str:
        return f"SessionSecret(source={self.source!r}, key=***)"


class _Unavailable(Exception):
    pass


class AdminTokenUnavailable(Exception):
    """No local admin token could be read or created; without admin keys, nobody can use the admin API."""


@dataclass(frozen=True, slots=True)
class AdminToken:
    value: str = field(repr=False)
    #: Where it came from: the variable's name or the file's path.
    source: str = ""


def load_session_secret(config_path: Path, env: Mapping[str, str] | None = None) -> SessionSecret:
    """The signing key for this gateway (see the module docstring). Raises SessionSecretUnavailable."""
    try:
        material, source = _load(config_path, env, ENV_VAR, SECRET_FILE, "admin-secret", "session secret")
    except _Unavailable as error:
        raise SessionSecretUnavailable(str(error)) from None
    return SessionSecret(_derive(material), source)


def load_admin_token(config_path: Path, env: Mapping[str, str] | None = None) -> AdminToken:
    """The local admin token (see the module docstring). Raises AdminTokenUnavailable."""
    try:
        material, source = _load(config_path, env, TOKEN_ENV_VAR, TOKEN_FILE, "admin-token", "admin token")
    except _Unavailable as error:
        raise AdminTokenUnavailable(str(error)) from None
    return AdminToken(material.decode("latin-1"), source)


def _load(
    config_path: Path,
    env: Mapping[str, str] | None,
    variable: str,
    file_name: str,
    cache_name: str,
    what: str,
) -> tuple[bytes, str]:
    """The value of `variable`, else of the file `file_name` next to the config (created if missing),
    else of `cache_name` in the cache directory; with where it came from. Raises _Unavailable."""
    environ = os.environ if env is None else env
    given = environ.get(variable, "")
    if given:
        if len(given) < MIN_ENV_LENGTH:
            raise _Unavailable(f"{variable} must be at least {MIN_ENV_LENGTH} characters")
        return given.encode(), variable
    cache = Path(environ.get("GATEWAY_CACHE_DIR") or Path.home() / ".cache" / "gateway")
    candidates = [config_path.absolute().parent / file_name, cache / cache_name]
    failures = []
    for path in candidates:
        try:
            return _read_or_create(path, what), str(path)
        except OSError as error:
            failures.append(f"{path}: {error.strerror or error}")
    raise _Unavailable(f"cannot create the {what} ({'; '.join(failures)}); set {variable} to a random string")


def _derive(material: bytes) -> bytes:
    """A key for session signing only, whatever else the material may be used for."""
    return hmac.new(material, b"gateway admin session v1", hashlib.sha256).digest()


def _read_or_create(path: Path, what: str) -> bytes:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path, what)
    # We created it: write the whole secret in one call, then make it durable.
    try:
        value = secrets.token_hex(_HEX_LENGTH // 2).encode()
        os.write(fd, value + b"\n")
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    os.close(fd)
    log.info("created the %s %s", what, path, extra={"event": "admin_secret_created", "file": str(path)})
    return value


def _read(path: Path, what: str) -> bytes:
    """Read an existing secret; a file still empty is being written by another worker: wait for it."""
    deadline = time.monotonic() + _WRITE_WAIT_S
    while True:
        value = path.read_bytes().strip()
        if len(value) >= _HEX_LENGTH:
            if path.stat().st_mode & 0o077:
                log.warning(
                    "the %s %s is readable by other users; chmod 600 it",
                    what,
                    path,
                    extra={"event": "admin_secret_mode"},
                )
            return value
        if time.monotonic() > deadline:
            raise OSError(0, f"the file holds no secret (expected {_HEX_LENGTH} hex characters)")
        time.sleep(0.01)
