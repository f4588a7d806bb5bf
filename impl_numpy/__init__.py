"""The from-scratch NumPy MLP: modules whose backward passes are docs/derivations.md, line by line.

Public API: the course-style modules (:mod:`impl_numpy.modules`), the
activation tables (:mod:`impl_numpy.activations`), :class:`MLP` and
:class:`SGD`. Nothing here imports the harness (``bench``); the harness adapts
this package in ``bench/backends/numpy_backend.py``.
"""

from impl_numpy.activations import ACTIVATIONS, DERIVATIVES
from impl_numpy.mlp import MLP
from impl_numpy.modules import (
    CrossEntropyModule,
    ELUModule,
    LinearModule,
    ReLUModule,
    ResidualBlock,
    SoftmaxCrossEntropyModule,
    SoftMaxModule,
    TanhModule,
    make_activation,
)
from impl_numpy.optim import SGD

__all__ = [
    "ACTIVATIONS", "DERIVATIVES", "MLP", "SGD",
    "CrossEntropyModule", "ELUModule", "LinearModule", "ReLUModule", "ResidualBlock",
    "SoftmaxCrossEntropyModule", "SoftMaxModule", "TanhModule", "make_activation",
]
