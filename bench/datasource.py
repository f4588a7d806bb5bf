"""The dataset a Config asks for: CIFAR-10 through the data layer, or synthetic data of its shape."""

from __future__ import annotations

from bench.config import CIFAR10_N_CLASSES, CIFAR10_N_FEATURES, Config
from bench.data import load_dataset, make_synthetic
from bench.data.dataset import Dataset


def load_for_config(config: Config, seed: int, *, progress: bool = True) -> Dataset:
    """The splits for one seed (the validation split is drawn by the seed), validated against the config."""
    if config.dataset == "synthetic":
        data = make_synthetic(config.n_train, config.val_size, config.val_size,
                              n_features=CIFAR10_N_FEATURES, n_classes=CIFAR10_N_CLASSES,
                              seed=seed, dtype=config.dtype)
    else:
        data = load_dataset(config.data_dir, val_size=config.val_size, seed=seed,
                            mean=tuple(config.mean), std=tuple(config.std), dtype=config.dtype,
                            train_subset=config.train_subset, progress=progress)
    config.validate(n_train=int(data.y_train.shape[0]))
    return data
