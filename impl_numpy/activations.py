"""Element-wise activations and their derivatives, registered by name (docs/derivations.md §2).

``ACTIVATIONS[name](x, alpha)`` returns ``h(x)``; ``DERIVATIVES[name](y, alpha)``
returns ``h'(x)`` computed from the cached *output* ``y = h(x)``: it is
cheaper than from ``x`` for every activation here, and ``x`` need not be kept
for the backward pass. The caller multiplies by the upstream gradient (A1).
Shapes: any; the result has the shape of the argument. ``alpha`` is only read
by ELU.
"""

from __future__ import annotations

from impl_numpy.xp import get_namespace


def elu(x, alpha: float = 1.0):
    """h(x) = x for x > 0, alpha (e^x - 1) for x <= 0."""
    xp = get_namespace(x)
    # expm1 of min(x, 0): exact near 0, where e^x - 1 would cancel, and never overflowing
    if alpha > 1.0:
        return xp.where(x > 0, x, alpha * xp.expm1(xp.minimum(x, 0)))
    # NOTE: three passes over one new array instead of five: for alpha <= 1, alpha (e^x - 1) >= x
    # when x <= 0 (equal at 0, and the left side falls more slowly as x decreases), so
    # max(alpha (e^min(x,0) - 1), x) is x for x > 0 and the ELU branch for x <= 0
    out = xp.expm1(xp.minimum(x, 0))
    if alpha != 1.0:
        out *= alpha
    return xp.maximum(out, x, out=out)


def elu_derivative(y, alpha: float = 1.0):
    """h'(x) from y = h(x): 1 where y > 0 (same as x > 0), y + alpha elsewhere."""
    xp = get_namespace(y)
    if alpha != 1.0:
        return xp.where(y > 0, y.dtype.type(1), y + y.dtype.type(alpha))  # A2
    # NOTE: two passes, no mask, for the default alpha: y + 1 <= 1 exactly when y <= 0
    return xp.minimum(y + 1, 1)  # A2: h'(x) = h(x) + alpha for x <= 0, 1 for x > 0


def relu(x, alpha: float = 1.0):
    """h(x) = max(x, 0)."""
    return get_namespace(x).maximum(x, 0)


def relu_derivative(y, alpha: float = 1.0):
    """h'(x) = 1[x > 0] = 1[h(x) > 0] (0 at x = 0, as in torch)."""
    return (y > 0).astype(y.dtype)  # A3


def tanh(x, alpha: float = 1.0):
    """h(x) = tanh(x)."""
    return get_namespace(x).tanh(x)


def tanh_derivative(y, alpha: float = 1.0):
    """h'(x) = 1 - tanh(x)^2 = 1 - h(x)^2."""
    return 1 - y * y  # A4


ACTIVATIONS = {"elu": elu, "relu": relu, "tanh": tanh}
DERIVATIVES = {"elu": elu_derivative, "relu": relu_derivative, "tanh": tanh_derivative}
