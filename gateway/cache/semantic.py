"""The semantic cache's index (`docs/cache.md`): per bucket (model, everything in the request but the
last user turn, namespace), a float32 matrix of unit vectors of the last user turns stored, and the
entry key of each row. A lookup is one matrix-vector product and an argmax: O(rows · dimensions).

The index is per process: the entries themselves live in the store (memory or Redis), the vectors
only here, so with Redis each instance finds what it stored itself. Rows past `max_rows` (the
cache's `max_entries`), past their lifetime, or whose entry the store no longer has, are dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["SemanticIndex", "SemanticQuery", "last_user_text", "unit_vector"]

#: A bucket's matrix grows by this factor when full (rows are appended, not copied each time).
_GROWTH = 2
_FIRST_ROWS = 16


@dataclass(slots=True)
class SemanticQuery:
    """A semantic lookup's state for one request: its bucket, the text to embed, and once embedded,
    the vector (kept to index the answer if it is stored)."""

    bucket: str
    text: str
    embedding_model: str
    similarity: float
    vector: np.ndarray | None = None
    #: The similarity of a semantic hit (None: no hit, or an exact one).
    found: float | None = None


def last_user_text(messages: tuple) -> tuple[int, str] | None:
    """The index and text of the last message when it is a user turn made of text only; else None
    (a tool result or an image is not something a paraphrase can match)."""
    if not messages:
        return None
    last = messages[-1]
    if last.role != "user" or not last.content:
        return None
    from gateway.protocol.canonical import TextPart

    if any(type(part) is not TextPart for part in last.content):
        return None
    text = last.text
    return (len(messages) - 1, text) if text.strip() else None


def unit_vector(values: np.ndarray) -> np.ndarray | None:
    """`values` as a float32 unit vector, or None when it has no direction or is not finite."""
    vector = np.asarray(values, dtype=np.float32).ravel()
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0.0:
        return None
    return vector / norm


#: Buckets of at least this many stored numbers (rows × dimensions: 1M is 4 MiB, about 0.4 ms of
#: matrix product here) are searched in a thread rather than on the event loop.
OFF_LOOP_ELEMENTS = 1 << 20


def _scores(matrix: np.ndarray, expires: np.ndarray, vector: np.ndarray, now: float) -> np.ndarray:
    """Cosine similarity of every row (unit vectors) to `vector`; -2 for expired rows."""
    scores = matrix @ vector
    scores[expires <= now] = -2.0
    return scores


class _Bucket:
    __slots__ = ("expires", "keys", "matrix", "present", "rows")

    def __init__(self, dims: int) -> None:
        self.matrix = np.empty((_FIRST_ROWS, dims), dtype=np.float32)
        self.expires = np.empty(_FIRST_ROWS, dtype=np.float64)
        self.keys: list[str] = []
        #: The keys, for an O(1) membership test.
        self.present: set[str] = set()
        self.rows = 0

    def append(self, vector: np.ndarray, key: str, expires: float) -> None:
        if self.rows == len(self.matrix):
            size = len(self.matrix) * _GROWTH
            matrix = np.empty((size, self.matrix.shape[1]), dtype=np.float32)
            matrix[: self.rows] = self.matrix[: self.rows]
            ends = np.empty(size, dtype=np.float64)
            ends[: self.rows] = self.expires[: self.rows]
            self.matrix, self.expires = matrix, ends
        self.matrix[self.rows] = vector
        self.expires[self.rows] = expires
        self.keys.append(key)
        self.present.add(key)
        self.rows += 1

    def drop(self, rows: np.ndarray | list[int]) -> None:
        """Remove `rows` (indices), keeping the others in order. New arrays, never in place: a search
        running in a thread over the old ones (`SemanticIndex.search_off_loop`) reads them unchanged."""
        keep = np.ones(self.rows, dtype=bool)
        keep[rows] = False
        kept = int(keep.sum())
        matrix = np.empty_like(self.matrix)
        matrix[:kept] = self.matrix[: self.rows][keep]
        expires = np.empty_like(self.expires)
        expires[:kept] = self.expires[: self.rows][keep]
        self.matrix, self.expires = matrix, expires
        self.keys = [k for k, flag in zip(self.keys, keep.tolist(), strict=True) if flag]
        self.present = set(self.keys)
        self.rows = kept


class SemanticIndex:
    """Vectors of stored last user turns, by (model, bucket). Not thread-safe (one event loop)."""

    def __init__(self, max_rows: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_rows = max_rows
        self.clock = clock
        #: (model, bucket) → its rows; the most recently appended-to last.
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()
        self.rows = 0

    def add(self, model: str, bucket: str, vector: np.ndarray, key: str, ttl_seconds: float) -> None:
        name = (model, bucket)
        rows = self._buckets.get(name)
        if rows is not None and rows.matrix.shape[1] != len(vector):
            self.rows -= rows.rows  # the embedding model changed its dimensions: start again
            del self._buckets[name]
            rows = None
        if rows is None:
            rows = self._buckets[name] = _Bucket(len(vector))
        else:
            self._buckets.move_to_end(name)
            if key in rows.present:  # the same request stored again: replace its row
                rows.drop([rows.keys.index(key)])
                self.rows -= 1
        rows.append(vector, key, self.clock() + ttl_seconds)
        self.rows += 1
        while self.rows > self.max_rows:
            self._evict()

    def _evict(self) -> None:
        """Make room in the least recently written bucket: its expired rows, else its oldest rows,
        a 64th of the bound at a time (dropping rows copies the bucket, so not one per store). Their
        entries stay in the store: still found by an exact lookup, no longer by a paraphrase."""
        name, rows = next(iter(self._buckets.items()))
        expired = np.flatnonzero(rows.expires[: rows.rows] <= self.clock())
        oldest = min(rows.rows, max(1, self.max_rows // 64))
        gone = expired.tolist() if len(expired) else list(range(oldest))
        rows.drop(gone)
        self.rows -= len(gone)
        if rows.rows == 0:
            del self._buckets[name]

    def search(
        self, model: str, bucket: str, vector: np.ndarray, threshold: float
    ) -> tuple[str, float] | None:
        """The key of the nearest live row at least `threshold` similar to `vector`, and its similarity."""
        rows = self._buckets.get((model, bucket))
        if rows is None or rows.matrix.shape[1] != len(vector):
            return None
        n = rows.rows
        return self._best(model, bucket, _scores(rows.matrix[:n], rows.expires[:n], vector, self.clock()),
                          rows.keys, threshold)  # fmt: skip

    async def search_off_loop(
        self, model: str, bucket: str, vector: np.ndarray, threshold: float
    ) -> tuple[str, float] | None:
        """`search`, with a large bucket's matrix product run in a thread (numpy releases the GIL), so
        a lookup over many rows does not stall the event loop. The thread reads the bucket's arrays as
        they were when it started: appends write past them (or into new arrays) and drops make new
        ones, so what it reads and the keys taken with it stay consistent."""
        rows = self._buckets.get((model, bucket))
        if rows is None or rows.matrix.shape[1] != len(vector):
            return None
        n = rows.rows
        if n * len(vector) < OFF_LOOP_ELEMENTS:
            return self.search(model, bucket, vector, threshold)
        matrix, expires, keys = rows.matrix[:n], rows.expires[:n], rows.keys
        scores = await asyncio.to_thread(_scores, matrix, expires, vector, self.clock())
        return self._best(model, bucket, scores, keys, threshold)

    def _best(
        self, model: str, bucket: str, scores: np.ndarray, keys: list[str], threshold: float
    ) -> tuple[str, float] | None:
        best = int(np.argmax(scores))
        score = float(scores[best])
        if score < threshold:
            if score == -2.0:  # every row expired
                self.forget(model, bucket, None)
            return None
        return keys[best], min(score, 1.0)

    def forget(self, model: str, bucket: str, key: str | None) -> None:
        """Drop `key`'s row (its entry is gone from the store), or with None every expired row."""
        name = (model, bucket)
        rows = self._buckets.get(name)
        if rows is None:
            return
        if key is None:
            gone = np.flatnonzero(rows.expires[: rows.rows] <= self.clock()).tolist()
        else:
            gone = [rows.keys.index(key)] if key in rows.present else []
        if gone:
            rows.drop(gone)
            self.rows -= len(gone)
        if rows.rows == 0:
            del self._buckets[name]

    def clear(self, model: str | None = None) -> None:
        names = [n for n in self._buckets if model is None or n[0] == model]
        for name in names:
            self.rows -= self._buckets.pop(name).rows
