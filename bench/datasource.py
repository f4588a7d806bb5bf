"""The dataset a Config asks for: CIFAR-10 through the data layer, or synthetic data of its shape.

What the data layer warns about (an unofficial copy, a rebuilt cache) and
what was used in place of what was asked (a ``train_subset`` above the split)
is said once per process as one line on stderr, ``note: ...``, never as a raw
Python warning per seed.
"""

from __future__ import annotations

import sys
import warnings

from bench.config import CIFAR10_N_CLASSES, CIFAR10_N_FEATURES, Config
from bench.data import load_dataset, make_synthetic
from bench.data.dataset import Dataset

_SAID: set[str] = set()  # the notes this process has printed


def note(text: str, quiet: bool = False) -> None:
    """Print ``note: text`` on stderr, once per process (never when ``quiet``)."""
    if text not in _SAID and not quiet:
        _SAID.add(text)
        print(f"note: {text}", file=sys.stderr, flush=True)


def load_for_config(config: Config, seed: int, *, progress: bool = True,
                    quiet: bool = False) -> Dataset:
    """The splits for one seed (the validation split is drawn by the seed), validated against the config."""
    if config.dataset == "synthetic":
        data = make_synthetic(config.n_train, config.val_size, config.val_size,
                              n_features=CIFAR10_N_FEATURES, n_classes=CIFAR10_N_CLASSES,
                              seed=seed, dtype=config.dtype)
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            data = load_dataset(config.data_dir, val_size=config.val_size, seed=seed,
                                mean=tuple(config.mean), std=tuple(config.std), dtype=config.dtype,
                                train_subset=config.train_subset, progress=progress)
        for w in caught:
            note(str(w.message), quiet)
        n = int(data.y_train.shape[0])
        if config.train_subset is not None and config.train_subset > n:
            note(f"train_subset {config.train_subset} is more than the {n} training images of the "
                 f"split; using all {n}", quiet)
    config.validate(n_train=int(data.y_train.shape[0]))
    return data
