"""The one runner, with a fake command through it: the folder, env.json, the report, every exit status;
and every real command is a declaration of at most 150 lines that builds no shell of its own."""

from __future__ import annotations

import ast
import importlib
import json
import signal
from pathlib import Path

import pandas as pd
import pytest

from bench import errors, runner
from bench.config import COMMAND_FIELDS, DATA, PRESETS
from bench.errors import UserError
from conftest import REPO

FAKE_FIELDS = DATA + ("seeds", "dtype", "threads")
FLAGS = ["--dataset", "synthetic", "--train-subset", "256", "--val-size", "16", "--quiet"]
COMMAND_MODULES = {"compare": "bench/compare.py", "epoch_ratio": "bench/epoch_ratio.py",
                   "gpu_check": "bench/gpu_check.py", "gradflow": "bench/gradflow.py",
                   "hessian": "bench/hessian.py", "op_ratios": "bench/op_ratios.py", "check": "bench/check.py",
                   "data": "bench/data/__main__.py", "sweep": "bench/sweep/__main__.py",
                   "claims": "bench/claims/__main__.py"}
MAX_COMMAND_LINES = 150


def fake(behaviour: str = "ok", *, check=None) -> runner.Command:
    """A command that loads its data, measures (or is interrupted, or finds a problem) and returns a table,
    a figure, a section and a terminal line."""
    def draw():
        from bench.plots import plt

        if behaviour == "badfig":  # a NumPy a backend replaced, say (adversarial X-F7)
            raise AttributeError("'function' object has no attribute 'reduce'")
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        return fig

    def measure(ctx: runner.Context) -> runner.Result:
        if behaviour == "early":  # a signal before the measurements start
            raise KeyboardInterrupt
        with ctx.measuring():
            data = ctx.data(ctx.config.seeds[0])
            if behaviour in ("sigint", "sigterm"):
                raise KeyboardInterrupt
            if behaviour == "refuse":  # a refusal only the data could tell (env.json is written)
                raise UserError("no: the data cannot be measured")
            if behaviour == "oom":
                raise MemoryError
        return runner.Result(
            tables={"found.csv": pd.DataFrame({"n_train": [len(data.y_train)]})},
            figures={"found.png": ("What was found", draw)}, setup=["- Fake: a line of setup"],
            sections=[("Found", ["the words of the finding"])], printed=["a terminal line"],
            problems=["problem: it did not hold"] if behaviour == "problem" else [])

    return runner.Command("fake", "A fake experiment", measure, check=check, about="A command for the tests.")


@pytest.fixture(autouse=True)
def fake_settings(monkeypatch, tmp_path):
    monkeypatch.setitem(COMMAND_FIELDS, "fake", FAKE_FIELDS)
    monkeypatch.setitem(PRESETS, "fake", {"train_subset": 200})
    monkeypatch.setenv("MLPBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def after(monkeypatch):
    """``after(signum)``: the run shell's record of which signal raised the interrupt."""
    return lambda signum: monkeypatch.setitem(errors._signal, "last", signum)


def test_a_command_gets_its_folder_env_tables_figures_and_report(tmp_path, capsys):
    assert runner.main(fake(), [*FLAGS, "--out", "o"]) == 0
    out = tmp_path / "o"
    assert {p.name for p in out.iterdir()} == {"env.json", "found.csv", "found.png", "report.md"}
    env = json.loads((out / "env.json").read_text())
    assert set(env["config"]) == set(FAKE_FIELDS)  # the command's fields alone
    assert env["data"]["n_train"] == 256 and {"versions", "cpu", "blas", "threads", "command"} <= set(env)
    assert pd.read_csv(out / "found.csv")["n_train"].tolist() == [256]
    report = (out / "report.md").read_text()
    lines = report.splitlines()
    assert lines[0] == "# A fake experiment" and "## Setup" in lines and "## Found" in lines
    assert "- Fake: a line of setup" in lines and "the words of the finding" in lines
    settings = next(line for line in lines if line.startswith("- Settings: "))
    assert {item.split("=")[0] for item in settings[12:].split(", ") if "=" in item} <= set(FAKE_FIELDS)
    assert "![What was found](found.png)" in report and "interrupted" not in report
    assert lines[-1] == "Files: `env.json`, `found.csv`, `found.png`, `report.md`."
    printed = capsys.readouterr().out.splitlines()
    assert printed[-2:] == ["a terminal line", "results: o"]
    assert not (out / ".lock").exists()


def test_a_problem_is_exit_1_after_every_file(tmp_path, capsys):
    assert runner.main(fake("problem"), [*FLAGS, "--out", "o"]) == 1
    assert capsys.readouterr().err.strip() == "problem: it did not hold"
    assert (tmp_path / "o" / "report.md").exists() and (tmp_path / "o" / "found.csv").exists()


@pytest.mark.parametrize("behaviour, signum, code, words", [
    ("sigint", signal.SIGINT, 130, "Ctrl-C"), ("sigterm", signal.SIGTERM, 143, "SIGTERM"),
    ("early", signal.SIGHUP, 143, "SIGHUP")])
def test_a_signal_keeps_what_was_measured_and_names_itself(tmp_path, capsys, after, behaviour, signum, code,
                                                           words):
    after(signum)
    assert runner.main(fake(behaviour), [*FLAGS, "--out", "o"]) == code
    out = tmp_path / "o"
    if behaviour == "early":  # nothing loaded, nothing written: the folder it made is gone
        assert not out.exists()
        return
    report = (out / "report.md").read_text()
    assert f"**This run was interrupted ({words}" in report and "## Setup" in report
    assert json.loads((out / "env.json").read_text())["data"]["n_train"] == 256
    assert "interrupted: partial results in o" in capsys.readouterr().err
    assert not errors._signal["held"]


@pytest.mark.parametrize("argv, needle", [
    (["--epochs", "3"], "unrecognized arguments: --epochs"),      # not a field of this command
    (["--train-subet", "9"], "did you mean --train-subset?"),
    (["--val-size", "0"], "invalid val_size: 0"),
    (["--seeds", "1", "1"], "invalid seeds"),
])
def test_a_usage_error_is_one_line_exit_2_and_leaves_nothing(tmp_path, capsys, argv, needle):
    with pytest.raises(SystemExit) as exit_:
        errors.run_cli(lambda a: runner.main(fake(), a), [*argv, "--out", "o"], prog="fake")
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "o").exists()


