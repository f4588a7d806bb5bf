"""The small interface every backend implements; the harness owns everything else.

The harness (``bench.run``) owns the training loop, the batch order, the
clocks and the records. A backend only knows how to hold the data on its
device, take one SGD step on a batch of row indices, evaluate a split, and
export/import its weights. A difference measured between two backends is then
a difference between frameworks and nothing else.

A backend that gathers its batches by row index may expose that gather as
``gather(idx) -> (x, y)`` (the batch on the device, as ``train_batch`` uses
it; no synchronisation): the timing discipline then times one epoch's gathers
alone (``bench.timing.GatherTime``).

Parameter state is exchanged as ``{name: np.ndarray}`` with the names and
shapes of ``nn.Linear`` inside an ``nn.ModuleList`` called ``linears``:
``linears.{i}.weight`` of shape (out, in) and ``linears.{i}.bias`` of shape
(out,), i = 0 for the input layer up to len(hidden_dims) for the output layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from bench.data.dataset import Dataset
from bench.roofline import Gemm


@dataclass
class StepRecords:
    """What a backend accumulated over the train_batch calls since the last pop."""

    losses: np.ndarray  # (n_steps,) float64: the mean batch loss of every step, in order
    correct: int        # training predictions that were right (from the forward pass of each step)
    seen: int           # training samples stepped on
    # backend-specific per-epoch seconds worth a column of their own, e.g. {"data_seconds": 4.5}
    # for a backend whose steps include producing the batches; they go into epochs.csv as they are
    extra: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    impl: str    # "numpy", "torch", ...
    device: str  # "cpu", "cuda", "cuda:1", ...

    def load_data(self, data: Dataset) -> None:
        """Put every split on the device once (no copy per step afterwards)."""

    def init_model(self, seed: int) -> None:
        """Build a fresh model and optimizer; the init is drawn from ``seed`` alone."""

    def device_indices(self, order: np.ndarray) -> Any:
        """Copy one epoch's row order (host int64) to the device, once per epoch.

        The harness slices the result and hands each slice to :meth:`train_batch`.
        """

    def train_batch(self, idx: Any) -> None:
        """One SGD step on training rows ``idx`` (a slice of :meth:`device_indices`).

        Must not synchronise the device: losses and correct counts stay on it
        until :meth:`pop_step_records`.
        """

    def pop_step_records(self) -> StepRecords:
        """Return and reset the per-step losses and correct counts."""

    def synchronize(self) -> None:
        """Wait until all queued device work is done (a no-op on CPU)."""

    def evaluate(self, split: str) -> tuple[float, float]:
        """(mean loss, accuracy) of the current weights on "val" or "test"."""

    def export_state(self) -> dict[str, np.ndarray]:
        """Copy of the weights as host arrays under the shared names."""

    def import_state(self, state: dict[str, np.ndarray]) -> None:
        """Overwrite the weights (and reset optimizer state) from shared names."""

    def gemm_seconds(self, shapes: list[Gemm], repeats: int) -> float:
        """Seconds for ``repeats`` rounds of the matrix products alone, synchronised.

        Each :class:`bench.roofline.Gemm` is (m, k, n) with ``ta``/``tb``: which
        operand is stored transposed, as in the training step.
        """

    def describe(self) -> dict[str, Any]:
        """Options worth recording with every result (threads, compile mode, dtype, ...)."""

    def peak_memory_bytes(self) -> int | None:
        """Peak device memory of this backend's run, or None where it cannot be measured."""


def check_state(own: dict[str, tuple[int, ...]], state: dict[str, Any]) -> None:
    """A ValueError naming every missing, unexpected or wrongly shaped entry of ``state`` against the
    model's {name: shape}."""
    problems = [f"missing {n}" for n in own if n not in state]
    problems += [f"unexpected {n}" for n in state if n not in own]
    problems += [f"{n} has shape {tuple(np.shape(state[n]))}, expected {tuple(s)}"
                 for n, s in own.items() if n in state and tuple(np.shape(state[n])) != tuple(s)]
    if problems:
        raise ValueError("import_state: " + "; ".join(problems))
