"""The data path: batches gathered from the uint8 images and normalised as gathered, against the float path.

With ``gather_from = "uint8"`` every backend that gathers by row index takes
its batch from ``raw_train`` and normalises it then; by default it gathers
rows of the normalised ``x_train``. Both must give the same numbers, bit for
bit, in float32 and float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bench.backends.gather import RowGather
from bench.backends.numpy_backend import NumpyBackend
from bench.backends.torch_backend import TorchBackend
from bench.config import GATHER_FROM, Config
from bench.data import make_synthetic
from bench.data.dataset import Dataset, normalise, normaliser
from bench.run import run_one

DTYPES = ("float32", "float64")


def dataset(raw: np.ndarray, mean, std, dtype: str) -> Dataset:
    """A Dataset of ``raw`` as every split, normalised with ``mean``/``std`` per channel."""
    x, y = normalise(raw, mean, std, dtype), np.arange(len(raw), dtype=np.int64) % 3
    return Dataset(x_train=x, y_train=y, x_val=x, y_val=y, x_test=x, y_test=y, fingerprint="test",
                   official=False, source="test", raw_train=raw, mean=tuple(mean), std=tuple(std))


@st.composite
def batches(draw):
    """uint8 images of 1-4 channels, a mean and std per channel, a dtype, and rows to gather."""
    channels, per, n = draw(st.integers(1, 4)), draw(st.integers(1, 8)), draw(st.integers(1, 16))
    raw = draw(hnp.arrays(np.uint8, (n, channels * per)))
    mean = draw(st.lists(st.floats(-2, 2), min_size=channels, max_size=channels))
    std = draw(st.lists(st.floats(1e-3, 10), min_size=channels, max_size=channels))
    rows = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=2 * n))
    return raw, mean, std, draw(st.sampled_from(DTYPES)), np.asarray(rows, dtype=np.int64)


@settings(max_examples=60, deadline=None)
@given(batches())
def test_a_gathered_batch_is_the_normalised_split_bit_for_bit(case):
    raw, mean, std, dtype, rows = case
    data = dataset(raw, mean, std, dtype)
    expected = data.x_train[rows]                                  # the float path's batch
    x, y = RowGather(data, dtype, uint8=True)(rows.astype(np.intp))
    assert x.dtype == np.dtype(dtype) and x.shape == expected.shape
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_array_equal(y, data.y_train[rows])
    torch_backend = TorchBackend(Config(dtype=dtype, gather_from="uint8"))
    torch_backend.load_data(data)
    xt, yt = torch_backend.gather(torch.from_numpy(rows))
    assert xt.dtype == getattr(torch, dtype)
    np.testing.assert_array_equal(xt.numpy(), expected)
    np.testing.assert_array_equal(yt.numpy(), data.y_train[rows])
    # and both are (x/255 - mean[c]) / std[c] up to the rounding of the dtype
    c = len(mean)
    exact = (raw[rows].reshape(len(rows), c, -1) / 255.0 - np.asarray(mean)[:, None]) / np.asarray(std)[:, None]
    eps = np.finfo(dtype).eps
    bound = 4 * eps * (1 + np.abs(np.asarray(mean)) / np.asarray(std))[:, None]  # (c, 1)
    assert np.all(np.abs(x.reshape(exact.shape) - exact) <= bound + 4 * eps * np.abs(exact))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", [NumpyBackend, TorchBackend])
def test_training_on_the_uint8_path_equals_the_float_path(cls, dtype):
    """The same run from the uint8 images and from the normalised rows: every step's loss equal."""
    data = make_synthetic(512, 64, 64, seed=5, dtype=dtype)
    losses = []
    for source in GATHER_FROM:
        config = Config(hidden_dims=[16], batch_size=32, epochs=2, dtype=dtype, dataset="synthetic",
                        train_subset=512, eval_batch_size=64, gather_from=source, reference_timing=False)
        backend = cls(config)
        backend.load_data(data)
        assert (backend.gather.images if cls is NumpyBackend else backend._train[0]).dtype in (
            (np.uint8, torch.uint8) if source == "uint8" else (np.dtype(dtype), getattr(torch, dtype)))
        result = run_one(backend, config, data, 3, record_steps=True)
        losses.append([s["loss"] for s in result.steps] + [result.run["test_loss"]])
    assert len(losses[0]) == 2 * 16 + 1
    np.testing.assert_array_equal(losses[0], losses[1])


def test_the_gather_reuses_its_buffers_and_writes_where_it_is_told():
    data = make_synthetic(64, 8, 8, n_features=12, seed=1)
    gather = RowGather(data, "float32", uint8=True)
    a, _ = gather(np.arange(4, dtype=np.intp))
    b, _ = gather(np.arange(4, 8, dtype=np.intp))
    assert a is b  # one buffer per batch size: no allocation per step
    out = np.zeros((4, 12), np.float32)
    x, _ = gather(np.arange(4, dtype=np.intp), out)
    assert x is out
    np.testing.assert_array_equal(out, data.x_train[:4])


def test_normaliser_refuses_channels_that_do_not_divide_the_features():
    with pytest.raises(ValueError, match="3 means and 3 stds for 10 features"):
        normaliser((0.5, 0.5, 0.5), (0.2, 0.2, 0.2), 10, "float32")
    shift, scale = normaliser((0.5, 0.25), (0.5, 1.0), 4, "float64")
    assert shift.tolist() == [127.5, 127.5, 63.75, 63.75] and scale.tolist() == [127.5, 127.5, 255, 255]
