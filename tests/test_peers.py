"""The peer backends: sklearn:cpu and torch-dataloader:cpu through the real harness, on tiny synthetic data.

Each test that needs the ``peers`` extra skips with the reason when scikit-learn
or torchvision is missing.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import assert_one_line_error

from bench import compare
from bench.config import Config
from bench.data import make_synthetic
from bench.errors import UserError

TINY = ["--dataset", "synthetic", "--train-subset", "512", "--val-size", "256", "--batch-size", "64",
        "--hidden-dims", "32", "--epochs", "2", "--activation", "relu", "--threads", "1",
        "--seeds", "42", "--quiet"]  # one thread: these check results, not speed (and keep a busy machine quick)
TINY_CONFIG = Config(dataset="synthetic", train_subset=512, val_size=256, batch_size=64,
                     hidden_dims=[32], epochs=2, activation="relu")


def needs_sklearn():
    return pytest.importorskip("sklearn", reason="the 'peers' extra (scikit-learn) is not installed")


def needs_torchvision():
    return pytest.importorskip("torchvision", reason="the 'peers' extra (torchvision) is not installed")


def tiny_data(n_train: int = 512, seed: int = 42, n_features: int = 3072):
    return make_synthetic(n_train, 256, 256, n_features=n_features, seed=seed)


def run_compare(tmp_path, *args: str):
    """bench.compare.main in-process; returns (epochs, runs, summary, steps or None, report text)."""
    out = tmp_path / "out"
    assert compare.main([*TINY, *args, "--out", str(out)]) == 0
    steps = pd.read_csv(out / "steps.csv") if (out / "steps.csv").exists() else None
    return (pd.read_csv(out / "epochs.csv"), pd.read_csv(out / "runs.csv"),
            pd.read_csv(out / "summary.csv"), steps, (out / "report.md").read_text())


def step_losses(steps: pd.DataFrame, backend: str) -> np.ndarray:
    return steps[steps["backend"] == backend].sort_values("step")["loss"].to_numpy()


# ------------------------------------------------------------------ sklearn:cpu


def test_sklearn_end_to_end_in_lockstep_with_numpy(tmp_path):
    """sklearn:cpu takes the harness's batches: from the same weights its step losses match numpy:cpu's."""
    needs_sklearn()
    epochs, runs, summary, steps, report = run_compare(
        tmp_path, "--backends", "sklearn:cpu,numpy:cpu", "--lockstep", "--momentum", "0.9", "--lr", "0.01")
    assert list(summary["backend"]) == ["sklearn:cpu", "numpy:cpu"]
    assert set(runs["status"]) == {"ok"} and len(epochs) == 2 * 2
    assert (runs["test_acc"] > 0.3).all()  # learnable: well above chance
    assert "sklearn:cpu" in report and epochs["gemm_seconds"].gt(0).all()
    sk, ref = step_losses(steps, "sklearn:cpu"), step_losses(steps, "numpy:cpu")
    assert len(sk) == len(ref) == 2 * (512 // 64)  # one record per step, not per epoch
    np.testing.assert_allclose(sk, ref, rtol=1e-4, atol=1e-5)
    e = epochs.set_index(["backend", "epoch"])
    np.testing.assert_allclose(e.loc["sklearn:cpu", "train_acc"], e.loc["numpy:cpu", "train_acc"])
    np.testing.assert_allclose(e.loc["sklearn:cpu", "val_loss"], e.loc["numpy:cpu", "val_loss"],
                               rtol=1e-4, atol=1e-6)


def test_sklearn_probe_reads_what_partial_fit_computes():
    """One record per step, averaging to partial_fit's own epoch loss; float32 stays float32."""
    needs_sklearn()
    from bench.backends.sklearn_backend import SklearnBackend

    data = tiny_data()
    b = SklearnBackend(TINY_CONFIG, "cpu")
    b.load_data(data)
    b.init_model(3)
    idx = b.device_indices(np.random.default_rng(0).permutation(512))
    for k in range(512 // 64):
        b.train_batch(idx[k * 64:(k + 1) * 64])
    assert b.clf.probe_losses_ == []  # nothing stepped before the sync
    b.synchronize()
    rec = b.pop_step_records()
    assert len(rec.losses) == 8 and rec.seen == 512 and 0 <= rec.correct <= 512
    # scikit-learn's own epoch loss clips p_y to [eps, 1 - eps]; the probe does not (docs/peers.md)
    assert np.mean(rec.losses) == pytest.approx(b.clf.loss_curve_[-1], rel=1e-3, abs=1e-6)
    assert all(w.dtype == np.float32 for w in b.clf.coefs_)


def test_sklearn_starts_from_the_numpy_init_and_import_resets_momentum():
    needs_sklearn()
    from bench.backends.sklearn_backend import SklearnBackend
    from bench.backends.numpy_backend import NumpyBackend

    cfg = dataclasses.replace(TINY_CONFIG, momentum=0.9)
    data = tiny_data()
    sk, npb = SklearnBackend(cfg, "cpu"), NumpyBackend(cfg, "cpu")
    for b in (sk, npb):
        b.load_data(data)
        b.init_model(7)
    s0, n0 = sk.export_state(), npb.export_state()
    assert list(s0) == list(n0)
    for name in s0:
        np.testing.assert_array_equal(s0[name], n0[name])
    # two epochs of 1 step each, with a restore in between: the same losses only if momentum restarts
    def one_step() -> float:
        sk.train_batch(sk.device_indices(np.arange(64))[:64])
        sk.synchronize()
        return float(sk.pop_step_records().losses[0])
    first, _second = one_step(), one_step()
    sk.import_state(s0)
    assert one_step() == first
    assert _second != first and one_step() == _second


def test_sklearn_weight_decay_maps_to_alpha_times_batch():
    """alpha = weight_decay * S: the first step (zero biases) equals torch-convention SGD exactly."""
    needs_sklearn()
    from bench.backends.sklearn_backend import SklearnBackend
    from bench.backends.numpy_backend import NumpyBackend

    cfg = dataclasses.replace(TINY_CONFIG, weight_decay=0.05, momentum=0.9)
    data = tiny_data()
    sk, npb = SklearnBackend(cfg, "cpu"), NumpyBackend(cfg, "cpu")
    for b in (sk, npb):
        b.load_data(data)
        b.init_model(1)
    assert sk.clf.alpha == pytest.approx(0.05 * 64)
    for b in (sk, npb):
        idx = b.device_indices(np.arange(64))
        b.train_batch(idx[:64])
        b.synchronize()
    rs, rn = sk.pop_step_records(), npb.pop_step_records()
    assert rs.losses[0] == pytest.approx(rn.losses[0], rel=1e-5)  # the data loss, no L2 term
    for name, w in sk.export_state().items():
        np.testing.assert_allclose(w, npb.export_state()[name], rtol=1e-4, atol=1e-6, err_msg=name)


def test_sklearn_with_elu_is_a_one_line_error(cli):
    needs_sklearn()
    proc = cli("bench.compare", *[a for a in TINY if a not in ("--activation", "relu")],
               "--backends", "sklearn:cpu", "--out", "o")
    assert_one_line_error(proc, "sklearn", "elu", "relu", "tanh")
    assert not (proc.cwd / "o").exists()  # raised before any work


def test_sklearn_refuses_residual_and_other_devices():
    needs_sklearn()
    from bench.backends import resolve
    from bench.backends.sklearn_backend import SklearnBackend

    with pytest.raises(UserError, match="residual"):
        SklearnBackend(dataclasses.replace(TINY_CONFIG, residual=True, hidden_dims=[8, 4, 8]), "cpu")
    with pytest.raises(UserError, match="CPU only"):
        resolve(["sklearn:cuda"])


def test_missing_peers_extra_names_the_extra(monkeypatch):
    """With scikit-learn not importable, asking for sklearn:cpu is one line naming the extra."""
    from bench.backends import resolve

    monkeypatch.setitem(sys.modules, "sklearn", None)  # "import sklearn" now raises ImportError
    monkeypatch.delitem(sys.modules, "bench.backends.sklearn_backend", raising=False)
    with pytest.raises(UserError) as err:
        resolve(["sklearn:cpu"])
    msg = str(err.value)
    assert "\n" not in msg and "sklearn" in msg and "pip install '.[peers]'" in msg


# ------------------------------------------------------------------ torch-dataloader


def test_dataloader_end_to_end_in_lockstep_with_torch(tmp_path):
    """The pipeline feeds the same batches to the same step: losses match torch:cpu; time is split."""
    needs_torchvision()
    epochs, runs, summary, steps, report = run_compare(
        tmp_path, "--backends", "torch:cpu,torch-dataloader:cpu", "--lockstep")
    assert list(summary["backend"]) == ["torch:cpu", "torch-dataloader:cpu"]
    assert set(runs["status"]) == {"ok"} and "torch-dataloader:cpu" in report
    np.testing.assert_allclose(step_losses(steps, "torch-dataloader:cpu"),
                               step_losses(steps, "torch:cpu"), rtol=1e-4, atol=1e-5)
    dl = epochs[epochs["backend"] == "torch-dataloader:cpu"]
    assert {"data_seconds", "compute_seconds"} <= set(epochs.columns)
    assert (dl["data_seconds"] > 0).all() and (dl["compute_seconds"] > 0).all()
    # the two parts cover the epoch clock (less the harness's own loop overhead)
    np.testing.assert_allclose(dl["data_seconds"] + dl["compute_seconds"], dl["epoch_seconds"],
                               rtol=0.05, atol=2e-3)
    assert epochs.loc[epochs["backend"] == "torch:cpu", "data_seconds"].isna().all()


def test_pipeline_batch_equals_the_in_memory_rows():
    """uint8 -> PIL -> ToTensor -> Normalize -> flatten gives the loader's normalised rows."""
    needs_torchvision()
    from torch.utils.data import DataLoader

    from bench.backends.dataloader_backend import (
        CifarStyleImages,
        EpochOrder,
        make_transform,
    )

    data = tiny_data()
    order = np.random.default_rng(5).permutation(len(data.y_train))
    sampler = EpochOrder()
    sampler.set_order(order)
    images = CifarStyleImages(data.raw_train, data.y_train, make_transform(data.mean, data.std))
    loader = DataLoader(images, batch_size=100, sampler=sampler, drop_last=True)
    batches = list(loader)
    assert len(batches) == len(order) // 100  # drop_last
    x = np.concatenate([b[0].numpy() for b in batches])     # (500, 3072) float32
    y = np.concatenate([b[1].numpy() for b in batches])     # (500,)
    rows = order[:len(x)]
    assert x.dtype == np.float32
    np.testing.assert_array_equal(y, data.y_train[rows])
    np.testing.assert_allclose(x, data.x_train[rows], rtol=0, atol=1e-6)
    raw = data.raw_train[rows].reshape(-1, 3, 1024).astype(np.float64)
    mean, std = np.asarray(data.mean)[:, None], np.asarray(data.std)[:, None]
    formula = ((raw / 255 - mean) / std).reshape(len(rows), -1)  # (x/255 - mean)/std per channel, CHW
    np.testing.assert_allclose(x, formula, rtol=0, atol=1e-6)


def test_dataloader_workers_give_the_same_batches():
    """num_workers changes who makes the batches, not which: same losses as num_workers=0."""
    needs_torchvision()
    from bench.run import run_one
    from bench.backends.dataloader_backend import DataLoaderBackend

    data = tiny_data(n_train=256)
    cfg = dataclasses.replace(TINY_CONFIG, train_subset=256, epochs=1)
    losses = []
    for workers in (0, 2):
        b = DataLoaderBackend(dataclasses.replace(cfg, dataloader_workers=workers), "cpu")
        b.load_data(data)
        result = run_one(b, dataclasses.replace(b.config, reference_timing=False), data, 3, record_steps=True,
                         warmup_steps=1)
        losses.append([s["loss"] for s in result.steps])
        assert result.status == "ok" and result.epochs[0]["data_seconds"] > 0
    np.testing.assert_array_equal(losses[0], losses[1])


def test_dataloader_refuses_what_it_cannot_do():
    needs_torchvision()
    from bench.backends.dataloader_backend import DataLoaderBackend

    with pytest.raises(UserError, match="cuda-graph"):
        DataLoaderBackend(dataclasses.replace(TINY_CONFIG, cuda_graph=True), "cpu")
    b = DataLoaderBackend(TINY_CONFIG, "cpu")
    with pytest.raises(UserError, match="raw_train"):
        b.load_data(tiny_data(n_features=100))  # no 32x32 images to decode


@pytest.mark.cuda
def test_dataloader_on_cuda_in_lockstep_with_torch(tmp_path):
    """On a GPU: pinned batches copied per step, same losses as torch:cuda, the time split recorded."""
    needs_torchvision()
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (torch.cuda.is_available() is False)")
    epochs, runs, _summary, steps, _report = run_compare(
        tmp_path, "--backends", "torch:cuda,torch-dataloader:cuda", "--lockstep")
    assert set(runs["status"]) == {"ok"}
    np.testing.assert_allclose(step_losses(steps, "torch-dataloader:cuda"),
                               step_losses(steps, "torch:cuda"), rtol=1e-4, atol=1e-5)
    dl = epochs[epochs["backend"] == "torch-dataloader:cuda"]
    assert (dl["data_seconds"] > 0).all() and (dl["compute_seconds"] > 0).all()
    np.testing.assert_allclose(dl["data_seconds"] + dl["compute_seconds"], dl["epoch_seconds"],
                               rtol=0.05, atol=2e-3)


def test_a_torchvision_built_for_another_torch_is_one_line(tmp_path, monkeypatch):
    """A CUDA torchvision from PyPI beside the CPU-only torch fails at import with a RuntimeError
    (an operator it cannot register): the backend says so and how to install a matching pair."""
    from bench.backends import resolve

    fake = tmp_path / "torchvision"
    fake.mkdir()
    (fake / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m.startswith("torchvision")] + \
            ["bench.backends.dataloader_backend"]:
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(UserError) as err:
        resolve(["torch-dataloader:cpu"])
    message = str(err.value)
    assert "torchvision does not load beside torch" in message and "nms does not exist" in message
    assert "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu" in message
