"""least_busy across workers and instances: the in-flight counts of every `least_busy` group,
exchanged through the Redis of a shared `limits.store`.

Every `EVERY_S`, each worker writes its own members' counts under its own field of one Redis hash per
group (the key names the model, the group's place and its members, so instances with other configs
never mix) and reads the other fields back in the same round trip; the group's picker adds theirs to
its own (`LeastBusy.others`). Nothing of it is on the request path: a pick reads numbers at most
`EVERY_S` old. A field not refreshed for `STALE_S` (a worker that stopped or died) is ignored and
removed. While Redis is down, or with the memory store, each worker balances on its own counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import time
from typing import Any

import orjson

from gateway.routing.groups import LeastBusy, RouteGroup
from gateway.routing.table import Runtime
from gateway.runtime.live import LiveRuntime

__all__ = ["EVERY_S", "STALE_S", "BusyExchange"]

log = logging.getLogger("gateway.routing")

#: How often a worker sends its counts and reads the others'.
EVERY_S = 0.1
#: A worker's counts older than this are ignored (and removed).
STALE_S = 3.0
#: A group's hash expires this long after the last worker wrote it.
KEY_TTL_S = 60


class BusyExchange:
    """This worker's side of the exchange (one per app)."""

    def __init__(self, live: LiveRuntime, identity: str | None = None) -> None:
        self.live = live
        #: This worker's field in each group's hash.
        self.identity = identity or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"

    async def run(self, stop: asyncio.Event) -> None:
        """Exchange every EVERY_S until `stop`."""
        while not stop.is_set():
            try:
                await self.exchange()
            except Exception:  # the loop must outlive one bad round
                log.exception("exchanging the least_busy counts failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), EVERY_S)

    async def exchange(self) -> None:
        """One round: write this worker's counts, read the others' (no-op without least_busy groups or
        a Redis store)."""
        runtime = self.live.current
        if runtime is None:
            return
        groups = _least_busy_groups(runtime)
        store = runtime.limits.store
        link = getattr(store, "link", None)
        if not groups or link is None:
            return
        if not link.available():
            _forget(groups)
            return
        prefix = getattr(store, "prefix", "")
        now = time.time()
        pipe = link.client.pipeline(transaction=False)
        keys = []
        for model, group in groups:
            key = f"{prefix}busy:{{{model}:{group.index}:{_members_id(group)}}}"
            keys.append(key)
            picker: LeastBusy = group.picker  # type: ignore[assignment]
            pipe.hset(key, self.identity, orjson.dumps({"t": now, "n": picker.in_flight}))
            pipe.expire(key, KEY_TTL_S)
            pipe.hgetall(key)
        try:
            async with asyncio.timeout(link.timeout_s * 2):
                answers = await pipe.execute()
        except Exception as error:
            link.failed(error)
            _forget(groups)
            return
        link.answered()
        stale: list[tuple[str, list[bytes]]] = []
        for (_, group), key, fields in zip(groups, keys, answers[2::3], strict=True):
            others, old = self._others(fields, len(group.members), now)
            group.picker.others = others  # type: ignore[attr-defined]
            if old:
                stale.append((key, old))
        for key, old in stale:
            link.spawn(_remove(link, key, old))

    def _others(self, fields: dict[bytes, bytes], size: int, now: float) -> tuple[list[int], list[bytes]]:
        total = [0] * size
        old = []
        mine = self.identity.encode()
        for field, raw in fields.items():
            if field == mine:
                continue
            try:
                entry: dict[str, Any] = orjson.loads(raw)
                counts = entry["n"]
                fresh = now - float(entry["t"]) <= STALE_S
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                old.append(field)
                continue
            if not fresh or len(counts) != size:
                old.append(field)
                continue
            for i, count in enumerate(counts):
                total[i] += max(0, int(count))
        return total, old

    async def leave(self) -> None:
        """Remove this worker's fields (a clean stop), so the others stop counting them at once."""
        runtime = self.live.current
        if runtime is None:
            return
        link = getattr(runtime.limits.store, "link", None)
        groups = _least_busy_groups(runtime)
        if link is None or not groups or not link.available():
            return
        prefix = getattr(runtime.limits.store, "prefix", "")
        with contextlib.suppress(Exception):
            async with asyncio.timeout(link.timeout_s * 2):
                pipe = link.client.pipeline(transaction=False)
                for model, group in groups:
                    pipe.hdel(f"{prefix}busy:{{{model}:{group.index}:{_members_id(group)}}}", self.identity)
                await pipe.execute()


def _least_busy_groups(runtime: Runtime) -> list[tuple[str, RouteGroup]]:
    return [
        (route.name, step)
        for route in runtime.models
        for step in route.steps
        if type(step) is RouteGroup and type(step.picker) is LeastBusy
    ]


def _members_id(group: RouteGroup) -> str:
    names = "\0".join(f"{m.target.backend}/{m.target.model}" for m in group.members)
    return hashlib.sha256(names.encode()).hexdigest()[:12]


def _forget(groups: list[tuple[str, RouteGroup]]) -> None:
    """Redis is out of reach: balance on this worker's own counts until it answers again."""
    for _, group in groups:
        picker: LeastBusy = group.picker  # type: ignore[assignment]
        picker.others = [0] * len(picker.others)


async def _remove(link: Any, key: str, fields: list[bytes]) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(link.timeout_s):
            await link.client.hdel(key, *fields)
