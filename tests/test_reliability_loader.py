"""The one backend loader: whatever a backend's module, ``available()`` or constructor does, it is
that backend's one row or line, never the end of the run or of ``--list-backends``.

Each case is a plugin module written here and registered as an implementation
of kind ``plugin`` (as an entry point would register it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from bench import backends, compare
from bench.backends import IMPLS, PLUGIN, Impl, listing, resolve
from bench.errors import UserError
from conftest import REPO

TINY = ["--dataset", "synthetic", "--train-subset", "256", "--val-size", "64", "--batch-size", "64",
        "--hidden-dims", "8", "--epochs", "1", "--quiet", "--no-reference-timing", "--seeds", "42"]
COUNTER = iter(range(10**6))

# module bodies: (what it does, what the backend's row or line must say)
BROKEN = {
    "import_raises": ("raise RuntimeError('boom at import')", "RuntimeError: boom at import"),
    "import_exits": ("import sys\nsys.exit(3)", "SystemExit: 3"),
    "import_hangs": ("import time\nwhile True:\n    time.sleep(0.05)", "did not return within"),
    "says_yes": ("def available(device):\n    return 'yes'", "returned 'yes', not (bool, reason)"),
    "says_no_none": ("def available(device):\n    return ('no', None)",
                     "returned ('no', None), not (bool, reason)"),
    "available_raises": ("def available(device):\n    raise ValueError('probe failed')",
                         "ValueError: probe failed"),
    "available_exits": ("def available(device):\n    raise SystemExit(4)", "SystemExit: 4"),
    "available_hangs": ("import time\ndef available(device):\n    while True:\n        time.sleep(0.05)",
                        "did not return within"),
    "no_class": ("def available(device):\n    return True, ''\nBackend = 3", "has no class Backend"),
}
CLASS = textwrap.dedent("""
    from bench.backends.numpy_backend import NumpyBackend

    class Backend(NumpyBackend):
        impl = "{name}"

        def __init__(self, config, device):
            {init}
            super().__init__(config, device)
""")


def plugin(tmp_path, monkeypatch, body: str, init: str = "pass") -> str:
    """Register a plugin whose module is ``body`` (plus a Backend class unless body defines one)."""
    name = f"plug{next(COUNTER)}"
    source = body + ("" if "Backend =" in body else CLASS.format(name=name, init=init))
    (tmp_path / f"{name}_mod.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(IMPLS, name, Impl(f"{name}_mod", "Backend", PLUGIN, False, "a test plugin"))
    monkeypatch.setattr(backends, "AVAILABLE_TIMEOUT_S", 0.5)
    return name


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_plugin_is_one_row_of_the_listing(tmp_path, monkeypatch, case):
    body, needle = BROKEN[case]
    name = plugin(tmp_path, monkeypatch, body)
    t0 = time.monotonic()
    rows = {r["backend"]: r for r in listing()}
    assert time.monotonic() - t0 < 5  # a hung probe costs its time limit once, not per device
    for device in ("cpu", "cuda"):
        row = rows[f"{name}:{device}"]
        assert row["runs here"] == "no" and needle in row["why / what"], row
    assert rows["numpy:cpu"]["runs here"] == "yes"


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_plugin_asked_for_is_one_line_and_never_a_traceback(tmp_path, monkeypatch, case):
    body, needle = BROKEN[case]
    name = plugin(tmp_path, monkeypatch, body)
    with pytest.raises(UserError, match="not available here") as err:
        resolve([f"{name}:cpu", "numpy:cpu"])
    assert needle in str(err.value) and "\n" not in str(err.value)
    chosen, skipped = resolve([f"{name}:cpu", "numpy:cpu"], skip_unavailable=True)
    assert [c.name for c in chosen] == ["numpy:cpu"] and skipped[0][0] == f"{name}:cpu"


@pytest.mark.parametrize("init", ["raise RuntimeError('constructor exploded')", "raise SystemExit(5)"])
def test_a_constructor_that_raises_is_that_backends_failed_run(tmp_path, monkeypatch, init):
    name = plugin(tmp_path, monkeypatch, "def available(device):\n    return True, 'ok'", init)
    monkeypatch.chdir(tmp_path)
    assert compare.main([*TINY, "--backends", f"{name}:cpu,numpy:cpu", "--out", "o"]) == 0
    runs = pd.read_csv(tmp_path / "o" / "runs.csv").set_index("backend")
    assert runs.loc[f"{name}:cpu", "status"] == "failed"
    assert runs.loc[f"{name}:cpu", "error"] in ("RuntimeError: constructor exploded", "SystemExit: 5")
    assert runs.loc["numpy:cpu", "status"] == "ok"


def test_a_constructor_that_hangs_costs_its_deadline_once(tmp_path, monkeypatch):
    """A hung constructor was given the deadline at the build and again at the run's start."""
    log = tmp_path / "built"
    name = plugin(tmp_path, monkeypatch, "def available(device):\n    return True, 'ok'",
                  f"open({str(log)!r}, 'a').write('x'); __import__('time').sleep(1000)")
    monkeypatch.setattr(backends, "UNTRUSTED_STAGE_S", 2.0)
    monkeypatch.chdir(tmp_path)
    assert compare.main([*TINY, "--backends", f"{name}:cpu,numpy:cpu", "--out", "o"]) == 0
    runs = pd.read_csv(tmp_path / "o" / "runs.csv").set_index("backend")
    assert runs.loc[f"{name}:cpu", "status"] == "failed" and "took longer than 2 s" in runs.loc[f"{name}:cpu", "error"]
    assert log.read_text() == "x"


