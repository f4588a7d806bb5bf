"""The command layer against the adversarial run's mechanisms: work caps on every integer setting, huge
TOML numbers, claims' memory estimate and oom per seed, the saved-benchmark reader, the write order
(report before figures, a signal ends the drawing, a write error names its file), the values backends
return, a backend that ends the process, replaced NumPy callables, a sweep table's unique keys, and
interleaved runs' status after a signal."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from bench import provenance, runner
from bench.backends import IMPLS, Impl
from bench.backends.numpy_backend import NumpyBackend, available  # noqa: F401 - the registry hook
from bench.cli import field_kind, fields_of, load_toml
from bench.config import MAX_COUNT, SETTINGS, Config, check_caps
from bench.errors import ConfigError, UserError
from bench.results import ResultsFolder
from bench.run import Run
from conftest import REPO, assert_one_line_error

TINY = ["--dataset", "synthetic", "--epochs", "1", "--train-subset", "256", "--val-size", "64",
        "--threads", "1", "--quiet", "--seeds", "42"]
SLOW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _int_fields():
    """(class, field) of every integer setting of Config and of every command's settings class."""
    for cls in (Config, *SETTINGS.values()):
        for f in dataclasses.fields(cls):
            if field_kind(cls, f)[0] is int:
                yield cls, f


INT_FIELDS = list(_int_fields())


# ---------------------------------------------------------------- work caps (c05, c07, c09)


@SLOW
@given(st.sampled_from(INT_FIELDS), st.integers(1, 10**40), st.booleans())
def test_every_integer_setting_has_a_cap(case, excess, as_list):
    cls, f = case
    most = f.metadata.get("most", MAX_COUNT)
    obj = cls() if cls is not Config else Config()
    value = most + excess
    setattr(obj, f.name, [value] if field_kind(cls, f)[1] else value)
    with pytest.raises(ConfigError, match=f"invalid {f.name}: .*at most {most:_}"):
        check_caps(obj)


def test_defaults_and_presets_are_within_the_caps():
    for cls in (Config, *SETTINGS.values()):
        check_caps(cls())


@pytest.mark.parametrize("args, needle", [
    (["--epochs", "99999999999999999999999999"], "invalid epochs"),
    (["--hidden-dims", "3000000"], "invalid hidden_dims"),
    (["--train-subset", str(10**12)], "invalid train_subset"),
])
def test_compare_refuses_work_past_a_cap(cli, args, needle):
    assert_one_line_error(cli("bench.compare", *TINY, "--backends", "numpy:cpu", *args), needle, "at most")


@pytest.mark.parametrize("args, needle", [
    (["--depths", "200001"], "invalid depths"),
    (["--width", "3000000"], "invalid width"),
    (["--landscape-dims", "70000,8,70000"], "invalid landscape_dims"),
    (["--width", "60000"], "needs at least"),  # under the cap: the memory estimate refuses it
    (["--landscape-dims", "60000,10,60000"], "needs at least"),
])
def test_claims_refuses_work_before_any(args, needle, tmp_path):
    out = tmp_path / "o"
    with pytest.raises(UserError, match=needle):
        runner.main(__import__("bench.claims.__main__", fromlist=["COMMAND"]).COMMAND,
                    ["--quick", "--dataset", "synthetic", "--only", "6,7", *args, "--out", str(out)])
    assert not out.exists()


def test_a_seed_out_of_memory_in_claims_is_oom_and_the_others_go_on():
    from bench.claims import seed_runs

    def data(seed):
        raise MemoryError("Unable to allocate 23.4 MiB")

    ctx = types.SimpleNamespace(config=Config(dataset="synthetic", train_subset=256, val_size=64, epochs=1),
                                data=data)
    t = seed_runs.train(ctx, "numpy", 42)
    assert t.record.status == "oom" and "MemoryError" in t.record.error


# ---------------------------------------------------------------- huge TOML numbers (c01)


FLOAT_KEYS = [(n, f) for n, (cls, f) in fields_of("compare").items() if field_kind(cls, f)[0] is float]


@SLOW
@given(st.sampled_from(FLOAT_KEYS), st.integers(309, 2000))
def test_a_toml_number_beyond_every_float_is_one_line(tmp_path, case, digits):
    name, f = case
    is_list = field_kind(Config, f)[1]
    value = "9" * digits
    path = tmp_path / "c.toml"
    path.write_text(f"{name} = {'[' + value + ']' if is_list else value}\n")
    with pytest.raises(UserError, match=f"{name} = .* is too large"):
        load_toml(path, "compare")


