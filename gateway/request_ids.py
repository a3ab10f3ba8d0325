"""The ids the gateway gives requests whose client sent no usable `x-request-id`.

`req_` and 24 hex digits: the first 11 are the milliseconds since the epoch, the other 13 random
(52 bits). Ids made later sort later (as UUIDv7 and ULIDs do), so the audit log's `request_id` index
grows at its end: with random ids, each stored record rewrote a page of that index somewhere in it,
which cost SQLite about 16 µs a record once the log held a few hundred thousand rows.
"""

from __future__ import annotations

import os
import time

__all__ = ["new_request_id"]


def new_request_id() -> str:
    return f"req_{time.time_ns() // 1_000_000:011x}{os.urandom(7).hex()[:13]}"
