"""The one results folder: claimed atomically, never shared, cleaned up after a failure; and the one run
path keeps going when a backend fails."""

from __future__ import annotations


import pandas as pd
import pytest

from bench import io as bio
from bench.backends import IMPLS, Impl
from bench.errors import UserError
from bench.results import LOCK_FILE, ResultsFolder
from conftest import REPO, assert_one_line_error, started

TINY = ["--dataset", "synthetic", "--train-subset", "512", "--val-size", "128", "--batch-size", "64",
        "--hidden-dims", "16", "--epochs", "2", "--seeds", "42", "--quiet"]
COMPARE_FILES = {"env.json", "epochs.csv", "runs.csv", "summary.csv", "pairs.csv", "report.md",
                 "train_loss.png", "val_acc.png", "epoch_time.png"}


def test_a_folder_is_claimed_once_then_released(tmp_path):
    path = tmp_path / "a" / "b"
    with ResultsFolder.create(path, "x") as folder:
        assert (path / LOCK_FILE).exists()
        with pytest.raises(UserError, match="another run is writing"):
            ResultsFolder.create(path, "x")
        folder.write_text("note.txt", "hello")
    assert not (path / LOCK_FILE).exists()
    assert sorted(p.name for p in path.iterdir()) == ["note.txt"]
    with pytest.raises(UserError, match="already exists and is not empty"):
        ResultsFolder.create(path, "x")


def test_a_folder_left_empty_is_removed_with_the_parents_it_made_but_not_the_users(tmp_path):
    with ResultsFolder.create(tmp_path / "new" / "deeper", "x"):
        pass
    assert not (tmp_path / "new").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    with ResultsFolder.create(mine, "x"):
        pass
    assert mine.is_dir() and list(mine.iterdir()) == []


def test_leftover_temporaries_are_swept_and_files_are_not_private(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / f"{bio.TMP_PREFIX}epochs.csv.abc123xy.tmp").write_text("half a file")
    with ResultsFolder.create(out, "x") as folder:
        path = folder.write_csv("t.csv", pd.DataFrame({"a": [1]}))
    assert not (out / f"{bio.TMP_PREFIX}epochs.csv.abc123xy.tmp").exists()
    assert path.stat().st_mode & 0o044  # readable by others, like any result


def test_two_compares_with_the_same_out_one_is_refused_the_other_complete(tmp_path):
    args = ["bench.compare", *TINY, "--backends", "numpy:cpu,torch:cpu", "--out", "same"]
    with started(args, tmp_path) as one, started(args, tmp_path) as two:
        results = [(p.wait(timeout=300), *p.communicate()) for p in (one, two)]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    loser = next(r for r in results if r[0] == 2)
    assert len(loser[2].strip().splitlines()) == 1 and "Traceback" not in loser[2]
    assert "another run is writing to same" in loser[2] or "same already exists" in loser[2]
    out = tmp_path / "same"
    assert COMPARE_FILES <= {p.name for p in out.iterdir()}
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(runs["backend"]) == ["numpy:cpu", "torch:cpu"] and set(runs["status"]) == {"ok"}
    assert len(pd.read_csv(out / "epochs.csv")) == 2 * 2


def test_a_data_error_leaves_no_folder_and_keeps_the_users_empty_one(tmp_path, cli):
    (tmp_path / "dd").mkdir()
    (tmp_path / "dd" / "cifar-10-binary.tar.gz").write_text("not an archive")
    (tmp_path / "mine").mkdir()
    for out in ("mine", "new/deeper"):
        proc = cli("bench.compare", "--data-dir", str(tmp_path / "dd"), "--backends", "numpy:cpu",
                   "--out", str(tmp_path / out), "--quiet")
        assert_one_line_error(proc, "not a readable .tar.gz archive")
    assert (tmp_path / "mine").is_dir() and list((tmp_path / "mine").iterdir()) == []
    assert not (tmp_path / "new").exists()


def test_a_failing_backend_is_recorded_and_the_others_finish(tmp_path, monkeypatch, capsys):
    from bench import compare

    monkeypatch.syspath_prepend(str(REPO / "tests"))
    monkeypatch.setitem(IMPLS, "exploding", Impl("fake_backends", "ExplodingBackend", None, False))
    monkeypatch.chdir(tmp_path)
    assert compare.main([*TINY, "--backends", "exploding:cpu,numpy:cpu", "--out", "o"]) == 0
    runs = pd.read_csv(tmp_path / "o" / "runs.csv").set_index("backend")
    assert runs.loc["exploding:cpu", "status"] == "failed"
    assert runs.loc["exploding:cpu", "error"] == "ValueError: the solver rejected the step"
    assert runs.loc["numpy:cpu", "status"] == "ok" and runs.loc["numpy:cpu", "test_acc"] > 0.3
    assert "exploding:cpu seed 42: failed: ValueError" in capsys.readouterr().err
    report = (tmp_path / "o" / "report.md").read_text()
    assert "## Runs that did not finish" in report and "the solver rejected the step" in report
