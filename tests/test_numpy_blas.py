"""The one-pass BLAS axpy used by SGD (impl_numpy/blas.py), and its fallback."""

from __future__ import annotations

import numpy as np
import pytest

from impl_numpy.blas import axpy_into
from impl_numpy.optim import SGD


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_axpy_into_matches_numpy(dtype):
    rng = np.random.default_rng(0)
    y = rng.standard_normal((33, 7)).astype(dtype)
    x = rng.standard_normal((33, 7)).astype(dtype)
    f = axpy_into(y, x)
    if f is None:
        pytest.skip("NumPy's BLAS offers no usable CBLAS axpy here (the SGD falls back to ufuncs)")
    expected = y + dtype(-0.3) * x
    f(-0.3)
    np.testing.assert_allclose(y, expected, rtol=4 * np.finfo(dtype).eps, atol=4 * np.finfo(dtype).eps)


def test_axpy_into_declines_what_it_cannot_do():
    a = np.zeros((4, 6), np.float32)
    assert axpy_into(a[:, ::2], np.zeros((4, 3), np.float32)) is None  # not contiguous
    assert axpy_into(a, np.zeros((4, 6), np.float64)) is None           # dtype mismatch
    assert axpy_into(a, np.zeros((4, 5), np.float32)) is None           # size mismatch
    assert axpy_into(a.astype(np.float16), a.astype(np.float16)) is None
    assert axpy_into(a.astype(np.int32), a.astype(np.int32)) is None
    frozen = np.zeros(3, np.float32)
    frozen.flags.writeable = False
    assert axpy_into(frozen, np.zeros(3, np.float32)) is None


@pytest.mark.parametrize("momentum, weight_decay", [(0.0, 0.0), (0.9, 1e-3)])
def test_sgd_blas_and_ufunc_paths_agree(momentum, weight_decay):
    rng = np.random.default_rng(1)
    shapes = [(8, 5), (8,), (3, 8), (3,)]
    fast_p = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    slow_p = [p.copy() for p in fast_p]
    grads = [np.zeros(s, np.float32) for s in shapes]
    fast = SGD(fast_p, grads, lr=0.1, momentum=momentum, weight_decay=weight_decay)
    slow = SGD(slow_p, grads, lr=0.1, momentum=momentum, weight_decay=weight_decay)
    slow._axpy = [None] * len(slow_p)  # force the two-pass ufunc path
    for _ in range(10):
        for g in grads:
            g[...] = rng.standard_normal(g.shape)
        fast.step()
        slow.step()
    for a, b in zip(fast_p, slow_p):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
