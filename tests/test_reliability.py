"""Faults and bad input, by the promise each case tests (the README's "Faults and bad input").

A. No result is lost. B. Resources stay bounded, whatever the input. C. Every
bad input is one line and exit 2. D. Provenance cannot be forged by accident.
E. The user's disk is left as found. Bad inputs are built on the fly (tiny
tar, pickle and batch files, fake backends that raise, a writer that fails);
nothing here needs the real data.
"""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import shutil
import signal
import tarfile
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from bench import compare
from bench import io as bio
from bench.backends import IMPLS, Impl
from bench.data import load_dataset
from bench.errors import UserError
from conftest import REPO, assert_one_line_error, started_until_epochs
from test_data_formats import make_source, tiny_arrays, write_binary_folder, write_python_folder

TINY = ["--dataset", "synthetic", "--train-subset", "256", "--val-size", "64", "--batch-size", "64",
        "--hidden-dims", "8", "--epochs", "2", "--seeds", "42", "--quiet"]


@pytest.fixture
def fakes(monkeypatch):
    """The fake backends of tests/fake_backends.py, registered under their impl names."""
    monkeypatch.syspath_prepend(str(REPO / "tests"))
    for impl, cls in (("exploding", "ExplodingBackend"), ("hungry", "HungryBackend"),
                      ("interrupting", "InterruptingBackend")):
        monkeypatch.setitem(IMPLS, impl, Impl("fake_backends", cls, None, False))


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("MLPBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MLPBENCH_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)


def load_quiet(data_dir, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return load_dataset(data_dir, val_size=10, progress=False, **kw)


# ---------------------------------------------------------------- A. no result is lost


def test_out_of_memory_in_one_backend_is_recorded_and_the_others_finish(fakes, capsys):
    assert compare.main([*TINY, "--backends", "hungry:cpu,numpy:cpu", "--out", "o"]) == 0
    runs = pd.read_csv("o/runs.csv").set_index("backend")
    assert runs.loc["hungry:cpu", "status"] == "oom"
    assert "MemoryError" in runs.loc["hungry:cpu", "error"]
    assert runs.loc["numpy:cpu", "status"] == "ok"
    assert "hungry:cpu seed 42: oom" in capsys.readouterr().err


def test_when_no_backend_finishes_the_exit_status_is_1(fakes, capsys):
    assert compare.main([*TINY, "--backends", "exploding:cpu,hungry:cpu", "--out", "o"]) == 1
    assert "no run finished ok" in capsys.readouterr().err
    assert set(pd.read_csv("o/runs.csv")["status"]) == {"failed", "oom"}
    assert Path("o/report.md").exists()


def test_ctrl_c_before_the_first_epoch_leaves_readable_csvs(fakes):
    assert compare.main([*TINY, "--backends", "interrupting:cpu,numpy:cpu", "--out", "o"]) == 130
    epochs, runs = pd.read_csv("o/epochs.csv"), pd.read_csv("o/runs.csv")
    assert len(epochs) == 0 and {"backend", "epoch", "epoch_seconds", "timing_quality"} <= set(epochs)
    assert list(runs["status"]) == ["interrupted"]
    summary = pd.read_csv("o/summary.csv")
    assert (summary["n_interrupted"] == 1).all() and (summary["n_failed"] == 0).all()  # not "failed"
    report = Path("o/report.md").read_text()
    assert "`numpy:cpu`: never started" in report


def test_sigterm_writes_everything_so_far_and_exits_143(tmp_path):
    with started_until_epochs(["bench.compare", *TINY, "--epochs", "100000", "--backends",
                               "numpy:cpu", "--out", "term"], tmp_path,
                              tmp_path / "term" / "epochs.csv") as proc:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert list(pd.read_csv(tmp_path / "term" / "runs.csv")["status"]) == ["interrupted"]
    report = (tmp_path / "term" / "report.md").read_text()
    assert "interrupted (SIGTERM)" in report and "Ctrl-C" not in report


def test_a_full_disk_while_saving_a_plot_costs_the_plot_only(monkeypatch, capsys):
    from matplotlib.figure import Figure

    def no_space(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", no_space)
    assert compare.main([*TINY, "--backends", "numpy:cpu", "--out", "o"]) == 0
    assert "warning: could not write" in capsys.readouterr().err
    out = Path("o")
    assert not list(out.glob("*.png")) and not list(out.glob(".*.tmp"))  # no half-written file
    report = (out / "report.md").read_text()
    assert "epoch_time.png" not in report and {"runs.csv", "summary.csv"} <= {p.name for p in out.iterdir()}
    assert plt.get_fignums() == []  # every figure was closed


def test_a_table_that_cannot_be_written_costs_that_table_only(monkeypatch, capsys):
    """A12-O8c/O12: the disk filled before the last rewrite of epochs.csv, or a link was planted at
    summary.csv during the run: the command stopped at that file, the report and the other tables
    unwritten. Each file is written on its own; one that fails is named (a warning, the report, the
    exit status 1) and the earlier checkpoint's copy of it stays."""
    from bench import io as bench_io

    real, calls = bench_io.write_csv, {"epochs.csv": 0}

    def full_at_the_end(df, path):
        if path.name == "epochs.csv":
            calls["epochs.csv"] += 1
            if calls["epochs.csv"] > 1:  # the first epoch's write went through; none after it
                raise OSError(errno.ENOSPC, "No space left on device")
        if path.name == "summary.csv":
            raise UserError(f"{path}: a link (refusing to write through it)")
        return real(df, path)

    monkeypatch.setattr(bench_io, "write_csv", full_at_the_end)
    assert compare.main([*TINY, "--backends", "numpy:cpu", "--out", "o"]) == 1
    captured = capsys.readouterr()
    assert "results: o" in captured.out
    assert "not written: epochs.csv: No space left on device" in captured.err
    assert "(the copy there is an earlier write's)" in captured.err and "not written: summary.csv" in captured.err
    out = Path("o")
    report = (out / "report.md").read_text()
    assert "Not written: `epochs.csv`" in report and "Not written: `summary.csv`" in report
    assert len(pd.read_csv(out / "epochs.csv")) == 1 and len(pd.read_csv(out / "runs.csv")) == 1
    assert {"train_loss.png", "val_acc.png"} <= {p.name for p in out.iterdir()}
    assert not (out / ".lock").exists()


SWEEP = ["--grid", "lr=0.05,0.1", *TINY, "--backends", "numpy:cpu", "--no-reference-timing"]


def test_a_sweep_row_cut_short_is_run_again():
    from bench.sweep.__main__ import main as sweep

    assert sweep([*SWEEP, "--out", "s"]) == 0
    rows = pd.read_csv("s/sweep.csv", dtype=str, keep_default_na=False)
    # damage outside the program: the last row cut right after its status
    keep = [c for c in rows.columns if c in ("lr", "backend", "seed", "status")]
    cut = rows.copy()
    for c in rows.columns:
        if c not in keep:
            cut.loc[cut.index[-1], c] = ""
    cut.to_csv("s/sweep.csv", index=False)
    assert sweep([*SWEEP, "--out", "s"]) == 0
    again = pd.read_csv("s/sweep.csv")
    assert again["median_epoch_seconds_all"].notna().all() and len(again) == 2


@pytest.mark.parametrize("damage, needle", [
    (lambda: Path("s/sweep.csv").write_bytes(os.urandom(2000)), "not a readable sweep table"),
    (lambda: Path("s/epochs.csv").write_bytes(os.urandom(2000)), "epochs.csv: not a readable sweep table"),
    (lambda: Path("s/sweep.json").write_text("[1, 2, 3]"), "not a sweep's spec"),
    (lambda: (Path("s/.lock").unlink(missing_ok=True), Path("s/.lock").mkdir()), "cannot take the lock"),
])
def test_a_damaged_sweep_folder_is_one_line(cli, tmp_path, damage, needle):
    first = cli("bench.sweep", *SWEEP, "--out", str(tmp_path / "s"))
    assert first.returncode == 0, first.stderr
    os.chdir(tmp_path)
    damage()
    assert_one_line_error(cli("bench.sweep", *SWEEP, "--out", str(tmp_path / "s")), needle)


# ---------------------------------------------------------------- B. bounded resources


def test_an_archive_member_larger_than_a_cifar_file_is_refused_unread(tmp_path):
    folder = write_binary_folder(tmp_path / "build", tiny_arrays())
    big = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
    big.size = 31_000_000  # more than the 30 730 000 bytes of an official binary batch
    (tmp_path / "data").mkdir()
    with tarfile.open(tmp_path / "data" / "cifar-10-binary.tar.gz", "w:gz") as tar:
        tar.addfile(big, io.BytesIO(bytes(big.size)))  # zeros: the archive itself stays small
        for p in sorted(folder.iterdir()):
            if p.name != "data_batch_1.bin":
                tar.add(p, arcname=f"{folder.name}/{p.name}")
    with pytest.raises(UserError, match="data_batch_1.bin is 31000000 bytes, more than the 30730000"):
        load_quiet(tmp_path / "data")


def test_a_batch_file_that_is_a_link_to_dev_zero_is_refused(tmp_path):
    data_dir = make_source(tmp_path, "binary", "folder")
    batch = data_dir / "cifar-10-batches-bin" / "data_batch_2.bin"
    batch.unlink()
    batch.symlink_to("/dev/zero")
    with pytest.raises(UserError, match="data_batch_2.bin: not a regular file"):
        load_quiet(data_dir)


def test_a_fifo_in_place_of_a_batch_is_refused_without_blocking(tmp_path, cli):
    data_dir = make_source(tmp_path, "binary", "folder")
    batch = data_dir / "cifar-10-batches-bin" / "test_batch.bin"
    batch.unlink()
    os.mkfifo(batch)
    proc = cli("bench.data", "--data-dir", str(data_dir), "--val-size", "10", timeout=60)
    assert_one_line_error(proc, "test_batch.bin: not a regular file")


def test_more_threads_than_cores_is_refused(cli):
    assert_one_line_error(cli("bench.compare", *TINY, "--threads", "100000"), "invalid threads: 100000",
                          "cores")


def test_a_model_that_cannot_fit_is_refused_before_any_work(cli):
    proc = cli("bench.compare", *TINY, "--hidden-dims", "60000,60000,60000", "--out", "big")
    assert_one_line_error(proc, "GiB", "available", "--hidden-dims")
    assert not (proc.cwd / "big").exists()


# ---------------------------------------------------------------- C. one line, exit 2


@pytest.mark.parametrize("label, needle", [
    (10**15, "label 4 is int 1000000000000000 (allowed: integers 0-9)"),
    (10**30, "a pickled integer of 100 bits"),  # refused before unpickling: over 64 bits
    (3.7, "label 4 is float 3.7"),
    ("3", "label 4 is str '3'"),
])
def test_python_batch_labels_must_be_small_integers(tmp_path, label, needle):
    folder = write_python_folder(tmp_path / "data", tiny_arrays())
    batch = pickle.loads((folder / "data_batch_3").read_bytes())
    batch[b"labels"][4] = label
    (folder / "data_batch_3").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(UserError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        load_quiet(tmp_path / "data")


def test_an_unreadable_data_folder_is_one_line(tmp_path, monkeypatch):
    data_dir = make_source(tmp_path, "binary", "folder")
    real_exists = Path.exists

    def exists(self, *args, **kwargs):
        if self.parent == data_dir:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_exists(self, *args, **kwargs)

    monkeypatch.setattr(Path, "exists", exists)
    with pytest.raises(UserError, match=f"cannot look inside the data folder {data_dir} .Permission denied"):
        load_quiet(data_dir)


def test_a_read_only_empty_out_is_one_line(tmp_path, monkeypatch):
    from bench.results import ResultsFolder

    out = tmp_path / "ro"
    out.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == out else real_access(p, mode))
    with pytest.raises(UserError, match="output folder .*ro is not writable"):
        ResultsFolder.create(out, "x")
    assert out.is_dir()


def test_a_train_subset_above_the_split_says_what_was_used(cli, tmp_path):
    data_dir = make_source(tmp_path, "binary", "folder")
    proc = cli("bench.compare", "--data-dir", str(data_dir), "--val-size", "10", "--train-subset", "500",
               "--batch-size", "10", "--hidden-dims", "4", "--epochs", "1", "--backends", "numpy:cpu",
               "--no-reference-timing", "--seeds", "42", "--quiet", "--out", "o")
    assert proc.returncode == 0, proc.stderr
    assert "note: train_subset 500 is more than the 90 training images of the split; using all 90" \
        in proc.stderr
    assert proc.stderr.count("note: ") == 2  # that, and the unofficial copy, each once
    assert "UserWarning" not in proc.stderr


# ---------------------------------------------------------------- D. provenance


@pytest.mark.parametrize("key", ["fingerprint", "md5"])
def test_an_edited_cache_manifest_is_rebuilt_not_believed(tmp_path, key):
    data_dir = make_source(tmp_path, "binary", "archive")
    first = load_quiet(data_dir)
    manifest = next((tmp_path / "cache").rglob("manifest.json"))
    doc = json.loads(manifest.read_text())
    value = doc["info"][key]
    doc["info"][key] = ("0" if value[0] != "0" else "1") + value[1:]  # one hex digit
    if key == "md5":
        doc["info"]["official"] = True
    manifest.write_text(json.dumps(doc))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = load_dataset(data_dir, val_size=10, progress=False)
    assert again.fingerprint == first.fingerprint and again.official is False
    assert any("fails its seal" in str(w.message) for w in caught)
    assert json.loads(manifest.read_text())["info"][key] == value  # rebuilt from the source


# ---------------------------------------------------------------- E. the disk as found


def test_cache_leftovers_are_swept_and_cache_files_are_not_private(tmp_path):
    data_dir = make_source(tmp_path, "binary", "archive")
    load_quiet(data_dir)
    entry = next((tmp_path / "cache").rglob("manifest.json")).parent
    leftover = entry / f"{bio.TMP_PREFIX}train_x.npy.abc123xy.tmp"
    leftover.write_bytes(b"half a file")
    load_quiet(data_dir)
    assert not leftover.exists()
    for f in entry.iterdir():
        assert f.stat().st_mode & 0o044, f  # readable by others, as the umask allows


@pytest.mark.parametrize("where", ["cifar10", "entry"])
def test_a_link_planted_in_the_cache_is_refused_and_nothing_goes_through_it(tmp_path, where):
    """o01-o03: the cache's own folders are never followed, for reading, sweeping or writing."""
    data_dir = make_source(tmp_path, "binary", "archive")
    load_quiet(data_dir)
    entry = next((tmp_path / "cache").rglob("manifest.json")).parent
    victim = tmp_path / "victim"
    victim.mkdir()
    for name in (".thesis.draft001.tmp", f"{bio.TMP_PREFIX}thesis.abcdefgh.tmp"):
        (victim / name).write_text("the user's")
    planted = entry.parent if where == "cifar10" else entry
    if where == "entry":
        for f in entry.iterdir():
            (victim / f.name).unlink(missing_ok=True)
    shutil.rmtree(planted)
    planted.symlink_to(victim)
    with pytest.raises(UserError, match=f"{planted}.*symbolic link"):
        load_quiet(data_dir)
    assert sorted(p.name for p in victim.iterdir()) == sorted(
        [".thesis.draft001.tmp", f"{bio.TMP_PREFIX}thesis.abcdefgh.tmp"])
    assert (victim / ".thesis.draft001.tmp").read_text() == "the user's"


def test_a_plot_that_fails_leaves_no_partial_file_and_closes_the_figure(tmp_path):
    from bench.io import save_figure

    fig, ax = plt.subplots()
    ax.plot([1, 2])

    class Broken(Exception):
        pass

    def boom(*args, **kwargs):
        raise Broken

    fig.savefig = boom
    with pytest.raises(Broken):
        save_figure(fig, tmp_path / "p.png")
    assert list(tmp_path.iterdir()) == [] and plt.get_fignums() == []
