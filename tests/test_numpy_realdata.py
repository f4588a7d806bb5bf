"""One epoch of the NumPy MLP on 10 000 real CIFAR-10 images lifts validation accuracy above 30%."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.config import Config
from bench.backends.numpy_backend import NumpyBackend

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "cifar10"


@pytest.mark.realdata
@pytest.mark.filterwarnings("ignore:.*is not the official.*md5:UserWarning")
def test_one_epoch_on_10k_images_beats_30_percent(tmp_path, monkeypatch):
    if not DATA_DIR.is_dir():
        pytest.skip(f"no CIFAR-10 copy at {DATA_DIR}")
    try:
        from bench.data import load_dataset
    except ImportError as exc:
        pytest.skip(f"bench.data.load_dataset is not available ({exc})")
    monkeypatch.setenv("MLPBENCH_CACHE_DIR", str(tmp_path))
    data = load_dataset(DATA_DIR, val_size=5000, seed=42, train_subset=10_000, download=False,
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
