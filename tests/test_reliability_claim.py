"""The one folder claim (``bench.results``) and the one writer (``bench.io``).

Promise E (the disk is left as found) and A (no result is lost): ``--out``
must be new or empty, every entry counting (a user's ``.notes.tmp`` too);
the lock is never created through a link; a command refused for a bad
setting leaves nothing behind; no writer writes through a symbolic link.
"""

from __future__ import annotations

import os
import string
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import io as bio
from bench.errors import UserError
from bench.results import LOCK_FILE, ResultsFolder
from conftest import assert_one_line_error

TINY = ["--dataset", "synthetic", "--train-subset", "256", "--val-size", "64", "--batch-size", "64",
        "--hidden-dims", "8", "--epochs", "1", "--quiet", "--backends", "numpy:cpu", "--seeds", "42"]
NAMES = st.text(alphabet=string.ascii_letters + string.digits + "._-~ ", min_size=1, max_size=30).filter(
    lambda n: n not in (".", "..", LOCK_FILE))


@settings(max_examples=60, deadline=None)
@given(name=NAMES)
def test_any_entry_but_a_killed_writers_temporary_makes_out_not_empty(name):
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "o"
        out.mkdir()
        (out / name).write_text("the user's")
        if bio.is_temporary(name):  # .<name>.<8 characters>.tmp: what atomic_write leaves when killed
            ResultsFolder.create(out, "x").close()
            assert not (out / name).exists()
        else:
            with pytest.raises(UserError, match="not empty"):
                ResultsFolder.create(out, "x")
            assert (out / name).read_text() == "the user's"


@pytest.mark.parametrize("name", [".notes.tmp", ".tmp", "a.tmp", ".x.tmp", ".report.md.abc.tmp",
                                  ".notes.version1.tmp", ".thesis.draft001.tmp", ".mlpbench-tmp.tmp"])
def test_a_users_file_ending_in_tmp_is_never_swept(tmp_path, name):
    out = tmp_path / "o"
    out.mkdir()
    (out / name).write_text("notes")
    with pytest.raises(UserError, match="not empty"):
        ResultsFolder.create(out, "x")
    assert (out / name).read_text() == "notes"


@settings(max_examples=60, deadline=None)
@given(stem=st.text(alphabet=string.ascii_letters + string.digits + "._-", min_size=1, max_size=20),
       tail=st.text(alphabet=string.ascii_lowercase + string.digits + "_", min_size=8, max_size=8))
def test_only_the_reserved_prefix_marks_a_temporary(stem, tail):
    """o05: ``.<anything>.<8 characters>.tmp`` is a user's name unless it carries the suite's prefix."""
    name = f".{stem}.{tail}.tmp"
    assert bio.is_temporary(name) == name.startswith(bio.TMP_PREFIX)
    assert bio.is_temporary(f"{bio.TMP_PREFIX}{stem}.{tail}.tmp")


def test_a_temporary_name_that_is_a_link_or_a_folder_is_not_swept(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("kept")
    name = f"{bio.TMP_PREFIX}x.abcdefgh.tmp"
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / name).symlink_to(victim)
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / name).mkdir()
    assert bio.sweep_temporaries(tmp_path / "o") == bio.sweep_temporaries(tmp_path / "p") == 0
    (tmp_path / "link").symlink_to(tmp_path / "q")
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / name).write_text("a user's, behind a link")
    assert bio.sweep_temporaries(tmp_path / "link") == 0 and (tmp_path / "q" / name).exists()
    assert victim.read_text() == "kept"


@pytest.mark.parametrize("target", ["empty", "missing"])
def test_out_that_is_a_symbolic_link_is_refused(tmp_path, target):
    """o04: nothing is written through a link, --out itself included."""
    real = tmp_path / "real"
    if target == "empty":
        real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(UserError, match="symbolic link"):
        ResultsFolder.create(tmp_path / "link", "x")
    assert not real.exists() or list(real.iterdir()) == []


def test_what_atomic_write_leaves_is_what_is_swept(tmp_path, monkeypatch):
    def killed(fh):
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: None)  # the kill: no cleanup
    with pytest.raises(KeyboardInterrupt):
        bio.atomic_write(tmp_path / "epochs.csv", killed)
    monkeypatch.undo()
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and bio.is_temporary(left[0])
    assert bio.sweep_temporaries(tmp_path) == 1 and not list(tmp_path.iterdir())


