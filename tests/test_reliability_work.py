"""An estimate of the work before any starts, and a sweep store that trusts only valid rows.

Promise B (bounded resources): every size a user controls is checked before
any work: the data and model memory of a run (``bench.memory``), the list
lengths of the config, a sweep grid's points, maps and tasks (computed from
the value counts, never by expanding the grid), the figures drawn from it,
the Hessian command's exact check and Lanczos basis. Promise A: a sweep row
cut short or holding garbage is not "done": it is run again, with one note.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.config import MAX_LAYERS, MAX_SEEDS, Config
from bench.errors import UserError
from bench.memory import check_memory
from bench.sweep import plots
from bench.sweep.grid import MAX_MAPS, MAX_POINTS, MAX_VALUES, Grid, check_size
from bench.sweep.store import SweepStore
from conftest import assert_one_line_error

TINY = ["--dataset", "synthetic", "--train-subset", "256", "--val-size", "64", "--batch-size", "64",
        "--hidden-dims", "8", "--epochs", "1", "--quiet", "--backends", "numpy:cpu", "--seeds", "42"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("MLPBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


# ---------------------------------------------------------------- memory, before any work


@pytest.mark.parametrize("command, flags, needle", [
    ("bench.compare", [*TINY, "--train-subset", "100000000"], "data of 100000000 training images"),
    ("bench.epoch_ratio", ["--train-subset", "100000000"], "data of 100000000 training images"),
    ("bench.gpu_check", ["--train-subset", "100000000"], "data of 100000000 training images"),
    ("bench.compare", [*TINY, "--hidden-dims", "60000,60000,60000"], "GiB"),
    ("bench.compare", [*TINY, "--lockstep", "--batch-size", "1", "--train-subset", "40000", "--epochs", "100000"], "GiB"),
    ("bench.gradflow", ["--dataset", "synthetic", "--width", "60000", "--depth", "21"], "--width, --depth"),
    ("bench.hessian", ["--dataset", "synthetic", "--hidden-dims", "60000"], "--hidden-dims, --k"),
])
def test_a_run_that_cannot_fit_is_refused_before_any_work(cli, tmp_path, command, flags, needle):
    proc = cli(command, *flags, "--out", "o")
    assert_one_line_error(proc, "available", needle)
    assert not (tmp_path / "o").exists()


def test_the_hessian_check_model_and_k_are_bounded(cli):
    assert_one_line_error(cli("bench.hessian", "--dataset", "synthetic", "--check-hidden", "1000"),
                          "43010 parameters", "at most 5000")
    assert_one_line_error(cli("bench.hessian", "--dataset", "synthetic", "--check-features", "4",
                              "--check-hidden", "2", "--k", "50"), "invalid k: 50", "1 to 19")
    assert_one_line_error(cli("bench.hessian", "--dataset", "synthetic", "--k", "100000"),
                          "invalid k: 100000", "at most 100")  # the field's cap, before any estimate


def test_the_estimate_counts_the_data(monkeypatch):
    from bench import memory

    monkeypatch.setattr(memory, "available", lambda: (2**30, "a test's limit"))
    check_memory(Config(dataset="synthetic", train_subset=1000), 1)
    with pytest.raises(UserError, match="data of 100000 training images: 1.6 GiB"):
        check_memory(Config(dataset="synthetic", train_subset=100_000), 1)


@settings(max_examples=50, deadline=None)
@given(meminfo=st.integers(0, 2**40), vmsize=st.integers(0, 2**36), soft=st.one_of(st.none(), st.integers(0, 2**37)),
       cgroup=st.one_of(st.none(), st.integers(-2**30, 2**40)))
def test_available_memory_is_the_least_of_every_limit(meminfo, vmsize, soft, cgroup):
    """c10, g01: a ``ulimit -v`` or a cgroup's memory.max bounds a run as much as MemAvailable."""
    import resource

    from bench import memory

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(memory, "_kib_fields", lambda path, *names: (
            {"MemAvailable": meminfo} if "meminfo" in path else {"VmSize": vmsize, "VmData": 0}))
        mp.setattr(memory, "_cgroup_headroom", lambda: cgroup)
        mp.setattr(resource, "getrlimit", lambda which: (
            (resource.RLIM_INFINITY if soft is None or which != resource.RLIMIT_AS else soft),) * 2)
        limits = [meminfo] + ([soft - vmsize] if soft is not None else []) + (
            [cgroup] if cgroup is not None else [])
        assert memory.available_bytes() == max(min(limits), 0)


