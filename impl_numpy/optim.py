"""Stochastic gradient descent with momentum and weight decay, the torch.optim.SGD update.

Kept apart from the model: it takes parallel lists (or dicts with the same
keys) of parameter and gradient arrays and updates the parameters in place.
Per parameter theta with gradient g, learning rate lr, momentum mu and weight
decay lam (docs/derivations.md §7):

    O1  d = g + lam theta
    O2  v = d at the first step, v = mu v + d afterwards   (only when mu > 0; then d = v)
    O3  theta = theta - lr d

which is torch.optim.SGD with dampening 0 and nesterov False.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from impl_numpy.xp import get_namespace


def _as_lists(params: Sequence[Any] | Mapping[str, Any], grads: Sequence[Any] | Mapping[str, Any]
              ) -> tuple[list[Any], list[Any]]:
    if isinstance(params, Mapping) or isinstance(grads, Mapping):
        if not (isinstance(params, Mapping) and isinstance(grads, Mapping)) or list(params) != list(grads):
            raise ValueError("params and grads must both be dicts with the same keys in the same order")
        return list(params.values()), list(grads.values())
    params, grads = list(params), list(grads)
    if len(params) != len(grads):
        raise ValueError(f"{len(params)} params but {len(grads)} grads")
    return params, grads


class SGD:
    """theta -= lr * v, with v built from the gradient by O1 and O2.

    ``params`` and ``grads``: parallel lists of arrays, or dicts with the same
    keys; each gradient has its parameter's shape. The optimizer reads the
    grads and never changes them.
    """

    def __init__(self, params: Sequence[Any] | Mapping[str, Any], grads: Sequence[Any] | Mapping[str, Any],
                 lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.params, self.grads = _as_lists(params, grads)
        for i, (p, g) in enumerate(zip(self.params, self.grads)):
            if p.shape != g.shape:
                raise ValueError(f"param {i} has shape {p.shape} but its grad {g.shape}")
        self.lr = float(lr)  # may be changed between steps
        self._momentum, self._weight_decay = float(momentum), float(weight_decay)
        self._velocity = [get_namespace(p).zeros_like(p) for p in self.params] if momentum else []
        # NOTE: one scratch array per parameter for lr d. With a fresh temporary of the (128, 3072)
        # input weight every step, epochs were 10-13 % slower than the old pooled code; with the
        # scratch, 3.7-7.1 % (README, "Measured speed")
        self._work = [get_namespace(p).empty_like(p) for p in self.params]
        self.steps = 0

    @property
    def momentum(self) -> float:
        """Fixed at construction (the buffers depend on it)."""
        return self._momentum

    @property
    def weight_decay(self) -> float:
        """Fixed at construction (the buffers depend on it)."""
        return self._weight_decay

    def reset(self) -> None:
        """Forget the momentum (the next step starts v from the gradient again)."""
        self.steps = 0

    def zero_grad(self) -> None:
        for g in self.grads:
            g[...] = 0

    def step(self) -> None:
        """One update of every parameter, in place."""
        lr, mu, lam, first = self.lr, self.momentum, self.weight_decay, self.steps == 0
        for i, (theta, g, work) in enumerate(zip(self.params, self.grads, self._work)):
            d = g + lam * theta if lam else g    # O1: d = g + lam theta, (shape of theta)
            if mu:
                v = self._velocity[i]
                if first:
                    v[...] = d                   # O2: v = d at the first step (torch copies the grad)
                else:
                    v *= mu
                    v += d                       # O2: v = mu v + d
                d = v
            theta -= get_namespace(d).multiply(d, lr, out=work)  # O3: theta = theta - lr d
        self.steps += 1

    def __repr__(self) -> str:
        return (f"SGD(lr={self.lr:g}, momentum={self.momentum:g}, weight_decay={self.weight_decay:g}, "
                f"params={len(self.params)})")
