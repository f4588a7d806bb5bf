"""bench.op_ratios on a small handmade pytest-benchmark JSON: the pivot, the ratios, the chart, bad input."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.errors import run_cli
from bench.op_ratios import main
from conftest import assert_one_line_error


def _bench(op, backend, batch, hidden, median, name=None, iqr=None):
    """One benchmark entry as pytest-benchmark saves it (only the fields the tool may read)."""
    return {"group": f"{op} b{batch}", "name": name or f"test_{op}[{backend}]",
            "fullname": f"benchmarks/x.py::test_{op}[{backend}]", "params": {}, "param": backend,
            "extra_info": {"op": op, "backend": backend, "batch": batch, "hidden": hidden,
                           "dtype": "float32", "threads": 2},
            "options": {}, "stats": {"min": median / 2, "max": median * 2, "median": median,
                                     "mean": median, "rounds": 5,
                                     "iqr": median * 0.05 if iqr is None else iqr}}


def _saved(tmp_path, benchmarks, name="0001_ops.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"machine_info": {"cpu": {"brand_raw": "Test CPU"},
                                                 "mlpbench": {"threads": 2}, "gpu": None},
                                "commit_info": {}, "benchmarks": benchmarks,
                                "datetime": "2025-01-01T00:00:00", "version": "5.3.1"}))
    return path


def _damaged(part: str, **changes) -> str:
    """A saved JSON of one benchmark with fields of its ``part`` replaced."""
    b = _bench("linear_fwd", "numpy:cpu", 32, 128, 1e-3)
    b[part].update(changes)
    return json.dumps({"benchmarks": [b]})


HANDMADE = [
    _bench("linear_fwd", "numpy:cpu", 32, 128, 4e-4),
    _bench("linear_fwd", "torch:cpu", 32, 128, 1e-4),
    _bench("linear_fwd", "numpy:cpu", 32, 1024, 3e-3, iqr=1.5e-3),  # IQR/median 0.5: too noisy
    _bench("linear_fwd", "torch:cpu", 32, 1024, 6e-3),
    _bench("linear_fwd", "torch:cuda", 32, 1024, 2e-5),  # no numpy:cuda: no ratio_cuda for this row
    _bench("softmax_ce_fwd", "torch:cpu", 128, None, 5e-5),
    _bench("softmax_ce_fwd", "numpy:cpu", 128, None, 1e-4),
    _bench("linear_fwd", "numpy:cuda", 32, 128, 8e-5),
    _bench("linear_fwd", "torch:cuda", 32, 128, 2e-5),
    {"name": "test_other", "extra_info": {}, "stats": {"median": 1.0}},  # not ours: ignored
]


def test_pivot_csv_and_chart(tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(_saved(tmp_path, HANDMADE)), "--out", str(out)]) == 0
    table = pd.read_csv(out / "op_ratios.csv")
    backends = ["numpy:cpu", "torch:cpu", "numpy:cuda", "torch:cuda"]
    assert list(table.columns) == ["op", "batch", "hidden", *(f"median_s_{b}" for b in backends),
                                   *(f"spread_{b}" for b in backends), "ratio_cpu", "flag_cpu",
                                   "ratio_cuda", "flag_cuda"]
    # ops in the order first run, sizes ascending; the loss has no hidden width
    assert table[["op", "batch"]].values.tolist() == [["linear_fwd", 32]] * 2 + [["softmax_ce_fwd", 128]]
    assert table["hidden"].tolist()[:2] == [128, 1024] and math.isnan(table["hidden"][2])
    assert table["ratio_cpu"].tolist() == pytest.approx([4.0, 0.5, 2.0])
    assert table["ratio_cuda"][0] == pytest.approx(4.0)
    assert table["ratio_cuda"][1:].isna().all()
    assert table["median_s_torch:cuda"][1] == pytest.approx(2e-5)
    # the noisy side flags its ratio, in the CSV, the terminal and the report; the others are clean
    assert table["flag_cpu"].fillna("").tolist() == ["", "numpy:cpu IQR/median 0.50 > 0.25", ""]
    png = (out / "op_ratios.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    printed = capsys.readouterr().out
    assert "results: " in printed and "flagged: linear_fwd b32 h1024 on cpu: ratio 0.5 is not a finding" in printed
    report = (out / "report.md").read_text()
    assert "Not findings" in report and "linear_fwd b32 h1024 on cpu" in report
    assert (out / "env.json").exists()


def test_an_existing_result_is_never_overwritten(tmp_path, capsys):
    saved = _saved(tmp_path, HANDMADE)
    out = tmp_path / "out"
    assert main([str(saved), "--out", str(out)]) == 0
    before = (out / "op_ratios.csv").read_bytes()
    assert "already exists and is not empty" in _error([str(saved), "--out", str(out)], capsys)
    assert (out / "op_ratios.csv").read_bytes() == before


def _error(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli(main, argv, prog="op_ratios")
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("content,needle", [
    ("{not json", "not valid JSON"),
    ('{"machine_info": {}}', "no 'benchmarks' list"),
    ('{"benchmarks": []}', "has no benchmark with stats and extra_info"),
    (json.dumps({"benchmarks": [_bench("linear_fwd", "numpy:cpu", 32, 128, 1e-3)]}),
     "no device has both a numpy and a torch benchmark"),
    (json.dumps({"benchmarks": [_bench("linear_fwd", "numpy", 32, 128, 1e-3)]}),
     "allowed: impl:device"),
    (json.dumps({"benchmarks": [_bench("linear_fwd", "numpy:cpu", 32, 128, 1e-3)] * 2}),
     "more than one benchmark for op linear_fwd"),
    # every field of a benchmark is checked: garbage is one line, never a traceback or a silent nan
    (_damaged("stats", median="abc"), "has median 'abc'"),
    (_damaged("stats", median=0), "has median 0"),
    (_damaged("stats", iqr=-1), "has iqr -1"),
    (_damaged("extra_info", batch="x"), "has batch 'x'"),
    (_damaged("extra_info", op=[]), "has op []"),
    (_damaged("extra_info", hidden=-1), "has hidden -1"),
])
def test_bad_saved_json_is_one_line_exit_2(tmp_path, capsys, content, needle):
    path = tmp_path / "bad.json"
    path.write_text(content)
    err = _error([str(path), "--out", str(tmp_path / "out")], capsys)
    assert needle in err and str(path) in err
    assert not (tmp_path / "out" / "op_ratios.csv").exists()


@pytest.mark.parametrize("argv,needle", [
    (["--out", "o"], "give a saved pytest-benchmark JSON, or --run"),
    (["x.json", "--run", "--out", "o"], "not both"),
    (["x.json", "--out", "o", "--", "-k", "linear"], "need --run"),
    (["missing.json", "--out", "o"], "cannot read missing.json"),
])
def test_bad_arguments_are_one_line_exit_2(tmp_path, monkeypatch, capsys, argv, needle):
    monkeypatch.chdir(tmp_path)
    assert needle in _error(argv, capsys)


def test_command_line_module(cli):
    """The real ``python -m bench.op_ratios``: a missing file is one line and exit 2."""
    proc = cli("bench.op_ratios", "nowhere.json", "--out", "o")
    assert_one_line_error(proc, "cannot read nowhere.json")


@pytest.mark.parametrize("absent", ["pytest", "pytest_benchmark"])
def test_run_without_the_test_extra_names_the_extra(tmp_path, monkeypatch, capsys, absent):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == absent
                        else find_spec(name, *a))
    monkeypatch.chdir(tmp_path)
    err = _error(["--run", "--out", "o"], capsys)
    assert f"--run needs {absent}" in err and "pip install '.[test]'" in err
    assert not (tmp_path / "o").exists()


@settings(max_examples=30, deadline=None)
@given(order=st.permutations(range(4)))
def test_the_blas_list_is_the_same_in_any_load_order(order):
    """pytest-benchmark compares machine_info as JSON: the BLAS pools must not follow the load order."""
    from unittest import mock

    from bench import threads

    libs = [{"user_api": "blas", "internal_api": "openblas", "prefix": "libscipy_openblas",
             "version": "0.3.31", "num_threads": 2, "filepath": "/numpy.libs/a.so"},
            {"user_api": "openmp", "internal_api": "openmp", "prefix": "libgomp", "version": None,
             "num_threads": 2, "filepath": "/torch/lib/libgomp.so"},
            {"user_api": "blas", "internal_api": "openblas", "prefix": "libscipy_openblas",
             "version": "0.3.29", "num_threads": 2, "filepath": "/scipy.libs/b.so"},
            {"user_api": "openmp", "internal_api": "openmp", "prefix": "libiomp", "version": "5",
             "num_threads": 2, "filepath": "/x/libiomp5.so"}]
    with mock.patch.object(threads, "threadpool_info", return_value=libs):
        first = threads.blas_info()
    with mock.patch.object(threads, "threadpool_info", return_value=[libs[i] for i in order]):
        assert threads.blas_info() == first


def test_thousands_of_ops_are_a_table_and_a_bounded_figure(tmp_path):
    """5000 ops drew an 820 x 121 163 px PNG, 1 GB and 58 s (adversarial O16)."""
    from PIL import Image

    from bench.io import FIGURE_INCHES
    from bench.op_timings import MAX_BARS

    many = [_bench(f"op{k}", backend, 32, 128, 1e-3 * (2 if backend == "numpy:cpu" else 1))
            for k in range(MAX_BARS + 400) for backend in ("numpy:cpu", "torch:cpu")]
    out = tmp_path / "out"
    assert main([str(_saved(tmp_path, many)), "--out", str(out)]) == 0
    assert len(pd.read_csv(out / "op_ratios.csv")) == MAX_BARS + 400
    width, height = Image.open(out / "op_ratios.png").size
    assert max(width, height) <= FIGURE_INCHES * 110 + 1


WIDE = {  # A13-F4: 3000 devices in 0.8 MB ran for minutes; F5: 20 000 ops on a backend each took 12 GB
    "3000-devices": lambda: [_bench("op", f"{impl}:d{d}", 32, 128, 1e-3) for d in range(3000)
                             for impl in ("numpy", "torch")],
    "a-backend-an-op": lambda: [_bench(f"op{k}", f"impl{k}:cpu", 32, 128, 1e-3) for k in range(20_000)],
    "many-ops-two-backends": lambda: [_bench(f"op{k}", b, 32, 128, 1e-3) for k in range(100_001)
                                      for b in ("numpy:cpu", "torch:cpu")],
}


@pytest.mark.parametrize("case", WIDE)
def test_a_saved_run_too_wide_to_pivot_is_refused_before_the_table(tmp_path, capsys, case):
    """The wide table (op sizes x backends) and its figure are bounded before they are built."""
    err = _error([str(_saved(tmp_path, WIDE[case]())), "--out", str(tmp_path / "out")], capsys)
    assert "allowed: at most 16 backends and 200000 op sizes x backends" in err
    assert not (tmp_path / "out").exists()


def test_run_saves_nothing_outside_out(tmp_path, monkeypatch):
    """--run saved pytest-benchmark's copy under the repository's .benchmarks/ (A10-F5)."""
    from bench import op_timings

    seen = []

    class Stop(Exception):
        pass

    def popen(cmd, *a, **kw):
        seen.append(cmd)
        raise Stop

    monkeypatch.setattr(op_timings.subprocess, "Popen", popen)
    with pytest.raises(Stop):
        op_timings.run_benchmarks(tmp_path, [])
    storage = next(a for a in seen[0] if a.startswith("--benchmark-storage="))
    assert storage == f"--benchmark-storage=file://{tmp_path.resolve() / 'benchmarks'}"


def test_a_run_refused_by_pytest_leaves_the_folder_as_found(tmp_path, monkeypatch, capsys):
    """A12-J10: pytest refused its arguments after making OUT/benchmarks/, which stayed, empty, and the
    rerun with the same --out was refused as not empty. A command refused before it measured anything
    removes the empty folders made in its folder too (one holding a file stays)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        run_cli(main, ["--run", "--out", "j", "--", "--no-such-pytest-flag"], prog="op_ratios")
    assert exit_.value.code == 2 and "pytest exited with status 4" in capsys.readouterr().err
    assert not (tmp_path / "j").exists()
    (tmp_path / "k").mkdir()
    with pytest.raises(SystemExit):
        run_cli(main, ["--run", "--out", "k", "--", "--no-such-pytest-flag"], prog="op_ratios")
    assert (tmp_path / "k").is_dir() and not list((tmp_path / "k").iterdir())  # the user's folder stays
