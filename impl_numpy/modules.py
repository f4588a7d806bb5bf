"""The layers as forward/backward pairs; each backward line is one equation of docs/derivations.md.

Course-compatible interface: every module has ``forward``, ``backward`` and
``clear_cache()``; ``backward(dout)`` returns ``dx``; :class:`LinearModule`
keeps ``params`` and ``grads`` dicts (``weight`` (out, in), ``bias`` (out,)),
and ``backward`` overwrites the grads. The two losses take ``(x, y)`` in both
``forward`` and ``backward``, with integer labels ``y``.

Names: ``d<name>`` is dL/d<name>; ``dout`` is the gradient arriving from the
layer above. Shapes: S samples, M input features, N output features, C classes.

Plain NumPy: every call returns fresh arrays. (A buffer pool reused between
steps, and a ctypes BLAS axpy in the optimizer, each bought under 5 % of an
epoch at nominal machine speed and were removed; the README's "Measured
speed" gives the figures.) The parameters' gradients are written into the
``grads`` arrays in place, because the optimizer holds those arrays.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from impl_numpy.activations import ACTIVATIONS, DERIVATIVES
from impl_numpy.xp import get_namespace


class Module:
    """Shared plumbing: the cache reset."""

    def clear_cache(self) -> None:
        """Drop what forward kept for backward."""


# ---------------------------------------------------------------- linear layer


class LinearModule(Module):
    """Y = X Wᵀ + b.

    Shape: input (S, M = in_features) -> output (S, N = out_features);
    ``params['weight']`` (N, M), ``params['bias']`` (N,), ``grads`` alike.

    Init (:meth:`reset_parameters`): weight ~ Normal(0, std²) with
    std = sqrt(2 / M) (Kaiming normal, fan-in, the ReLU gain 2), or
    std = sqrt(1 / M) for the input layer (no gain: its input is the data, not
    a rectified activation), unless ``std`` is given (the MLP gives the layers
    of residual blocks theirs, ``impl_common.arch.init_std``); bias and grads
    zero. The draw is made on the host from ``rng`` (a fresh
    ``np.random.default_rng()`` when None) in float64, then cast to ``dtype``,
    so a seed gives the same weights on CPU and GPU.
    """

    def __init__(self, in_features: int, out_features: int, input_layer: bool = False, *,
                 rng: np.random.Generator | None = None, dtype: Any = np.float64, xp: Any = None,
                 std: float | None = None):
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.input_layer = bool(input_layer)
        self.std = std
        self.dtype = np.dtype(dtype)
        self.xp = np if xp is None else xp
        shapes = {"weight": (self.out_features, self.in_features), "bias": (self.out_features,)}
        self.params = {k: self.xp.zeros(s, dtype=self.dtype) for k, s in shapes.items()}
        self.grads = {k: self.xp.zeros(s, dtype=self.dtype) for k, s in shapes.items()}
        self._x = None
        self.reset_parameters(rng)

    def reset_parameters(self, rng: np.random.Generator | None = None) -> None:
        """Kaiming-normal weight on fan-in (no gain for the input layer) or the given std, zero bias."""
        rng = np.random.default_rng() if rng is None else rng
        std = self.std if self.std is not None else math.sqrt(
            (1.0 if self.input_layer else 2.0) / self.in_features)
        weight = rng.normal(0.0, std, size=(self.out_features, self.in_features))
        self.params["weight"][...] = self.xp.asarray(weight, dtype=self.dtype)
        self.params["bias"][...] = 0

    def forward(self, x):
        """(S, M) -> (S, N); keeps ``x`` for L1 and L3."""
        self._x = x
        y = x @ self.params["weight"].T  # X W^T, (S, N)
        y += self.params["bias"]         # Y = X W^T + b, (S, N)
        return y

    def backward(self, dout, input_grad: bool = True):
        """dout (S, N) -> dx (S, M); fills ``grads``. ``input_grad=False`` skips L3, returns None."""
        x, w = self._x, self.params["weight"]
        if x is None:
            raise RuntimeError("LinearModule.backward called without a cached forward pass")
        xp = get_namespace(dout)
        xp.matmul(dout.T, x, out=self.grads["weight"])   # L1: dL/dW = dout^T X, (N, M)
        dout.sum(axis=0, out=self.grads["bias"])         # L2: dL/db = sum_s dout_s, (N,)
        if not input_grad:
            # NOTE: the input layer's dx is never used in training; skipping L3
            # saves a third of that layer's GEMM work.
            return None
        return dout @ w                                  # L3: dL/dX = dout W, (S, M)

    def clear_cache(self) -> None:
        self._x = None

    def __repr__(self) -> str:
        extra = ", input_layer=True" if self.input_layer else ""
        return f"LinearModule(in_features={self.in_features}, out_features={self.out_features}{extra})"


# ---------------------------------------------------------------- activations


class _ActivationModule(Module):
    """y = h(x) element-wise; backward is A1 with h'(x) from the cached output."""

    name = ""

    def __init__(self, alpha: float = 1.0):
        self.alpha = float(alpha)
        self._y = None

    def forward(self, x):
        """(S, N) -> (S, N); keeps the output for backward."""
        self._y = ACTIVATIONS[self.name](x, self.alpha)  # (S, N)
        return self._y

    def backward(self, dout):
        """dout (S, N) -> dx (S, N)."""
        y = self._y
        if y is None:
            raise RuntimeError(f"{type(self).__name__}.backward called without a cached forward pass")
        dx = DERIVATIVES[self.name](y, self.alpha)  # h'(x) from the output y, (S, N)
        dx *= dout                                   # A1: dL/dx = dout * h'(x), (S, N)
        return dx

    def clear_cache(self) -> None:
        self._y = None


