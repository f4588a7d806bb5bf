"""The GEMM-only reference time with torch: the epoch's matrix products and nothing else."""

from __future__ import annotations

import time

import torch

from bench.roofline import Gemm
from impl_torch.device import synchronize


def gemm_seconds(shapes: list[Gemm] | list[tuple[int, int, int]], repeats: int, device: torch.device,
                 dtype: torch.dtype) -> float:
    """Seconds for ``repeats`` rounds of ``torch.mm(op(A), op(B), out=C)`` over ``shapes``.

    Operands are allocated once, in the stated layouts (``ta``/``tb``: stored
    transposed and passed as a ``.t()`` view, as autograd does for linear
    layers). One untimed round first; the device is synchronised before and
    after the clock.
    """
    gen = torch.Generator().manual_seed(0)
    ops = []
    for s in shapes:
        g = s if isinstance(s, Gemm) else Gemm(*s)  # plain (m, k, n) tuples: no transposes
        a = torch.randn((g.k, g.m) if g.ta else (g.m, g.k), generator=gen, dtype=dtype).to(device)
        b = torch.randn((g.n, g.k) if g.tb else (g.k, g.n), generator=gen, dtype=dtype).to(device)
        c = torch.empty((g.m, g.n), dtype=dtype, device=device)
        ops.append((a.t() if g.ta else a, b.t() if g.tb else b, c))  # (m, k), (k, n), (m, n)
    for a, b, c in ops:
        torch.mm(a, b, out=c)
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        for a, b, c in ops:
            torch.mm(a, b, out=c)
    synchronize(device)
    return time.perf_counter() - t0
