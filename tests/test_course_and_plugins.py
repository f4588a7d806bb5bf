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
    assert f"`{course}` against `numpy:cpu`" in lock and "first at step 1 (seed 42): loss " in lock
    assert f"({course}) vs " in lock and "(numpy:cpu), relative" in lock  # which number is whose
    report = (tmp_path / "o" / "report.md").read_text()
    assert f"- `{course}` against `numpy:cpu`" in report
    assert "assembled from the student's modules" in report and "no MLP class beside modules.py" in report


INTERFACES = {  # fixture: the flags its activation needs
    "course_inout_noalpha": [],                             # ELUModule(), weight (in, out), logits MLP
    "course_2019_relu": ["--activation", "relu"],          # no input_layer, bias (out, 1), one-hot labels
    "course_accumulate_clear": ["--activation", "relu"],   # grads += that clear_cache() resets
}


@pytest.mark.parametrize("fixture", INTERFACES, ids=list(INTERFACES))
def test_every_course_interface_trains_in_lockstep_with_numpy(tmp_path, monkeypatch, fixture):
    """The student's own MLP, in its own layouts, agrees with numpy:cpu step by step: the weights went
    in by a transpose where it stores (in, out), and its grads came back the same way."""
    monkeypatch.chdir(tmp_path)
    course = f"course:{FIXTURES / fixture}"
    assert compare.main([*TINY, *INTERFACES[fixture], "--backends", f"{course},numpy:cpu", "--lockstep",
                         "--out", "o"]) == 0
    steps = pd.read_csv(tmp_path / "o" / "steps.csv").pivot_table(index="step", columns="backend",
                                                                  values="loss")
    assert ((steps[course] - steps["numpy:cpu"]).abs() / steps["numpy:cpu"]).max() <= 1e-4
    assert "trains the student's own MLP class" in (tmp_path / "o" / "report.md").read_text()


def test_the_students_own_mlp_is_what_trains(tmp_path, monkeypatch, capsys):
    """An MLP with an ELU after its last layer is trained as written, so lock-step shows it."""
    monkeypatch.chdir(tmp_path)
    course = f"course:{FIXTURES / 'course_bad_mlp_elu_last'}"
    compare.main([*TINY, "--backends", f"numpy:cpu,{course}", "--lockstep", "--out", "o"])
    lock = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("lock-step:"))
    assert f"`{course}` against `numpy:cpu`" in lock and "parts (relative difference above" in lock
    assert "trains the student's own MLP class" in (tmp_path / "o" / "report.md").read_text()


def test_an_mlp_taking_alpha_is_built_with_the_configs(tmp_path, monkeypatch):
    """An MLP whose constructor takes an alpha (its own default another) trains as the student's own."""
    monkeypatch.chdir(tmp_path)
    impl = tmp_path / "impl"
    impl.mkdir()
    shutil.copy(FIXTURES / "course_ok" / "modules.py", impl)
    mlp = (FIXTURES / "course_ok" / "mlp_numpy.py").read_text()
    for old, new in [("n_classes):", "n_classes, elu_alpha=0.5):"), ("ELUModule(alpha=1.0)", "ELUModule(elu_alpha)")]:
        assert old in mlp
        mlp = mlp.replace(old, new)
    (impl / "mlp_numpy.py").write_text(mlp)
    course = f"course:{impl}"
    assert compare.main([*TINY, "--backends", f"{course},numpy:cpu", "--lockstep", "--out", "o"]) == 0
    steps = pd.read_csv(tmp_path / "o" / "steps.csv").pivot_table(index="step", columns="backend", values="loss")
    assert ((steps[course] - steps["numpy:cpu"]).abs() / steps["numpy:cpu"]).max() <= 1e-4
    assert "trains the student's own MLP class" in (tmp_path / "o" / "report.md").read_text()


@pytest.mark.parametrize("fixture, flags, needle", [
    ("course_ok", ["--activation", "tanh"], "offers ELUModule only; --activation tanh cannot run on it"),
    ("course_ok", ["--residual", "--hidden-dims", "16,8,16"], "no residual blocks"),
    ("course_2019_relu", [], "offers ReLUModule only; --activation elu cannot run on it (use --activation relu)"),
    ("course_inout_noalpha", ["--alpha", "0.5"], "ELUModule() without alpha (alpha = 1); --alpha 0.5"),
])
def test_what_the_course_interface_lacks_is_one_line(cli, fixture, flags, needle):
    proc = cli("bench.compare", *TINY, "--backends", f"course:{FIXTURES / fixture}", *flags)
    assert_one_line_error(proc, needle)


@pytest.mark.parametrize("edit, needle", [
    (("        return self.out\n\n    def backward(self, dout):\n        dx = dout * np.where",
      "        return self.out.tolist()\n\n    def backward(self, dout):\n        dx = dout * np.where"),
     "ELUModule.forward returned list, not a NumPy array"),
    (("self.params = {", "self.parameters = {"), "LinearModule(4, 3) has no dict params"),
    (("size=(out_features, in_features))", "size=out_features * in_features)"),
     "params['weight'] has shape (12,)"),
    (("self.params = {'weight'", "self.params = {'weights'"), "params has no key 'weight' (its keys: 'weights'"),
])
def test_code_that_cannot_train_is_refused_in_one_line(cli, tmp_path, edit, needle):
    """Before any work: the interface, and one forward and backward on a small batch."""
    text = (FIXTURES / "course_ok" / "modules.py").read_text()
    assert edit[0] in text
    (tmp_path / "impl").mkdir()
    (tmp_path / "impl" / "modules.py").write_text(text.replace(*edit))
    proc = cli("bench.compare", *TINY, "--backends", f"course:{tmp_path / 'impl'},numpy:cpu")
    assert_one_line_error(proc, needle)
    assert not (proc.cwd / "results").exists()


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


def test_an_entry_point_that_cannot_be_used_is_listed_with_why(plugin_site, tmp_path, monkeypatch, capsys):
    """An entry point naming no class, or the name of a built-in backend, is never silently dropped."""
    (plugin_site / "mlpbench_example_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[mlpbench.backends]\nexample = example_plugin:ExampleBackend\nbare = example_plugin\n"
        "numpy = example_plugin:ExampleBackend\nweird:name = example_plugin:ExampleBackend\n")
    monkeypatch.chdir(tmp_path)
    assert compare.main(["--list-backends"]) == 0
    listed = capsys.readouterr().out
    assert "| example:cpu | plugin | yes |" in listed
    assert "| bare | plugin | no | ignored: example_plugin (package mlpbench-example-plugin) names no class" \
        in listed
    assert "| numpy | plugin | no | ignored: example_plugin:ExampleBackend" in listed
    assert "| numpy:cpu | built-in | yes |" in listed
    assert "| weird:name | plugin | no | ignored: example_plugin:ExampleBackend" in listed  # A12-F10
    assert "weird:name:cpu" not in listed
