"""bench.sweep on a tiny synthetic grid: local and Dask executors agree, resume, failures, bad grids."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from bench.backends import IMPLS, Impl
from bench.errors import UserError
from bench.io import save_figure
from bench.sweep.__main__ import main
from bench.sweep.grid import parse_grid
from bench.run import failure_status
from conftest import REPO, assert_one_line_error, started

# 2 × 2 points × 2 backends = 8 tasks of 8 or 4 steps each; one thread keeps them quick on busy cores
GRID = ["--grid", "batch_size=32,64", "hidden_dims=8,16"]
TINY = ["--epochs", "1", "--dataset", "synthetic", "--train-subset", "256", "--val-size", "64",
        "--threads", "1", "--quiet"]
BACKENDS = ["--backends", "numpy:cpu,torch:cpu"]
KEY = ["batch_size", "hidden_dims", "backend", "seed"]
ROW_COLS = {*KEY, "status", "error", "test_acc", "median_epoch_seconds_all", "n_epochs_trusted",
            "median_epoch_seconds_trusted", "gemm_seconds_trusted", "epoch_to_gemm_trusted",
            "hostname", "cpu_model", "logical_cores", "gpu", "threads", "run_id", "executor", "worker"}


def rows(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "sweep.csv", keep_default_na=False).sort_values(KEY).reset_index(drop=True)


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The tiny grid through the default (local, sequential) executor, shared by the checks below."""
    out = tmp_path_factory.mktemp("sweep") / "local"
    assert main([*GRID, *TINY, *BACKENDS, "--out", str(out)]) == 0
    return out


def test_local_rows_and_outputs(local_sweep, capsys):
    r = rows(local_sweep)
    assert ROW_COLS <= set(r.columns)
    assert len(r) == 8 and not r.duplicated(KEY).any()
    assert set(r["status"]) == {"ok"} and set(r["executor"]) == {"local"}
    assert set(r["batch_size"]) == {32, 64} and set(r["hidden_dims"].astype(str)) == {"8", "16"}
    assert (r["median_epoch_seconds_all"] > 0).all() and r["n_epochs_trusted"].isin([0, 1]).all()
    assert (r["test_acc"] > 0.3).all()  # learnable data: well above chance (10 %)
    assert (r["threads"] == 1).all() and r["hostname"].str.len().gt(0).all()
    host = r["hostname"].iloc[0]
    env = json.loads((local_sweep / f"env_{host}.json").read_text())
    assert {"cpu", "versions", "blas", "threads", "gpu", "hostname"} <= set(env)
    epochs = pd.read_csv(local_sweep / "epochs.csv")
    assert len(epochs) == 8 and {"batch_size", "hidden_dims", "epoch_seconds"} <= set(epochs.columns)
    report = (local_sweep / "report.md").read_text()
    for name in ("ratio_cpu.png", "accuracy.png"):
        img = mpimg.imread(local_sweep / name)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
        assert f"]({name})" in report
    assert "## Crossover" in report and "hidden_dims \\ batch_size" in report and host in report
    base = next(line for line in report.splitlines() if line.startswith("- Base settings"))
    names = {item.split("=", 1)[0] for item in base.split(": ", 1)[1].split(", ") if "=" in item}
    from bench.config import COMMAND_FIELDS
    assert names and names <= set(COMMAND_FIELDS["sweep"]) - {"batch_size", "hidden_dims"}
    assert {"lr", "epochs"} <= names and not names & {"depth", "k", "gpu_variants", "lockstep"}
    settings = next(line for line in report.splitlines() if line.startswith("- Settings: "))
    own = {item.split("=", 1)[0] for item in settings.split(": ", 1)[1].split(", ") if "=" in item}
    assert {"grid", "lr", "scheduler"} <= own and not own & {"depth", "k", "gpu_variants", "lockstep"}
    spec = json.loads((local_sweep / "sweep.json").read_text())
    assert set(spec["config"]) <= set(COMMAND_FIELDS["sweep"])  # only what a resume must repeat


