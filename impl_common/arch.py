"""The architecture of the MLP, defined once for both implementations and the harness.

* the activation names both implementations provide;
* the layer widths ``[n_inputs, *hidden_dims, n_classes]``: linear layer i maps
  ``widths[i] -> widths[i + 1]``;
* the residual-width rule: residual blocks need hidden_dims ``[F, N1, F, N2, F, ...]``
  (docs/derivations.md §6: the second layer of a block maps back to the F
  features it adds to);
* the shared parameter names and shapes, those of ``nn.Linear`` layers in an
  ``nn.ModuleList`` called ``linears``: ``linears.{i}.weight`` (out, in) and
  ``linears.{i}.bias`` (out,), i = 0 for the input layer up to
  ``len(hidden_dims)`` for the output layer;
* the standard deviation each layer's weights are drawn with
  (:func:`init_std`, docs/derivations.md §1 and R2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

ACTIVATIONS = ("elu", "relu", "tanh")


def layer_widths(n_inputs: int, hidden_dims: Sequence[int], n_classes: int) -> list[int]:
    """``[n_inputs, *hidden_dims, n_classes]``: linear layer i maps widths[i] -> widths[i + 1]."""
    return [int(n_inputs), *(int(d) for d in hidden_dims), int(n_classes)]


def residual_dims_ok(dims: Sequence[int]) -> bool:
    """Whether ``dims`` can form residual blocks: [F, N1, F, N2, F, ...] (an odd count >= 3)."""
    return len(dims) >= 3 and len(dims) % 2 == 1 and all(d == dims[0] for d in dims[::2])


def residual_example(dims: Sequence[int]) -> list[int]:
    """A residual-compatible hidden_dims close to ``dims``, for error messages."""
    first = dims[0] if len(dims) else None
    width = first if isinstance(first, int) and not isinstance(first, bool) and first > 0 else 128
    n = max(3, len(dims) + (len(dims) % 2 == 0))
    return [width] * n


def check_widths(n_inputs: int, hidden_dims: Sequence[int], n_classes: int, activation: str,
                 residual: bool) -> None:
    """Raise ValueError naming the first problem with these settings (both constructors call it)."""
    dims = list(hidden_dims)
    if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        raise ValueError(f"hidden_dims must be a non-empty list of positive integers, got {dims}")
    if n_inputs < 1 or n_classes < 1:
        raise ValueError(f"layer widths must be positive: n_inputs={n_inputs}, n_classes={n_classes}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r} (allowed: {', '.join(ACTIVATIONS)})")
    if residual and not residual_dims_ok(dims):
        raise ValueError(
            f"residual=True cannot form residual blocks from hidden_dims {dims}: it needs "
            "[F, N1, F, N2, F, ...], an odd count of at least 3 with every other width equal "
            f"to the first, e.g. {residual_example(dims)}")


def init_std(i: int, widths: Sequence[int], residual: bool = False) -> float:
    """Standard deviation of the normal draw of linear layer i's weights (biases start at zero).

    Kaiming normal on the fan-in: ``sqrt(2 / fan_in)``, without the ReLU gain
    for the input layer (i = 0: its input is the data): ``sqrt(1 / fan_in)``.
    In a residual net (R2, Fixup: Zhang, Dauphin and Ma, ICLR 2019), with K
    blocks: the first layer of every block gets ``sqrt(2 / fan_in) / sqrt(K)``
    and the last layer of every block 0, so every block starts as the
    identity and the whole net trains at the reference learning rate.
    """
    fan_in = int(widths[i])
    kaiming = math.sqrt((1.0 if i == 0 else 2.0) / fan_in)
    n_hidden = len(widths) - 2
    if not residual or i == 0 or i > n_hidden - 1:  # the stem and the output layer: plain
        return kaiming
    blocks = (n_hidden - 1) // 2
    return kaiming / math.sqrt(blocks) if i % 2 == 1 else 0.0  # odd: a block's first layer


@dataclass(frozen=True)
class Arch:
    """An MLP's shape: everything both constructors need besides the weights."""

    n_inputs: int
    hidden_dims: tuple[int, ...]
    n_classes: int
    activation: str = "elu"
    alpha: float = 1.0
    residual: bool = False

    @property
    def widths(self) -> list[int]:
        return layer_widths(self.n_inputs, self.hidden_dims, self.n_classes)

    @property
    def n_linears(self) -> int:
        return len(self.hidden_dims) + 1

    def names(self) -> list[str]:
        """Parameter names in state (and flat-vector) order."""
        return [f"linears.{i}.{k}" for i in range(self.n_linears) for k in ("weight", "bias")]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """{name: shape}: weight (out, in), bias (out,)."""
        w = self.widths
        out: dict[str, tuple[int, ...]] = {}
        for i in range(self.n_linears):
            out[f"linears.{i}.weight"] = (w[i + 1], w[i])
            out[f"linears.{i}.bias"] = (w[i + 1],)
        return out

    def n_params(self) -> int:
        return sum(math.prod(s) for s in self.shapes().values())