# ---------------------------------------------------------------- the saved-benchmark reader (op1-op5)


def _saved(path: Path, machine_info=None, **bench) -> Path:
    def one(backend):
        info = {"op": "linear", "backend": backend, "batch": 128, "hidden": 256, **bench.get("info", {})}
        return {"name": f"t_{backend}", "extra_info": info,
                "stats": {"median": bench.get("median", 1e-3), "iqr": 1e-5}}
    doc = {"machine_info": {"cpu": {"brand_raw": "x"}} if machine_info is None else machine_info,
           "benchmarks": [one("numpy:cpu"), one("torch:cpu")]}
    path.write_text(json.dumps(doc))
    return path


BAD_SAVED = st.one_of(
    st.builds(lambda v: {"machine_info": v}, st.one_of(st.lists(st.text(max_size=3)), st.text(min_size=1),
                                                          st.integers(), st.floats(allow_nan=False))),
    st.builds(lambda v: {"machine_info": {"mlpbench": v}}, st.one_of(st.lists(st.integers()), st.text(min_size=1))),
    st.builds(lambda v: {"machine_info": {"mlpbench": {"threads": v}}},
              st.one_of(st.integers(max_value=0), st.integers(min_value=2**31), st.text(min_size=1))),
    st.builds(lambda v: {"info": {"batch": v}}, st.one_of(st.integers(min_value=2**31), st.integers(max_value=0))),
    st.builds(lambda v: {"info": {"hidden": v}}, st.integers(min_value=2**31)),
    st.builds(lambda v: {"info": {"op": v}}, st.one_of(st.text(min_size=201, max_size=300),
                                                       st.text(alphabet="|\n\"'`*<>\\", min_size=1))),
    st.builds(lambda v: {"median": v}, st.one_of(st.floats(min_value=1e6, exclude_min=True),
                                                 st.floats(min_value=0, max_value=1e-12, exclude_max=True),
                                                 st.just(1e308))),
)


@SLOW
@given(BAD_SAVED)
def test_every_field_of_a_saved_benchmark_is_checked(tmp_path, bad):
    from bench.op_timings import load_saved

    path = _saved(tmp_path / "s.json", bad.get("machine_info"), **{k: v for k, v in bad.items() if k != "machine_info"})
    with pytest.raises(UserError):
        load_saved(path)


def test_a_good_saved_benchmark_is_read(tmp_path):
    from bench.op_timings import load_saved, pivot

    table = pivot(load_saved(_saved(tmp_path / "s.json"))[0])
    assert np.isfinite(table["ratio_cpu"]).all()


def test_op_ratios_bad_saved_is_one_line(cli, tmp_path):
    path = _saved(tmp_path / "s.json", ["not", "a", "dict"])
    assert_one_line_error(cli("bench.op_ratios", str(path), "--out", str(tmp_path / "o")), "machine_info")
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- the write order (o09, op4)


def _command(figures):
    def measure(ctx):
        return runner.Result(tables={"t.csv": pd.DataFrame({"a": [1]})}, figures=figures)
    return runner.Command("probe", "Probe", measure, loads_data=False)


def test_a_signal_while_drawing_keeps_the_report_and_ends_promptly(tmp_path):
    drawn = []

    def slow():
        drawn.append(1)
        raise KeyboardInterrupt  # as SIGTERM does, now that drawing is not held

    out = tmp_path / "o"
    code = runner.main(_command({"a.png": ("A", slow), "b.png": ("B", slow)}), ["--out", str(out)])
    assert code in (130, 143) and drawn == [1]  # the second figure is not drawn
    names = {p.name for p in out.iterdir()}
    assert {"t.csv", "env.json", "report.md"} <= names and not any(n.endswith(".tmp") for n in names)
    assert ".lock" not in names and "interrupted" in (out / "report.md").read_text()