def test_dask_local_cluster_gives_the_same_rows(local_sweep, tmp_path):
    pytest.importorskip("distributed", reason="the 'dask' extra is not installed")
    out = tmp_path / "dask"
    assert main([*GRID, *TINY, *BACKENDS, "--out", str(out), "--local-cluster", "2"]) == 0
    a, b = rows(local_sweep), rows(out)
    assert a[KEY].equals(b[KEY]) and a["status"].equals(b["status"])
    # same seed, same code, same thread count: bit-identical results in another process
    assert a["test_acc"].equals(b["test_acc"]) and a["test_loss"].equals(b["test_loss"])
    assert set(b["executor"]) == {"dask-local"}
    assert b["worker"].str.startswith("tcp://127.0.0.1:").all()
    assert (out / "ratio_cpu.png").exists()


def test_resume_runs_only_the_missing_tasks(local_sweep, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(local_sweep, out)
    lines = (out / "sweep.csv").read_text().splitlines(keepends=True)
    (out / "sweep.csv").write_text("".join(lines[:-3]))  # the last three tasks were "in flight"
    kept = set(lines[1:-3])
    first_run = pd.read_csv(out / "sweep.csv")["run_id"].iloc[0]
    assert main([*GRID, *TINY, *BACKENDS, "--out", str(out)]) == 0
    after = (out / "sweep.csv").read_text().splitlines(keepends=True)
    assert kept <= set(after)  # finished rows are kept byte for byte
    r = pd.read_csv(out / "sweep.csv")
    assert len(r) == 8 and not r.duplicated(KEY).any()
    again = r[r["run_id"] != first_run]
    assert len(again) == 3 and set(again["status"]) == {"ok"}
    spec = json.loads((out / "sweep.json").read_text())
    assert [run["tasks"] for run in spec["runs"]] == [8, 3]
    # a third run finds nothing to do and only redraws the outputs
    assert main([*GRID, *TINY, *BACKENDS, "--out", str(out)]) == 0
    assert pd.read_csv(out / "sweep.csv").equals(r)


def test_killed_sweep_leaves_whole_rows_and_resumes(tmp_path):
    """SIGKILL in the middle of a sweep: sweep.csv holds only whole rows; the re-run adds the rest."""
    args = ["--grid", "batch_size=16,32,64,128", "hidden_dims=8,16", *TINY, "--backends", "numpy:cpu"]
    out = tmp_path / "killed"
    csv = out / "sweep.csv"
    with started(["bench.sweep", *args, "--out", str(out)], tmp_path, stdout=subprocess.DEVNULL) as proc:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (csv.exists() and len(csv.read_text().splitlines()) >= 3):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    before = pd.read_csv(csv)
    assert 2 <= len(before) < 8, "the sweep finished before it could be killed"
    assert before.notna()["status"].all() and set(before["status"]) == {"ok"}
    assert main([*args, "--out", str(out)]) == 0
    r = pd.read_csv(csv)
    assert len(r) == 8 and not r.duplicated(KEY).any()
    assert (r["run_id"] != before["run_id"].iloc[0]).sum() == 8 - len(before)


class ExplodingBackend:
    """numpy:cpu whose steps raise at hidden width 16 (an exception inside a task)."""

    def __new__(cls, config, device="cpu"):
        from bench.backends.numpy_backend import NumpyBackend

        backend = NumpyBackend(config, device)
        if config.hidden_dims == [16]:
            def explode(idx):
                raise RuntimeError("boom at width 16")
            backend.train_batch = explode
        backend.impl = "exploding"
        return backend


def available(device):
    return True, ""


def test_failing_tasks_are_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(REPO / "tests"))
    monkeypatch.setitem(IMPLS, "exploding", Impl("test_sweep", "ExplodingBackend", None, False))
    out = tmp_path / "fail"
    args = ["--grid", "lr=0.05,1e8", "hidden_dims=8,16", *TINY, "--batch-size", "32",
            "--backends", "exploding:cpu", "--out", str(out)]
    assert main(args) == 0
    r = pd.read_csv(out / "sweep.csv").set_index(["lr", "hidden_dims"])
    assert r.loc[(0.05, 8), "status"] == "ok" and r.loc[(0.05, 8), "test_acc"] > 0.3
    assert r.loc[(1e8, 8), "status"] == "diverged"
    assert "non-finite training loss" in r.loc[(1e8, 8), "error"]
    for lr in (0.05, 1e8):
        assert r.loc[(lr, 16), "status"] == "failed"
        assert r.loc[(lr, 16), "error"] == "RuntimeError: boom at width 16"
    assert "3 task(s) did not finish ok" in capsys.readouterr().err
    report = (out / "report.md").read_text()
    assert "## Failed tasks" in report and "boom at width 16" in report
    # a re-run keeps ok and diverged tasks and retries the errors
    first = r["run_id"].iloc[0]
    assert main(args) == 0
    r2 = pd.read_csv(out / "sweep.csv").set_index(["lr", "hidden_dims"])
    assert list(r2.loc[r2["run_id"] != first].index.get_level_values("hidden_dims")) == [16, 16]


