"""One epoch of the NumPy MLP on 10 000 real CIFAR-10 images lifts validation accuracy above 30%."""

from __future__ import annotations

import numpy as np
import pytest

from bench.backends.numpy_backend import NumpyBackend
from bench.config import Config
from bench.data import load_dataset
from conftest import real_data_dir


@pytest.mark.realdata
@pytest.mark.filterwarnings("ignore:.*is not the official.*md5:UserWarning")
def test_one_epoch_on_10k_images_beats_30_percent(tmp_path, monkeypatch):
    data_dir = real_data_dir()
    if data_dir is None:
        pytest.skip("no CIFAR-10 copy: set MLPBENCH_DATA_DIR (or keep the stand-in next to the checkout)")
    monkeypatch.setenv("MLPBENCH_CACHE_DIR", str(tmp_path))
    data = load_dataset(data_dir, val_size=5000, seed=42, train_subset=10_000, download=False,
                        progress=False)
    assert data.x_train.shape == (10_000, 3072)
    cfg = Config(train_subset=10_000)  # the reference setup: 3072 -> 128 -> 10, ELU, lr 0.1, batch 128
    backend = NumpyBackend(cfg)
    backend.load_data(data)
    backend.init_model(42)
    _, acc_before = backend.evaluate("val")
    steps = data.x_train.shape[0] // cfg.batch_size
    order = backend.device_indices(np.random.default_rng(42).permutation(data.x_train.shape[0]))
    for s in range(steps):
        backend.train_batch(order[s * cfg.batch_size:(s + 1) * cfg.batch_size])
    losses = backend.pop_step_records().losses
    loss, acc = backend.evaluate("val")
    assert np.all(np.isfinite(losses)) and loss < losses[0]
    assert acc > 0.30, f"validation accuracy {acc:.3f} after one epoch (before: {acc_before:.3f})"
