"""The numerics every check shares: tolerances, relative errors, finite differences, guarded calls.

Everything is float64. An error is norm-wise over a whole array::

    rel_error(a, b) = ||a - b|| / max(||a||, ||b||, FLOOR)

so an array that is exactly zero on both sides has error 0, and a non-finite
value where the reference is finite has error inf. The finite-difference
check is the vector-Jacobian form with a random upstream gradient ``dout``:
entry i of the numerical gradient is
``sum((f(x + h e_i) - f(x - h e_i)) * dout) / ((x_i + h) - (x_i - h))``
(central, h = FD_STEP; the denominator is the step actually taken, which
matters at logits of 1e3, where x + h rounds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FD_STEP = 1e-6       # central differences: truncation ~h^2, rounding ~1e-16 / h = 1e-10
FD_TOL = 1e-6        # finite differences against the user's own backward
AUTOGRAD_TOL = 1e-10 # the same computation in float64 torch: only rounding differs
REPEAT_TOL = 1e-12   # a second identical forward/backward must give the same numbers
FLOOR = 1e-3         # the smallest norm an error is relative to (exact zeros stay exact)
# A deviation from the exact value that a numerical stabiliser explains (an eps inside a log, an eps
# in a softmax's denominator) is a note while it stays below this: LOCKSTEP_RTOL of bench.lockstep,
# the relative loss difference from which two lock-step runs are said to have parted.
STABILISER_BOUND = 1e-4


class UserCodeError(Exception):
    """The user's code raised, or returned something unusable, during ``phase``."""

    def __init__(self, phase: str, message: str):
        self.phase = phase
        self.message = message
        super().__init__(f"{phase}: {message}")


