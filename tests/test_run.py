"""The one run layer (bench.run): a run's record and its statuses, its hooks in order, runs taking turns,
the one row schema, and the Recorder's tables and summary."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.backends import IMPLS, Impl, resolve
from bench.backends.numpy_backend import NumpyBackend
from bench.config import Config
from bench.data import make_synthetic
from bench.roofline import epoch_flop
from bench.run import EPOCH_COLUMNS, RUN_COLUMNS, LoopHooks, Recorder, Run, run_one
from conftest import REPO

pytestmark = pytest.mark.usefixtures("one_thread")
CONFIG = Config(hidden_dims=[8], batch_size=32, epochs=3, dataset="synthetic", train_subset=128, val_size=32,
                eval_batch_size=64, reference_timing=False)


@pytest.fixture(scope="module")
def data():
    return make_synthetic(128, 32, 32, seed=0)


def numpy_cpu():
    return resolve(["numpy:cpu"])[0][0]


class Order(LoopHooks):
    """Every hook call, in order."""

    def __init__(self):
        self.calls = []

    def before_training(self, backend):
        self.calls.append("before")

    def after_epoch(self, backend, row):
        self.calls.append(f"after_epoch {row['epoch']}")
        row["mine"] = row["epoch"] * 10

    def epoch_done(self, record):
        self.calls.append(f"done {record.epochs[-1]['epoch']}")

    def after_training(self, backend, record):
        self.calls.append("after")


def test_a_run_records_every_epoch_its_row_and_its_hooks_in_order(data):
    order = Order()
    r = run_one(numpy_cpu(), CONFIG, data, 7, hooks=[order], labels={"variant": "x"}, record_steps=True)
    assert r.status == "ok" and r.error == "" and not r.interrupted
    assert order.calls == ["before", "after_epoch 1", "done 1", "after_epoch 2", "done 2", "after_epoch 3",
                           "done 3", "after"]
    assert set(RUN_COLUMNS) <= set(r.run) and r.run["variant"] == "x" and r.run["epochs_done"] == 3
    assert set(EPOCH_COLUMNS) - {"timing_quality"} <= set(r.epochs[0]) and [e["mine"] for e in r.epochs] == [10, 20, 30]
    assert all(e["variant"] == "x" for e in r.epochs + r.steps) and len(r.steps) == 3 * 4
    assert r.run["total_train_seconds"] == pytest.approx(sum(e["epoch_seconds"] for e in r.epochs))
    assert r.run["best_epoch"] in (1, 2, 3) and r.run["test_acc"] > 0.2
    assert r.options["gemm_library"]  # the backend's describe()


def test_a_built_backend_and_a_chosen_one_give_the_same_run(data):
    a = run_one(numpy_cpu(), CONFIG, data, 3, record_steps=True)
    b = run_one(NumpyBackend(CONFIG), CONFIG, data, 3, record_steps=True)
    c = run_one(numpy_cpu(), CONFIG, data, 3, backend=NumpyBackend(CONFIG), record_steps=True)
    assert [s["loss"] for s in a.steps] == [s["loss"] for s in b.steps] == [s["loss"] for s in c.steps]
    assert a.backend == b.backend == c.backend == "numpy:cpu"


class Failing(NumpyBackend):
    """numpy:cpu whose step in epoch ``when`` raises ``what`` (an exception class, or Ctrl-C)."""

    when, what = 2, ValueError

    def __init__(self, config, device="cpu"):
        super().__init__(config, device)
        self.n = 0

    def train_batch(self, idx):
        self.n += 1
        if self.n > (self.when - 1) * 4:
            raise self.what("boom" if self.what is not KeyboardInterrupt else None)
        super().train_batch(idx)


@pytest.mark.parametrize("what, status", [(ValueError, "failed"), (MemoryError, "oom"),
                                          (KeyboardInterrupt, "interrupted")])
def test_a_failure_ends_the_run_with_its_status_and_keeps_what_it_recorded(data, what, status):
    backend = Failing(CONFIG)
    backend.what = what
    r = run_one(backend, CONFIG, data, 0, warmup_steps=0)
    assert r.status == status and r.run["status"] == status and r.run["epochs_done"] == 1
    assert (r.error.startswith(f"{what.__name__}: boom") if status != "interrupted" else r.error == "")
    assert math.isnan(r.run["test_acc"])  # no test evaluation after a failure


def test_a_non_finite_loss_is_diverged_with_the_epoch_in_its_error(data):
    r = run_one(NumpyBackend(dataclasses.replace(CONFIG, lr=1e8)), CONFIG, data, 0)
    assert r.status == "diverged" and "non-finite training loss in epoch" in r.error


def test_a_constructor_that_fails_is_a_failed_record(data, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "tests"))
    monkeypatch.setitem(IMPLS, "broken", Impl("test_run", "Broken", None, False))
    r = run_one(resolve(["broken:cpu"])[0][0], CONFIG, data, 0)
    assert r.status == "failed" and "cannot be built" in r.error and r.run["epochs_done"] == 0
    assert set(RUN_COLUMNS) <= set(r.run)


class Broken:
    def __init__(self, config, device="cpu"):
        raise RuntimeError("cannot be built")


def available(device):
    return True, ""


def test_runs_take_turns_and_an_abandoned_one_is_interrupted(data):
    runs = [Run(numpy_cpu(), CONFIG, data, seed) for seed in (1, 2)]
    assert all(r.start() for r in runs)
    assert runs[0].step() and runs[1].step() and runs[0].step()
    done = [r.finish() for r in runs]  # abandoned between two epochs
    assert [len(r.epochs) for r in done] == [2, 1] and {r.status for r in done} == {"interrupted"}


def test_the_recorder_writes_as_runs_grow_and_summarises_with_gflops(data, tmp_path):
    from bench.results import ResultsFolder

    with ResultsFolder.create(tmp_path / "o", "x") as folder:
        rec = Recorder(folder)
        written = []

        class Watch(LoopHooks):
            def epoch_done(self, record):
                written.append(len(pd.read_csv(tmp_path / "o" / "epochs.csv")))

        for seed in (1, 2):
            rec.add(run_one(numpy_cpu(), CONFIG, data, seed, hooks=[rec, Watch()]))
            assert len(pd.read_csv(tmp_path / "o" / "runs.csv")) == seed
        flop = epoch_flop(data.n_features, [8], data.n_classes, 32, 128)
        tables = rec.tables(flop)
    assert written == [1, 2, 3, 4, 5, 6]
    summary = tables["summary.csv"].iloc[0]
    assert summary["n"] == 2 and tables["epochs.csv"]["trusted"].sum() == 4  # after each run's first
    assert summary["achieved_gflops"] == pytest.approx(flop / summary["median_epoch_seconds_trusted"] / 1e9)
    assert Recorder().tables()["runs.csv"].columns.tolist() == RUN_COLUMNS  # an empty table keeps its header


@settings(max_examples=20, deadline=None)
@given(epochs=st.integers(1, 4), batch=st.sampled_from([16, 32, 64]), every=st.sampled_from([None, 1, 3]))
def test_every_epoch_trains_every_full_batch_once_in_the_seeds_order(data, epochs, batch, every):
    cfg = dataclasses.replace(CONFIG, epochs=epochs, batch_size=batch, eval_every=every)
    r = run_one(NumpyBackend(cfg), cfg, data, 5, record_steps=True, warmup_steps=0)
    steps = 128 // batch
    assert r.status == "ok" and [e["steps"] for e in r.epochs] == [steps] * epochs
    assert [s["step"] for s in r.steps] == list(range(steps * epochs))
    assert len(r.evals) == (0 if every is None else epochs * math.ceil(steps / every))
    assert np.isfinite([e["val_acc"] for e in r.epochs]).all()
