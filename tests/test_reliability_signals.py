"""Partial results on every signal, in every command, and a run shell that survives its streams.

Promise A (no result is lost): Ctrl-C, SIGTERM and SIGHUP end the measuring
block of every command (``ResultsFolder.measuring``); what was measured
before is written, the report names the signal, and the exit status is 130
(Ctrl-C) or 143 (SIGTERM, SIGHUP). The in-process cases raise the interrupt
where the signal would land; the subprocess cases send real signals and close
real streams.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench import errors, gpu_check, gradflow, hessian, op_ratios, op_timings, runner
from bench.theory import gradflow as gradflow_theory
from bench.theory import hessian as hessian_theory
from bench.sweep import point as sweep_point
from conftest import REPO, started_until_epochs

TINY = ["--dataset", "synthetic", "--train-subset", "256", "--val-size", "64", "--batch-size", "64",
        "--hidden-dims", "8", "--epochs", "2", "--quiet", "--seeds", "42"]


@pytest.fixture
def after(monkeypatch):
    """``after(signum)``: the run shell's record of which signal raised the interrupt."""
    return lambda signum: monkeypatch.setitem(errors._signal, "last", signum)


def interrupt_on_call(monkeypatch, module, name: str, n: int) -> None:
    """``module.name`` raises KeyboardInterrupt on its n-th call (1-based), as a signal would there."""
    real, calls = getattr(module, name), {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)


def test_gradflow_keeps_the_networks_done(tmp_path, monkeypatch, after):
    after(signal.SIGTERM)
    interrupt_on_call(monkeypatch, gradflow_theory, "measure_network", 2)
    out = tmp_path / "gf"
    args = ["--dataset", "synthetic", "--train-subset", "192", "--val-size", "64", "--batch-size", "32",
            "--depth", "3", "--width", "8", "--epochs", "1", "--eval-every", "3", "--batch-examples", "40",
            "--threads", "1", "--quiet", "--activations", "tanh", "--out", str(out)]
    assert gradflow.main(args) == 143
    assert list(pd.read_csv(out / "networks.csv")["arch"]) == ["plain"]
    report = (out / "report.md").read_text()
    assert "interrupted (SIGTERM)" in report and "Ctrl-C" not in report
    assert not (out / ".lock").exists()


def test_hessian_keeps_every_stage_done(tmp_path, monkeypatch, after):
    after(signal.SIGHUP)
    interrupt_on_call(monkeypatch, hessian_theory, "measure_point", 2)  # the trained point
    out = tmp_path / "hs"
    args = ["--dataset", "synthetic", "--train-subset", "256", "--val-size", "64", "--batch-size", "32",
            "--hidden-dims", "4", "--epochs", "2", "--batch-examples", "64", "--k", "2",
            "--check-features", "6", "--check-hidden", "3", "--check-examples", "40", "--threads", "1",
            "--quiet", "--out", str(out)]
    assert hessian.main(args) == 143
    assert {"exact_check.csv", "epochs.csv", "hessian_summary.csv", "report.md"} <= {
        p.name for p in out.iterdir()}
    assert set(pd.read_csv(out / "hessian_summary.csv")["stage"]) == {"init"}
    assert "interrupted (SIGHUP, the terminal closed)" in (out / "report.md").read_text()


def test_sweep_keeps_the_tasks_done(tmp_path, monkeypatch, after, capsys):
    from bench.sweep.__main__ import main as sweep

    after(signal.SIGINT)
    interrupt_on_call(monkeypatch, sweep_point, "_train", 2)
    out = tmp_path / "s"
    args = ["--grid", "lr=0.05,0.1", *TINY, "--backends", "numpy:cpu", "--no-reference-timing",
            "--out", str(out)]
    assert sweep(args) == 130
    assert len(pd.read_csv(out / "sweep.csv")) == 1
    assert "run the same command to resume" in capsys.readouterr().err


def test_gpu_check_keeps_the_runs_done(tmp_path, monkeypatch, after):
    after(signal.SIGTERM)
    interrupt_on_call(monkeypatch, gpu_check, "run_one", 2)
    out = tmp_path / "g"
    assert gpu_check.main(["--quiet", "--out", str(out)]) == 143
    rows = pd.read_csv(out / "gpu_check.csv")
    assert len(rows) == 1 and rows["status"].iloc[0] == "ok"
    assert "interrupted (SIGTERM)" in (out / "report.md").read_text()


