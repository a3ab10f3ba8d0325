"""Writing a generated model's weights into safetensors shards.

Every embedding and linear weight is normal with std 0.02 (drawn by inverse-CDF lookup
of 65536 normal quantiles, seeded per tensor and chunk from `seed` and the tensor's name, so the
same seed gives byte-identical files at any dtype and any shard size); norms are 1. Special tokens
are sampled as often as any other id, so a generation ends early on an end-of-turn id with
probability about 3/vocab per token.

Tensors are generated in chunks of rows on a small thread pool and written straight into the file at
their offsets (`pwrite`), so creating any tier takes a few hundred MB of memory, never the model's
size. 4-bit layers are drawn as float32, cast, and quantized with mlx (as `mlx_lm.convert -q`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from gateway.modelgen.plan import STD, StoredTensor
from gateway.modelgen.presets import DTYPES, GROUP_SIZE, TensorShape

__all__ = ["WeightWriter"]

CHUNK_VALUES = 1 << 22  # values generated per task (16 MB as fp32)


@lru_cache(maxsize=4)
def _table(dtype: str) -> Any:
    """65536 equiprobable quantiles of N(0, STD²), as the bytes of `dtype` (uint16 bits for bfloat16)."""
    from statistics import NormalDist

    import numpy as np

    normal = NormalDist(0.0, STD)
    values = np.array([normal.inv_cdf((i + 0.5) / 65536) for i in range(65536)], dtype=np.float32)
    if dtype == "float32":
        return values
    if dtype == "float16":
        return values.astype(np.float16)
    bits = values.view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even


def _ones(dtype: str, n: int) -> bytes:
    import numpy as np

    if dtype == "bfloat16":
        return np.full(n, 0x3F80, dtype=np.uint16).tobytes()
    return np.ones(n, dtype=np.float32 if dtype == "float32" else np.float16).tobytes()


def _name_key(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def _draw(seed: int, name: str, chunk: int, count: int, dtype: str) -> Any:
    """The values of one chunk of one tensor (numpy), from indices into the quantile table."""
    import numpy as np

    rng = np.random.default_rng([seed, _name_key(name), chunk])
    return _table(dtype)[rng.integers(0, 65536, size=count, dtype=np.uint16)]


@dataclass
class _Chunk:
    tensor: TensorShape
    index: int
    row: int
    rows: int


def _chunks(tensor: TensorShape) -> Iterator[_Chunk]:
    if tensor.kind == "norm":
        yield _Chunk(tensor, 0, 0, 1)
        return
    total_rows, cols = tensor.shape
    step = max(1, CHUNK_VALUES // cols)
    for index, row in enumerate(range(0, total_rows, step)):
        yield _Chunk(tensor, index, row, min(step, total_rows - row))


class WeightWriter:
    """Writes shards with `workers` threads drawing values ahead; `close()` when done."""

    def __init__(self, seed: int, dtype: str, quantize: int | None, workers: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.seed = seed
        self.dtype = dtype
        self.quantize = quantize
        self.workers = workers
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="gateway-create")
        self._mx: Any = None

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def write_shard(self, path: Path, tensors: tuple[StoredTensor, ...]) -> int:
        header: dict[str, Any] = {"__metadata__": {"format": "mlx"}}
        offsets: dict[tuple[str, str], int] = {}
        position = 0
        for stored in tensors:
            header[stored.name] = {
                "dtype": stored.dtype,
                "shape": list(stored.shape),
                "data_offsets": [position, position + stored.nbytes],
            }
            offsets[(stored.source.name, stored.part)] = position
            position += stored.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        base = 8 + len(raw)
        sources: list[TensorShape] = []
        for stored in tensors:
            if stored.source not in sources:
                sources.append(stored.source)
        with open(path, "wb") as file:
            file.write(len(raw).to_bytes(8, "little") + raw)
            file.truncate(base + position)
            fd = file.fileno()
            for chunk, values in self._generate(sources):
                for part, data, row_bytes in self._encode(chunk, values):
                    start = base + offsets[(chunk.tensor.name, part)]
                    _pwrite_all(fd, data, start + chunk.row * row_bytes)
        return base + position

    def _generate(self, sources: list[TensorShape]) -> Iterator[tuple[_Chunk, Any]]:
        """Chunks with their values, generated `workers` chunks ahead on the thread pool, in order."""
        pending: deque[tuple[_Chunk, Any]] = deque()
        ahead = 2 * self.workers
        for tensor in sources:
            # Values to quantize are drawn as float32 and cast (as mlx_lm.convert casts, then quantizes).
            dtype = "float32" if self.quantize and tensor.quantizable else self.dtype
            for chunk in _chunks(tensor):
                if tensor.kind == "norm":
                    future = None
                else:
                    count = chunk.rows * tensor.shape[-1]
                    future = self.pool.submit(_draw, self.seed, tensor.name, chunk.index, count, dtype)
                pending.append((chunk, future))
                while len(pending) > ahead:
                    yield self._ready(pending.popleft())
        while pending:
            yield self._ready(pending.popleft())

    @staticmethod
    def _ready(item: tuple[_Chunk, Any]) -> tuple[_Chunk, Any]:
        chunk, future = item
        return chunk, None if future is None else future.result()

    def _encode(self, chunk: _Chunk, values: Any) -> list[tuple[str, bytes, int]]:
        """(part, bytes, bytes per row) for one chunk: plain values, or the three quantized parts."""
        tensor = chunk.tensor
        if tensor.kind == "norm":
            return [("plain", _ones(self.dtype, tensor.size), 0)]
        cols = tensor.shape[-1]
        if not (self.quantize and tensor.quantizable):
            return [("plain", values.tobytes(), cols * DTYPES[self.dtype])]
        mx = self._mlx()
        weights = mx.array(values.reshape(chunk.rows, cols)).astype(getattr(mx, self.dtype))
        packed, scales, biases = mx.quantize(weights, group_size=GROUP_SIZE, bits=self.quantize)
        mx.eval(packed, scales, biases)
        item = DTYPES[self.dtype]
        groups = cols // GROUP_SIZE
        return [
            ("weight", _mx_bytes(mx, packed), cols * self.quantize // 8),
            ("scales", _mx_bytes(mx, scales), groups * item),
            ("biases", _mx_bytes(mx, biases), groups * item),
        ]

    def _mlx(self) -> Any:
        if self._mx is None:
            from gateway.blas import ensure_fast_blas

            ensure_fast_blas()
            import mlx.core as mx

            self._mx = mx
        return self._mx


def _mx_bytes(mx: Any, array: Any) -> bytes:
    import numpy as np

    if array.dtype == mx.bfloat16:
        array = mx.view(array, mx.uint16)
    return np.asarray(array).tobytes()


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