def test_the_commands_own_refusal_comes_before_the_folder(tmp_path):
    def refuse(ctx):
        raise UserError("no: the command refuses")

    with pytest.raises(UserError, match="the command refuses"):
        runner.main(fake(check=refuse), [*FLAGS, "--out", "o"])
    assert not (tmp_path / "o").exists()


def test_a_toml_file_and_flags_set_the_commands_fields_and_only_those(tmp_path):
    (tmp_path / "c.toml").write_text("val_size = 20\nseeds = [3]\n")
    ctx = runner.parse(fake(), ["--config", "c.toml", "--seeds", "4"])
    assert (ctx.config.val_size, ctx.config.seeds, ctx.config.train_subset) == (20, [4], 200)  # the preset's
    (tmp_path / "c.toml").write_text("lr = 0.5\n")
    with pytest.raises(UserError, match="'lr' is not a setting of python -m bench.fake"):
        runner.parse(fake(), ["--config", "c.toml"])


# ---------------------------------------------------------------- every real command is a declaration


@pytest.mark.parametrize("name, path", sorted(COMMAND_MODULES.items()))
def test_every_command_module_is_a_short_declaration(name, path):
    """At most 150 lines; one Command named for its settings; no parser, results folder or exit status of
    its own (those are the runner's)."""
    text = (REPO / path).read_text()
    assert len(text.splitlines()) <= MAX_COMMAND_LINES, f"{path}: {len(text.splitlines())} lines"
    module = importlib.import_module(path[:-3].replace("/", "."))
    assert isinstance(module.COMMAND, runner.Command) and module.COMMAND.name == name
    assert callable(module.main) and callable(module.cli)
    assert text.startswith('"""') and "python -m bench." in text.split('"""')[1]  # how to run it
    imported = {n.module for n in ast.walk(ast.parse(text)) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Import) for a in n.names}
    assert not imported & {"argparse", "bench.results", "bench.cli"}, imported
    assert "sys.exit" not in text and "ResultsFolder" not in text and "OneLineArgumentParser" not in text


