"""Make mlx's CPU backend run on OpenBLAS instead of the reference BLAS its Linux wheel bundles.

The `mlx[cpu]` wheel links `mlx_cpu.libs/libblas-*.so.3.10.0`, netlib's reference BLAS: fp32 1024³
matmul runs at about 7 GFLOP/s on a 2-core VM. Loading an optimised BLAS into the process's *global*
symbol scope before `mlx.core` is imported makes the dynamic linker bind mlx's `cblas_*` (and LAPACK)
calls to it instead (the global scope is searched before the libraries mlx pulls in itself): the same
matmul then runs at about 234 GFLOP/s. `LD_PRELOAD=.../libopenblas.so.0` has the same effect.

    from gateway.blas import ensure_fast_blas
    info = ensure_fast_blas()      # before anything imports mlx.core
    log.info("mlx runs on %s", info.description)
    if info.warning:
        log.warning(info.warning)

Where OpenBLAS is looked for, in order: `$GATEWAY_OPENBLAS` (a file; `off` keeps the bundled BLAS,
for comparisons), Debian/Ubuntu multiarch directories (`openblas-pthread`, `openblas-openmp`,
`openblas-serial`, then the alternatives link), Fedora/Arch/Alpine locations, then `ldconfig -p`.
On macOS nothing is done: mlx uses Accelerate and Metal there.

bf16/fp16 matmuls and 4-bit `quantized_matmul` do not go through BLAS, so only fp32 models gain.
"""

from __future__ import annotations

import ctypes
import os
import platform
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BUNDLED",
    "FIX",
    "BlasInfo",
    "ensure_fast_blas",
    "mapped_blas_libraries",
    "measure_matmul_gflops",
    "set_threads",
]

BUNDLED = "bundled reference BLAS"
FIX = "apt-get install libopenblas0-pthread"
ENV = "GATEWAY_OPENBLAS"
_OFF = {"0", "off", "no", "false", "none", "bundled"}
_SONAMES = ("libopenblas.so.0", "libopenblasp.so.0", "libopenblaso.so.0", "libopenblas.so")


@dataclass(frozen=True)
class BlasInfo:
    """Which BLAS mlx's CPU backend uses in this process.

    `library` is the OpenBLAS file loaded (None when mlx runs on its bundled reference BLAS or on
    Accelerate), `description` a one-line summary for the startup log, `warning` the problem and its
    fix when mlx runs on the slow BLAS (None otherwise), `fast` whether an optimised BLAS is in use.
    `mlx_imported_first` is true when `mlx.core` was already imported at the first call: then nothing
    could be changed, and the result only reports what is mapped.
    """

    description: str
    library: str | None = None
    fast: bool = False
    warning: str | None = None
    source: str = ""
    mlx_imported_first: bool = False
    config: str | None = None
    threads: int | None = None

    def __str__(self) -> str:
        return self.description

    def with_threads(self, threads: int | None) -> str:
        """The description with another OpenBLAS thread count (after `set_threads`); as is for None/0."""
        if not threads or self.threads is None:
            return self.description
        return self.description.replace(_thread_count(self.threads) + ")", _thread_count(threads) + ")")


_lock = threading.Lock()
_result: BlasInfo | None = None


def ensure_fast_blas() -> BlasInfo:
    """Load OpenBLAS into the global symbol scope, once, if `mlx.core` is not imported yet.

    Idempotent and thread-safe: later calls return the first call's result.
    """
    global _result
    with _lock:
        if _result is None:
            _result = _decide()
        return _result


def _decide() -> BlasInfo:
    if sys.platform == "darwin":
        return BlasInfo("Accelerate (macOS)", fast=True, source="platform")
    if not sys.platform.startswith("linux"):
        return BlasInfo(f"mlx's own BLAS ({sys.platform})", source="platform")

    already = _mapped_openblas()
    if "mlx.core" in sys.modules:
        if already:
            return _loaded(already, "already mapped (LD_PRELOAD or loaded earlier)", imported_first=True)
        return BlasInfo(
            BUNDLED,
            warning=(
                "mlx.core was imported before ensure_fast_blas(), so mlx runs on its bundled reference "
                "BLAS (about 30x slower for fp32 matmul). Call ensure_fast_blas() before anything imports "
                f"mlx, or start the process with LD_PRELOAD set to libopenblas.so.0 ({FIX})."
            ),
            source="too late",
            mlx_imported_first=True,
        )
    if already:
        return _loaded(already, "already mapped (LD_PRELOAD or loaded earlier)")

    override = os.environ.get(ENV, "").strip()
    if override.lower() in _OFF:
        return BlasInfo(
            BUNDLED,
            warning=f"{ENV}={override}: mlx runs on its bundled reference BLAS (about 30x slower for fp32).",
            source=ENV,
        )
    tried: list[str] = []
    candidates = [(override, ENV)] if override else []
    candidates += [(path, "search") for path in _candidates()]
    for path, source in candidates:
        if path in tried:
            continue
        tried.append(path)
        if not os.path.exists(path):
            if source == ENV:
                return _fallback(f"{ENV}={override} does not exist")
            continue
        try:
            ctypes.CDLL(path, mode=os.RTLD_GLOBAL)
        except OSError as error:
            if source == ENV:
                return _fallback(f"{ENV}={override} could not be loaded ({error})")
            continue
        return _loaded(path, source)
    return _fallback("no OpenBLAS library found")


def _fallback(reason: str) -> BlasInfo:
    return BlasInfo(
        BUNDLED,
        warning=(
            f"{reason}: mlx runs on its bundled reference BLAS, about 30x slower for fp32 models. "
            f"Fix: `{FIX}` (Debian/Ubuntu; `dnf install openblas` on Fedora), or point {ENV} at a "
            "libopenblas.so.0."
        ),
        source="fallback",
    )


