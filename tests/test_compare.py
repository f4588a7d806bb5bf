"""bench.compare end to end on tiny synthetic data (seconds), and once on the real data."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import matplotlib.image as mpimg
import pandas as pd
import pytest

from bench.backends import IMPLS, Impl
from conftest import REPO, assert_one_line_error, real_data_dir, started_until_epochs

TINY = ["--dataset", "synthetic", "--train-subset", "512", "--val-size", "256", "--batch-size", "64",
        "--hidden-dims", "32", "--epochs", "2", "--seeds", "42", "--quiet"]
EPOCH_COLS = {"backend", "impl", "device", "seed", "epoch", "train_loss", "train_acc", "val_loss",
              "val_acc", "epoch_seconds", "eval_seconds", "samples_per_second", "gemm_before_seconds",
              "gemm_after_seconds", "gemm_seconds", "epoch_to_gemm", "ratio_floor", "timing_quality",
              "trusted"}
RUN_COLS = {"backend", "impl", "device", "seed", "test_acc", "test_loss", "best_epoch", "best_val_acc",
            "total_train_seconds", "median_epoch_seconds_all", "time_to_target_seconds", "status",
            "peak_memory_bytes"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One two-seed run of numpy:cpu and torch:cpu, shared by the checks below."""
    cwd = tmp_path_factory.mktemp("compare")
    proc = subprocess.run([sys.executable, "-m", "bench.compare", *TINY, "--seeds", "1", "2",
                           "--backends", "numpy:cpu,torch:cpu", "--out", "out"],
                          cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return cwd / "out", proc


def test_csv_columns_and_rows(tiny_run):
    out, _ = tiny_run
    epochs = pd.read_csv(out / "epochs.csv")
    runs = pd.read_csv(out / "runs.csv")
    summary = pd.read_csv(out / "summary.csv")
    assert EPOCH_COLS <= set(epochs.columns)
    assert RUN_COLS <= set(runs.columns)
    assert len(epochs) == 2 * 2 * 2 and len(runs) == 4
    assert set(runs["status"]) == {"ok"}
    assert list(summary["backend"]) == ["numpy:cpu", "torch:cpu"]
    assert (summary["n"] == 2).all()
    assert {"test_acc_mean", "test_acc_std", "n_epochs_all", "median_epoch_seconds_all",
            "n_epochs_trusted", "median_epoch_seconds_trusted", "epoch_seconds_min_trusted",
            "epoch_seconds_q25_trusted", "epoch_seconds_q75_trusted", "gemm_seconds_trusted",
            "epoch_to_gemm_trusted", "epoch_to_gemm_min_trusted", "ratio_floor", "fixed_step_seconds",
            "timing_quality"} <= set(summary.columns)
    assert epochs["timing_quality"].notna().all() and summary["timing_quality"].notna().all()
    # two epochs a run: at most one trusted epoch per seed, too few to be a finding, and it says so
    assert summary["timing_quality"].str.contains("too few trusted epochs|no trusted epoch").all()
    assert (epochs["epoch_seconds"] > 0).all() and (epochs["gemm_seconds"] > 0).all()
    # the synthetic problem is learnable: both backends end well above chance (10 %)
    assert (runs["test_acc"] > 0.3).all()


def test_same_seed_same_batches_same_split(tiny_run):
    out, _ = tiny_run
    epochs = pd.read_csv(out / "epochs.csv")
    # identical data and batch order give both frameworks the same number of samples per epoch
    counts = epochs.groupby("backend")["samples_per_second"].count()
    assert counts["numpy:cpu"] == counts["torch:cpu"]


def test_pngs_are_images_and_report_links_them(tiny_run):
    out, proc = tiny_run
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert not (out / ".lock").exists()
    assert {"train_loss.png", "val_acc.png", "epoch_time.png"} <= set(pngs)
    for name in pngs:
        img = mpimg.imread(out / name)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    report = (out / "report.md").read_text()
    for name in pngs:
        assert f"]({name})" in report
    assert "Welch" in report and "n = 2" in report
    env = json.loads((out / "env.json").read_text())
    assert {"versions", "cpu", "blas", "threads", "config", "data", "git_commit", "command"} <= set(env)
    assert env["data"]["official"] is False and len(env["data"]["fingerprint"]) == 64
    assert proc.stdout.strip().splitlines()[-1] == "results: out"


def test_lockstep_divergence_is_tiny(cli):
    proc = cli("bench.compare", *TINY, "--lockstep", "--backends", "numpy:cpu,torch:cpu",
               "--out", "lock", "--dtype", "float64")
    assert proc.returncode == 0, proc.stderr
    steps = pd.read_csv(proc.cwd / "lock" / "steps.csv")
    table = steps.pivot_table(index="step", columns="backend", values="loss")[["numpy:cpu", "torch:cpu"]]
    assert len(table) == 2 * (512 // 64)
    rel = ((table["numpy:cpu"] - table["torch:cpu"]).abs() / table["torch:cpu"]).max()
    assert rel < 1e-10  # float64: the hand-derived backward pass is autograd's function
    lock = next(line for line in proc.stdout.splitlines() if line.startswith("lock-step:"))
    assert lock.startswith("lock-step: `torch:cpu` against `numpy:cpu`: largest relative loss difference")
    assert "never parts" in lock and "Yardstick, the rounding control `numpy:cpu+1ulp`" in lock
    control = steps[steps["backend"] == "numpy:cpu+1ulp"]  # the control's steps are in steps.csv
    assert len(control) == len(table) and set(pd.read_csv(proc.cwd / "lock" / "runs.csv")["backend"]) \
        == {"numpy:cpu", "torch:cpu"}  # ... but it is no run of its own
    env = json.loads((proc.cwd / "lock" / "env.json").read_text())
    assert env["lockstep"]["backends"]["torch:cpu"]["max_rel"] == pytest.approx(rel, rel=1e-6, abs=1e-15)


def test_diverging_run_is_recorded_and_others_finish(tmp_path, monkeypatch, capsys):
    from bench import compare
    monkeypatch.syspath_prepend(str(REPO / "tests"))
    monkeypatch.setitem(IMPLS, "diverging", Impl("fake_backends", "DivergingBackend", None, False))
    monkeypatch.chdir(tmp_path)
    code = compare.main([*TINY, "--backends", "diverging:cpu,numpy:cpu", "--out", "div"])
    assert code == 0
    runs = pd.read_csv(tmp_path / "div" / "runs.csv").set_index("backend")
    assert runs.loc["diverging:cpu", "status"] == "diverged"
    assert runs.loc["numpy:cpu", "status"] == "ok" and runs.loc["numpy:cpu", "test_acc"] > 0.3
    assert "diverged" in capsys.readouterr().err
    assert (tmp_path / "div" / "report.md").exists()


def test_interrupt_leaves_valid_partial_csvs(tmp_path):
    epochs_csv = tmp_path / "intr" / "epochs.csv"
    with started_until_epochs(["bench.compare", *TINY, "--epochs", "100000", "--backends",
                               "numpy:cpu", "--out", "intr"], tmp_path, epochs_csv) as proc:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    epochs = pd.read_csv(epochs_csv)
    runs = pd.read_csv(tmp_path / "intr" / "runs.csv")
    assert len(epochs) >= 2 and EPOCH_COLS <= set(epochs.columns)
    assert list(runs["status"]) == ["interrupted"]
    assert (tmp_path / "intr" / "report.md").exists()
    assert out.strip().splitlines()[-1] == "results: intr"


def test_existing_out_is_never_overwritten(cli):
    first = cli("bench.compare", *TINY, "--epochs", "1", "--backends", "numpy:cpu", "--out", "o")
    assert first.returncode == 0, first.stderr
    before = (first.cwd / "o" / "runs.csv").read_bytes()
    again = cli("bench.compare", *TINY, "--epochs", "1", "--backends", "numpy:cpu", "--out", "o")
    assert_one_line_error(again, "--out o already exists")
    assert (first.cwd / "o" / "runs.csv").read_bytes() == before


def test_unavailable_backend_asked_for_is_an_error(cli):
    import torch
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here, so torch:cuda is not an error")
    assert_one_line_error(cli("bench.compare", *TINY, "--backends", "torch:cuda"),
                          "torch:cuda", "not available")


@pytest.mark.realdata
def test_real_data_quick_run(cli):
    data = real_data_dir()
    if data is None:
        pytest.skip("no CIFAR-10 copy at ../shared/cifar10 or $MLPBENCH_DATA_DIR")
    proc = cli("bench.compare", "--data-dir", str(data), "--train-subset", "5000", "--epochs", "2",
               "--seeds", "42",
               "--backends", "numpy:cpu,torch:cpu", "--out", "real", "--quiet")
    assert proc.returncode == 0, proc.stderr
    runs = pd.read_csv(proc.cwd / "real" / "runs.csv")
    assert set(runs["status"]) == {"ok"} and (runs["test_acc"] > 0.25).all()
    env = json.loads((proc.cwd / "real" / "env.json").read_text())
    assert env["data"]["n_val"] == 5000 and env["data"]["n_test"] == 10000
