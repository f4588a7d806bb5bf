"""The matrix products of one training epoch, for the GEMM-only reference time.

An epoch of an MLP is, at its core, a fixed list of matrix products. Timing
exactly that list with each backend's own library on its own device gives the
floor an implementation could reach; ``epoch_seconds / gemm_seconds`` says how
close it comes. The list is derived from the config here, once, for every
backend.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from impl_common.arch import layer_widths


class Gemm(NamedTuple):
    """C (m, n) = op(A) (m, k) @ op(B) (k, n); ``ta``/``tb``: the operand is stored transposed."""

    m: int
    k: int
    n: int
    ta: bool = False
    tb: bool = False

    @property
    def flop(self) -> int:
        return 2 * self.m * self.k * self.n


def step_gemms(n_inputs: int, hidden_dims: list[int], n_classes: int, batch: int) -> list[Gemm]:
    """The products of one SGD step of the MLP, in the layouts the implementations use.

    Per linear layer (in M -> out N, batch S):
    forward ``Y = X W^T`` (S, M) @ (M, N), with W stored (N, M);
    L1 ``dW = dY^T X`` (N, S) @ (S, M), with dY stored (S, N);
    L3 ``dX = dY W`` (S, N) @ (N, M), skipped for the input layer (no input gradient needed).
    """
    widths = layer_widths(n_inputs, hidden_dims, n_classes)
    out: list[Gemm] = []
    for i, (m_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        out.append(Gemm(batch, m_in, n_out, tb=True))        # forward
        out.append(Gemm(n_out, batch, m_in, ta=True))         # L1
        if i > 0:
            out.append(Gemm(batch, n_out, m_in))              # L3
    return out


def epoch_flop(n_inputs: int, hidden_dims: list[int], n_classes: int, batch: int, n_train: int) -> int:
    """Floating-point operations of one epoch's matrix products (drop_last batches)."""
    steps = n_train // batch
    return steps * sum(g.flop for g in step_gemms(n_inputs, hidden_dims, n_classes, batch))


def time_products(shapes: list[Gemm], repeats: int, *, operand: Callable[[np.ndarray], Any],
                  transpose: Callable[[Any], Any], empty: Callable[[tuple[int, int]], Any],
                  matmul: Callable[[Any, Any, Any], Any], synchronize: Callable[[], None],
                  clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds for ``repeats`` rounds of ``matmul(op(A), op(B), out=C)`` over ``shapes``: the
    GEMM-only timer of every backend, each passing its own library's operations.

    ``operand`` moves a host float64 array to the backend's device and dtype,
    ``transpose`` gives the transposed view, ``empty`` allocates the output.
    Operands are drawn once from ``np.random.default_rng(0)`` and stored in
    the layouts the training step uses (``ta``/``tb``: stored transposed and
    passed as a view, as autograd does for linear layers). One untimed round
    first; the device is synchronised before and after the clock.
    """
    rng = np.random.default_rng(0)
    ops = []
    for g in shapes:
        a = operand(rng.standard_normal((g.k, g.m) if g.ta else (g.m, g.k)))
        b = operand(rng.standard_normal((g.n, g.k) if g.tb else (g.k, g.n)))
        ops.append((transpose(a) if g.ta else a, transpose(b) if g.tb else b, empty((g.m, g.n))))
    for a, b, c in ops:
        matmul(a, b, c)
    synchronize()
    t0 = clock()
    for _ in range(repeats):
        for a, b, c in ops:
            matmul(a, b, c)
    synchronize()
    return clock() - t0
