"""TorchBackend on the CPU against the harness's Backend protocol, on small synthetic data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bench.backends.torch_steps
from bench.backends.api import Backend, StepRecords
from bench.backends import resolve
from bench.config import Config
from bench.data import make_synthetic
from bench.errors import UserError
from bench.run import epoch_order, run_one
from bench.roofline import Gemm, step_gemms
from impl_torch import forward_loss
from bench.backends.torch_backend import TorchBackend, available

N_FEATURES, N_CLASSES = 48, 10


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data():
    return make_synthetic(1024, 300, 200, n_features=N_FEATURES, n_classes=N_CLASSES, seed=0)


def config(**kw) -> Config:
    base = dict(hidden_dims=[32], batch_size=32, lr=0.05, eval_batch_size=128, epochs=2,
                reference_timing=False)  # the run layer without its GEMM-only brackets
    base.update(kw)
    return Config(**base)


def make_backend(data, seed=0, **kw) -> TorchBackend:
    backend = TorchBackend(config(**kw))
    backend.load_data(data)
    backend.init_model(seed)
    return backend


def run_steps(backend, n_steps, batch=32, seed=0):
    n = len(backend._train[1])
    order = backend.device_indices(np.random.default_rng(seed).permutation(n))
    for k in range(n_steps):
        backend.train_batch(order[k * batch:(k + 1) * batch])


def test_conforms_to_the_backend_protocol_and_is_registered(data):
    backend = make_backend(data)
    assert isinstance(backend, Backend)
    assert (backend.impl, backend.device) == ("torch", "cpu")
    chosen, _ = resolve(["torch:cpu"])
    assert chosen[0].name == "torch:cpu" and isinstance(chosen[0].make(config()), TorchBackend)


def test_available_answers_for_any_device_string():
    assert available("cpu") == (True, "")
    ok, reason = available("not-a-device")
    assert not ok and "not a torch device" in reason
    ok, reason = available("cuda:99")
    assert not ok and reason


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_is_unavailable_with_a_reason_without_a_gpu():
    ok, reason = available("cuda")
    assert not ok and "CUDA" in reason


def test_data_moves_once_and_shares_host_memory_on_cpu(data):
    backend = make_backend(data)
    x, y, norm = backend._train
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and norm is None
    assert x.data_ptr() == data.x_train.ctypes.data  # no copy of the float32 split on CPU
    images, _, norm = make_backend(data, gather_from="uint8")._train
    assert images.dtype == torch.uint8 and len(norm) == 2
    assert images.data_ptr() == data.raw_train.ctypes.data  # nor of the uint8 images
    x, _ = backend._splits["val"]
    assert x.dtype == torch.float32 and x.data_ptr() == data.x_val.ctypes.data
    idx = backend.device_indices(np.arange(5))
    assert idx.dtype == torch.int64 and idx.device.type == "cpu"


def test_float64_config_gives_float64_data_and_weights():
    d64 = make_synthetic(256, 64, 64, n_features=N_FEATURES, seed=1, dtype="float64")
    backend = make_backend(d64, dtype="float64")
    assert backend._splits["val"][0].dtype == torch.float64
    assert all(v.dtype == np.float64 for v in backend.export_state().values())


def test_step_records_hold_every_step_and_reset_on_pop(data):
    backend = make_backend(data)
    start = backend.model.export_state()
    order = np.random.default_rng(3).permutation(1024)
    idx = backend.device_indices(order)
    for k in range(5):
        backend.train_batch(idx[k * 32:(k + 1) * 32])
    rec = backend.pop_step_records()
    assert isinstance(rec, StepRecords)
    assert rec.losses.dtype == np.float64 and rec.losses.shape == (5,) and rec.seen == 160
    assert 0 <= rec.correct <= 160
    # the first recorded loss is the initial weights' loss on the first batch
    backend.model.import_state(start)
    rows = torch.from_numpy(order[:32])
    loss0, correct0 = forward_loss(backend.model, torch.from_numpy(data.x_train)[rows],
                                   torch.from_numpy(data.y_train)[rows])
    assert rec.losses[0] == pytest.approx(loss0.item(), rel=1e-6)
    empty = backend.pop_step_records()
    assert empty.losses.shape == (0,) and empty.seen == 0 and empty.correct == 0


def test_records_hold_two_epochs_between_pops(data):
    backend = make_backend(data)
    steps = 1024 // 32
    n = len(data.y_train)
    for epoch in range(2):  # two epochs without a pop
        idx = backend.device_indices(np.random.default_rng(epoch).permutation(n))
        for k in range(steps):
            backend.train_batch(idx[k * 32:(k + 1) * 32])
    rec = backend.pop_step_records()
    assert rec.losses.shape == (2 * steps,) and rec.seen == 2 * steps * 32
    assert np.all(np.isfinite(rec.losses))


@pytest.mark.parametrize("threads", [1, 2])
def test_same_seed_gives_a_bit_identical_loss_trajectory(data, threads):
    torch.set_num_threads(threads)  # the harness sets the same count for every backend

    def trajectory(seed, n_steps=12):
        backend = make_backend(data, seed=seed, momentum=0.9, weight_decay=1e-3)
        idx = backend.device_indices(epoch_order(seed, 1, 1024))
        for k in range(n_steps):
            backend.train_batch(idx[k * 32:(k + 1) * 32])
        return backend.pop_step_records().losses, backend.export_state()

    (a, state_a), (b, state_b), (c, _) = trajectory(7), trajectory(7), trajectory(8)
    np.testing.assert_array_equal(a, b)
    for name, value in state_a.items():
        np.testing.assert_array_equal(value, state_b[name], err_msg=name)
    assert not np.array_equal(a, c)


def test_the_harness_run_is_bit_identical_for_a_seed(data):
    def run(seed):
        backend = TorchBackend(config(epochs=1, momentum=0.9))
        backend.load_data(data)
        result = run_one(backend, backend.config, data, seed, record_steps=True)
        assert result.status == "ok"
        return [s["loss"] for s in result.steps], result.run["test_acc"]

    losses, acc = run(3)
    assert len(losses) == 1024 // 32
    assert run(3) == (losses, acc)


def test_training_learns_the_synthetic_classes(data):
    backend = TorchBackend(config(epochs=3))
    backend.load_data(data)
    result = run_one(backend, backend.config, data, 0)
    assert result.status == "ok"
    losses = [e["train_loss"] for e in result.epochs]
    assert losses[-1] < losses[0]
    assert result.run["test_acc"] > 0.5  # chance is 0.1


def test_residual_and_deeper_configs_train(data):
    for kw in (dict(hidden_dims=[32, 16, 32], residual=True, activation="relu"),
               dict(hidden_dims=[32, 16], activation="tanh", momentum=0.9)):
        backend = make_backend(data, **kw)
        run_steps(backend, 10)
        assert np.all(np.isfinite(backend.pop_step_records().losses))


def test_export_import_round_trip_and_momentum_restarts(data):
    a = make_backend(data, seed=1, momentum=0.9)
    b = make_backend(data, seed=2, momentum=0.9)
    state = a.export_state()
    run_steps(a, 6, seed=4)          # builds momentum in a
    a.pop_step_records()
    a.import_state(state)            # back to the start, momentum forgotten
    b.import_state(state)
    for name, value in b.export_state().items():
        np.testing.assert_array_equal(value, state[name], err_msg=name)
    run_steps(a, 8, seed=5)
    run_steps(b, 8, seed=5)
    np.testing.assert_array_equal(a.pop_step_records().losses, b.pop_step_records().losses)


def test_import_state_refuses_a_mismatched_state(data):
    backend = make_backend(data)
    state = backend.export_state()
    state["linears.0.weight"] = state["linears.0.weight"][:, :-1]
    with pytest.raises(ValueError, match=r"linears.0.weight has shape \(32, 47\), expected \(32, 48\)"):
        backend.import_state(state)


def test_evaluate_in_chunks_equals_one_full_batch(data):
    backend = make_backend(data, eval_batch_size=128)  # 300 val rows: chunks 128, 128, 44
    run_steps(backend, 4)
    loss, acc = backend.evaluate("val")
    with torch.no_grad():
        x, y = torch.from_numpy(data.x_val), torch.from_numpy(data.y_val)
        logits = backend.model(x)
        expected_loss = F.cross_entropy(logits.double(), y).item()
        expected_acc = (logits.argmax(1) == y).double().mean().item()
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    assert acc == pytest.approx(expected_acc, abs=1e-12)
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        backend.evaluate("dev")


def test_cuda_graph_on_a_cpu_device_is_a_user_error():
    with pytest.raises(UserError, match="cuda_graph needs a CUDA device"):
        TorchBackend(config(cuda_graph=True), "cpu")


def test_cuda_graph_with_torch_compile_is_a_user_error():
    with pytest.raises(UserError, match="choose one"):
        TorchBackend(config(cuda_graph=True, torch_compile="reduce-overhead"), "cuda")


def test_a_torch_compile_failure_is_a_user_error_naming_the_reason(data, monkeypatch):
    def broken_compile(fn, **kw):
        def run(*args):
            raise RuntimeError("no C++ compiler found\nsecond line")
        return run
    monkeypatch.setattr(bench.backends.torch_steps.torch, "compile", broken_compile)
    backend = make_backend(data, torch_compile="default")
    with pytest.raises(UserError, match=r"torch.compile\(mode='default'\) failed on cpu: "
                                        r"RuntimeError: no C\+\+ compiler found$"):
        run_steps(backend, 1)


def test_init_model_before_load_data_is_an_error():
    with pytest.raises(RuntimeError, match="load_data first"):
        TorchBackend(config()).init_model(0)


def test_gemm_seconds_times_the_listed_products(data):
    backend = make_backend(data)
    gemms = step_gemms(N_FEATURES, [32], N_CLASSES, 32)
    seconds = backend.gemm_seconds(gemms, 3)
    assert math.isfinite(seconds) and seconds > 0
    assert backend.gemm_seconds([Gemm(8, 4, 2), Gemm(3, 5, 7, ta=True, tb=True)], 2) > 0


def test_describe_records_the_options_and_threads(data):
    backend = make_backend(data)
    info = backend.describe()
    assert info["threads"] == torch.get_num_threads() == 1
    assert info["torch_version"] == torch.__version__
    assert (info["dtype"], info["torch_compile"], info["cuda_graph"], info["tf32"]) == \
           ("float32", "none", False, False)
    assert info["device"] == "cpu" and info["device_name"]
    assert backend.peak_memory_bytes() is None