@pytest.mark.parametrize("pairs", [True, False])
def test_op_ratios_asks_pytest_to_stop_and_keeps_what_it_timed(tmp_path, monkeypatch, after, pairs):
    """A signal while benchmarks/ runs: pytest gets SIGINT, saves what it timed, and the ratios of
    those are written; stopped before a pair was timed, it keeps what pytest saved and the signal's
    status (it was a usage error, exit 2: adversarial Y-F5)."""
    after(signal.SIGTERM)
    sent = []

    class Pytest:
        def __init__(self, cmd):
            self.json = Path(next(a for a in cmd if a.startswith("--benchmark-json=")).split("=", 1)[1])
            self.waits = 0

        def wait(self, timeout=None):
            self.waits += 1
            if self.waits == 1:
                raise KeyboardInterrupt
            bench = [{"name": f"{b}-{op}", "extra_info": {"op": op, "backend": b, "batch": 32},
                      "stats": {"median": t, "iqr": 0.0}}
                     for op in ("linear_fwd",) for b, t in (("numpy:cpu", 2e-3), ("torch:cpu", 1e-3))
                     if pairs or b == "numpy:cpu"]
            self.json.write_text(json.dumps({"benchmarks": bench}))
            return 130

        def send_signal(self, signum):
            sent.append(signum)

    real = subprocess.Popen
    monkeypatch.setattr(op_timings.subprocess, "Popen", lambda cmd, *a, **kw: Pytest(cmd)
                        if "--benchmark-save=ops" in cmd else real(cmd, *a, **kw))
    out = tmp_path / "o"
    assert op_ratios.main(["--run", "--out", str(out)]) == 143
    assert sent == [signal.SIGINT]
    assert "interrupted (SIGTERM)" in (out / "report.md").read_text()
    if pairs:
        assert pd.read_csv(out / "op_ratios.csv")["ratio_cpu"].iloc[0] == pytest.approx(2.0)
    else:
        assert (out / "ops.json").exists() and not (out / "op_ratios.csv").exists()


@pytest.mark.parametrize("signum, code, words", [(signal.SIGINT, 130, "Ctrl-C"),
                                                 (signal.SIGTERM, 143, "SIGTERM"),
                                                 (signal.SIGHUP, 143, "SIGHUP")])
def test_each_signal_has_its_status_and_its_words(monkeypatch, signum, code, words):
    monkeypatch.setattr(errors, "_TERMINALS", [])
    with pytest.raises(KeyboardInterrupt):
        errors._raise_interrupt(signum, None)
    assert errors.interrupted_code() == code and words in errors.interruption()


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGUSR1,  # SIGUSR1 ended it at once (X-F5)
                                    signal.SIGALRM, signal.SIGXCPU])  # and these (A7-F7): every signal
def test_every_signal_that_ends_a_process_writes_everything_and_exits_143(tmp_path, signum):
    with started_until_epochs(["bench.compare", *TINY, "--epochs", "100000", "--backends", "numpy:cpu",
                               "--out", "hup"], tmp_path, tmp_path / "hup" / "epochs.csv") as proc:
        proc.send_signal(signum)
        _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    out = tmp_path / "hup"
    assert list(pd.read_csv(out / "runs.csv")["status"]) == ["interrupted"]
    assert f"interrupted ({signal.Signals(signum).name}" in (out / "report.md").read_text()
    assert not (out / ".lock").exists()


def _shell(command: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLPBENCH_CACHE_DIR": str(cwd / "cache")}
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, timeout=300)


def test_every_signal_whose_default_ends_a_process_is_handled():
    """The table is every signal whose default action ends the process and that a process may catch."""
    ends = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM,
            signal.SIGVTALRM, signal.SIGPROF, signal.SIGXCPU}  # SIGPIPE, SIGXFSZ: Python ignores them
    assert set(errors.SIGNAL_WORDS) == ends


