"""The in-memory dataset every backend is fed from (NumPy only, no torch)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Dataset:
    """Normalised splits plus where they came from.

    Every ``x_*`` is float (the config's dtype), C-contiguous, shape (S, 3072)
    in CHW order (the CIFAR-10 record order); every ``y_*`` is int64, shape (S,).
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
    # the same splits as undecoded uint8 pixels (S, 3072) in CHW order, for peers
    # that do their own per-sample preprocessing (the torchvision DataLoader path)
    raw_train: np.ndarray | None = None
    raw_val: np.ndarray | None = None
    raw_test: np.ndarray | None = None
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # the normalisation applied to x_*
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of ``"train"``, ``"val"`` or ``"test"``."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r} (allowed: {', '.join(SPLITS)})")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

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
