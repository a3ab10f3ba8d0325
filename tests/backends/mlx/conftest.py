"""The generated tiny model served by a real `mlx` backend (loaded once per test module)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from gateway.backends.mlx.backend import LocalModelBackend
from gateway.backends.upstream import AttemptLimits
from gateway.runtime.live import LiveRuntime


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def local(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LocalModelBackend]:
    """The backend of public model `tiny`. Its engine posts events to the loop it started on: test modules
    using it run on one event loop (`pytest.mark.asyncio(loop_scope="module")`)."""
    path = Path(tmp_path_factory.mktemp("mlx-backend")) / "gateway.yaml"
    path.write_text(
        f'backends:\n  local: {{type: mlx, path: "{tiny_model}", load: startup}}\n'
        "models:\n  tiny: {chain: [{backend: local}]}\nreload: {watch: false}\n"
    )
    live = LiveRuntime(path)
    runtime = await live.start()
    backend = runtime.routes["tiny"].chain[0].backend
    assert isinstance(backend, LocalModelBackend)
    yield backend
    await live.close()


def limits() -> AttemptLimits:
    return AttemptLimits(connect=5, first_byte=60, deadline=time.monotonic() + 120)
