"""The benchmark grid, the one set of host inputs every backend gets, and how each backend receives them.

Every input is drawn once per size from ``np.random.default_rng(0)`` in
float32 on the host and then copied to each backend (NumPy or CuPy array,
CPU or CUDA tensor), so all backends compute on the same numbers. The host
arrays are read-only; each backend works on its own copy.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

N_INPUTS = 3072   # CIFAR-10 pixels, 3 x 32 x 32
N_CLASSES = 10
BATCHES = (32, 128, 1024)
HIDDENS = (128, 1024)
SIZES = [(b, h) for b in BATCHES for h in HIDDENS]
SIZE_IDS = [f"b{b}-h{h}" for b, h in SIZES]
BACKENDS = ("numpy:cpu", "torch:cpu", "jax:cpu", "numpy:cuda", "torch:cuda", "jax:cuda")
DTYPE = np.float32
DTYPE_NAME = "float32"


@dataclass(frozen=True)
class HostInputs:
    """Every operand of every benchmark at one (batch, hidden) size; host float32, read-only."""

    x: np.ndarray       # (B, 3072) input rows, N(0, 1) like normalised pixels
    weight: np.ndarray  # (H, 3072) first-layer weight, N(0, 1/3072) as the input-layer init
    bias: np.ndarray    # (H,) zeros, as the init
    dlin: np.ndarray    # (B, H) upstream gradient of the linear output
    h: np.ndarray       # (B, H) pre-activation
    dh: np.ndarray      # (B, H) upstream gradient of the activation output
    logits: np.ndarray  # (B, 10)
    y: np.ndarray       # (B,) int64 labels in [0, 10)
    state: dict[str, np.ndarray]  # the MLP 3072 -> H -> 10 under the shared names

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    @property
    def hidden(self) -> int:
        return self.weight.shape[0]


@functools.lru_cache(maxsize=None)
def host_inputs(batch: int, hidden: int) -> HostInputs:
    """The inputs of size (batch, hidden), drawn in a fixed order from ``default_rng(0)``."""
    rng = np.random.default_rng(0)

    def normal(shape: tuple[int, ...], std: float = 1.0) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=DTYPE) * DTYPE(std)).astype(DTYPE)

    x = normal((batch, N_INPUTS))                              # (B, 3072)
    weight = normal((hidden, N_INPUTS), math.sqrt(1 / N_INPUTS))  # (H, 3072)
    bias = np.zeros(hidden, dtype=DTYPE)                       # (H,)
    dlin = normal((batch, hidden))                             # (B, H)
    h = normal((batch, hidden))                                # (B, H)
    dh = normal((batch, hidden))                               # (B, H)
    logits = normal((batch, N_CLASSES))                        # (B, 10)
    y = rng.integers(0, N_CLASSES, size=batch, dtype=np.int64)  # (B,)
    state = {"linears.0.weight": weight, "linears.0.bias": bias,
             "linears.1.weight": normal((N_CLASSES, hidden), math.sqrt(2 / hidden)),  # (10, H)
             "linears.1.bias": np.zeros(N_CLASSES, dtype=DTYPE)}                    # (10,)
    out = HostInputs(x=x, weight=weight, bias=bias, dlin=dlin, h=h, dh=dh, logits=logits, y=y,
                     state=state)
    for a in (x, weight, bias, dlin, h, dh, logits, y, *state.values()):
        a.flags.writeable = False
    return out


def unavailable_reason(name: str) -> str | None:
    """Why backend ``name`` cannot run here, or None when it can."""
    impl, _, device = name.partition(":")
    if impl == "jax":
        from bench.backends.jax_backend import available as jax_available

        ok, reason = jax_available(device)
        return None if ok else reason
    if device == "cpu":
        return None
    if impl == "torch":
        return None if torch.cuda.is_available() else "no CUDA device (torch.cuda.is_available() is False)"
    if importlib.util.find_spec("cupy") is None:
        return "CuPy not installed (pip install '.[cuda]')"
    from bench.backends.numpy_backend import available

    ok, reason = available(device)
    return None if ok else reason


@dataclass(frozen=True)
class BackendSpec:
    """One ``impl:device`` pair: where its arrays live and how to wait for its device."""

    name: str    # "numpy:cpu", "torch:cuda", "jax:cpu", ...
    impl: str    # "numpy", "torch" or "jax"
    device: str  # "cpu" or "cuda"

    @classmethod
    def parse(cls, name: str) -> "BackendSpec":
        impl, _, device = name.partition(":")
        return cls(name, impl, device)

    @property
    def xp(self) -> Any:
        """The array module of a NumPy-implementation backend: numpy, or cupy on CUDA."""
        if self.device == "cpu":
            return np
        import cupy

        return cupy

    def array(self, a: np.ndarray) -> Any:
        """A NumPy-implementation backend's own copy of host array ``a`` (NumPy or CuPy)."""
        return np.array(a) if self.device == "cpu" else self.xp.asarray(a)

    def jarray(self, a: np.ndarray) -> Any:
        """A JAX backend's own copy of host array ``a`` on its device."""
        import jax

        return jax.device_put(a, jax.devices(self.device)[0])

    def tensor(self, a: np.ndarray, requires_grad: bool = False) -> torch.Tensor:
        """A torch backend's own copy of host array ``a`` on its device, a leaf tensor."""
        return torch.tensor(a, device=self.device).requires_grad_(requires_grad)

    def synchronize(self) -> None:
        """Wait for every queued kernel of this backend's device (a no-op on the CPU)."""
        if self.device == "cpu":
            return
        if self.impl == "torch":
            torch.cuda.synchronize()
        else:
            from impl_numpy.xp import synchronize

            synchronize(self.xp)

    def synchronized(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        """``fn``, followed on a GPU by a device synchronisation, so a timing covers its kernels;
        for JAX, on any device, by ``block_until_ready`` on what it returned (JAX dispatches
        asynchronously on the CPU too).

        The wrapper returns what ``fn`` returns.
        """
        if self.impl == "jax":
            import jax

            return lambda: jax.block_until_ready(fn())
        if self.device == "cpu":
            return fn

        def call() -> Any:
            out = fn()
            self.synchronize()
            return out

        return call
