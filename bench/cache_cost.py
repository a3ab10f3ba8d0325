"""Response cache cost (`gateway bench cache`): what the semantic cache's lookup costs in process, the
part that grows with the cache: `SemanticIndex.search` over one bucket of N stored last user turns
(the float32 matrix product with the query, the expiry mask and the argmax), at 10,000 and 100,000
entries of 256 and 1,536 dimensions (a small local embedding model's size and OpenAI
text-embedding-3-small's). The embedding call itself (a network round trip to the embedding model)
and the store's `get` are not included: they do not depend on N.

Random unit vectors; all entries in one bucket (the worst case: one model, one system prompt, keys
shared). Wall-clock µs per lookup, best of 5 runs of `--number` lookups; numpy's BLAS may use
several threads for the product (`threads` in the result says how many cores the machine has).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np
from gateway.bench.harness.progress import Progress, say
from gateway.bench.harness.results import markdown_table

from gateway.cache.semantic import SemanticIndex

SIZES = (10_000, 100_000)
DIMENSIONS = (256, 1536)
QUICK_SIZES = (1_000, 10_000)


def _index(size: int, dims: int, rng: np.random.Generator) -> SemanticIndex:
    index = SemanticIndex(size)
    block = 4096
    for start in range(0, size, block):
        vectors = rng.standard_normal((min(block, size - start), dims), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        for i, vector in enumerate(vectors):
            index.add("gpt", "bucket", vector, f"k{start + i}", 3600)
    return index


def _lookup_us(index: SemanticIndex, dims: int, number: int, rng: np.random.Generator) -> float:
    queries = rng.standard_normal((number, dims), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    best = float("inf")
    search = index.search
    for _ in range(5):
        started = time.perf_counter()
        for query in queries:
            search("gpt", "bucket", query, 0.95)
        best = min(best, (time.perf_counter() - started) / number * 1e6)
    return best


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--number", type=int, default=200, help="lookups timed per run (200)")


def run_scenario(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    sizes = QUICK_SIZES if args.quick else SIZES
    number = 20 if args.quick else args.number
    rng = np.random.default_rng(17)
    progress.add(len(sizes) * len(DIMENSIONS))
    rows = []
    for dims in DIMENSIONS:
        for size in sizes:
            with progress.step(f"{size:,} entries × {dims} dimensions"):
                index = _index(size, dims, rng)
                us = _lookup_us(index, dims, number, rng)
                matrix_mib = size * dims * 4 / 2**20
                say(f"  {size:,} × {dims}: {us:.1f} µs per lookup ({matrix_mib:.0f} MiB of vectors)")
                rows.append(
                    {
                        "entries": size,
                        "dimensions": dims,
                        "us_per_lookup": round(us, 1),
                        "matrix_mib": round(matrix_mib, 1),
                    }
                )
                del index
    return {
        "number": number,
        "threads": os.cpu_count(),
        "numpy": np.__version__,
        "lookups": rows,
        "failed_requests": 0,
    }


def table(result: dict[str, Any]) -> str:
    rows = [
        [f"{r['entries']:,}", str(r["dimensions"]), f"{r['us_per_lookup']:.1f}", f"{r['matrix_mib']:.0f}"]
        for r in result["lookups"]
    ]
    headers = ["entries (one bucket)", "dimensions", "µs per lookup", "vectors (MiB)"]
    return (
        f"semantic lookup (SemanticIndex.search), best of 5 × {result['number']} lookups, "
        f"{result['threads']} cores, numpy {result['numpy']}\n\n" + markdown_table(headers, rows)
    )
