"""The batch gather of the NumPy-family backends (NumPy, CuPy; also the course and scikit-learn peers),
and the evaluated splits of every backend (:func:`upload_splits`, :func:`chunked_evaluate`).

A batch is gathered by row index from the normalised training split, or
(``Config.gather_from = "uint8"``) from the uint8 images and normalised as it
is gathered (``bench.data.dataset.normalise_into``): a quarter of the bytes
read, three passes of arithmetic more, and the numbers of the normalised split
bit for bit. The torch backends do the same with their own ops
(``TorchBackend.gather``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from bench.data.dataset import EVALUATED, Dataset, normalise_into
from impl_numpy.xp import take_rows


class RowGather:
    """``gather(idx) -> (x, y)``: training rows ``idx`` as (S, F) in ``dtype`` and (S,) int64.

    From the uint8 images when ``uint8`` and the dataset has them, else from
    its normalised rows. The results are buffers reused by the next call of the
    same size (or ``x`` when given).
    """

    def __init__(self, data: Dataset, dtype: Any, uint8: bool, xp: ModuleType = np):
        images, norm = data.train_source(dtype, uint8)
        self.xp, self.dtype = xp, np.dtype(dtype)
        self.images = xp.ascontiguousarray(xp.asarray(images, dtype=None if norm else self.dtype))
        self.norm = None if norm is None else tuple(xp.asarray(r) for r in norm)  # (F,), (F,)
        self.labels = xp.ascontiguousarray(xp.asarray(data.y_train, dtype=np.int64))  # (S_train,)
        self._buffers: dict[int, tuple[Any, Any, Any]] = {}

    def __call__(self, idx: Any, x: Any = None) -> tuple[Any, Any]:
        xb, y, raw = self._batch(idx.shape[0])
        x = xb if x is None else x
        if self.norm is None:
            take_rows(self.images, idx, out=x)                                 # (S, F)
        else:
            normalise_into(x, take_rows(self.images, idx, out=raw), *self.norm)  # (S, F)
        take_rows(self.labels, idx, out=y)                                     # (S,)
        return x, y

    def _batch(self, size: int) -> tuple[Any, Any, Any]:
        """(x, y, uint8 rows) buffers for ``size`` rows, made once per size."""
        bufs = self._buffers.get(size)
        if bufs is None:
            xp, width = self.xp, self.images.shape[1]
            bufs = self._buffers[size] = (xp.empty((size, width), self.dtype),
                                          xp.empty(size, np.int64),
                                          xp.empty((size, width), np.uint8) if self.norm else None)
        return bufs


def upload_splits(data: Dataset, put_x: Callable[[Any], Any], put_y: Callable[[Any], Any]) -> dict[str, tuple]:
    """{split: (put_x(x), put_y(y))} for every evaluated split (val, test): on the device once."""
    return {name: (put_x(data.split(name)[0]), put_y(data.split(name)[1])) for name in EVALUATED}


def chunked_evaluate(splits: dict[str, tuple], split: str, chunk: int,
                     sums: Callable[[Any, Any], tuple[Any, Any]]) -> tuple[float, float]:
    """(mean loss, accuracy) of ``split`` from ``sums(x, y) -> (summed loss, correct count)`` on chunks
    of ``chunk`` rows (the sums may stay on the device until the end); NaN for an empty split."""
    if split not in splits:
        raise ValueError(f"unknown split {split!r} (allowed: {', '.join(EVALUATED)}, after load_data)")
    x, y = splits[split]
    n = len(y)
    if n == 0:
        return math.nan, math.nan
    loss_sum, correct = 0.0, 0
    for s in range(0, n, chunk):
        loss, right = sums(x[s:s + chunk], y[s:s + chunk])
        loss_sum, correct = loss_sum + loss, correct + right
    return float(loss_sum) / n, int(correct) / n
