"""``course:PATH`` trains a user's course-style implementation in the harness loop, and backends found
through the ``mlpbench.backends`` entry points show in ``--list-backends`` and train."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from bench import compare
from conftest import REPO, assert_one_line_error

FIXTURES = REPO / "tests" / "fixtures"
TINY = ["--dataset", "synthetic", "--train-subset", "512", "--val-size", "128", "--batch-size", "64",
        "--hidden-dims", "16", "--epochs", "2", "--seeds", "42", "--quiet"]


def test_a_course_implementation_agrees_with_numpy_cpu_in_lockstep(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    course = f"course:{FIXTURES / 'course_ok'}"
    assert compare.main([*TINY, "--backends", f"{course},numpy:cpu", "--lockstep", "--out", "o"]) == 0
    steps = pd.read_csv(tmp_path / "o" / "steps.csv").pivot_table(index="step", columns="backend",
                                                                  values="loss")
    rel = ((steps[course] - steps["numpy:cpu"]).abs() / steps["numpy:cpu"]).max()
    assert len(steps) == 2 * (512 // 64) and rel <= 1e-4  # float32
    runs = pd.read_csv(tmp_path / "o" / "runs.csv")
    assert set(runs["status"]) == {"ok"} and (runs["test_acc"] > 0.3).all()
    lock = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("lock-step:"))
    assert f"`numpy:cpu` against `{course}`" in lock and "); never parts" in lock


def test_lockstep_shows_where_a_wrong_implementation_parts(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    course = f"course:{FIXTURES / 'course_bad_bias_mean'}"
    compare.main([*TINY, "--backends", f"numpy:cpu,{course}", "--lockstep", "--out", "o"])
    lock = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("lock-step:"))
    assert f"`{course}` against `numpy:cpu`" in lock and "first at step 1 (seed 42)" in lock
    assert f"- `{course}` against `numpy:cpu`" in (tmp_path / "o" / "report.md").read_text()


@pytest.mark.parametrize("flags, needle", [
    (["--activation", "tanh"], "offers ELUModule only"),
    (["--residual", "--hidden-dims", "16,8,16"], "no residual blocks"),
])
def test_what_the_course_interface_lacks_is_one_line(cli, flags, needle):
    proc = cli("bench.compare", *TINY, "--backends", f"course:{FIXTURES / 'course_ok'}", *flags)
    assert_one_line_error(proc, needle)


def test_a_missing_course_implementation_is_one_line(cli, tmp_path):
    proc = cli("bench.compare", *TINY, "--backends", f"course:{tmp_path / 'nowhere'}")
    assert_one_line_error(proc, "course:", "not available here")


@pytest.fixture
def plugin_site(tmp_path, monkeypatch):
    """A folder on sys.path holding a plugin package and its metadata: an entry point in the group
    mlpbench.backends, found by importlib.metadata exactly as for a pip-installed package."""
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(REPO / "tests" / "plugin_example" / "example_plugin.py", site)
    info = site / "mlpbench_example_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mlpbench-example-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mlpbench.backends]\nexample = example_plugin:ExampleBackend\n")
    monkeypatch.syspath_prepend(str(site))
    return site


def test_a_plugin_found_through_entry_points_is_listed_and_trains(plugin_site, tmp_path, monkeypatch,
                                                                   capsys):
    monkeypatch.chdir(tmp_path)
    assert compare.main(["--list-backends"]) == 0
    listed = capsys.readouterr().out
    assert "| example:cpu | plugin | yes |" in listed and "| example:cuda | plugin | no |" in listed
    assert compare.main([*TINY, "--backends", "example:cpu,numpy:cpu", "--out", "o"]) == 0
    runs = pd.read_csv(tmp_path / "o" / "runs.csv").set_index("backend")
    assert runs.loc["example:cpu", "status"] == "ok" and runs.loc["example:cpu", "test_acc"] > 0.3
    # the same in a fresh interpreter, through the installed metadata alone
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_site), str(REPO)])}
    proc = subprocess.run([sys.executable, "-m", "bench.compare", "--list-backends"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "| example:cpu | plugin | yes |" in proc.stdout
