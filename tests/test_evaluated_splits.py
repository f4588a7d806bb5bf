"""Every backend's evaluated splits through one path (bench.backends.gather): an empty split is NaN,
an unknown one a ValueError naming the allowed splits, and chunking changes nothing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.backends.gather import chunked_evaluate
from bench.config import Config
from bench.data.synthetic import make_synthetic

BACKENDS = ["numpy", "torch", "sklearn"]


def make(impl: str, n_val: int):
    data = make_synthetic(64, n_val, 8, n_features=12, seed=1)
    config = Config(hidden_dims=[8], batch_size=16, eval_batch_size=5, dtype="float32",
                    activation="relu" if impl == "sklearn" else "elu")
    if impl == "numpy":
        from bench.backends.numpy_backend import NumpyBackend as cls
    elif impl == "torch":
        from bench.backends.torch_backend import TorchBackend as cls
    else:
        pytest.importorskip("sklearn", reason="the 'peers' extra (scikit-learn) is not installed")
        from bench.backends.sklearn_backend import SklearnBackend as cls
    backend = cls(config, "cpu")
    backend.load_data(data)
    backend.init_model(0)
    return backend


@pytest.mark.parametrize("impl", BACKENDS)
def test_an_empty_split_is_nan_and_an_unknown_one_is_refused(impl):
    backend = make(impl, 0)
    loss, acc = backend.evaluate("val")
    assert math.isnan(loss) and math.isnan(acc)
    loss, acc = backend.evaluate("test")
    assert math.isfinite(loss) and 0 <= acc <= 1
    with pytest.raises(ValueError, match="unknown split 'train'.*val, test"):
        backend.evaluate("train")


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), chunk=st.integers(1, 50))
def test_chunks_sum_to_the_whole(n, chunk):
    x = np.arange(n, dtype=np.float64)
    y = (np.arange(n) % 3 == 0).astype(np.int64)
    loss, acc = chunked_evaluate({"val": (x, y)}, "val", chunk, lambda xb, yb: (xb.sum(), int(yb.sum())))
    assert loss == pytest.approx(x.mean()) and acc == pytest.approx(y.mean())
