"""OpenBLAS setup, checked in fresh processes (the order of `ensure_fast_blas` and `import mlx.core`
matters, and a test process may have imported mlx already). No timing asserts: the proof is that
OpenBLAS is mapped into the process and that the global scope resolves `cblas_sgemm` to it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.blas import BUNDLED, FIX, ensure_fast_blas
from tests.conftest import service_missing

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="OpenBLAS setup is Linux-only")

PROBE = r"""
import ctypes, json, sys
from gateway.blas import ensure_fast_blas, mapped_blas_libraries, measure_matmul_gflops
if "--import-first" in sys.argv:
    import mlx.core
info = ensure_fast_blas()
again = ensure_fast_blas()
import mlx.core as mx
mx.eval(mx.ones((64, 64)) @ mx.ones((64, 64)))

class DlInfo(ctypes.Structure):
    _fields_ = [("fname", ctypes.c_char_p), ("fbase", ctypes.c_void_p),
                ("sname", ctypes.c_char_p), ("saddr", ctypes.c_void_p)]

provider = None
process = ctypes.CDLL(None)  # the global scope, where mlx's cblas_* references are looked up first
try:
    address = ctypes.cast(process.cblas_sgemm, ctypes.c_void_p)
    found = DlInfo()
    if process.dladdr(address, ctypes.byref(found)):
        provider = found.fname.decode()
except AttributeError:
    pass
result = {
    "description": info.description, "library": info.library, "fast": info.fast,
    "warning": info.warning, "first": info.mlx_imported_first, "same": info is again,
    "mapped": mapped_blas_libraries(), "cblas_sgemm_from": provider,
}
if "--model" in sys.argv:
    from mlx_lm import generate, load
    model, tokenizer = load(sys.argv[sys.argv.index("--model") + 1])
    result["text"] = generate(model, tokenizer, "Once upon a time", max_tokens=8, verbose=False)
if "--measure" in sys.argv:
    result["gflops"] = measure_matmul_gflops()
print(json.dumps(result))
"""


def probe(*args: str, **env: str) -> dict:
    environment = {k: v for k, v in os.environ.items() if k not in ("GATEWAY_OPENBLAS", "LD_PRELOAD")}
    environment.update(env)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=environment, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_openblas_is_mapped_and_serves_cblas_after_ensure_then_import(tiny_model: Path) -> None:
    offline = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = probe("--model", str(tiny_model), "--measure", **offline)
    if result["library"] is None:
        service_missing(f"no OpenBLAS on this machine: {result['warning']}")
    assert result["fast"] and result["warning"] is None and result["same"]
    assert result["description"].startswith("OpenBLAS")
    assert os.path.realpath(result["library"]) in result["mapped"], result["mapped"]
    # mlx's cblas_sgemm references bind to the global scope's definition: OpenBLAS, not the bundled one.
    assert result["cblas_sgemm_from"] is not None and "openblas" in result["cblas_sgemm_from"]
    assert isinstance(result["text"], str)  # the model loaded and generated with the network off
    assert result["gflops"] > 0  # for the log; no timing assert


def test_off_switch_keeps_the_bundled_blas_and_says_so() -> None:
    result = probe(GATEWAY_OPENBLAS="off")
    assert result["library"] is None and not result["fast"]
    assert result["description"] == BUNDLED
    assert "GATEWAY_OPENBLAS=off" in result["warning"]
    assert not any(Path(p).name.startswith("libopenblas") for p in result["mapped"])


def test_a_missing_library_falls_back_with_the_fix() -> None:
    result = probe(GATEWAY_OPENBLAS="/nonexistent/libopenblas.so.0")
    assert result["description"] == BUNDLED
    assert "/nonexistent/libopenblas.so.0 does not exist" in result["warning"]
    assert FIX in result["warning"]


def test_mlx_imported_first_changes_nothing_and_warns() -> None:
    result = probe("--import-first")
    assert result["first"] is True
    assert result["library"] is None
    assert "imported before ensure_fast_blas()" in result["warning"]
    assert not any(Path(p).name.startswith("libopenblas") for p in result["mapped"])


def test_idempotent_in_this_process() -> None:
    assert ensure_fast_blas() is ensure_fast_blas()
