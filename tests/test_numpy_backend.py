"""NumpyBackend against the harness's Backend protocol, on small synthetic data."""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest

from bench.backends.api import Backend, StepRecords
from bench.config import Config
from bench.data.dataset import Dataset
from bench.errors import UserError
from bench.roofline import Gemm, step_gemms
from bench.backends.numpy_backend import NumpyBackend, available

N_FEATURES, N_CLASSES = 48, 10


def synthetic(n_train=2048, n_val=512, n_test=256, seed=0) -> Dataset:
    """bench.data.make_synthetic when it is there, else the same idea by hand."""
    try:
        from bench.data import make_synthetic
    except ImportError:
        make_synthetic = None
    if make_synthetic is not None:
        return make_synthetic(n_train, n_val, n_test, n_features=N_FEATURES, n_classes=N_CLASSES, seed=seed)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((N_CLASSES, N_FEATURES))
    parts = {}
    for name, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        y = rng.integers(0, N_CLASSES, n)
        x = (centres[y] + 2 * rng.standard_normal((n, N_FEATURES))).astype(np.float32)
        parts[f"x_{name}"], parts[f"y_{name}"] = x, y.astype(np.int64)
    return Dataset(**parts, fingerprint="hand-made", official=False, source="test")


@pytest.fixture(scope="module")
def data() -> Dataset:
    return synthetic()


def config(**kw) -> Config:
    base = dict(hidden_dims=[32], batch_size=32, lr=0.05, eval_batch_size=200)
    base.update(kw)
    return Config(**base)


def make_backend(data, seed=0, **kw) -> NumpyBackend:
    backend = NumpyBackend(config(**kw))
    backend.load_data(data)
    backend.init_model(seed)
    return backend


def run_steps(backend, n_rows, n_steps, batch, seed):
    order = backend.device_indices(np.random.default_rng(seed).permutation(n_rows))
    for s in range(n_steps):
        backend.train_batch(order[s * batch:(s + 1) * batch])


def test_protocol_and_availability():
    backend = NumpyBackend(config())
    assert isinstance(backend, Backend)
    assert backend.impl == "numpy" and backend.device == "cpu"
    assert available("cpu")[0]
    ok, reason = available("tpu")
    assert not ok and "unknown device" in reason


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed here")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_cupy_is_a_user_error(device):
    ok, reason = available(device)
    assert not ok and reason == "numpy:cuda needs CuPy: pip install '.[cuda]'"
    with pytest.raises(UserError, match=r"numpy:cuda needs CuPy: pip install '\.\[cuda\]'"):
        NumpyBackend(config(), device)


def test_unknown_device_is_a_user_error():
    with pytest.raises(UserError, match="numpy:gpu: unknown device"):
        NumpyBackend(config(), "gpu")


def test_export_import_round_trip(data):
    a = make_backend(data, seed=1)
    b = make_backend(data, seed=2)
    state = a.export_state()
    assert list(state) == ["linears.0.weight", "linears.0.bias", "linears.1.weight", "linears.1.bias"]
    assert state["linears.0.weight"].shape == (32, N_FEATURES)
    assert state["linears.0.weight"].dtype == np.float32
    assert not np.array_equal(b.export_state()["linears.0.weight"], state["linears.0.weight"])
    b.import_state(state)
    for k, v in b.export_state().items():
        np.testing.assert_array_equal(v, state[k])
    state["linears.0.weight"][:] = 0  # exported arrays are copies
    assert a.export_state()["linears.0.weight"].any()


def test_import_resets_momentum(data):
    """A backend that trained with momentum, then imported weights, steps like a fresh one."""
    a = make_backend(data, seed=1, momentum=0.9)
    run_steps(a, 2048, 5, 32, seed=0)
    a.pop_step_records()
    b = make_backend(data, seed=2, momentum=0.9)
    start = make_backend(data, seed=3).export_state()
    a.import_state(start)
    b.import_state(start)
    run_steps(a, 2048, 3, 32, seed=1)
    run_steps(b, 2048, 3, 32, seed=1)
    for k, v in a.export_state().items():
        np.testing.assert_array_equal(v, b.export_state()[k])


