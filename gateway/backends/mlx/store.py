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
from gateway.config.model import BackendConfig

__all__ = ["LocalModelStore"]

log = logging.getLogger("gateway.mlx")


def _disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.safetensors")) if path.is_dir() else 0


class LocalModelStore:
    def __init__(self, budget_gb: float = 0) -> None:
        self.budget_bytes = int(budget_gb * 1e9)
        self.engines: list[Engine] = []
        self._lock = asyncio.Lock()

    def set_budget(self, budget_gb: float) -> None:
        self.budget_bytes = int(budget_gb * 1e9)

    @property
    def loaded_bytes(self) -> int:
        return sum(e.loaded_bytes for e in self.engines)

    def touch(self, engine: Engine) -> None:
        engine.last_used = time.monotonic()

    async def load(self, path: Path, config: BackendConfig) -> Engine:
        async with self._lock:
            if self.budget_bytes:
                await self._make_room(_disk_bytes(path))
            engine = Engine(
                path,
                batching=bool(config.batching),
                max_batch_size=config.max_batch_size or 16,
                max_queue=config.max_queue,
                prompt_cache_size=config.prompt_cache_size if config.prompt_cache_size is not None else 10,
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
