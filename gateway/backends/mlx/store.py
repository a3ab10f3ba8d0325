"""Which local models are loaded: one engine per model directory and settings, under a memory budget.

Loading a model past `local_models.memory_budget_gb` first unloads the least recently used engines
that are idle. Engines are owned here, not by backend objects, so a reload that keeps a backend keeps
its weights, and a budget applies across every `mlx` backend of the process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from gateway.backends.mlx.engine import Engine
from gateway.config.backends import MLXSettings

__all__ = ["LocalModelStore"]

log = logging.getLogger("gateway.mlx")


def _disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.safetensors")) if path.is_dir() else 0


class LocalModelStore:
    def __init__(self, budget_gb: float = 0) -> None:
        self.budget_bytes = int(budget_gb * 1e9)
        self.engines: list[Engine] = []
        self._lock = asyncio.Lock()
        #: `local_models.blas_threads` as configured and as in effect (0: OpenBLAS's own default).
        self.blas_threads = 0
        self._blas_applied = 0
        self._blas_warned: int | None = None

    def set_budget(self, budget_gb: float) -> None:
        self.budget_bytes = int(budget_gb * 1e9)

    def set_blas_threads(self, threads: int) -> None:
        """Take `local_models.blas_threads` (at every config load). OpenBLAS's count is process-wide
        and must not change under a model that computes, so a change made while models are loaded
        waits until none is (said once in the log)."""
        self.blas_threads = threads
        if self.engines and threads != self._blas_applied and self._blas_warned != threads:
            self._blas_warned = threads
            log.warning(
                "local_models.blas_threads changed to %d while local models are loaded: it applies when "
                "none is (after a restart)",
                threads,
                extra={"event": "blas_threads_deferred"},
            )

    def _blas_threads_for_load(self) -> int | None:
        """The thread count the next engine sets while loading (0: OpenBLAS's default; None: leave it)."""
        wanted = self.blas_threads
        if wanted == self._blas_applied or self.engines:
            return None
        self._blas_applied = wanted
        return wanted

    @property
    def loaded_bytes(self) -> int:
        return sum(e.loaded_bytes for e in self.engines)

    def touch(self, engine: Engine) -> None:
        engine.last_used = time.monotonic()

    async def load(self, path: Path, config: MLXSettings) -> Engine:
        async with self._lock:
            if self.budget_bytes:
                await self._make_room(_disk_bytes(path))
            engine = Engine(
                path,
                batching=config.batching,
                max_batch_size=config.max_batch_size,
                max_queue=config.max_queue,
                prompt_cache_size=config.prompt_cache_size,
                blas_threads=self._blas_threads_for_load(),
            )
            await engine.start()
            self.engines.append(engine)
            return engine

    async def _make_room(self, needed: int) -> None:
        for engine in sorted(self.engines, key=lambda e: e.last_used):
            if self.loaded_bytes + needed <= self.budget_bytes:
                return
            if engine.active or engine.queued:
                continue
            log.info(
                "unloading %s to stay within local_models.memory_budget_gb",
                engine.path,
                extra={"event": "model_unloaded", "model_path": str(engine.path)},
            )
            await self.release(engine)

    async def release(self, engine: Engine) -> None:
        if engine in self.engines:
            self.engines.remove(engine)
        await asyncio.to_thread(engine.stop)

    async def close(self) -> None:
        for engine in list(self.engines):
            await self.release(engine)