def test_an_option_the_constructor_refuses_is_still_one_line(tmp_path, monkeypatch):
    name = plugin(tmp_path, monkeypatch, "def available(device):\n    return True, 'ok'",
                  "from bench.errors import UserError; raise UserError('no such option here')")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="no such option here"):
        compare.main([*TINY, "--backends", f"{name}:cpu,numpy:cpu", "--out", "o"])
    assert not (tmp_path / "o").exists()


def test_every_row_says_whether_it_runs_by_default_or_why_it_is_opt_in():
    for row in listing():
        why = row["why / what"]
        assert why.startswith(("runs by default", "opt-in")), row
        if row["runs here"] == "no":
            assert "not here: " in why, row


def test_listing_imports_no_heavy_package():
    code = ("import sys; from bench.backends import listing; listing(); "
            "print(sorted(m for m in ('torch', 'sklearn', 'torchvision', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and out.stdout.strip() == "[]", out


def test_course_code_that_changes_directory_cannot_move_the_results(tmp_path):
    """A course idiom, os.chdir(its own folder) at import, put --out inside the student's code (CB12)."""
    import shutil

    from conftest import REPO

    code = tmp_path / "student"
    shutil.copytree(REPO / "tests" / "fixtures" / "course_ok", code)
    modules = code / "modules.py"
    modules.write_text("import os\nos.chdir(os.path.dirname(os.path.abspath(__file__)))\n"
                       + modules.read_text())
    run = tmp_path / "run"
    run.mkdir()
    proc = subprocess.run([sys.executable, "-m", "bench.compare", "--dataset", "synthetic", "--epochs", "1",
                           "--train-subset", "256", "--val-size", "64", "--seeds", "42", "--quiet",
                           "--backends", f"course:{code},numpy:cpu", "--out", "relout"],
                          cwd=run, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MLPBENCH_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    assert (run / "relout" / "report.md").exists() and not (code / "relout").exists()


def test_course_code_that_never_returns_fails_its_run_not_the_command(tmp_path, monkeypatch):
    """A forward that loops forever hung compare until it was killed (adversarial CB11)."""
    import shutil

    import bench.backends
    from bench import compare, runner
    from conftest import REPO

    code = tmp_path / "student"
    shutil.copytree(REPO / "tests" / "fixtures" / "course_ok", code)
    modules = code / "modules.py"
    text = modules.read_text()
    modules.write_text(text.replace("    def forward(self, x):\n",  # the first: LinearModule's
                                    "    def forward(self, x):\n        while x.shape[0] > 4:\n"
                                    "            pass\n", 1))
    monkeypatch.setattr(bench.backends, "UNTRUSTED_STAGE_S", 3.0)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLPBENCH_CACHE_DIR", str(tmp_path / "cache"))
    t0 = time.monotonic()
    code_ = runner.main(compare.COMMAND, ["--dataset", "synthetic", "--epochs", "1", "--train-subset", "256",
                                          "--val-size", "64", "--seeds", "42", "--quiet", "--backends",
                                          f"numpy:cpu,course:{code}", "--out", "o"])
    assert time.monotonic() - t0 < 60 and code_ == 0
    runs = pd.read_csv(tmp_path / "o" / "runs.csv").set_index("impl")
    assert runs.loc["numpy", "status"] == "ok" and runs.loc["course", "status"] == "failed"
    assert "start took longer than 3 s" in runs.loc["course", "error"]  # the warm-up steps


def student(tmp_path, first_line: str = "", forward: str = "") -> str:
    """A copy of the good course fixture with ``first_line`` before its code and ``forward`` at the
    top of LinearModule.forward."""
    import shutil

    from conftest import REPO

    code = tmp_path / "student"
    shutil.copytree(REPO / "tests" / "fixtures" / "course_ok", code)
    modules = code / "modules.py"
    text = first_line + "\n" + modules.read_text()
    modules.write_text(text.replace("    def forward(self, x):\n", "    def forward(self, x):\n" + forward, 1))
    return str(code)


def compare_with(tmp_path, code: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.compare", "--dataset", "synthetic", "--epochs", "1",
                           "--train-subset", "256", "--val-size", "64", "--seeds", "42", "--quiet",
                           "--no-reference-timing", "--backends", f"numpy:cpu,course:{code}", "--out", "o", *extra],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MLPBENCH_CACHE_DIR": str(tmp_path / "cache")})


# What course code does in its own process costs its run alone: the mechanism (bench.backends.isolated).
ENDINGS = [  # (code at the top of LinearModule.forward, what the failed run's error says)
    ("        import os; os._exit(0)\n", "exit status 0"),
    ("        import os; os.abort()\n", "SIGABRT"),
    ("        import os, signal; os.kill(os.getppid(), signal.SIGKILL)\n", "ended"),
    ("        import os, signal; os.killpg(0, signal.SIGKILL)\n", "ended"),
    ("        while True:\n            try:\n                __import__('time').sleep(0.2)\n"
     "            except BaseException:  # noqa: E722\n                pass\n", "took longer than"),
    ("        import signal; signal.alarm(0); signal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
     "        while True: pass\n", "took longer than"),
]


@pytest.mark.parametrize("forward,needle", ENDINGS, ids=["os._exit", "abort", "kill-parent", "killpg",
                                                         "catches-every-stop", "cancels-the-alarm"])
def test_course_code_that_ends_hangs_or_kills_costs_its_own_run(tmp_path, forward, needle):
    """os._exit, a crash, a signal to its parent or group, a loop that swallows every stop or cancels
    the alarm: each was the command's end or a hang while course code ran in-process (N-F6, CB11)."""
    code = student(tmp_path, forward=forward)
    script = ("import bench.backends\nbench.backends.UNTRUSTED_STAGE_S = 4.0\n"
              "from bench import compare, runner\nfrom bench.errors import run_cli\n"
              "run_cli(lambda a: runner.main(compare.COMMAND, a), ['--dataset', 'synthetic', '--epochs', '1', "
              "'--train-subset', '256', '--val-size', '64', '--seeds', '42', '--quiet', '--no-reference-timing', "
              f"'--backends', 'numpy:cpu,course:{code}', '--out', 'o'], 'x')\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "MLPBENCH_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    runs = pd.read_csv(tmp_path / "o" / "runs.csv").set_index("impl")
    assert runs.loc["numpy", "status"] == "ok" and runs.loc["course", "status"] == "failed"
    assert needle in runs.loc["course", "error"]
    assert (tmp_path / "o" / "report.md").exists() and not (tmp_path / "o" / ".lock").exists()


def test_course_code_that_alters_numpy_alters_only_its_own_run(tmp_path):
    """``np.float32 = np.float16`` at import crashed the harness's own data (Y-F3); a rewritten
    ACTIVATIONS table changed numpy:cpu's numbers unflagged (Y-F2). Now only the course's run sees it,
    and that run is flagged."""
    code = student(tmp_path, "import numpy as _np, impl_numpy.activations as _a\n_np.float32 = _np.float16\n"
                             "_a.ACTIVATIONS['elu'] = lambda x, alpha=1.0: x * 0.5")
    proc = compare_with(tmp_path, code)
    assert proc.returncode == 0, proc.stderr
    runs = pd.read_csv(tmp_path / "o" / "runs.csv").set_index("impl")
    assert runs.loc["numpy", "status"] == "ok" and pd.isna(runs.loc["numpy", "replaced"])
    assert "numpy.float32" in runs.loc["course", "replaced"]
    assert "impl_numpy.activations.ACTIVATIONS" in runs.loc["course", "replaced"]
    alone = subprocess.run([sys.executable, "-m", "bench.compare", "--dataset", "synthetic", "--epochs", "1",
                            "--train-subset", "256", "--val-size", "64", "--seeds", "42", "--quiet",
                            "--no-reference-timing", "--backends", "numpy:cpu", "--out", "alone"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "MLPBENCH_CACHE_DIR": str(tmp_path / "cache")})
    assert alone.returncode == 0, alone.stderr
    assert pd.read_csv(tmp_path / "alone" / "runs.csv")["test_loss"][0] == runs.loc["numpy", "test_loss"]
    assert "numpy.float32" in json.loads((tmp_path / "o" / "env.json").read_text())["replaced_callables"]


@pytest.mark.parametrize("first_line", ["import os; os._exit(0)", "import os; os.abort()"])
def test_course_code_that_ends_its_process_at_import_is_one_line(tmp_path, first_line):
    proc = compare_with(tmp_path, student(tmp_path, first_line))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "its process ended" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_no_process_course_code_starts_outlives_its_backend(tmp_path):
    """A process the code starts and orphans (setsid, its parent gone) is killed with the backend's
    process, as bench.check's sandbox does."""
    pids = tmp_path / "pids"
    code = student(tmp_path, "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                             f"        open({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n')\n"
                             "        time.sleep(600)\n    os._exit(0)\ntime.sleep(0.5)")
    proc = compare_with(tmp_path, code)
    assert proc.returncode == 0, proc.stderr
    time.sleep(1)
    left = [pid for pid in pids.read_text().split() if _running(int(pid))]
    assert pids.read_text() and not left


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("method, body, needle", [
    ("describe", "return {'x': 'y' * 5_000_000}", "longer than"),          # an answer beyond its cap
    ("evaluate", "[_write(fd) for fd in range(3, 64)]", "cannot be read"),  # bytes on its own pipe
])
def test_what_a_backends_process_sends_back_is_bounded_and_checked(tmp_path, monkeypatch, method, body, needle):
    """An isolated backend's answers are capped in size and parsed as JSON and .npz, never unpickled;
    one it breaks costs its run alone."""
    arg = "self, split" if method == "evaluate" else "self"
    name = plugin(tmp_path, monkeypatch, "def available(device):\n    return True, 'ok'\n"
                  + CLASS.format(name="x", init="pass").replace("class Backend(NumpyBackend):",
                                                                "class Base(NumpyBackend):")
                  + "\ndef _write(fd):\n    try:\n        __import__('os').write(fd, b'\\0' * 8 + b'junk')\n"
                  + "    except OSError:\n        pass\n"
                  + f"\nclass Backend(Base):\n    def {method}({arg}):\n        {body}\n"
                  + "        return 0.0, 0.5\n" * (method == "evaluate") + "\nBackend = Backend\n")
    monkeypatch.chdir(tmp_path)
    assert compare.main([*TINY, "--backends", f"{name}:cpu,numpy:cpu", "--out", "o"]) == 0
    runs = pd.read_csv(tmp_path / "o" / "runs.csv").set_index("backend")
    assert runs.loc[f"{name}:cpu", "status"] == "failed" and needle in runs.loc[f"{name}:cpu", "error"]
    assert runs.loc["numpy:cpu", "status"] == "ok"


def test_a_backends_process_that_ended_in_one_seed_is_started_anew_for_the_next(tmp_path, monkeypatch):
    """The process died in seed 42 and seed 43 was "stopped earlier" without running (A8)."""
    name = plugin(tmp_path, monkeypatch, textwrap.dedent("""
        import os
        from bench.backends.numpy_backend import NumpyBackend

        def available(device):
            return True, 'ok'

        class Backend(NumpyBackend):
            impl = "seeded"

            def init_model(self, seed):
                self.seed = seed
                super().init_model(seed)

            def evaluate(self, split):
                if self.seed == 42:
                    os._exit(3)
                return super().evaluate(split)
        Backend = Backend
        """))
    monkeypatch.chdir(tmp_path)
    assert compare.main([*TINY, "--seeds", "42", "43", "--backends", f"{name}:cpu", "--out", "o"]) == 0
    runs = pd.read_csv(tmp_path / "o" / "runs.csv").set_index("seed")
    assert runs.loc[42, "status"] == "failed" and "exit status 3" in runs.loc[42, "error"]
    assert "during evaluate" in runs.loc[42, "error"]
    assert runs.loc[43, "status"] == "ok"


ANSWERS = {  # method of a plugin backend: (its body, the run's status, a word of its error or None)
    "describe-hangs-after-build": ("describe", "if getattr(self, '_asked', False):\n"
                                   "            __import__('time').sleep(1000)\n"
                                   "        self._asked = True\n        return {}", "ok", None),
    "describe-nonsense": ("describe", "return {'compile_seconds': 'soon', 'x': object(), 7: [1] * 10**5, "
                                      "'n': float('nan')}",
                          "ok", None),
    "losses-beyond-steps": ("pop_step_records", "from bench.backends.api import StepRecords\n"
                            "        return StepRecords(np.zeros(10**6), 0, 0)", "failed", "longer than"),
    "fewer-losses": ("pop_step_records", "from bench.backends.api import StepRecords\n"
                     "        return StepRecords(np.zeros(1), 0, 0)", "failed", "training losses for"),
    "peak-memory-nonsense": ("peak_memory_bytes", "return 10**30", "failed", "peak memory"),
    "execs-a-program": ("evaluate", "os.execvp('sleep', ['sleep', '1000'])", "failed", "ended during evaluate"),
    "constructor-takes-3-gib": ("__init__", "self.junk = np.ones(3 * 2**30 // 8)", "oom", "MemoryError"),  # A10-F1
    "real-time-signal": ("evaluate", "os.kill(os.getpid(), 40)", "failed", "killed by signal 40"),  # A9-F1
    "losses-not-float": ("pop_step_records", "rec = NumpyBackend.pop_step_records(self)\n"
                         "        rec.losses = rec.losses.astype(np.float16).view(np.uint16)\n"
                         "        return rec", "failed", "dtype uint16"),  # A9-F3
    "extra-overwrites-the-clock": ("pop_step_records", "rec = NumpyBackend.pop_step_records(self)\n"
                                   "        rec.extra = {'epoch_seconds': 1e-9, 'status': 1.0}\n"
                                   "        return rec", "failed", "epoch columns of its own"),  # A13-F2
    "rows-not-sent": ("pop_step_records", "rec = NumpyBackend.pop_step_records(self)\n"
                      "        rec.seen, rec.correct = 10**12, 10**12 - 1\n"
                      "        return rec", "failed", "the rows it was sent"),  # A14-F1
    "no-rows": ("pop_step_records", "rec = NumpyBackend.pop_step_records(self)\n"
                "        rec.seen = rec.correct = 0\n        return rec", "failed", "the rows it was sent"),
    "gemm-negative": ("gemm_seconds", "return -1.0", "failed", "GEMM-only time -1.0"),  # A13-F3
    "gemm-nan": ("gemm_seconds", "return float('nan')", "failed", "GEMM-only time nan"),
    "weights-with-extra": ("export_state", "return {**NumpyBackend.export_state(self), 'evil': np.zeros(2)}",
                           "failed", "unexpected evil"),  # A9-F2
    "error-with-escapes": ("evaluate", "raise type('Bad\\nName\\x1b[31m', (Exception,), {})('\\x1b[2J' + 'x' * 5000)",
                           "failed", "\\x1b"),  # A9-F4: written as an escape, never sent to a terminal
}


@pytest.mark.parametrize("method, body, status, needle", ANSWERS.values(), ids=ANSWERS.keys())
def test_every_call_of_a_backends_process_is_bounded_and_checked(tmp_path, monkeypatch, method, body, status,
                                                                  needle):
    """A8: describe() that hangs at the run's end hung the command; nonsense in describe() crashed the
    report; 10**8 losses for 8 steps were kept; a peak of 1e30 bytes was recorded; an exec'd program
    kept the pipes open. Each is now that run's failure, or ignored, within the stage limit."""
    arg = {"evaluate": "self, split", "__init__": "self, config, device",
           "gemm_seconds": "self, shapes, repeats"}.get(method, "self")
    body += "\n        super().__init__(config, device)" if method == "__init__" else ""
    name = plugin(tmp_path, monkeypatch, textwrap.dedent(f"""
        import os
        import numpy as np
        from bench.backends.numpy_backend import NumpyBackend

        def available(device):
            return True, 'ok'

        class Backend(NumpyBackend):
            impl = "answers"

            def {method}({arg}):
        """) + f"        {body}\nBackend = Backend\n")
    monkeypatch.setattr(backends, "UNTRUSTED_STAGE_S", 8.0)  # a fresh Python's start on a loaded machine fits
    monkeypatch.chdir(tmp_path)
    flags = [f for f in TINY if method != "gemm_seconds" or f != "--no-reference-timing"]  # the GEMM clock runs
    assert compare.main([*flags, "--backends", f"{name}:cpu,numpy:cpu", "--out", "o"]) == 0
    runs = pd.read_csv(tmp_path / "o" / "runs.csv").set_index("backend")
    assert runs.loc[f"{name}:cpu", "status"] == status, runs.loc[f"{name}:cpu", "error"]
    assert needle is None or needle in runs.loc[f"{name}:cpu", "error"]
    assert "\x1b" not in runs.loc[f"{name}:cpu"].to_string() and "\x1b" not in (tmp_path / "o" / "report.md").read_text()
    assert runs.loc["numpy:cpu", "status"] == "ok" and (tmp_path / "o" / "report.md").exists()
    assert (tmp_path / "o" / "env.json").stat().st_size < 200_000
    json.loads((tmp_path / "o" / "env.json").read_text(), parse_constant=pytest.fail)  # strict JSON


def test_a_backend_name_with_a_control_character_is_one_line(tmp_path):
    proc = compare_with(tmp_path, str(tmp_path / "a\nb"))
    assert proc.returncode == 2 and "control character" in proc.stderr and not (tmp_path / "o").exists()


def test_one_course_folder_named_two_ways_is_listed_twice(tmp_path):
    """course:DIR and course:DIR/ trained the same code twice and compared it with itself (A10-F2)."""
    code = student(tmp_path)
    proc = compare_with(tmp_path, code + "/,course:" + code)
    assert proc.returncode == 2 and "listed twice" in proc.stderr and not (tmp_path / "o").exists()


def test_the_results_line_escapes_what_a_terminal_would_act_on(tmp_path):
    """--out with a newline and an escape sequence was printed raw (A10-F3)."""
    out = tmp_path / "a\x1b[31mred\nline"
    proc = subprocess.run([sys.executable, "-m", "bench.compare", *TINY, "--backends", "numpy:cpu", "--out",
                           str(out)], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "MLPBENCH_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout and proc.stdout.strip().splitlines()[-1].endswith("a\\x1b[31mred\\nline")
    assert (out / "report.md").exists()


def test_a_sweep_names_what_a_backend_replaced(tmp_path, monkeypatch):
    """Only sweep.csv named a replaced np.tanh; env.json and the report did not (A10-F4)."""
    from bench.sweep.__main__ import main as sweep

    name = plugin(tmp_path, monkeypatch, "import numpy as np\n_o = np.tanh\nnp.tanh = lambda *a, **k: _o(*a, **k)\n"
                                         "def available(device):\n    return True, 'ok'")
    monkeypatch.chdir(tmp_path)
    assert sweep([*TINY, "--backends", f"{name}:cpu,numpy:cpu", "--grid", "lr=0.1", "--out", "sw"]) == 0
    assert json.loads((tmp_path / "sw" / "env.json").read_text())["replaced_callables"] == ["numpy.tanh"]
    assert "numpy.tanh" in (tmp_path / "sw" / "report.md").read_text()


def test_lockstep_never_starts_a_backend_from_an_isolated_backends_bad_weights(tmp_path, monkeypatch):
    """A12-F3: with --lockstep and a plugin first whose export_state() gave NaN, numpy:cpu started from
    the NaN weights and was recorded diverged. An isolated backend's weights must be finite, and the
    lock-step start comes from this package's backends before an isolated one."""
    name = plugin(tmp_path, monkeypatch, textwrap.dedent("""
        import numpy as np
        from bench.backends.numpy_backend import NumpyBackend

        def available(device):
            return True, 'ok'

        class Backend(NumpyBackend):
            impl = "nan-weights"

            def export_state(self):
                return {k: np.full_like(v, np.nan) for k, v in NumpyBackend.export_state(self).items()}
        Backend = Backend
        """))
    monkeypatch.chdir(tmp_path)
    assert compare.main([*TINY, "--lockstep", "--backends", f"{name}:cpu,numpy:cpu", "--out", "o"]) == 0
    runs = pd.read_csv(tmp_path / "o" / "runs.csv").set_index("backend")
    assert runs.loc["numpy:cpu", "status"] == "ok"
    assert runs.loc[f"{name}:cpu", "status"] == "failed" and "every value finite" in runs.loc[f"{name}:cpu", "error"]