def test_a_stream_closed_by_other_code_swallows_what_it_is_given():
    """Code that closed sys.stdout made the next progress line a ValueError traceback (A7-F3)."""
    import io

    stream = io.StringIO()
    wrapped = errors._ReaderMayLeave(stream)
    stream.close()
    assert wrapped.write("progress") == len("progress")
    wrapped.flush()
    wrapped.write("more")


@pytest.mark.parametrize("redirect", ["2>&-", ">&- 2>&-", "<&- >&- 2>&-", "> /dev/full 2> /dev/full"])
def test_closed_standard_streams_still_finish_and_keep_the_results(tmp_path, redirect):
    tiny = " ".join(TINY).replace("--quiet", "")  # progress bars on, to the closed stream
    proc = _shell(f"{sys.executable} -m bench.compare {tiny} --backends numpy:cpu --out o {redirect}",
                  tmp_path)
    assert proc.returncode == 0, proc
    assert {"runs.csv", "report.md", "env.json"} <= {p.name for p in (tmp_path / "o").iterdir()}
    assert set(pd.read_csv(tmp_path / "o" / "runs.csv")["status"]) == {"ok"}


@pytest.mark.parametrize("command, pipe", [("compare", "2>&1 | head -c 100"),
                                           ("epoch_ratio", "| head -1")])
def test_a_reader_that_goes_away_costs_no_result(tmp_path, command, pipe):
    """| head recorded good runs as failed (BrokenPipeError in a progress line), lost the summary
    and exited 141 (adversarial ST05, ST06b)."""
    tiny = " ".join(TINY).replace("--quiet", "")
    proc = _shell(f"set -o pipefail; {sys.executable} -m bench.{command} {tiny} --backends numpy:cpu "
                  f"--epochs 3 --out o {pipe} > /dev/null", tmp_path)
    assert proc.returncode == 0, proc
    assert {"runs.csv", "summary.csv", "report.md"} <= {p.name for p in (tmp_path / "o").iterdir()}
    assert set(pd.read_csv(tmp_path / "o" / "runs.csv")["status"]) == {"ok"}