def test_a_full_disk_costs_only_the_figures(tmp_path, monkeypatch):
    from bench import io

    def full(fig, path, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io, "save_figure", full)

    def draw():
        import matplotlib.pyplot as plt
        return plt.figure()

    out = tmp_path / "o"
    assert runner.main(_command({"a.png": ("A", draw)}), ["--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert (out / "t.csv").exists() and "a.png" not in report and "t.csv" in report


def test_a_write_error_names_the_file(tmp_path, monkeypatch):
    from bench import io

    def full(text, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io, "write_text", full)
    with ResultsFolder.create(tmp_path / "o", "x") as folder:
        with pytest.raises(OSError) as info:
            folder.write_text("report.md", "x")
    assert info.value.filename == str(tmp_path / "o" / "report.md")


# ---------------------------------------------------------------- values backends return (p05)


class ReturnsBackend(NumpyBackend):
    """numpy:cpu whose evaluate() returns the class's ``value``."""

    value = (0.5, 0.5)

    def __init__(self, config, device="cpu"):
        super().__init__(config, device)
        self.impl = "returns"

    def evaluate(self, split):
        return type(self).value


@SLOW
@given(st.floats(allow_nan=True, allow_infinity=True, width=32), st.floats(allow_nan=True, width=32))
def test_the_run_layer_checks_what_evaluate_returns(loss, acc):
    from bench.data.synthetic import make_synthetic  # noqa: F401 - the synthetic data below

    ReturnsBackend.value = (loss, acc)
    config = Config(dataset="synthetic", train_subset=256, val_size=64, epochs=1, reference_timing=False)
    r = Run(ReturnsBackend(config), config, _data(config), 42, warmup_steps=0)
    assert r.start()
    while r.step():
        pass
    rec = r.finish()
    if not 0 <= acc <= 1 or loss < 0:
        assert rec.status == "failed" and "returns:cpu: evaluate('val')" in rec.error
    elif not np.isfinite(loss):
        assert rec.status == "diverged"
    else:
        assert rec.status == "ok" and rec.run["test_acc"] == pytest.approx(acc)


_DATA = {}


def _data(config):
    from bench.datasource import load_for_config

    if "d" not in _DATA:
        _DATA["d"] = load_for_config(config, 42, progress=False)
    return _DATA["d"]


def test_a_backend_returning_nonsense_fails_and_the_others_go_on(tmp_path, monkeypatch):
    monkeypatch.setitem(IMPLS, "returns", Impl(__name__, "ReturnsBackend", None, False))
    monkeypatch.setattr(ReturnsBackend, "value", (-3.0, 7.5))
    from bench.compare import main
    out = tmp_path / "o"
    assert main([*TINY, "--backends", "numpy:cpu,returns:cpu", "--out", str(out)]) == 0
    runs = pd.read_csv(out / "runs.csv").set_index("backend")
    assert runs.loc["numpy:cpu", "status"] == "ok" and runs.loc["returns:cpu", "status"] == "failed"
    assert "accuracy 7.5" in runs.loc["returns:cpu", "error"]


# ---------------------------------------------------------------- a backend that ends the process (p03, k05)


PLUGIN = '''
import os
from bench.backends.numpy_backend import NumpyBackend, available


class B(NumpyBackend):
    impl = "exits"

    def train_batch(self, idx):
        os._exit(0)
'''


def _plugin(tmp_path: Path) -> dict:
    (tmp_path / "plug").mkdir()
    (tmp_path / "plug" / "exits_plugin.py").write_text(PLUGIN)
    info = tmp_path / "plug" / "exitsplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: exitsplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mlpbench.backends]\nexits = exits_plugin:B\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(tmp_path / "plug")]),
            "MLPBENCH_CACHE_DIR": str(tmp_path / "cache")}


def test_a_plugin_that_ends_its_process_fails_its_own_run(tmp_path):
    """A plugin runs in a process of its own (bench.backends.isolated): its os._exit(0) in a step is its
    run's failure, and the command finishes every other run, its tables and its report."""
    out = tmp_path / "o"
    proc = subprocess.run([sys.executable, "-m", "bench.compare", *TINY, "--backends", "numpy:cpu,exits:cpu",
                           "--out", str(out)], env=_plugin(tmp_path), cwd=tmp_path, timeout=300,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    runs = pd.read_csv(out / "runs.csv").set_index("backend")
    assert runs.loc["numpy:cpu", "status"] == "ok" and runs.loc["exits:cpu", "status"] == "failed"
    assert "its process ended during" in runs.loc["exits:cpu", "error"]
    assert "numpy:cpu" in pd.read_csv(out / "summary.csv")["backend"].tolist()
    assert "exits:cpu" in (out / "report.md").read_text() and not (out / ".lock").exists()


# ---------------------------------------------------------------- replaced NumPy callables (p06)


@pytest.mark.parametrize("module, name", [(np.random, "default_rng"), (np.random, "Generator"),
                                          (np, "expm1"), (np, "minimum"), (np, "where")])  # X-F6, X-F7
def test_a_replaced_numpy_callable_is_named_and_flags_the_runs(monkeypatch, module, name):
    assert provenance.replaced() == []
    monkeypatch.setattr(module, name, lambda *a, **k: None)
    assert provenance.replaced() == [f"{module.__name__}.{name}"]
    config = Config(dataset="synthetic", train_subset=256, val_size=64, epochs=1, reference_timing=False)
    monkeypatch.undo()
    r = Run(ReturnsBackend(config), config, _data(config), 42, warmup_steps=0)
    monkeypatch.setattr(module, name, lambda *a, **k: None)
    assert r.finish().run["replaced"] == f"{module.__name__}.{name}"


def test_a_rewritten_table_of_the_numpy_model_is_named(monkeypatch):
    """Course code rewrote impl_numpy's ACTIVATIONS and numpy:cpu's runs changed unflagged (Y-F2)."""
    import impl_numpy.activations

    assert provenance.replaced() == []
    monkeypatch.setitem(impl_numpy.activations.ACTIVATIONS, "elu", lambda x, alpha=1.0: x * 0.5)
    assert provenance.replaced() == ["impl_numpy.activations.ACTIVATIONS"]


def test_compare_says_when_a_backend_replaced_numpy(tmp_path, monkeypatch):
    class Patching(NumpyBackend):
        def __init__(self, config, device="cpu"):
            super().__init__(config, device)
            self.impl = "patching"
            dot = np.dot
            monkeypatch.setattr(np, "dot", lambda *a, **k: dot(*a, **k))  # the same numbers, another callable

    monkeypatch.setattr(sys.modules[__name__], "Patching", Patching, raising=False)
    monkeypatch.setitem(IMPLS, "patching", Impl(__name__, "Patching", None, False))
    from bench.compare import main
    out = tmp_path / "o"
    main([*TINY, "--backends", "numpy:cpu,patching:cpu", "--no-reference-timing", "--out", str(out)])
    assert "numpy.dot" in json.loads((out / "env.json").read_text())["replaced_callables"]
    assert (pd.read_csv(out / "runs.csv")["replaced"] == "numpy.dot").all()
    assert "numpy.dot" in (out / "report.md").read_text()


# ---------------------------------------------------------------- the sweep table's keys (w03)


def test_a_sweep_table_with_two_rows_for_one_task_is_refused(tmp_path):
    from bench.sweep.__main__ import main

    out = tmp_path / "w"
    args = ["--grid", "batch_size=32,64", *TINY, "--backends", "numpy:cpu", "--out", str(out)]
    assert main(args) == 0
    lines = (out / "sweep.csv").read_text().splitlines(keepends=True)
    (out / "sweep.csv").write_text("".join([*lines, lines[1].replace(",ok,", ",ok,", 1)]))
    before = (out / "report.md").read_text()
    with pytest.raises(UserError, match=r"more than one row for the task batch_size=\d+, backend=numpy:cpu, "
                                        r"seed=42 \(lines 2, 4\)"):
        main(args)
    assert (out / "report.md").read_text() == before


# ---------------------------------------------------------------- interleaved runs after a signal (s07, s03)


def test_every_interleaved_run_not_finished_is_interrupted(monkeypatch):
    from bench import epoch_ratio

    config = Config(dataset="synthetic", train_subset=256, val_size=64, epochs=3, reference_timing=False)
    calls = []

    def step(self):
        calls.append(self)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return Run._epoch(self)

    monkeypatch.setattr(Run, "_epoch", step, raising=True)
    runs = [Run(NumpyBackend(config), config, _data(config), 42, warmup_steps=0) for _ in range(3)]
    ctx = types.SimpleNamespace(say=lambda text: None)
    epoch_ratio._take_turns(ctx, runs)
    assert [r.finish().status for r in runs] == ["interrupted"] * 3


def test_no_pointer_to_a_removed_folder_after_a_signal(tmp_path, capsys):
    def measure(ctx):
        raise KeyboardInterrupt  # before anything was written (the data was still decoding)

    out = tmp_path / "o"
    code = runner.main(runner.Command("probe", "Probe", measure), ["--out", str(out)])
    err, stdout = capsys.readouterr()[1], capsys.readouterr()[0]
    assert code in (130, 143) and not out.exists()
    assert str(out) not in err + stdout
