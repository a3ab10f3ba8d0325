"""The ids the gateway gives requests whose client sent no usable `x-request-id`.

`req_` and 24 hex digits: the first 11 are the milliseconds since the epoch, the other 13 random
(52 bits). Ids made later sort later (as UUIDv7 and ULIDs do), so the audit log's `request_id` index
grows at its end: with random ids, each stored record rewrote a page of that index somewhere in it,
which cost SQLite about 16 µs a record once the log held a few hundred thousand rows.

The random part comes from the `random` module's generator, seeded from the operating system's
entropy at start and again in every forked worker (the module does that itself): an id names a
request, it is not a secret, and `os.urandom` (a system call per id) was 5% of a loaded worker's
event loop.
"""

from __future__ import annotations

import time
from random import getrandbits

__all__ = ["new_request_id"]


def new_request_id() -> str:
    return f"req_{time.time_ns() // 1_000_000:011x}{getrandbits(52):013x}"