class ELUModule(_ActivationModule):
    """ELU: x for x > 0, alpha (e^x - 1) otherwise. Shape: any, output the same."""

    name = "elu"

    def __repr__(self) -> str:
        return f"ELUModule(alpha={self.alpha:g})"


class ReLUModule(_ActivationModule):
    """ReLU: max(x, 0). Shape: any, output the same."""

    name = "relu"

    def __init__(self):
        super().__init__()

    def __repr__(self) -> str:
        return "ReLUModule()"


class TanhModule(_ActivationModule):
    """tanh(x). Shape: any, output the same."""

    name = "tanh"

    def __init__(self):
        super().__init__()

    def __repr__(self) -> str:
        return "TanhModule()"


def make_activation(name: str, alpha: float = 1.0) -> _ActivationModule:
    """The activation module called ``name`` ("elu", "relu" or "tanh")."""
    if name == "elu":
        return ELUModule(alpha)
    if name == "relu":
        return ReLUModule()
    if name == "tanh":
        return TanhModule()
    raise ValueError(f"unknown activation {name!r} (allowed: {', '.join(ACTIVATIONS)})")


# ---------------------------------------------------------------- softmax and losses


def _labels(y, xp):
    """Integer class ids (S,); one-hot rows (S, C) are accepted and converted."""
    if type(y) is np.ndarray and y.ndim == 1:
        return y
    y = xp.asarray(y)
    return xp.argmax(y, axis=1) if y.ndim == 2 else y


class SoftMaxModule(Module):
    """p = softmax(z) row by row. Shape: (S, C) -> (S, C)."""

    def __init__(self):
        self._p = None

    def forward(self, x):
        xp = get_namespace(x)
        e = xp.exp(x - x.max(axis=1, keepdims=True))  # S1: exp(z - max z): the same softmax, no overflow
        self._p = e / e.sum(axis=1, keepdims=True)     # S1: normalise each row, (S, C)
        return self._p

    def backward(self, dout):
        """dout = dL/dp (S, C) -> dL/dz (S, C)."""
        p = self._p
        if p is None:
            raise RuntimeError("SoftMaxModule.backward called without a cached forward pass")
        inner = (dout * p).sum(axis=1, keepdims=True)  # S2: sum_k (dL/dp)_k p_k, (S, 1)
        return p * (dout - inner)                      # S2: dL/dz = p * (dL/dp - inner), (S, C)

    def clear_cache(self) -> None:
        self._p = None

    def __repr__(self) -> str:
        return "SoftMaxModule()"


class CrossEntropyModule(Module):
    """L = -(1/S) sum_s log p[s, y_s] on probabilities. Shapes: x (S, C), y (S,) int -> scalar."""

    def forward(self, x, y):
        xp = get_namespace(x)
        y = _labels(y, xp)
        return -xp.log(x[xp.arange(x.shape[0]), y]).mean()  # C1

    def backward(self, x, y):
        """dL/dx (S, C): nonzero only at the target entries."""
        xp = get_namespace(x)
        y = _labels(y, xp)
        rows = xp.arange(x.shape[0])
        dx = xp.zeros_like(x)
        dx[rows, y] = -1.0 / (x.shape[0] * x[rows, y])  # C2: dL/dp[s,k] = -1[k = y_s] / (S p[s,k]), (S, C)
        return dx

    def __repr__(self) -> str:
        return "CrossEntropyModule()"


