"""A learnable synthetic stand-in for CIFAR-10, for tests and quick runs without the data."""

from __future__ import annotations

import hashlib

import numpy as np

from bench.data.dataset import Dataset, normalise
from bench.data.loader import DEFAULTS, DTYPES
from bench.errors import ConfigError

CIFAR_FEATURES = 3072
CIFAR_MEAN = tuple(DEFAULTS.mean)  # the Config defaults, applied when the images are CIFAR-shaped
CIFAR_STD = tuple(DEFAULTS.std)
FLAT_MEAN, FLAT_STD = (0.5,), (0.25,)  # one channel: applied to every feature otherwise
CENTRE_SPREAD = 32.0                # std of the class-mean pixel around 128
NOISE = 64.0                        # std of each sample around its class mean
BLOCK_ROWS = 4096                   # rows drawn at a time (bounds the float32 scratch memory)


def make_synthetic(n_train: int, n_val: int, n_test: int, *, n_features: int = CIFAR_FEATURES,
                   n_classes: int = 10, seed: int = 0, dtype="float32") -> Dataset:
    """Random images whose class sets their mean, so a model can learn them.

    Each class has a centre image drawn once, N(128, 32^2) per feature; a sample
    is its class centre plus N(0, 64^2) noise, rounded and clipped to uint8.
    Labels are balanced (``i % n_classes``, shuffled) in every split; ``raw_*``
    hold the pixels. With 3072 features they are normalised like CIFAR-10
    (per-channel Config mean/std, CHW); otherwise every feature becomes
    (x/255 - 0.5) / 0.25. Everything is drawn from ``np.random.default_rng(seed)``.
    """
    for name, value, low in (("n_train", n_train, 1), ("n_val", n_val, 0), ("n_test", n_test, 0),
                             ("n_features", n_features, 1), ("n_classes", n_classes, 2),
                             ("seed", seed, 0)):
        if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= low):
            raise ConfigError(name, value, f"an integer >= {low}")
    try:
        ok = np.dtype(dtype).name in DTYPES
    except TypeError:
        ok = False
    if not ok:
        raise ConfigError("dtype", dtype, ", ".join(DTYPES))
    rng = np.random.default_rng(seed)
    centres = 128.0 + CENTRE_SPREAD * rng.standard_normal((n_classes, n_features), dtype=np.float32)
    splits = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        y = rng.permutation(np.arange(n) % n_classes)                   # (n,)
        raw = np.empty((n, n_features), np.uint8)                       # (n, F)
        for start in range(0, n, BLOCK_ROWS):
            rows = y[start:start + BLOCK_ROWS]
            noisy = centres[rows] + NOISE * rng.standard_normal((len(rows), n_features), dtype=np.float32)
            np.clip(np.rint(noisy), 0, 255, out=noisy)
            raw[start:start + BLOCK_ROWS] = noisy
        splits[split] = (raw, y.astype(np.int64))
    h = hashlib.sha256()
    for raw, y in splits.values():
        h.update(raw)
        h.update(y)  # int64
    mean, std = (CIFAR_MEAN, CIFAR_STD) if n_features == CIFAR_FEATURES else (FLAT_MEAN, FLAT_STD)
    return Dataset(
        **{f"x_{s}": normalise(raw, mean, std, dtype) for s, (raw, _y) in splits.items()},
        **{f"y_{s}": y for s, (_raw, y) in splits.items()},
        **{f"raw_{s}": raw for s, (raw, _y) in splits.items()},
        fingerprint=h.hexdigest(),
        official=False,
        source=(f"synthetic (make_synthetic: n_train={n_train}, n_val={n_val}, n_test={n_test}, "
                f"n_features={n_features}, n_classes={n_classes}, seed={seed})"),
        classes=tuple(str(i) for i in range(n_classes)),
        mean=mean,
        std=std,
    )

