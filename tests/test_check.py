"""python -m bench.check: correct implementations pass, each known mistake is named, bad input is one line.

The fixtures in tests/fixtures/ are course-style implementations: course_ok is
correct, and each course_bad_* folder is course_ok with exactly one mistake.
"""

from __future__ import annotations

import json
import sys

import pytest
from conftest import REPO, assert_one_line_error

from bench.check import PROG, main
from bench.checks.loader import load_course
from bench.errors import UserError, run_cli

FIXTURES = REPO / "tests" / "fixtures"
OK_MODULES = (FIXTURES / "course_ok" / "modules.py").read_text()

pytestmark = pytest.mark.usefixtures("one_thread")


def check(capsys, *args) -> tuple[int, str]:
    """main(args) in-process: the exit status and what it printed."""
    code = main([str(a) for a in args])
    return code, capsys.readouterr().out


def failing(out: str) -> set[tuple[str, str]]:
    """(module, check) of every FAIL row of the printed table."""
    rows = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("| ")]
    return {(r[0].strip(), r[1].strip()) for r in rows if r[2].strip() == "FAIL"}


def diagnoses(out: str) -> list[str]:
    return [line[2:] for line in out.splitlines() if line.startswith("- ")]


def variant(tmp_path, old: str, new: str):
    """A copy of course_ok/modules.py in tmp_path with ``old`` replaced by ``new``."""
    assert old in OK_MODULES
    (tmp_path / "modules.py").write_text(OK_MODULES.replace(old, new))
    return tmp_path


# ---------------------------------------------------------------- what passes


def test_impl_numpy_passes(capsys):
    code, out = check(capsys, "impl_numpy")
    assert code == 0, out
    assert failing(out) == set() and "Diagnosis:" not in out
    assert "MLP.forward returns logits" in out
    # every module, the composite and the network were checked, not skipped
    modules = ("LinearModule", "ELUModule", "SoftMaxModule", "CrossEntropyModule", "SoftMax → CrossEntropy")
    for module in modules:
        assert f"| {module} | finite differences | pass |" in out
        assert f"| {module} | autograd (torch) | pass |" in out
    assert "| MLP | grads vs torch | pass |" in out
    assert "All 18 checks passed." in out


