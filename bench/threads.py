"""One CPU thread count for every backend: BLAS through threadpoolctl, torch's intra-op pool."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from threadpoolctl import threadpool_info, threadpool_limits

from bench.errors import UserError


def default_threads() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def resolve_threads(n: int | None) -> int:
    """``n``, or every core this process may run on when None; more threads than cores is a UserError.

    More BLAS or torch threads than cores only makes them wait for each other
    (and a BLAS pool of thousands of threads can stall for minutes).
    """
    cores = default_threads()
    if n is None:
        return cores
    if n > cores:
        raise UserError(f"invalid threads: {n} (allowed: 1 to the {cores} cores this process may run "
                        "on; more threads than cores only wait for each other)")
    return n


_LIMITS: list[int] = []  # the thread counts of the limit_threads blocks entered, innermost last


def current_threads() -> int:
    """The thread count of the innermost :func:`limit_threads` block, else every core."""
    return _LIMITS[-1] if _LIMITS else default_threads()


@contextlib.contextmanager
def limit_threads(n: int) -> Iterator[int]:
    """Run the body with ``n`` threads in every BLAS/OpenMP pool and in torch, then restore."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(limits=n):
        if torch is not None:
            torch.set_num_threads(n)
        _LIMITS.append(n)
        try:
            yield n
        finally:
            _LIMITS.pop()
            if torch is not None and before is not None:
                torch.set_num_threads(before)


def blas_info() -> list[dict]:
    """threadpoolctl's view of the loaded BLAS/OpenMP libraries (name, version, threads, kernel),
    in a fixed order (threadpoolctl lists them in load order, which varies between runs)."""
    keep = ("user_api", "internal_api", "prefix", "version", "num_threads", "architecture",
            "threading_layer")
    libs = [{k: v for k, v in lib.items() if k in keep} for lib in threadpool_info()]
    return sorted(libs, key=lambda lib: tuple(str(lib.get(k)) for k in keep))


def numpy_gemm_library() -> str:
    """The BLAS library NumPy's matmul runs on, e.g. ``OpenBLAS 0.3.31 (SkylakeX kernels, 2 threads)``.

    threadpoolctl's entry loaded from NumPy's own folder (``numpy.libs``), else the first
    BLAS it sees, else NumPy's build configuration.
    """
    blas = [lib for lib in threadpool_info() if lib.get("user_api") == "blas"]
    lib = next((b for b in blas if "numpy" in str(b.get("filepath", ""))), blas[0] if blas else None)
    if lib is None:
        import numpy as np

        dep = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
        return f"{dep.get('name', 'unknown BLAS')} {dep.get('version', '')}".strip()
    name = {"openblas": "OpenBLAS", "mkl": "MKL", "blis": "BLIS"}.get(lib["internal_api"],
                                                                      lib["internal_api"])
    arch = f"{lib['architecture']} kernels, " if lib.get("architecture") else ""
    return f"{name} {lib.get('version')} ({arch}{lib.get('num_threads')} threads)"