def test_an_out_folder_whose_name_is_not_utf8_keeps_its_report(tmp_path):
    name = os.fsdecode(b"o-\xff\xfe")
    proc = subprocess.run([sys.executable, "-m", "bench.compare", *TINY, "--backends", "numpy:cpu",
                           "--out", name], cwd=tmp_path, capture_output=True, timeout=300,
                          env={**os.environ, "MLPBENCH_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / name
    assert (out / "report.md").read_text(encoding="utf-8")  # written, and valid UTF-8
    assert b"results: o-" in proc.stdout


def test_a_signal_while_the_results_are_written_waits_for_them(tmp_path, monkeypatch, after):
    """After the measurements, a signal is held until every file is written, then ends the command;
    so is a second one (it interrupted `import matplotlib` and lost the report: A11-F2)."""
    from bench import compare

    after(signal.SIGTERM)
    real = runner.report

    def report_interrupted(*args):
        errors._raise_interrupt(signal.SIGTERM, None)  # arrives while the outputs are written
        errors._raise_interrupt(signal.SIGTERM, None)  # and again: it waits too
        return real(*args)

    monkeypatch.setattr(runner, "report", report_interrupted)
    out = tmp_path / "o"
    assert compare.main([*TINY, "--backends", "numpy:cpu", "--out", str(out)]) == 143
    assert (out / "report.md").exists() and not (out / ".lock").exists()
    assert list(pd.read_csv(out / "runs.csv")["status"]) == ["ok"]
    assert not errors._signal["held"] and not errors._signal["pending"]


SWALLOWED = """
import gc, os, signal, sys
from bench import compare, run
from bench.errors import run_cli

state = {"epochs": 0, "fired": False}
real = run.Run._epoch


def epoch(self):
    state["epochs"] += 1
    done = real(self)
    if state["epochs"] == 2:
        gc.collect()
    return done


def swallow(phase, info):  # as JAX's _xla_gc_callback: CPython prints what it raises and goes on
    if phase == "start" and state["epochs"] >= 2 and not state["fired"]:
        state["fired"] = True
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):
            pass


run.Run._epoch = epoch
gc.callbacks.append(swallow)
run_cli(compare.main, sys.argv[1:], prog="python -m bench.compare")
"""


def test_a_ctrl_c_swallowed_by_a_gc_callback_still_ends_the_command(tmp_path):
    """A KeyboardInterrupt raised inside a gc callback (JAX installs one), a ``__del__`` or code that
    catches everything never reaches the loop; the signal is recorded, and the loop stops at its next
    check: the run is interrupted, what finished is written, the exit status is 130 (A11-F1)."""
    proc = subprocess.run([sys.executable, "-c", SWALLOWED, *TINY, "--epochs", "50", "--backends", "numpy:cpu",
                           "--out", "o"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert "Exception ignored" in proc.stderr  # CPython swallowed the KeyboardInterrupt
    assert proc.returncode == 130, proc.stderr
    runs = pd.read_csv(tmp_path / "o" / "runs.csv")
    assert list(runs["status"]) == ["interrupted"] and runs["epochs_done"][0] < 50
    assert "interrupted (Ctrl-C" in (tmp_path / "o" / "report.md").read_text()


def test_a_swallowed_signal_still_sets_the_exit_status(monkeypatch):
    """Code that swallowed the interrupt and returned normally: the command still exits 143."""
    def main(_argv):
        try:
            errors._raise_interrupt(signal.SIGTERM, None)
        except KeyboardInterrupt:
            pass
        return 0

    monkeypatch.setattr(errors, "_TERMINALS", [])
    with pytest.raises(SystemExit) as exit_:
        errors.run_cli(main, [], prog="x")
    assert exit_.value.code == 143


def test_a_signal_inside_an_import_lets_the_import_finish_then_stops(tmp_path, monkeypatch):
    """A KeyboardInterrupt raised inside an import leaves the package half-loaded, and the next import
    of it fails (a Ctrl-C in `import matplotlib` lost the report); inside an import the signal is only
    recorded, the import finishes whole, and the next check stops the work."""
    (tmp_path / "slow_module_for_signal.py").write_text(
        "import signal, sys\nfrom bench import errors\n"
        "errors._raise_interrupt(signal.SIGINT, sys._getframe())\nWHOLE = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "slow_module_for_signal", raising=False)
    import slow_module_for_signal

    assert slow_module_for_signal.WHOLE and errors.signal_came()
    with pytest.raises(KeyboardInterrupt):
        errors.stop_if_signalled()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_at_any_moment_is_one_line_and_its_status(tmp_path, signum):
    """Sent while the modules import, while the data load, during training or while the results are
    written: never a traceback, always 130/143 and a line saying so; a folder only when it holds results."""
    import time

    for i, delay in enumerate([0.2, 0.9, 1.6, 2.4, 3.2]):
        proc = subprocess.Popen([sys.executable, "-m", "bench.compare", *TINY, "--epochs", "1",
                                 "--backends", "numpy:cpu", "--out", f"o{i}"], cwd=tmp_path, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        time.sleep(delay)
        proc.send_signal(signum)
        _out, err = proc.communicate(timeout=120)
        if proc.returncode == 0:  # it finished first
            continue
        assert proc.returncode == (130 if signum == signal.SIGINT else 143), (delay, err)
        assert "Traceback" not in err and "interrupted" in err, (delay, err)
        out = tmp_path / f"o{i}"
        assert not out.exists() or (out / "report.md").exists(), (delay, err)
        assert not (out / ".lock").exists()


def test_a_second_signal_at_once_is_the_same_stop(monkeypatch):
    """A12-S10: INT, INT, TERM within 40 ms: the second interrupted the handling of the first (a run's
    record and two tables lost). A signal within SAME_STOP_S of the first is recorded only; a later one
    still ends what the first could not."""
    monkeypatch.setattr(errors, "_TERMINALS", [])
    with pytest.raises(KeyboardInterrupt):
        errors._raise_interrupt(signal.SIGINT, None)
    errors._raise_interrupt(signal.SIGINT, None)  # no exception: the first is being handled
    errors._raise_interrupt(signal.SIGTERM, None)
    assert errors.interrupted_code() == 143  # the last one names the status
    monkeypatch.setitem(errors._signal, "at", errors._signal["at"] - errors.SAME_STOP_S - 1)
    with pytest.raises(KeyboardInterrupt):
        errors._raise_interrupt(signal.SIGINT, None)