def test_impl_numpy_exit_status_through_the_command_line(cli):
    proc = cli("bench.check", "impl_numpy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "All 18 checks passed." in proc.stdout


@pytest.mark.parametrize("target", ["course_ok", "course_ok/modules.py"])
def test_course_ok_passes(capsys, target):
    code, out = check(capsys, FIXTURES / target)
    assert code == 0, out
    assert "MLP.forward returns probabilities" in out  # its MLP ends in SoftMaxModule
    assert "| MLP | output vs torch | pass |" in out and "Diagnosis:" not in out


def test_one_hot_labels_are_detected(capsys, tmp_path):
    """A CrossEntropyModule that only takes one-hot labels passes, checked with one-hot labels."""
    convert = "        if y.ndim == 1:\n            y = np.eye(x.shape[1])[y]\n"
    (tmp_path / "modules.py").write_text(OK_MODULES.replace(convert, ""))
    code, out = check(capsys, tmp_path)
    assert code == 0, out
    assert "labels: one-hot" in out


# ---------------------------------------------------------------- the mistakes, named

def gradient_rows(module: str) -> set[tuple[str, str]]:
    return {(module, "finite differences"), (module, "autograd (torch)")}


LINEAR, ELU = gradient_rows("LinearModule"), gradient_rows("ELUModule")
SOFTMAX, CE = gradient_rows("SoftMaxModule"), gradient_rows("CrossEntropyModule")
LOSS_PATH = gradient_rows("SoftMax → CrossEntropy")
NETWORK = {("MLP", f"{q} vs torch") for q in ("output", "loss", "grads", "dL/dx")}

MISTAKES = [  # (fixture, the rows that fail, the start of the one diagnosis line)
    ("course_bad_transposed_dw", LINEAR,
     "LinearModule backward: dL/dW (grads['weight']) matches the transposed gradient x^T dout, "
     "of shape (in, out)"),
    ("course_bad_bias_mean", LINEAR,
     "LinearModule backward: dL/db (grads['bias']) matches the gradient averaged over the batch "
     "(divided by S) instead of summed"),
    ("course_bad_bias_axis", LINEAR,
     "LinearModule backward: dL/db (grads['bias']) matches dout summed over the wrong axis (axis=1"),
    ("course_bad_ce_no_mean", CE | LOSS_PATH,
     "CrossEntropyModule backward: dL/dx matches the gradient of the summed loss: the 1/S of the mean "
     "is missing"),
    ("course_bad_softmax_unshifted", SOFTMAX | LOSS_PATH,
     "SoftMaxModule forward: the output is nan/inf at logits of magnitude 1000 while small logits are fine"),
    ("course_bad_elu_derivative", ELU,
     "ELUModule backward: dL/dx matches the derivative with its two branches swapped: y + alpha where x > 0"),
    ("course_bad_grads_accumulate", {("LinearModule", "side effects")},
     "LinearModule backward: accumulates the grads between calls (grads['weight'] and grads['bias'] doubled"),
    ("course_bad_mutates_dout", {("ELUModule", "side effects")},
     "ELUModule backward: changes its argument dout in place"),
    ("course_bad_mlp_elu_last", NETWORK,
     "MLP forward: output matches an ELU applied after the last linear layer too"),
]


@pytest.mark.parametrize("folder, rows, diagnosis", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_each_mistake_fails_and_is_named(capsys, folder, rows, diagnosis):
    code, out = check(capsys, FIXTURES / folder)
    assert code == 1, out
    assert failing(out) == rows, out
    lines = diagnoses(out)
    assert len(lines) == 1 and lines[0].startswith(diagnosis), out


@pytest.mark.parametrize("old, new, diagnosis", [
    ("np.where(self.x > 0, 1.0, self.out + self.alpha)", "np.where(self.x > 0, 1.0, np.exp(self.out))",
     "ELUModule backward: dL/dx matches the derivative exp(y) where x <= 0"),
    ("np.where(self.x > 0, 1.0, self.out + self.alpha)", "np.where(self.x > 0, 1.0, 1.0)",
     "ELUModule backward: dL/dx matches the derivative 1 where x <= 0 too"),
    ("dx = y * (dout - np.sum(dout * y, axis=1, keepdims=True))", "dx = dout * y * (1 - y)",
     "SoftMaxModule backward: dL/dx matches only the diagonal of the Jacobian"),
    ("out = -np.sum(y * np.log(x)) / S", "out = -np.sum(y * np.log(x + 1e-8)) / S",
     "CrossEntropyModule forward: loss matches log(x + eps) with eps = 1e-08"),
])
def test_other_variants_are_named(capsys, tmp_path, old, new, diagnosis):
    code, out = check(capsys, variant(tmp_path, old, new))
    assert code == 1
    assert diagnoses(out)[0].startswith(diagnosis), out


def test_an_exception_in_the_users_forward_is_a_failed_check(capsys, tmp_path):
    elu = "        self.out = np.where(x > 0, x, self.alpha * (np.exp(np.minimum(x, 0)) - 1))\n"
    target = variant(tmp_path, elu, "        raise ValueError('boom')\n")
    code, out = check(capsys, target)
    assert code == 1
    assert failing(out) == ELU | {("ELUModule", "side effects")}
    assert "forward raised ValueError: boom" in out
    assert diagnoses(out)[0].startswith("ELUModule forward: raised ValueError: boom")


def test_json_holds_the_rows_and_the_diagnosis(capsys, tmp_path):
    code, _ = check(capsys, FIXTURES / "course_bad_bias_mean", "--json", tmp_path / "check.json")
    doc = json.loads((tmp_path / "check.json").read_text())
    assert code == 1 and doc["passed"] is False
    bad = [r for r in doc["rows"] if r["result"] == "FAIL"]
    assert {r["module"] for r in bad} == {"LinearModule"} and bad[0]["worst rel. error"] > 0.1
    assert "averaged over the batch" in doc["diagnoses"][0]


def test_help_warns_that_the_code_is_executed(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert exc.value.code == 0
    assert "executes it" in out and "only run it on code you trust" in out


# ---------------------------------------------------------------- loading


def test_two_folders_load_side_by_side():
    """Each MLP gets its own folder's modules; sys.path and sys.modules['modules'] are left as they were."""
    path_before, had_modules = list(sys.path), "modules" in sys.modules
    ok = load_course(FIXTURES / "course_ok")
    other = load_course(FIXTURES / "course_bad_mlp_elu_last")
    assert ok.LinearModule is not other.LinearModule
    assert ok.mlp_module.LinearModule is ok.LinearModule
    assert other.mlp_module.LinearModule is other.LinearModule
    assert sys.path == path_before and ("modules" in sys.modules) == had_modules


def test_a_package_name_loads_its_modules_and_mlp():
    impl = load_course("impl_numpy")
    assert impl.LinearModule.__module__ == "impl_numpy.modules"
    assert impl.MLP is not None and impl.mlp_module.__name__ == "impl_numpy.mlp"
    assert impl.describe().endswith("mlp.py")


LOAD_ERRORS = {
    "no modules.py": ({}, "no modules.py in"),
    "no LinearModule": ({"modules.py": "class ELUModule:\n    def forward(self, x): pass\n"
                                       "    def backward(self, d): pass\n"},
                        "no LinearModule, SoftMaxModule, CrossEntropyModule in"),
    "syntax error": ({"modules.py": "import numpy as np\n\nclass LinearModule(object)\n    pass\n"},
                     "modules.py, line 3: SyntaxError"),
    "import error": ({"modules.py": "import numpy as np\nimport not_a_module_of_this_test\n"},
                     "modules.py, line 2: ModuleNotFoundError: No module named 'not_a_module_of_this_test'"),
    "error in the MLP file": ({"modules.py": OK_MODULES,
                               "mlp_numpy.py": "from modules import LinearModule\nx = 1 / 0\n"},
                              "mlp_numpy.py, line 2: ZeroDivisionError: division by zero"),
}


@pytest.mark.parametrize("files, needle", LOAD_ERRORS.values(), ids=LOAD_ERRORS.keys())
def test_load_errors_are_one_line_and_exit_2(capsys, tmp_path, files, needle):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(SystemExit) as exc:
        run_cli(main, [str(tmp_path)], prog=PROG)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"{PROG}: error: ") and needle in err, err


def test_an_unknown_name_is_a_user_error():
    with pytest.raises(UserError, match="neither an existing file or folder nor an importable module"):
        load_course("not_a_module_of_this_test")


def test_a_syntax_error_through_the_command_line(cli, tmp_path):
    (tmp_path / "modules.py").write_text("def forward(x)\n    return x\n")
    proc = cli("bench.check", str(tmp_path / "modules.py"))
    assert_one_line_error(proc, "modules.py, line 1: SyntaxError", PROG)
