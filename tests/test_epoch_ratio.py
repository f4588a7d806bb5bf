"""bench.epoch_ratio runs end to end on a tiny config and prints a ratio per backend."""

from __future__ import annotations

import pandas as pd

from bench import epoch_ratio
from conftest import assert_one_line_error

TINY = ["--dataset", "synthetic", "--train-subset", "256", "--batch-size", "64", "--hidden-dims", "8",
        "--epochs", "3", "--threads", "1", "--backends", "numpy:cpu,torch:cpu"]


def test_prints_a_ratio_and_a_floor_per_backend_and_writes_its_folder(tmp_path, capsys):
    code = epoch_ratio.main([*TINY, "--out", str(tmp_path / "er")])
    out = capsys.readouterr().out
    assert code == 0
    summary = pd.read_csv(tmp_path / "er" / "summary.csv").set_index("backend")
    epochs = pd.read_csv(tmp_path / "er" / "epochs.csv")
    for name in ("numpy:cpu", "torch:cpu"):
        assert f"{name} epoch 3:" in out
        line = next(s for s in out.splitlines() if s.startswith(f"{name}: median"))
        assert float(line.split("ratio ")[1].split()[0]) > 0
        floor = float(line.split("cannot go below ")[1].split(";")[0])
        micros = float(line.split("fixed cost of a step ")[1].split(" us")[0])
        assert micros > 0 and floor > 1
        assert abs(floor - summary.loc[name, "ratio_floor"]) < 2e-3
        steady = epochs[(epochs["backend"] == name) & (epochs["epoch"] > 1)]  # the data path's share
        gather = float(line.split("(gather-only ")[1].split(" s")[0])
        assert gather > 0 and abs(gather - steady["gather_seconds"].median()) < 1e-2 * gather
        share = float(line.split("of which the batch gather ")[1].split()[0])
        assert abs(share - (steady["gather_seconds"] / steady["gemm_seconds"]).median()) < 2e-3
    # the backends took turns: epoch 1 of both before epoch 2 of either
    said = [s.split(":")[0] + ":" + s.split(" epoch ")[1].split(":")[0] for s in out.splitlines()
            if " epoch " in s and s.split(" epoch ")[1][:1].isdigit()]
    assert said[:4] == ["numpy:1", "torch:1", "numpy:2", "torch:2"]
    assert len(epochs) == 2 * 3 and (epochs["gather_seconds"] > 0).all()
    assert "gather_seconds" in (tmp_path / "er" / "report.md").read_text()
    assert set(epochs["timing_quality"].str.len() > 0) == {True}
    assert (tmp_path / "er" / "report.md").exists() and (tmp_path / "er" / "env.json").exists()


def test_bad_flag_is_one_line(cli):
    assert_one_line_error(cli("bench.epoch_ratio", "--lr", "0"), "lr")
    assert_one_line_error(cli("bench.epoch_ratio", "--lockstep"), "--lockstep")


def test_a_backend_that_fails_at_once_is_a_row_not_a_traceback(tmp_path, monkeypatch, capsys):
    """A backend whose first epoch failed left an empty list for min() and max() (A8-F3)."""
    from bench.backends import IMPLS, Impl

    monkeypatch.setitem(IMPLS, "exploding", Impl("fake_backends", "ExplodingBackend", None, False))
    args = [a if a != "numpy:cpu,torch:cpu" else "exploding:cpu,numpy:cpu" for a in TINY]
    assert epoch_ratio.main([*args, "--out", str(tmp_path / "er")]) == 0
    runs = pd.read_csv(tmp_path / "er" / "runs.csv").set_index("backend")
    assert runs.loc["exploding:cpu", "status"] == "failed" and runs.loc["numpy:cpu", "status"] == "ok"
    assert (tmp_path / "er" / "report.md").exists()
    assert "numpy:cpu: median" in capsys.readouterr().out
