"""The matrix products of one training epoch, for the GEMM-only reference time.

An epoch of an MLP is, at its core, a fixed list of matrix products. Timing
exactly that list with each backend's own library on its own device gives the
floor an implementation could reach; ``epoch_seconds / gemm_seconds`` says how
close it comes. The list is derived from the config here, once, for every
backend.
"""

from __future__ import annotations

from typing import NamedTuple


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
    widths = [n_inputs, *hidden_dims, n_classes]
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


GEMM_REPEATS = 3  # GEMM-only epochs timed per backend; the median is reported


def measure_gemms(backend, config, n_features: int, n_classes: int, n_train: int) -> float:
    """Median seconds of one epoch's matrix products alone on ``backend`` (after one warm-up round)."""
    import numpy as np

    shapes = step_gemms(n_features, config.hidden_dims, n_classes, config.batch_size)
    steps = n_train // config.batch_size
    backend.gemm_seconds(shapes, max(1, steps // 10))  # warm-up
    return float(np.median([backend.gemm_seconds(shapes, steps) for _ in range(GEMM_REPEATS)]))


def roofline_columns(median_epoch_seconds, gemm_seconds, flop: int) -> dict:
    """epoch/GEMM ratio and GFLOP/s, for floats or pandas columns alike (NaN GEMM time → NaN)."""
    return {"epoch_to_gemm": median_epoch_seconds / gemm_seconds,
            "achieved_gflops": flop / median_epoch_seconds / 1e9,
            "gemm_gflops": flop / gemm_seconds / 1e9}
