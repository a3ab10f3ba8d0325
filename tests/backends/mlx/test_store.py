"""The local model store's bookkeeping that needs no model: when `local_models.blas_threads` is
applied (OpenBLAS's thread count is process-wide, so never under a model that computes)."""

from __future__ import annotations

import logging

import pytest

from gateway.backends.mlx.store import LocalModelStore


def test_blas_threads_apply_with_the_first_model_only(caplog: pytest.LogCaptureFixture) -> None:
    store = LocalModelStore()
    assert store._blas_threads_for_load() is None  # 0 and nothing applied yet: leave OpenBLAS alone
    store.set_blas_threads(1)
    assert store._blas_threads_for_load() == 1  # no model loaded: the next engine sets it
    store.engines.append(object())  # type: ignore[arg-type]  (a loaded model)
    assert store._blas_threads_for_load() is None  # already in effect
    with caplog.at_level(logging.WARNING, logger="gateway.mlx"):
        store.set_blas_threads(1)  # a reload that keeps it: nothing to say
        store.set_blas_threads(2)
        store.set_blas_threads(2)
        assert store._blas_threads_for_load() is None  # not under a loaded model
    deferred = [r.getMessage() for r in caplog.records]
    assert len(deferred) == 1 and "blas_threads changed to 2" in deferred[0]  # said once
    store.engines.clear()
    assert store._blas_threads_for_load() == 2  # no model left: applies with the next one
    store.set_blas_threads(0)
    assert store._blas_threads_for_load() == 0  # back to OpenBLAS's default count
