"""The in-memory dataset every backend is fed from, and the one normalisation (NumPy only, no torch).

Backends gather their training batches from the normalised split, or, with
``Config.gather_from = "uint8"``, from the uint8 images, normalising each
batch as it is gathered (:meth:`Dataset.train_source`, :func:`normalise_into`):
a quarter of the bytes a float32 gather reads, and the same numbers, because
the expression is the one that normalises the whole splits (:func:`normalise`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SPLITS = ("train", "val", "test")
EVALUATED = ("val", "test")  # the splits a backend evaluates (training batches are gathered)
NORMALISE_ROWS = 512  # NOTE: rows normalised at a time; blocks that stay in cache measured ~10% faster


def normaliser(mean: Sequence[float], std: Sequence[float], n_features: int,
               dtype) -> tuple[np.ndarray, np.ndarray]:
    """The rows (shift, scale), each (n_features,) of ``dtype``, with x = (raw - shift) / scale.

    shift = 255 mean[c] and scale = 255 std[c] over channel c, which is the
    c-th of ``len(mean)`` equal blocks of columns (CHW: columns c*1024 to
    (c+1)*1024 for CIFAR-10's three channels).
    """
    channels = len(mean)
    if channels != len(std) or n_features % channels:
        raise ValueError(f"{channels} means and {len(std)} stds for {n_features} features "
                         "(allowed: one of each per channel, the channels dividing the features)")
    dtype = np.dtype(dtype)
    per = n_features // channels
    return (np.repeat((255.0 * np.asarray(mean, np.float64)).astype(dtype), per),
            np.repeat((255.0 * np.asarray(std, np.float64)).astype(dtype), per))


def normalise_into(out: Any, raw: Any, shift: Any, scale: Any) -> Any:
    """``out = (raw - shift) / scale`` in ``out``'s float dtype, written in place; returns ``out``.

    Operators only, so the same lines run on NumPy, CuPy and torch arrays.
    ``raw`` (S, F) uint8; ``shift``, ``scale`` (F,) rows of :func:`normaliser`.
    """
    out[...] = raw  # (S, F) uint8 -> float: exact
    out -= shift    # (S, F)
    out /= scale    # (S, F)
    return out


def normalise(raw: np.ndarray, mean: Sequence[float], std: Sequence[float], dtype) -> np.ndarray:
    """uint8 (S, F) CHW -> (x/255 - mean[c]) / std[c], C-contiguous ``dtype``.

    Computed as :func:`normalise_into`, (x - 255 mean[c]) / (255 std[c]) in
    ``dtype``, blocks of rows at a time: equal in exact arithmetic, within a
    few ulp in floating point, and bit for bit what a backend computes for a
    batch of the same rows.
    """
    shift, scale = normaliser(mean, std, raw.shape[1], dtype)
    out = np.empty(raw.shape, dtype)  # (S, F)
    for start in range(0, len(raw), NORMALISE_ROWS):
        normalise_into(out[start:start + NORMALISE_ROWS], raw[start:start + NORMALISE_ROWS], shift, scale)
    return out


@dataclass(frozen=True)
class Dataset:
    """Normalised splits plus where they came from.

    Every ``x_*`` is float (the config's dtype), C-contiguous, shape (S, 3072)
    in CHW order (the CIFAR-10 record order); every ``y_*`` is int64, shape (S,).
    ``raw_*`` are the same rows as uint8 pixels, ``x_* = normalise(raw_*, mean, std)``;
    a dataset made of float rows alone has none.
    """

    x_train: np.ndarray  # (S_train, 3072)
    y_train: np.ndarray  # (S_train,)
    x_val: np.ndarray    # (S_val, 3072)
    y_val: np.ndarray    # (S_val,)
    x_test: np.ndarray   # (S_test, 3072)
    y_test: np.ndarray   # (S_test,)
    fingerprint: str     # sha256 of the decoded uint8 images and labels (before the split)
    official: bool       # True only when the archive's checksum is the official one
    source: str          # human-readable description of where the data was read from
    classes: tuple[str, ...] = field(default=tuple(str(i) for i in range(10)))
    # the same splits as undecoded uint8 pixels (S, 3072) in CHW order: what training batches
    # are gathered from, and what the torchvision DataLoader peer preprocesses per sample
    raw_train: np.ndarray | None = None
    raw_val: np.ndarray | None = None
    raw_test: np.ndarray | None = None
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)  # per channel: the normalisation applied to x_*
    std: tuple[float, ...] = (1.0, 1.0, 1.0)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of ``"train"``, ``"val"`` or ``"test"``."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r} (allowed: {', '.join(SPLITS)})")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    def train_source(self, dtype, uint8: bool) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
        """What training batches are gathered from: with ``uint8`` (``Config.gather_from``) and
        uint8 images, (``raw_train``, its :func:`normaliser` rows in ``dtype``), each batch to be
        normalised by :func:`normalise_into`; else (``x_train``, None)."""
        if not uint8 or self.raw_train is None:
            return self.x_train, None
        return self.raw_train, normaliser(self.mean, self.std, self.n_features, dtype)

    def info(self) -> dict[str, object]:
        """Where the data came from and its split sizes: what every result records about it."""
        return {"source": self.source, "official": self.official, "fingerprint": self.fingerprint,
                "n_train": int(len(self.y_train)), "n_val": int(len(self.y_val)),
                "n_test": int(len(self.y_test))}

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_classes(self) -> int:
        return len(self.classes)
