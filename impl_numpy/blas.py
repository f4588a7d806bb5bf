"""``y += a x`` in one pass, through the BLAS that NumPy itself is linked against.

NumPy has no fused multiply-add ufunc, so ``theta -= lr * d`` costs two passes
over the parameter (a multiply into scratch, then a subtract). For the
(128, 3072) input weight of the default model that is about 0.1 ms of every
1.9 ms training step here. BLAS ``axpy`` does it in one pass, multi-threaded.

It must be NumPy's own OpenBLAS, located through threadpoolctl: scipy's
``scipy.linalg.blas`` loads a second OpenBLAS whose thread pool fights
NumPy's, and epochs then ran about 4x slower with 2 threads on 2 cores. The
routine is checked on a small vector when first found; anything unexpected
(another BLAS layout, a CuPy array, a non-contiguous array) returns None and
the caller falls back to the two ufunc passes.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# (symbol, 64-bit integers?) in the order tried: NumPy's wheels ship scipy-openblas
# with ILP64 and a "scipy_" prefix; other builds export the plain CBLAS names.
_SYMBOLS = {
    np.dtype(np.float32): [("scipy_cblas_saxpy64_", True), ("cblas_saxpy64_", True),
                           ("scipy_cblas_saxpy", False), ("cblas_saxpy", False)],
    np.dtype(np.float64): [("scipy_cblas_daxpy64_", True), ("cblas_daxpy64_", True),
                           ("scipy_cblas_daxpy", False), ("cblas_daxpy", False)],
}


def _numpy_blas_path() -> str | None:
    """The file of the BLAS library loaded from inside NumPy's installation, if any."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    root = Path(np.__file__).resolve().parent
    for lib in threadpool_info():
        path = lib.get("filepath") or ""
        if lib.get("user_api") == "blas" and (Path(path).resolve().parent.name == f"{root.name}.libs"
                                              or root in Path(path).resolve().parents):
            return path
    return None


@functools.lru_cache(maxsize=None)
def _routine(dtype: np.dtype) -> Callable[..., None] | None:
    path = _numpy_blas_path()
    if path is None or dtype not in _SYMBOLS:
        return None
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    real = ctypes.c_float if dtype == np.float32 else ctypes.c_double
    for name, wide in _SYMBOLS[dtype]:
        fn = getattr(lib, name, None)
        if fn is None:
            continue
        integer = ctypes.c_int64 if wide else ctypes.c_int
        fn.restype = None
        fn.argtypes = [integer, real, ctypes.c_void_p, integer, ctypes.c_void_p, integer]
        x = np.array([1.0, 2.0, 3.0], dtype=dtype)
        y = np.array([10.0, 20.0, 30.0], dtype=dtype)
        fn(3, -0.5, x.ctypes.data, 1, y.ctypes.data, 1)
        if np.array_equal(y, np.array([9.5, 19.0, 28.5], dtype=dtype)):
            return fn
    return None


def has_axpy(dtype: Any) -> bool:
    """Whether NumPy's own BLAS provides a working axpy for ``dtype`` (float32/float64)."""
    return _routine(np.dtype(dtype)) is not None


def axpy_into(y: Any, x: Any) -> Callable[[float], None] | None:
    """``f(a)`` doing ``y += a * x`` in place for these two arrays, or None where unavailable.

    Both must be C-contiguous NumPy arrays of the same float32/float64 dtype
    and size, and NumPy must link a CBLAS that passes the self-check. The
    addresses are resolved once, so a call costs about a microsecond; the
    caller keeps both arrays alive (they are its parameters and gradients).
    """
    ok = (type(x) is np.ndarray and type(y) is np.ndarray and x.dtype == y.dtype and x.size == y.size
          and x.flags.c_contiguous and y.flags.c_contiguous and y.flags.writeable)
    fn = _routine(y.dtype) if ok else None
    if fn is None:
        return None
    n, px, py = y.size, x.ctypes.data, y.ctypes.data

    def axpy(a: float) -> None:
        fn(n, a, px, 1, py, 1)

    return axpy