def test_failure_status_names_out_of_memory():
    assert failure_status(MemoryError()) == "oom"
    assert failure_status(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")) == "oom"
    assert failure_status(ValueError("shapes do not match")) == "failed"


# ---------------------------------------------------------------- the grid and its errors


def test_grid_values_take_the_field_type():
    g = parse_grid(["hidden_dims=64,512x256,1024 512", "train_subset=none,100", "residual=true,no",
                    "lr=0.1,1e-2", "activation=relu,tanh"])
    assert g.fields == ("hidden_dims", "train_subset", "residual", "lr", "activation")
    assert g.values[0] == ([64], [512, 256], [1024, 512])
    assert g.values[1:] == ((None, 100), (True, False), (0.1, 0.01), ("relu", "tanh"))
    assert g.canonical()["hidden_dims"] == ["64", "512x256", "1024x512"]
    assert len(g.points()) == 3 * 2 * 2 * 2 * 2


@pytest.mark.parametrize("grid, needles", [
    (["bogus=1,2"], ["unknown field 'bogus'"]),
    (["hiden_dims=8,16"], ["unknown field 'hiden_dims' (did you mean hidden_dims?)"]),  # A12-W11
    (["data_dir=/nonexistent,/tmp"], ["invalid data_dir", "--dataset synthetic"]),  # A12-W23: never ignored
    (["batch_size=32,abc"], ["invalid batch_size: 'abc'", "an integer"]),
    (["hidden_dims=64,12q"], ["invalid hidden_dims: '12q'", "512x256"]),
    (["batch_size=32,32"], ["batch_size lists the value 32 twice"]),
    (["seeds=1,2"], ["seeds cannot be swept", "--seeds"]),
    (["batch_size"], ["not FIELD=V1,V2"]),
    (["lr=0.1,"], ["lr has an empty value"]),
    (["batch_size=32,0"], ["grid point batch_size=0", "invalid batch_size: 0"]),
    (["batch_size=32,512"], ["grid point batch_size=512", "training-set size 256"]),
    (["activation=elu,softmax"], ["grid point activation=softmax"]),
])
def test_bad_grid_is_one_user_error_before_any_work(grid, needles, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(UserError) as err:
        main(["--grid", *grid, *TINY, "--backends", "numpy:cpu", "--out", str(out)])
    for n in needles:
        assert n in str(err.value)
    assert "\n" not in str(err.value) and not out.exists()


def test_bad_grid_on_the_command_line_exits_2_with_one_line(cli):
    proc = cli("bench.sweep", "--grid", "batch_size=32,abc", *TINY, "--backends", "numpy:cpu")
    assert_one_line_error(proc, "invalid batch_size: 'abc'")
    assert not (proc.cwd / "results").exists()


def test_swept_field_set_by_a_flag_too_is_an_error(tmp_path):
    with pytest.raises(UserError, match="batch_size is both swept by --grid and set by --batch-size"):
        main([*GRID, *TINY, "--batch-size", "32", "--out", str(tmp_path / "x")])


def test_resuming_with_another_grid_or_setting_is_an_error(local_sweep, tmp_path):
    out = tmp_path / "other"
    shutil.copytree(local_sweep, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(UserError, match="holds a different sweep: its grid is batch_size=32,64"):
        main(["--grid", "batch_size=32,128", "hidden_dims=8,16", *TINY, *BACKENDS, "--out", str(out)])
    with pytest.raises(UserError, match="holds a sweep with lr = 0.1, not 0.05"):
        main([*GRID, *TINY, *BACKENDS, "--lr", "0.05", "--out", str(out)])
    # the refused commands changed nothing: env.json still records the sweep that ran (SW07)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize("damage, needle", [
    ("header", "has no column 'median_epoch_seconds_trusted'"),    # X-F1: a renamed column
    ("grid", "not a sweep's spec"),                                # X-F2: a grid value that is not text
    ("duplicate", "more than one row for the task"),               # X-F9: refused after the record
])
def test_a_damaged_store_is_refused_in_one_line_and_left_as_found(local_sweep, tmp_path, damage, needle):
    out = tmp_path / "damaged"
    shutil.copytree(local_sweep, out)
    if damage == "header":
        text = (out / "sweep.csv").read_text()
        (out / "sweep.csv").write_text(text.replace("median_epoch_seconds_trusted", "renamed", 1))
    elif damage == "grid":
        spec = json.loads((out / "sweep.json").read_text())
        spec["grid"]["batch_size"] = [32, {"a": 1}]
        (out / "sweep.json").write_text(json.dumps(spec))
    else:
        lines = (out / "sweep.csv").read_text().splitlines(keepends=True)
        (out / "sweep.csv").write_text("".join([*lines, lines[1]]))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(UserError, match=needle):
        main([*GRID, *TINY, *BACKENDS, "--out", str(out)])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize("timing", ["--reference-timing", "--no-reference-timing"])
def test_the_same_command_resumes_with_or_without_the_gemm_brackets(tmp_path, timing):
    """Y-F1: a sweep without GEMM-only brackets has no gemm_seconds_trusted column, and is resumed."""
    out, argv = tmp_path / "s", ["--grid", "batch_size=32,64", *TINY, "--backends", "numpy:cpu", timing]
    assert main([*argv, "--out", str(out)]) == 0
    lines = (out / "sweep.csv").read_text().splitlines(keepends=True)
    (out / "sweep.csv").write_text("".join(lines[:-1]))  # the last task was in flight
    assert main([*argv, "--out", str(out)]) == 0
    assert len(pd.read_csv(out / "sweep.csv")) == 2


def test_a_resume_keeps_the_first_record_and_adds_its_own(local_sweep, tmp_path):
    out = tmp_path / "again"
    shutil.copytree(local_sweep, out)
    first = (out / "env.json").read_bytes()
    assert main([*GRID, *TINY, *BACKENDS, "--out", str(out)]) == 0
    assert (out / "env.json").read_bytes() == first
    (resumed,) = out.glob("env.resumed-*.json")
    assert {"command", "config", "versions"} <= set(json.loads(resumed.read_text()))
    assert f"`{resumed.name}`" in (out / "report.md").read_text()


def test_missing_dask_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(UserError, match=r"pip install '\.\[dask\]'"):
        main([*GRID, *TINY, *BACKENDS, "--local-cluster", "2", "--out", str(tmp_path / "d")])
    assert not (tmp_path / "d").exists()


def test_ratio_map_draws_the_crossover_only_where_there_is_one(tmp_path):
    from bench.sweep import plots

    grid = {"batch_size": ["32", "64", "128"], "hidden_dims": ["8", "16"]}
    for name, ratios in (("cross", [0.5, 0.8, 1.5, 0.7, 1.2, 3.0]), ("none", [1.5, 2, 3, 4, 5, 6])):
        frame = pd.DataFrame({"batch_size": grid["batch_size"] * 2,
                              "hidden_dims": ["8"] * 3 + ["16"] * 3, "device": "cpu", "ratio": ratios})
        z = np.array(ratios).reshape(2, 3)
        assert plots.crosses_one(z) is (name == "cross")
        path = tmp_path / f"{name}.png"
        save_figure(plots.plot_ratio(frame, grid, "cpu", {}), path)
        assert mpimg.imread(path).shape[0] > 100
    assert not plots.crosses_one(np.array([[0.5, 2.0]]))  # one row: no 2-D contour


@pytest.mark.parametrize("flags", [
    ["", "", "", "x", "x", "x"],   # the only crossing is between flagged cells: no line at all
    ["", "x", "", "", "", ""],     # a line may run, but never through the flagged cell
])
def test_the_ratio_1_contour_never_runs_through_a_flagged_cell(tmp_path, monkeypatch, flags):
    from matplotlib.axes import Axes

    from bench.sweep import plots

    grid = {"batch_size": ["32", "64", "128"], "hidden_dims": ["8", "16"]}
    ratios = [1.5, 0.8, 1.5, 0.7, 1.2, 3.0] if flags[1] else [1.5, 2.0, 3.0, 0.5, 0.6, 0.7]
    frame = pd.DataFrame({"batch_size": grid["batch_size"] * 2, "hidden_dims": ["8"] * 3 + ["16"] * 3,
                          "device": "cpu", "ratio": ratios, "flag": flags})
    drawn = []
    contour = Axes.contour
    monkeypatch.setattr(Axes, "contour", lambda self, *a, **k: drawn.append(a[2]) or contour(self, *a, **k))
    save_figure(plots.plot_ratio(frame, grid, "cpu", {}), tmp_path / "r.png")
    flagged = np.array([bool(f) for f in flags]).reshape(2, 3)
    if flags[1]:
        assert len(drawn) == 1 and np.ma.getmaskarray(drawn[0])[flagged].all()
    else:
        assert drawn == []  # the rows cross 1 only between the row of flagged cells and the other


def test_a_crossover_is_stated_only_between_unflagged_points():
    from bench.sweep.analysis import crossover_sentences

    grid = {"batch_size": ["32", "128", "512"]}
    frame = pd.DataFrame({"batch_size": grid["batch_size"], "device": "cpu",
                          "ratio": [2.92, 1.4, 0.07], "flag": ["", "", ""]})
    clean = crossover_sentences(frame, grid, "cpu", {})
    assert clean == ["the grid: crosses 1 between batch_size=128 (1.40) and batch_size=512 (0.07), "
                     "NumPy faster from 512"]
    frame["flag"] = ["", "", "numpy:cpu seed 42: too few timed epochs (0 < 3)"]
    flagged = crossover_sentences(frame, grid, "cpu", {})[0]
    assert "crosses 1" not in flagged
    assert "inconclusive between batch_size=128 (1.40) and batch_size=512 (0.07)" in flagged
    assert "too few timed epochs" in flagged
    frame["flag"] = "numpy:cpu seed 42: ratio 0.07 below 1"
    assert "inconclusive, the timing is flagged at every batch_size" in crossover_sentences(
        frame, grid, "cpu", {})[0]


def test_a_one_field_table_labels_its_row():
    from bench.sweep.report import ratio_tables

    grid = {"batch_size": ["32", "128"]}
    frame = pd.DataFrame({"batch_size": ["32", "128"], "device": "cpu", "ratio": [1.5, 0.7],
                          "flag": ["", "x"]})
    table = ratio_tables(frame, grid)["cpu"]
    assert table.iloc[0].tolist() == ["NumPy / PyTorch", "1.50", "0.70?"]