def test_evaluate_is_sane_and_does_not_change_training(data):
    backend = make_backend(data)
    loss, acc = backend.evaluate("val")
    assert abs(loss - np.log(N_CLASSES)) < 1.0 and 0.0 <= acc <= 1.0
    assert backend.evaluate("val") == (loss, acc)
    loss_test, acc_test = backend.evaluate("test")
    assert np.isfinite(loss_test) and 0.0 <= acc_test <= 1.0
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        backend.evaluate("valid")
    # evaluation in chunks of 200 gives what one big chunk gives
    whole = NumpyBackend(config(eval_batch_size=10_000))
    whole.load_data(data)
    whole.init_model(0)
    w_loss, w_acc = whole.evaluate("val")
    assert w_acc == acc
    np.testing.assert_allclose(w_loss, loss, rtol=1e-5)


def test_one_epoch_learns_and_records(data):
    backend = make_backend(data)
    val_before = backend.evaluate("val")
    steps = 2048 // 32
    run_steps(backend, 2048, steps, 32, seed=0)
    backend.synchronize()
    rec = backend.pop_step_records()
    assert isinstance(rec, StepRecords)
    assert rec.losses.shape == (steps,) and rec.losses.dtype == np.float64
    assert rec.seen == steps * 32 and 0 <= rec.correct <= rec.seen
    assert rec.losses[-10:].mean() < 0.7 * rec.losses[:10].mean()
    val_loss, val_acc = backend.evaluate("val")
    assert val_loss < 0.7 * val_before[0]
    assert val_acc > 0.5
    empty = backend.pop_step_records()
    assert empty.losses.shape == (0,) and empty.seen == 0 and empty.correct == 0


def test_correct_counts_match_the_forward_pass(data):
    backend = make_backend(data)
    idx = backend.device_indices(np.arange(64))
    expected = int((backend.model.forward(data.x_train[:64]).argmax(axis=1) == data.y_train[:64]).sum())
    backend.train_batch(idx)
    assert backend.pop_step_records().correct == expected


@pytest.mark.parametrize("residual, dims, momentum, wd", [(False, [32], 0.0, 0.0), (True, [16, 8, 16], 0.9, 1e-3)])
def test_same_seed_bit_identical_after_50_steps(data, residual, dims, momentum, wd):
    kw = dict(hidden_dims=dims, residual=residual, momentum=momentum, weight_decay=wd)
    a, b, c = make_backend(data, 7, **kw), make_backend(data, 7, **kw), make_backend(data, 8, **kw)
    for backend in (a, b, c):
        run_steps(backend, 2048, 50, 32, seed=3)
    sa, sb, sc = a.export_state(), b.export_state(), c.export_state()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k])
    assert not np.array_equal(sa["linears.0.weight"], sc["linears.0.weight"])
    np.testing.assert_array_equal(a.pop_step_records().losses, b.pop_step_records().losses)


def test_divergence_gives_non_finite_losses_without_warnings(data):
    backend = make_backend(data, lr=1e6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_steps(backend, 2048, 20, 32, seed=0)
        losses = backend.pop_step_records().losses
        loss, _acc = backend.evaluate("val")
    assert not np.all(np.isfinite(losses))
    assert not np.isfinite(loss) or loss > 10


def test_measurement_helpers(data):
    backend = make_backend(data, activation="tanh")
    gemms = step_gemms(N_FEATURES, [32], N_CLASSES, 32)
    assert backend.gemm_seconds(gemms, 3) > 0
    assert backend.gemm_seconds([Gemm(4, 5, 6), Gemm(3, 2, 4, ta=True, tb=True)], 2) > 0
    info = backend.describe()
    assert info["impl"] == "numpy" and info["dtype"] == "float32" and info["activation"] == "tanh"
    assert info["array_module"].startswith("numpy ")
    assert info["gemm_library"].split()[0] in ("OpenBLAS", "MKL", "BLIS", "scipy-openblas")
    assert backend.peak_memory_bytes() is None
    idx = backend.device_indices(np.arange(5, dtype=np.int64))
    assert isinstance(idx, np.ndarray) and idx.dtype == np.intp


def test_float64_config(data):
    backend = make_backend(data, dtype="float64")
    assert backend.export_state()["linears.0.weight"].dtype == np.float64
    run_steps(backend, 2048, 3, 32, seed=0)
    assert np.all(np.isfinite(backend.pop_step_records().losses))
