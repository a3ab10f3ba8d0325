"""Why a start failed, from the bind's error: one sentence naming the cause and the fix.

A taken port is tested end to end (tests/e2e/test_first_run.py); the other causes cannot be
produced on a test machine that runs as root on loopback, so the sockets' own errors are raised
here through Hypercorn's `create_sockets`, the one call `_bind` makes."""

from __future__ import annotations

import errno

import pytest
from hypercorn.config import Config as HypercornConfig

from gateway.server import StartError, _bind


class _Refusing(HypercornConfig):
    def __init__(self, code: int) -> None:
        super().__init__()
        self.code = code

    def create_sockets(self):  # type: ignore[override]
        raise OSError(self.code, "raised by the kernel")


@pytest.mark.parametrize(
    ("code", "host", "port", "expected"),
    [
        (errno.EADDRINUSE, "127.0.0.1", 8080, "cannot listen on 127.0.0.1:8080: the address is in use"),
        (errno.EACCES, "0.0.0.0", 80, "cannot listen on 0.0.0.0:80: permission denied: ports below 1024"),
        (errno.EADDRNOTAVAIL, "10.1.2.3", 8080, "no interface of this machine has that address"),
        (errno.EADDRNOTAVAIL, "::1", 8080, "cannot listen on [::1]:8080"),
        (errno.EMFILE, "127.0.0.1", 8080, "raised by the kernel; check --host/--port"),
    ],
)
def test_each_bind_failure_names_its_cause_and_fix(code: int, host: str, port: int, expected: str) -> None:
    with pytest.raises(StartError) as raised:
        _bind(_Refusing(code), host, port)
    message = str(raised.value)
    assert expected in message
    assert "\n" not in message and "Errno" not in message
    if code in (errno.EADDRINUSE, errno.EACCES):
        assert "--port" in message and "server.port" in message