def _loaded(path: str, source: str, *, imported_first: bool = False) -> BlasInfo:
    config, threads = _openblas_details(path)
    version = config.split()[1] if config and config.startswith("OpenBLAS ") else ""
    extra = f", {_thread_count(threads)}" if threads else ""
    return BlasInfo(
        f"OpenBLAS{' ' + version if version else ''} ({path}{extra})",
        library=path,
        fast=True,
        source=source,
        mlx_imported_first=imported_first,
        config=config,
        threads=threads,
    )


def _openblas_details(path: str) -> tuple[str | None, int | None]:
    try:
        lib = ctypes.CDLL(path, mode=os.RTLD_GLOBAL)  # already loaded: returns the same handle
        lib.openblas_get_config.restype = ctypes.c_char_p
        config = lib.openblas_get_config().decode(errors="replace").strip()
        threads = int(lib.openblas_get_num_threads())
        return config, threads
    except (OSError, AttributeError):
        return None, None


def _candidates() -> list[str]:
    machine = platform.machine().lower()
    triplet = {
        "x86_64": "x86_64-linux-gnu",
        "amd64": "x86_64-linux-gnu",
        "aarch64": "aarch64-linux-gnu",
        "arm64": "aarch64-linux-gnu",
        "ppc64le": "powerpc64le-linux-gnu",
        "s390x": "s390x-linux-gnu",
        "riscv64": "riscv64-linux-gnu",
    }.get(machine, f"{machine}-linux-gnu")
    found = []
    for root in (f"/usr/lib/{triplet}", f"/lib/{triplet}"):
        for variant in ("openblas-pthread", "openblas-openmp", "openblas-serial"):
            found.append(f"{root}/{variant}/libopenblas.so.0")
        found.append(f"{root}/libopenblas.so.0")
    for root in ("/usr/lib64", "/usr/lib", "/usr/local/lib", "/opt/OpenBLAS/lib"):
        found += [f"{root}/{name}" for name in _SONAMES]
    found += _ldconfig()
    return found


def _ldconfig() -> list[str]:
    for tool in ("ldconfig", "/sbin/ldconfig", "/usr/sbin/ldconfig"):
        try:
            out = subprocess.run([tool, "-p"], capture_output=True, text=True, timeout=3, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        return [
            match.group(2)
            for match in re.finditer(r"^\s*(libopenblas\S*\.so\S*)\s.*=>\s*(\S+)$", out, re.MULTILINE)
        ]
    return []


def _thread_count(threads: int) -> str:
    return f"{threads} thread{'' if threads == 1 else 's'}"


def set_threads(threads: int) -> int | None:
    """Set OpenBLAS's thread count for this process (`local_models.blas_threads`); returns the count
    now in effect, or None when mlx does not run on OpenBLAS here (nothing to set).

    The count is process-wide, so the store calls this only while no model computes. Why one may want
    fewer threads than cores: OpenBLAS's idle workers spin (with `sched_yield`) between calls, taking
    the CPU the event loop and the engine's own Python thread need; a small model, whose decode steps
    are mostly dispatch, runs faster with one thread (measured in PERFORMANCE.md), a large one faster
    with all cores.
    """
    info = ensure_fast_blas()
    if info.library is None or threads < 1:
        return None
    try:
        lib = ctypes.CDLL(info.library, mode=os.RTLD_GLOBAL)
        if int(lib.openblas_get_num_threads()) != threads:
            lib.openblas_set_num_threads(ctypes.c_int(threads))
        return int(lib.openblas_get_num_threads())
    except (OSError, AttributeError):
        return None


def mapped_blas_libraries() -> list[str]:
    """Files mapped into this process whose name looks like a BLAS (from /proc/self/maps; Linux)."""
    try:
        text = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    seen: list[str] = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and re.search(r"(blas|lapack)[^/]*\.so", parts[5]) and parts[5] not in seen:
            seen.append(parts[5])
    return seen


def _mapped_openblas() -> str | None:
    # libopenblas*, not numpy's libscipy_openblas64_ (its symbols carry a suffix: mlx cannot use them)
    return next((p for p in mapped_blas_libraries() if Path(p).name.startswith("libopenblas")), None)


def measure_matmul_gflops(n: int = 1024, *, seconds: float = 0.5, repeats: int = 5) -> float:
    """fp32 n×n×n matmul throughput of mlx's CPU backend, best of a few runs, in GFLOP/s.

    Calls `ensure_fast_blas()` first (so this may import mlx.core). About 0.1 s with OpenBLAS and
    1 s with the reference BLAS at the default size; stops after `seconds` once one run is timed.
    """
    ensure_fast_blas()
    import mlx.core as mx

    with mx.stream(mx.cpu):
        a = mx.random.normal((n, n), key=mx.random.key(0))
        b = mx.random.normal((n, n), key=mx.random.key(1))
        mx.eval(a, b)
        mx.eval(a @ b)  # warm-up
        best = float("inf")
        started = time.perf_counter()
        for _ in range(repeats):
            t = time.perf_counter()
            mx.eval(a @ b)
            best = min(best, time.perf_counter() - t)
            if time.perf_counter() - started > seconds:
                break
    return 2 * n**3 / best / 1e9


if __name__ == "__main__":  # python -m gateway.blas
    info = ensure_fast_blas()
    print(f"BLAS: {info.description}")
    if info.warning:
        print(f"warning: {info.warning}")
    print(f"fp32 1024^3 matmul: {measure_matmul_gflops():.1f} GFLOP/s")
    print("mapped:", *mapped_blas_libraries(), sep="\n  ")