@pytest.mark.parametrize("lock", ["dangling", "to_a_file", "fifo", "folder"])
def test_a_lock_that_is_not_a_regular_file_is_refused_and_nothing_is_created(tmp_path, lock):
    out = tmp_path / "o"
    out.mkdir()
    target = tmp_path / "target"
    if lock == "dangling":
        (out / LOCK_FILE).symlink_to(target)
    elif lock == "to_a_file":
        target.write_text("precious")
        (out / LOCK_FILE).symlink_to(target)
    elif lock == "fifo":
        os.mkfifo(out / LOCK_FILE)
    else:
        (out / LOCK_FILE).mkdir()
    with pytest.raises(UserError, match="cannot take the lock"):
        ResultsFolder.create(out, "x")
    assert not target.exists() or target.read_text() == "precious"
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]


def test_a_lock_link_on_the_command_line_is_one_line(cli, tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / LOCK_FILE).symlink_to(tmp_path / "made-through-the-link")
    assert_one_line_error(cli("bench.compare", *TINY, "--out", "o"), "cannot take the lock",
                          "symbolic link")
    assert not (tmp_path / "made-through-the-link").exists()


@pytest.mark.parametrize("write", [
    lambda p: bio.write_text("x", p),
    lambda p: bio.write_json({"a": 1}, p),
    lambda p: bio.write_csv(pd.DataFrame({"a": [1]}), p),
])
@pytest.mark.parametrize("dangling", [False, True])
def test_no_writer_writes_through_a_link(tmp_path, write, dangling):
    target = tmp_path / "target"
    if not dangling:
        target.write_text("precious")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(UserError, match="symbolic link"):
        write(link)
    assert link.is_symlink()
    assert (target.read_text() == "precious") if not dangling else not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["link", *([] if dangling else ["target"])])


def test_an_out_that_is_a_dangling_link_is_one_line(cli, tmp_path):
    (tmp_path / "o").symlink_to(tmp_path / "nowhere")
    assert_one_line_error(cli("bench.compare", *TINY, "--out", "o"), "is a symbolic link")
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("flags, needle", [
    (["--scheduler", "bogus://nowhere:1"], "unknown address scheme"),
    (["--local-cluster", "100000"], "invalid --local-cluster"),
    (["--data-dir", "FIFO", "--dataset", "cifar10"], "not a regular file"),
])
def test_a_refused_sweep_leaves_no_folder(cli, tmp_path, flags, needle):
    os.mkfifo(tmp_path / "fifo-data")
    (tmp_path / "data").mkdir()
    os.symlink(tmp_path / "fifo-data", tmp_path / "data" / "cifar-10-binary.tar.gz")
    flags = [str(tmp_path / "data") if f == "FIFO" else f for f in flags]
    proc = cli("bench.sweep", "--grid", "lr=0.1,0.2", *TINY, *flags, timeout=120)
    assert_one_line_error(proc, needle)
    assert not (tmp_path / "results").exists()


def test_a_refused_compare_leaves_no_folder(cli, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cifar-10-binary.tar.gz").symlink_to("/dev/zero")
    proc = cli("bench.compare", *TINY, "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"),
               "--out", "a/b/c")
    assert_one_line_error(proc, "not a regular file")
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("free, inodes", [(50_000, 10**6), (10**9, 5)])  # bytes; files (A7-F8)
def test_a_nearly_full_disk_costs_the_plots_never_the_report(tmp_path, monkeypatch, capsys, free, inodes):
    """A plot is not drawn unless FIGURE_RESERVE bytes and FIGURE_INODES files stay free: the tables
    and report come first."""
    from collections import namedtuple

    from bench import compare

    room = namedtuple("room", "f_bavail f_frsize f_favail f_files")
    monkeypatch.setattr(bio.os, "statvfs", lambda p: room(free, 1, inodes, 10**6))
    monkeypatch.chdir(tmp_path)
    assert compare.main([*TINY, "--out", "o"]) == 0
    names = {p.name for p in (tmp_path / "o").iterdir()}
    assert {"report.md", "runs.csv", "epochs.csv", "summary.csv"} <= names
    assert not any(n.endswith(".png") for n in names)
    assert capsys.readouterr().err.count("kept for the tables and the report") == 3


def test_no_inode_for_a_temporary_file_rewrites_an_existing_file_in_place(tmp_path, monkeypatch):
    """A file system out of inodes lost the final tables: every atomic write needs a new file (A7-F8)."""
    import errno
    import tempfile

    target = tmp_path / "epochs.csv"
    target.write_text("checkpoint")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "mkstemp", full)
    bio.write_text("final", target)
    assert target.read_text() == "final"
    with pytest.raises(OSError):
        bio.write_text("new", tmp_path / "report.md")  # a new file needs an inode of its own
    assert not (tmp_path / "report.md").exists()
