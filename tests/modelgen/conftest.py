"""A generated tiny model, created once per test session in a temp dir, and loaded once with mlx-lm.

The tokenizer cache is a session temp dir too, so the session trains the tokenizer itself (under a
second for the tiny vocabulary) instead of trusting whatever ~/.cache holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.blas import ensure_fast_blas
from gateway.modelgen.create import CreatedModel, create_model


@pytest.fixture(scope="session")
def tokenizer_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An empty tokenizer cache; also exported as GATEWAY_CACHE_DIR for `gateway` subprocesses."""
    path = tmp_path_factory.mktemp("gateway-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GATEWAY_CACHE_DIR", str(path))
        yield path / "tokenizers"


@pytest.fixture(scope="session")
def created_tiny(tmp_path_factory: pytest.TempPathFactory, tokenizer_cache: Path) -> CreatedModel:
    path = tmp_path_factory.mktemp("mlx-models") / "tiny"
    return create_model(path, "tiny", seed=0, cache_dir=tokenizer_cache)


@pytest.fixture(scope="session")
def loaded_tiny(created_tiny: CreatedModel) -> tuple[Any, Any]:
    """(model, TokenizerWrapper) from `mlx_lm.load` (offline loading is checked in a subprocess)."""
    ensure_fast_blas()  # before mlx.core is imported in this process
    from mlx_lm import load

    return load(str(created_tiny.path))