def call(phase: str, fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, with anything it raises (``sys.exit`` too) turned into
    :class:`UserCodeError` for ``phase``.

    NumPy floating-point warnings are silenced: an overflow shows as inf/nan in
    the result, which the comparison reports.
    """
    try:
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)
    except (UserCodeError, KeyboardInterrupt):
        raise
    except BaseException as exc:  # noqa: BLE001 - the user's code may raise anything, SystemExit too
        text = " ".join(str(exc).split())
        text = text if len(text) <= 120 else text[:117] + "..."
        raise UserCodeError(phase, f"raised {type(exc).__name__}: {text}") from None


def as_array(phase: str, value: Any) -> np.ndarray:
    """A float64 copy of the NumPy array the user returned; anything else is a :class:`UserCodeError`
    (a list would pass here and then break in training, where arrays are expected)."""
    if not isinstance(value, np.ndarray):
        raise UserCodeError(phase, f"returned {type(value).__name__}, not a NumPy array")
    try:
        return np.array(value, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as exc:
        raise UserCodeError(phase, f"returned an array of {value.dtype}, not numbers ({exc})") from None


def as_value(phase: str, value: Any) -> np.ndarray:
    """:func:`as_array`, a number (a loss) admitted as a 0-d array."""
    if isinstance(value, (float, int, np.number)) and not isinstance(value, bool):
        value = np.asarray(value)
    return as_array(phase, value)


def as_scalar(phase: str, value: Any) -> np.ndarray:
    """A loss as a 0-d float64 array: a number, a NumPy scalar or an array of one element."""
    arr = as_value(phase, value)
    if arr.size != 1:
        raise UserCodeError(phase, f"returned shape {arr.shape}, expected a scalar (the mean loss)")
    return arr.reshape(())


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / max(||a||, ||b||, FLOOR); inf when a is not finite where b is."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if not np.all(np.isfinite(a)) and np.all(np.isfinite(b)):
        return float("inf")
    with np.errstate(all="ignore"):
        diff = float(np.linalg.norm((a - b).ravel()))
        scale = max(float(np.linalg.norm(a.ravel())), float(np.linalg.norm(b.ravel())), FLOOR)
    return diff / scale if np.isfinite(diff) else float("inf")


def numerical_vjp(f: Callable[[], Any], arr: np.ndarray, dout: np.ndarray | float,
                  h: float = FD_STEP) -> np.ndarray:
    """sum((f(arr + h e_i) - f(arr - h e_i)) * dout) / step_i for every entry i of ``arr``.

    ``arr`` is perturbed in place and restored; ``f()`` evaluates the function
    (reading ``arr``) and returns its output, of the shape of ``dout``.
    Shape: the result has the shape of ``arr``.
    """
    grad = np.zeros(arr.shape, dtype=np.float64)
    for i in np.ndindex(arr.shape):
        old = arr[i]
        arr[i] = old + h
        plus, hi = as_array("forward", f()), arr[i]
        arr[i] = old - h
        minus, lo = as_array("forward", f()), arr[i]
        arr[i] = old
        if plus.shape != np.shape(dout) or minus.shape != np.shape(dout):
            raise UserCodeError("forward", f"returned shape {plus.shape}, expected {np.shape(dout)}")
        with np.errstate(all="ignore"):
            grad[i] = np.sum((plus - minus) * dout) / (hi - lo)
    return grad


@dataclass
class Case:
    """One set of inputs for a module: ``data`` holds x, dout, weight, bias, y, alpha as needed."""

    label: str                       # "S=5, M=1, N=2"; "S=4, C=5, logits ±1e3"
    data: dict[str, Any] = field(default_factory=dict)
    large: bool = False              # logits of magnitude 1e3
    representative: bool = False     # the shape a failure is shown at when it fails there too


@dataclass
class Comparison:
    """One quantity of one case: the user's value against the reference."""

    case: Case
    quantity: str                    # "output", "loss", "dL/dx", "dL/dW", "dL/db", "dL/dz"
    user: np.ndarray | None
    ref: np.ndarray
    error: float
    note: str = ""                   # e.g. "shape (3, 4), expected (4, 3)"
    stabiliser: str = ""             # the stabiliser that explains the deviation, when one does


def compare(case: Case, quantity: str, user: np.ndarray, ref: np.ndarray) -> Comparison:
    """The relative error of ``user`` against ``ref``; a shape mismatch is error inf, with a note."""
    user, ref = np.asarray(user, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if user.shape != ref.shape:
        return Comparison(case, quantity, user, ref, float("inf"),
                          f"shape {user.shape}, expected {ref.shape}")
    return Comparison(case, quantity, user, ref, rel_error(user, ref))


@dataclass
class Issue:
    """A side effect found by a probe: a short tag for the table, a sentence for the diagnosis."""

    short: str                       # "dout changed by backward"
    text: str                        # "backward: changes its argument dout in place ..."


@dataclass
class CheckOutcome:
    """One row of the table: one check of one module, over all its cases."""

    module: str                      # "LinearModule", "SoftMax → CrossEntropy", "MLP"
    check: str                       # "finite differences", "autograd (torch)", "side effects", ...
    tol: float
    comparisons: list[Comparison] = field(default_factory=list)
    errors: list[tuple[Case, UserCodeError]] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)

    notes: list[str] = field(default_factory=list)  # found, explained, not a failure

    @property
    def passed(self) -> bool:
        return not self.errors and not self.issues and not self.wrong()

    def wrong(self) -> list[Comparison]:
        """The comparisons beyond the tolerance, less those a stabiliser explains within its bound."""
        return [c for c in self.comparisons if c.error > self.tol
                and not (c.stabiliser and c.error <= STABILISER_BOUND)]

    def worst(self) -> Comparison | None:
        """The comparison a row shows: where it is wrong, at the representative case when it is
        wrong there too (not at a degenerate shape of one sample), else the largest error."""
        wrong = self.wrong()
        typical = [c for c in wrong if c.case.representative]
        return max(typical or wrong or self.comparisons, key=lambda c: c.error, default=None)