def test_a_run_beyond_ulimit_v_is_refused_before_any_work(tmp_path):
    """c10: MemAvailable says gigabytes, the address-space limit far less: refused in one line."""
    proc = subprocess.run(["bash", "-c", f"ulimit -v 3000000; exec {sys.executable} -m bench.compare "
                           + " ".join(TINY) + " --train-subset 250000 --out o"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert_one_line_error(proc, "training images", "available (ulimit -v of 2.9 GiB less the")


@pytest.mark.parametrize("error", [
    "MemoryError",
    'RuntimeError("[enforce fail at alloc_cpu.cpp:117] . DefaultCPUAllocator: can\'t allocate memory")'])
def test_a_memory_error_outside_a_run_is_one_line_exit_1(error):
    """torch's allocator raises RuntimeError, not MemoryError (adversarial SG08)."""
    code = ("from bench.errors import run_cli\n"
            f"def main(argv):\n    raise {error}\n"
            "run_cli(main, [], 'x')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "out of memory" in proc.stderr


@pytest.mark.parametrize("flags, needle", [
    (["--hidden-dims", ",".join(["1"] * (MAX_LAYERS + 1))], f"a list of at most {MAX_LAYERS} integers"),
    (["--seeds", *map(str, range(MAX_SEEDS + 1))], f"1 to {MAX_SEEDS} distinct integers"),
    (["--dataloader-workers", "100000"], "worker processes per core"),
    (["--seeds", str(10**30)], "at most 4_294_967_295"),  # torch and scikit-learn take no larger seed
])
def test_config_lengths_are_bounded(cli, flags, needle):
    assert_one_line_error(cli("bench.compare", *TINY, *flags), needle)


def test_gradflow_depth_is_bounded(cli):
    assert_one_line_error(cli("bench.gradflow", "--depth", str(MAX_LAYERS + 1)), "invalid depth")


# ---------------------------------------------------------------- sweep grids, before expansion


def test_a_million_point_grid_is_refused_at_once(cli):
    values = ",".join(str(i) for i in range(1, 1001))
    proc = cli("bench.sweep", "--grid", f"batch_size={values}", f"hidden_dims={values}", *TINY, timeout=60)
    assert_one_line_error(proc, "1000 values", f"at most {MAX_VALUES}")
    assert not (proc.cwd / "results").exists()


@settings(max_examples=80, deadline=None)
@given(counts=st.lists(st.integers(1, 100), min_size=1, max_size=5), per_point=st.integers(1, 50))
def test_a_grid_is_refused_exactly_when_a_bound_is_passed(counts, per_point):
    fields = ("lr", "batch_size", "momentum", "weight_decay", "epochs")[:len(counts)]
    grid = Grid(fields, tuple(tuple(range(n)) for n in counts))
    too_big = (max(counts) > MAX_VALUES or math.prod(counts[2:]) > MAX_MAPS
               or math.prod(counts) * per_point > MAX_POINTS)
    if too_big:
        with pytest.raises(UserError, match="--grid"):
            check_size(grid, per_point)
    else:
        check_size(grid, per_point)


def test_tasks_count_backends_and_seeds(cli):
    lrs = ",".join(str(0.01 * i) for i in range(1, 51))
    momenta = ",".join(str(0.01 * i) for i in range(50))
    proc = cli("bench.sweep", "--grid", f"lr={lrs}", f"momentum={momenta}",
               *[f for f in TINY if f not in ("--backends", "numpy:cpu")],
               "--backends", "numpy:cpu,torch:cpu", "--seeds", "1", "2", "3")
    assert_one_line_error(proc, "2500 points x 6 backend-seed run(s) = 15000 tasks")


def test_a_map_of_the_largest_grid_stays_a_bounded_figure():
    import matplotlib.pyplot as plt

    sizes = []
    values = [str(v) for v in range(MAX_VALUES)]
    grid = {"batch_size": values, "lr": values}
    ratios = pd.DataFrame([{"batch_size": b, "lr": lr, "device": "cpu", "ratio": 1.1, "flag": ""}
                           for b in values for lr in values])
    sizes.append(plots.plot_ratio(ratios, grid, "cpu", {}).get_size_inches())
    acc = pd.DataFrame([{"batch_size": b, "lr": lr, "backend": k, "test_acc_mean": 0.5, "failed": ""}
                        for b in values for lr in values for k in ("numpy:cpu", "torch:cpu")])
    sizes.append(plots.plot_accuracy(acc, grid, {}).get_size_inches())
    plt.close("all")
    assert all(w <= plots.MAX_INCHES and h <= plots.MAX_INCHES for w, h in sizes)


# ---------------------------------------------------------------- the sweep store: valid rows only


SWEEP = ["--grid", "lr=0.05,0.1", *TINY, "--no-reference-timing"]


def _store(tmp_path) -> SweepStore:
    from types import SimpleNamespace

    store = SweepStore(SimpleNamespace(path=tmp_path), {"grid": {"lr": ["0.05", "0.1"]}, "config": {}, "backends": ["numpy:cpu"],
                                  "seeds": [42]})
    return store


GOOD = {"lr": "0.05", "backend": "numpy:cpu", "seed": "42", "status": "ok", "error": "",
        "test_acc": "0.5", "median_epoch_seconds_all": "0.2", "total_train_seconds": "0.4",
        "epochs_done": "2", "test_loss": "1.2"}


@pytest.mark.parametrize("column, value", [
    ("test_acc", "abc"), ("test_acc", "1.5"), ("test_acc", ""), ("median_epoch_seconds_all", "-3"),
    ("median_epoch_seconds_all", "inf"), ("median_epoch_seconds_all", "nan"), ("total_train_seconds", "-1"),
    ("epochs_done", "many"), ("status", "great"), ("status", ""), ("seed", "-1"), ("lr", "0.07"),
])
def test_a_damaged_row_is_not_a_finished_task(tmp_path, column, value):
    assert _store(tmp_path)._invalid(GOOD) == ""
    assert _store(tmp_path)._invalid({**GOOD, column: value}) != ""


@settings(max_examples=100, deadline=None)
@given(values=st.dictionaries(st.sampled_from(sorted(GOOD)), st.text(max_size=8), max_size=4))
def test_any_row_is_judged_without_an_error(values):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        why = _store(Path(d))._invalid({**GOOD, **values})
    assert isinstance(why, str) and "\n" not in why


def test_garbage_in_the_store_is_run_again_with_one_note(capsys):
    from bench.sweep.__main__ import main as sweep

    assert sweep([*SWEEP, "--out", "s"]) == 0
    rows = pd.read_csv("s/sweep.csv", dtype=str, keep_default_na=False)
    first_run = set(rows["run_id"])
    rows.loc[0, "test_acc"] = "abc"
    rows.loc[1, "median_epoch_seconds_all"] = "-0.5"
    rows.to_csv("s/sweep.csv", index=False)
    capsys.readouterr()
    assert sweep([*SWEEP, "--out", "s"]) == 0
    err = capsys.readouterr()
    notes = [line for line in err.err.splitlines() if "cut short or damaged" in line]
    assert len(notes) == 1 and "2 row(s)" in notes[0] and "test_acc = 'abc' is not a number" in notes[0]
    again = pd.read_csv("s/sweep.csv")
    assert not set(again["run_id"]) & first_run  # both run again
    assert len(again) == 2 and (again["test_acc"].between(0, 1)).all()
    assert (again["median_epoch_seconds_all"] > 0).all()


def test_a_store_file_that_is_a_link_is_refused_before_any_task(cli, tmp_path):
    from bench.sweep.__main__ import main as sweep

    assert sweep([*SWEEP, "--out", "s"]) == 0
    (tmp_path / "s" / "sweep.csv").unlink()
    (tmp_path / "s" / "sweep.csv").symlink_to("/dev/zero")
    assert_one_line_error(cli("bench.sweep", *SWEEP, "--out", "s"), "symbolic link")
    assert os.path.islink(tmp_path / "s" / "sweep.csv")