class SoftmaxCrossEntropyModule(Module):
    """Softmax and cross-entropy fused, on logits z. Shapes: z (S, C), y (S,) int -> scalar.

    The loss is computed as ``logsumexp(z) - z_y`` (never as ``log(softmax)``,
    which underflows to log 0), and its gradient as ``(p - onehot(y)) / S``.

    The shortcut ``p - y`` holds because the loss is the mean cross-entropy of
    a *softmax* output against targets whose rows sum to 1 (here one-hot): the
    -1/p of C2 cancels the p of S2. It does not hold for other output
    functions (e.g. sigmoid), targets that do not sum to 1, per-class weights,
    or a sum instead of a mean (then drop the 1/S).
    """

    def __init__(self):
        self._z = None
        self._p = None

    def forward(self, z, y):
        xp = get_namespace(z)
        y = _labels(y, xp)
        rows = xp.arange(z.shape[0])
        shifted = z - z.max(axis=1, keepdims=True)           # z - max z: the loss is shift-invariant, (S, C)
        e = xp.exp(shifted)                                  # (S, C)
        s = e.sum(axis=1)                                    # (S,)
        loss = (xp.log(s) - shifted[rows, y]).mean()         # F1: L = mean_s (logsumexp(z_s) - z_s,y_s)
        self._z, self._p = z, e / s[:, None]                 # S1: p = softmax(z), (S, C)
        return loss

    def backward(self, z, y):
        """dL/dz (S, C); reuses the softmax of the forward pass when ``z`` is the same array."""
        if z is not self._z:
            self.forward(z, y)
        xp = get_namespace(z)
        y = _labels(y, xp)
        n = z.shape[0]
        dz = self._p / n                                     # p / S, (S, C)
        dz[xp.arange(n), y] -= 1 / n                         # F1: dL/dz = (p - onehot(y)) / S (the p - y shortcut)
        return dz

    def clear_cache(self) -> None:
        self._z = self._p = None

    def __repr__(self) -> str:
        return "SoftmaxCrossEntropyModule()"


# ---------------------------------------------------------------- residual block


class ResidualBlock(Module):
    """Y = X + Linear2(h(Linear1(X))). Shape: (S, F) -> (S, F), through N hidden units.

    ``linear1`` maps F -> N (any N) and ``linear2`` must map N -> F (N2 = F):
    the sum with X is element-wise, so it needs the block's own input width F.
    The batch size S never enters a layer's shape.
    """

    def __init__(self, linear1: LinearModule, activation: Module, linear2: LinearModule):
        f, n = linear1.in_features, linear1.out_features
        if linear2.in_features != n or linear2.out_features != f:
            raise ValueError(
                f"residual block: Linear1 maps {f} -> {n}, so Linear2 must map {n} -> {f} "
                f"(its output is added to the block's {f} input features), "
                f"got {linear2.in_features} -> {linear2.out_features}")
        self.linear1, self.activation, self.linear2 = linear1, activation, linear2

    @classmethod
    def build(cls, features: int, hidden: int, activation: str = "elu", *, alpha: float = 1.0,
              rng: np.random.Generator | None = None, dtype: Any = np.float64, xp: Any = None
              ) -> "ResidualBlock":
        """A block F -> N -> F with fresh Kaiming-initialised linear layers."""
        rng = np.random.default_rng() if rng is None else rng
        return cls(LinearModule(features, hidden, rng=rng, dtype=dtype, xp=xp),
                   make_activation(activation, alpha),
                   LinearModule(hidden, features, rng=rng, dtype=dtype, xp=xp))

    def forward(self, x):
        a = self.linear1.forward(x)     # (S, N)
        a = self.activation.forward(a)  # (S, N)
        y = self.linear2.forward(a)     # f(X), (S, F)
        y += x                          # Y = X + f(X), (S, F)
        return y

    def backward(self, dout):
        """dout (S, F) -> dx (S, F); fills both linear layers' grads."""
        da = self.linear2.backward(dout)  # L1-L3 of Linear2, (S, N)
        da = self.activation.backward(da) # A1, (S, N)
        return dout + self.linear1.backward(da)  # R1: dL/dX = dout + dout sent back through f, (S, F)

    def clear_cache(self) -> None:
        for m in (self.linear1, self.activation, self.linear2):
            m.clear_cache()

    def __repr__(self) -> str:
        return f"ResidualBlock({self.linear1!r}, {self.activation!r}, {self.linear2!r})"
