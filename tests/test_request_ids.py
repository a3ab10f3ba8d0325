"""Request ids stay unique across the workers a supervisor forks: each child's generator is seeded
anew (a copy of the parent's state would make every worker produce the same ids)."""

from __future__ import annotations

import multiprocessing
import re

from gateway.request_ids import new_request_id


def _ids(queue: multiprocessing.Queue) -> None:
    queue.put([new_request_id() for _ in range(1000)])


def test_forked_workers_make_different_ids() -> None:
    new_request_id()  # the parent's generator is in use before the fork, as the supervisor's is
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [context.Process(target=_ids, args=(queue,)) for _ in range(2)]
    for child in children:
        child.start()
    batches = [queue.get(timeout=30) for _ in children]
    for child in children:
        child.join(30)
    first, second = (set(batch) for batch in batches)
    assert len(first) == len(second) == 1000
    assert not first & second
    assert all(re.fullmatch(r"req_[0-9a-f]{24}", rid) for rid in first | second)