def test_no_file_is_written_outside_the_one_writer():
    """Every file the harness (and its scripts and benchmarks) writes goes through bench.io (a temporary file, then a rename): no other
    module opens a file for writing, or writes one by name."""
    allowed = {  # (file, what): why it is not a result file
        ("bench/errors.py", "open"): "os.devnull for a closed standard stream",
        ("bench/checks/sandbox.py", "open"): "the sandboxed child's progress lines, appended for its parent",
        ("bench/data/archive.py", "fdopen"): "the download, to a .part file renamed into place after its md5",
        ("bench/backends/isolated.py", "open"): "/proc/self/oom_score_adj of a backend's process",
    }
    writers = {"write_text", "write_bytes", "to_csv", "savefig", "to_json", "to_parquet"}
    found = []
    for path in sorted(p for d in ("bench", "scripts", "benchmarks") for p in (REPO / d).rglob("*.py")):
        rel = str(path.relative_to(REPO))
        if rel == "bench/io.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            mode = next((a.value for a in node.args[1:2] if isinstance(a, ast.Constant)), None) or next(
                (k.value.value for k in node.keywords if k.arg == "mode" and isinstance(k.value, ast.Constant)),
                None)
            through_folder = isinstance(f, ast.Attribute) and (  # ResultsFolder's, or bench.io's own
                "folder" in ast.unparse(f.value) or ast.unparse(f.value) == "io")
            if name in ("open", "fdopen") and isinstance(mode, str) and set(mode) & set("wax") \
                    or name in writers and not through_folder:
                if (rel, name) not in allowed:
                    found.append(f"{rel}:{node.lineno} {name}")
    assert found == [], found


@pytest.mark.parametrize("existing", [False, True])
def test_a_refusal_while_measuring_leaves_the_folder_as_found(tmp_path, existing):
    """op_ratios' "no device has both a numpy and a torch benchmark" left env.json (adversarial O02)."""
    if existing:
        (tmp_path / "o").mkdir()
    with pytest.raises(UserError, match="cannot be measured"):
        runner.main(fake("refuse"), [*FLAGS, "--out", "o"])
    assert (tmp_path / "o").exists() == existing
    assert not existing or list((tmp_path / "o").iterdir()) == []


def test_a_lock_file_that_was_there_stays(tmp_path):
    """A refused command deleted the user's own .lock in a non-empty --out (adversarial W16)."""
    out = tmp_path / "o"
    out.mkdir()
    (out / ".lock").write_text("mine")
    (out / "notes.txt").write_text("mine too")
    with pytest.raises(UserError, match="not empty"):
        runner.main(fake(), [*FLAGS, "--out", "o"])
    assert (out / ".lock").read_text() == "mine"
    (out / "notes.txt").unlink()  # now empty but for the lock: the run writes, the lock stays
    assert runner.main(fake(), [*FLAGS, "--out", "o"]) == 0
    assert (out / ".lock").read_text() == "mine" and (out / "report.md").exists()


def test_a_path_the_file_system_refuses_is_one_line(tmp_path):
    with pytest.raises(UserError, match="cannot create output folder .*File name too long"):
        runner.main(fake(), [*FLAGS, "--out", "x" * 300])


def test_a_folder_with_the_temporary_files_name_is_not_a_temporary_file(tmp_path):
    """Only a killed writer's regular file is exempt; a directory of that name is content (W07)."""
    from bench.io import is_temporary

    name = ".mlpbench-tmp.epochs.csv.abcdefgh.tmp"
    assert is_temporary(name)
    (tmp_path / "o" / name).mkdir(parents=True)
    with pytest.raises(UserError, match="not empty"):
        runner.main(fake(), [*FLAGS, "--out", "o"])
    assert (tmp_path / "o" / name).is_dir()


def test_running_out_of_memory_before_measuring_anything_leaves_no_record(tmp_path):
    """SG08: an out-of-memory end with nothing measured left --out holding env.json alone."""
    with pytest.raises(MemoryError):
        runner.main(fake("oom"), [*FLAGS, "--out", "o"])
    assert not (tmp_path / "o").exists()


def test_a_working_directory_that_is_gone_is_one_line(monkeypatch):
    def gone():
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(runner.os, "getcwd", gone)
    with pytest.raises(UserError, match="the working directory no longer exists"):
        runner.main(fake(), [*FLAGS, "--out", "/tmp/never-made"])


def test_a_figure_that_cannot_be_drawn_costs_that_figure(tmp_path, capsys):
    assert runner.main(fake("badfig"), [*FLAGS, "--out", "o"]) == 0
    assert "warning: could not draw found.png: AttributeError" in capsys.readouterr().err
    out = tmp_path / "o"
    assert (out / "found.csv").exists() and not (out / "found.png").exists()
    assert "](found.png)" not in (out / "report.md").read_text()


def test_a_path_through_a_folder_that_does_not_exist_makes_no_such_folder(tmp_path):
    """--out nonexist/../o made nonexist/ and left it (adversarial X-F4)."""
    assert runner.main(fake(), [*FLAGS, "--out", "nonexist/../o/."]) == 0
    assert (tmp_path / "o" / "report.md").exists() and not (tmp_path / "nonexist").exists()
