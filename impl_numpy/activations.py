"""Element-wise activations and their derivatives, registered by name (docs/derivations.md §2).

``ACTIVATIONS[name](x, out, scratch, alpha)`` writes ``h(x)`` into ``out``;
``DERIVATIVES[name](y, out, scratch, alpha)`` writes ``h'(x)`` into ``out``,
computed from the cached *output* ``y = h(x)``: it is cheaper than from ``x``
for every activation here, and ``x`` need not be kept for the backward pass.
The caller multiplies by the upstream gradient (A1).

``out`` and ``x``/``y`` have the same shape (S, N). ``scratch(dtype)`` returns
a work array of that shape (preallocated when the module reuses buffers);
``alpha`` is only read by ELU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from impl_numpy.xp import get_namespace

Scratch = Callable[[Any], Any]


def elu(x, out, scratch: Scratch, alpha: float = 1.0):
    """h(x) = x for x > 0, alpha (e^x - 1) for x <= 0."""
    xp = get_namespace(x)
    if alpha <= 1.0:
        # NOTE: three passes and no scratch instead of five. For alpha <= 1,
        # alpha (e^x - 1) >= x when x <= 0 (equal at 0, and the left side
        # falls more slowly as x decreases), so max(alpha (e^min(x,0) - 1), x)
        # is x for x > 0 and the ELU branch for x <= 0.
        xp.minimum(x, 0, out=out)   # min(x, 0): exp never overflows
        xp.expm1(out, out=out)      # e^min(x,0) - 1, exact near 0 where e^x - 1 would cancel
        if alpha != 1.0:
            out *= alpha            # alpha (e^x - 1) for x <= 0, 0 for x > 0
        return xp.maximum(out, x, out=out)
    neg = scratch(x.dtype)
    xp.minimum(x, 0, out=neg)       # min(x, 0)
    xp.expm1(neg, out=neg)          # e^min(x,0) - 1
    neg *= alpha                    # alpha (e^x - 1) for x <= 0, 0 for x > 0
    xp.maximum(x, 0, out=out)       # max(x, 0)
    out += neg
    return out


def elu_derivative(y, out, scratch: Scratch, alpha: float = 1.0):
    """h'(x) from y = h(x): 1 where y > 0 (same as x > 0), y + alpha elsewhere."""
    xp = get_namespace(y)
    if alpha == 1.0:
        # NOTE: two passes, no mask, for the default alpha: y + 1 <= 1 exactly when y <= 0.
        xp.add(y, 1.0, out=out)     # A2: h'(x) = h(x) + alpha for x <= 0
        return xp.minimum(out, 1.0, out=out)  # A2: h'(x) = 1 for x > 0
    pos = scratch(bool)
    xp.greater(y, 0, out=pos)       # x > 0  <=>  h(x) > 0
    xp.add(y, alpha, out=out)       # A2: h'(x) = alpha e^x = h(x) + alpha for x <= 0
    xp.copyto(out, 1, where=pos)    # A2: h'(x) = 1 for x > 0
    return out


def relu(x, out, scratch: Scratch, alpha: float = 1.0):
    """h(x) = max(x, 0)."""
    return get_namespace(x).maximum(x, 0, out=out)


def relu_derivative(y, out, scratch: Scratch, alpha: float = 1.0):
    """h'(x) = 1[x > 0] = 1[h(x) > 0] (0 at x = 0, as in torch)."""
    return get_namespace(y).greater(y, 0, out=out)  # A3


def tanh(x, out, scratch: Scratch, alpha: float = 1.0):
    """h(x) = tanh(x)."""
    return get_namespace(x).tanh(x, out=out)


def tanh_derivative(y, out, scratch: Scratch, alpha: float = 1.0):
    """h'(x) = 1 - tanh(x)^2 = 1 - h(x)^2."""
    xp = get_namespace(y)
    xp.multiply(y, y, out=out)      # h(x)^2
    xp.subtract(1, out, out=out)    # A4: h'(x) = 1 - h(x)^2
    return out


ACTIVATIONS = {"elu": elu, "relu": relu, "tanh": tanh}
DERIVATIVES = {"elu": elu_derivative, "relu": relu_derivative, "tanh": tanh_derivative}
