"""python -m bench.check: every course interface detected, correct code passes, each known mistake is
named, untrusted code costs one result, bad input is one line.

The fixtures in tests/fixtures/ are course-style implementations written for these tests: course_ok
is correct, each course_bad_* folder is course_ok with one mistake, and the other course_* folders
are correct implementations in the interfaces of other years. Further mistakes are made here by
editing a copy of course_ok (``variant``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.check import PROG, main
from bench.checks.diagnose import mark_stabilisers
from bench.checks.gradcheck import STABILISER_BOUND
from bench.checks.interface import detect
from bench.checks.layers import check_layer, specs
from bench.checks.loader import load_course
from bench.checks.report import render
from bench.checks.runner import check_target
from bench.errors import UserError, run_cli

FIXTURES = REPO / "tests" / "fixtures"
OK_MODULES = (FIXTURES / "course_ok" / "modules.py").read_text()
COURSE_IMPLS = REPO.parent / "shared" / "course-impls"

pytestmark = pytest.mark.usefixtures("one_thread")


def check(target, seed: int = 0) -> tuple[int, str, dict]:
    """The check in this process: the exit status, the printed text and the document."""
    doc = check_target(str(target), seed)
    return doc["exit"], render(doc) if "rows" in doc else doc["error"], doc


def failing(out: str) -> set[tuple[str, str]]:
    """(module, check) of every FAIL row of the printed table."""
    rows = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("| ")]
    return {(r[0].strip(), r[1].strip()) for r in rows if r[2].strip() == "FAIL"}


def diagnoses(out: str) -> list[str]:
    return [line[2:] for line in out.splitlines() if line.startswith("- ")]


def variant(folder: Path, *pairs: tuple[str, str]) -> Path:
    """A copy of course_ok/modules.py in ``folder`` with each ``old`` replaced by ``new``."""
    text = OK_MODULES
    for old, new in pairs:
        assert old in text, old
        text = text.replace(old, new)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "modules.py").write_text(text)
    return folder


def command(capsys, *args) -> tuple[int, str, str]:
    """The command line in this process (each implementation still checked in a process of its own)."""
    with pytest.raises(SystemExit) as exc:
        run_cli(main, [str(a) for a in args], prog=PROG)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


# ---------------------------------------------------------------- what passes, in every interface


def test_impl_numpy_passes():
    code, out, _ = check("impl_numpy")
    assert code == 0, out
    assert failing(out) == set() and "Diagnosis:" not in out
    assert "MLP.forward returns logits" in out
    # every module, the composite and the network were checked, not skipped
    for module in ("LinearModule", "ELUModule", "ReLUModule", "SoftMaxModule", "CrossEntropyModule",
                   "SoftMax → CrossEntropy"):
        assert f"| {module} | finite differences | pass |" in out
        assert f"| {module} | autograd (torch) | pass |" in out
    assert "| MLP | grads vs torch | pass |" in out
    assert "All 21 checks passed." in out


def test_impl_numpy_exit_status_through_the_command_line(cli):
    proc = cli("bench.check", "impl_numpy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "All 21 checks passed." in proc.stdout


@pytest.mark.parametrize("target", ["course_ok", "course_ok/modules.py"])
def test_course_ok_passes(target):
    code, out, _ = check(FIXTURES / target)
    assert code == 0, out
    assert "MLP.forward returns probabilities" in out  # its MLP ends in SoftMaxModule
    assert "| MLP | output vs torch | pass |" in out and "Diagnosis:" not in out


INTERFACES = {  # fixture: what the interface line says, a note that must be there
    "course_2019_relu": ("LinearModule(in, out) with weight (out, in) and bias (out, 1); ReLUModule(); "
                         "CrossEntropyModule labels: one-hot only", None),
    "course_inout_noalpha": ("LinearModule(in, out, input_layer) with weight (in, out) and bias (out,); "
                             "ELUModule(); CrossEntropyModule labels: integer only",
                             "ELUModule() takes no alpha: it is checked at alpha = 1 only."),
    "course_accumulate_clear": ("with weight (in, out) and bias (out,); ReLUModule()",
                                "LinearModule: backward adds to the grads (+=) and clear_cache() resets them"),
    "course_stabilised": ("ELUModule(alpha)", "CrossEntropyModule: log(x + eps) with eps = 1.0e-08, a "
                                              "numerical stabiliser"),
}


@pytest.mark.parametrize("fixture", INTERFACES, ids=list(INTERFACES))
def test_every_interface_is_detected_and_passes(fixture):
    """Correct code in each year's interface passes: nothing is configured, nothing refused."""
    interface, note = INTERFACES[fixture]
    code, out, doc = check(FIXTURES / fixture)
    assert code == 0 and failing(out) == set(), out
    assert interface in doc["interface"], doc["interface"]
    assert note is None or any(n.startswith(note) for n in doc["notes"]), doc["notes"]
    assert "| MLP | grads vs torch | pass |" in out  # the student's MLP, in its own layout


def test_stabilisers_are_notes_with_their_measured_size():
    _, _, doc = check(FIXTURES / "course_stabilised")
    notes = " ".join(doc["notes"])
    assert "exp / (sum + eps) with eps = 1.0e-10" in notes and "log(x + eps) with eps = 1.0e-08" in notes
    assert f"under the bound {STABILISER_BOUND:g}" in notes and "SoftMax → CrossEntropy: the stabilisers" in notes


def test_one_hot_only_labels_are_said():
    convert = "        if y.ndim == 1:\n            y = np.eye(x.shape[1])[y]\n"
    with tempfile.TemporaryDirectory() as tmp:
        code, out, doc = check(variant(Path(tmp), (convert, "")))
    assert code == 0, out
    assert "labels: one-hot only (integer labels: forward raised" in doc["interface"]


def test_a_helper_beside_modules_py_shadows_a_module_of_the_same_name(monkeypatch):
    """utils.py beside modules.py is the one imported, though another utils was imported before;
    the other is back afterwards, and no __pycache__ is left in the user's folder."""
    other = type(sys)("utils")
    monkeypatch.setitem(sys.modules, "utils", other)
    impl = load_course(FIXTURES / "course_inout_noalpha")
    out = impl.ELUModule().forward(np.array([[-1.0, 2.0]]))
    assert np.allclose(out, [[np.expm1(-1.0), 2.0]])
    assert sys.modules["utils"] is other
    assert not (FIXTURES / "course_inout_noalpha" / "__pycache__").exists()


# ---------------------------------------------------------------- the mistakes, named

def gradient_rows(module: str) -> set[tuple[str, str]]:
    return {(module, "finite differences"), (module, "autograd (torch)")}


LINEAR, ELU = gradient_rows("LinearModule"), gradient_rows("ELUModule")
SOFTMAX, CE = gradient_rows("SoftMaxModule"), gradient_rows("CrossEntropyModule")
LOSS_PATH = gradient_rows("SoftMax → CrossEntropy")
NETWORK = {("MLP", f"{q} vs torch") for q in ("output", "loss", "grads", "dL/dx")}

MISTAKES = [  # (fixture, the rows that fail, the start of the one diagnosis line)
    ("course_bad_transposed_dw", LINEAR,
     "LinearModule backward: dL/dW (grads['weight']) matches the transposed gradient: grads['weight'] must "
     "have the shape and layout of params['weight']"),
    ("course_bad_bias_mean", LINEAR,
     "LinearModule backward: dL/db (grads['bias']) matches the gradient averaged over the batch "
     "(divided by S) instead of summed"),
    ("course_bad_bias_axis", LINEAR,
     "LinearModule backward: dL/db (grads['bias']) matches dout summed over the wrong axis (axis=1"),
    ("course_bad_ce_no_mean", CE | LOSS_PATH,
     "CrossEntropyModule backward: dL/dx matches the gradient of the summed loss: the 1/S of the mean "
     "is missing"),
    ("course_bad_softmax_unshifted", SOFTMAX | LOSS_PATH,
     "SoftMaxModule forward: output matches the softmax without the max shift: exp overflows to inf at "
     "logits of +1000 (inf/inf = nan) and underflows to 0 at -1000"),
    ("course_bad_elu_derivative", ELU,
     "ELUModule backward: dL/dx matches the derivative with its two branches swapped: y + alpha where x > 0"),
    ("course_bad_grads_accumulate", {("LinearModule", "side effects")},
     "LinearModule backward: accumulates the grads between calls (grads['weight'] and grads['bias'] doubled"),
    ("course_bad_mutates_dout", {("ELUModule", "side effects")},
     "ELUModule backward: changes its argument dout in place"),
    ("course_bad_ce_state_eps", CE,  # its log(x + 1e-10) is a note on the loss path and the MLP
     "CrossEntropyModule backward: needs state that only forward sets: on a new module it raised "
     "AttributeError"),
    ("course_bad_mlp_elu_last", NETWORK,
     "MLP forward: output matches the activation (ELU) applied after the last linear layer too"),
]


@pytest.mark.parametrize("folder, rows, diagnosis", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_each_mistake_fails_and_is_named(folder, rows, diagnosis):
    code, out, _ = check(FIXTURES / folder)
    assert code == 1, out
    assert failing(out) == rows, out
    lines = diagnoses(out)
    assert len(lines) == 1 and lines[0].startswith(diagnosis), out


CE_FORWARD = "        S = x.shape[0]\n        out = -np.sum(y * np.log(x)) / S"
CE_BACKWARD = "        S = x.shape[0]\n        dx = -y / x / S"
VARIANTS = {  # name: (edits of course_ok/modules.py, the diagnosis lines expected, in order)
    "one-hot width from the labels": (
        [("np.eye(x.shape[1])[y]", "np.eye(y.max() + 1)[y]")],
        ["CrossEntropyModule forward: wrong only in batches that lack the largest class C - 1"]),
    "fused gradient, SoftMax.backward still applied": (
        [("dx = -y / x / S", "dx = (x - y) / S")],
        ["CrossEntropyModule backward: dL/dx matches the fused softmax-cross-entropy gradient (x - onehot)/S: "
         "the gradient with respect to the logits"]),
    "fused gradient with the opposite sign and a summed loss": (
        [("dx = -y / x / S", "dx = (x - y) / -S"), ("np.log(x)) / S", "np.log(x))")],
        ["CrossEntropyModule forward: loss matches the summed loss instead of the mean",
         "CrossEntropyModule backward: dL/dx matches the fused softmax-cross-entropy gradient (x - onehot)/S, "
         "with the opposite sign"]),
    "gradient with the opposite sign": (
        [("dx = -y / x / S", "dx = y / x / S")],
        ["CrossEntropyModule backward: dL/dx matches the right gradient, with the opposite sign"]),
    "weight decay in dW": (
        [("self.grads['weight'] = dout.T @ self.x",
          "self.grads['weight'] = dout.T @ self.x + 0.01 * self.params['weight']")],
        ["LinearModule backward: dL/dW (grads['weight']) matches the gradient plus 0.01 times the weight"]),
    "softmax shifted by the global max": (
        [("np.exp(x - np.max(x, axis=1, keepdims=True))", "np.exp(x - np.max(x))")],
        ["SoftMaxModule forward: output matches the softmax shifted by the maximum of the whole array "
         "(x.max()) instead of each row's: in a row far below that maximum every exp underflows to 0"]),
    "backward needs state only forward sets": (
        [(CE_BACKWARD, "        dx = -y / x / self.S"), (CE_FORWARD, CE_FORWARD.replace("S = x", "S = self.S = x"))],
        ["CrossEntropyModule backward: needs state that only forward sets: on a new module it raised "
         "AttributeError"]),
    "a stabiliser too large": (
        [("np.log(x)", "np.log(x + 1e-3)"), ("dx = -y / x / S", "dx = -y / (x + 1e-3) / S")],
        ["CrossEntropyModule forward: loss matches log(x + eps) with eps = 1.0e-03, a numerical stabiliser, "
         "but it moves loss from the exact value by",
         "CrossEntropyModule backward: dL/dx matches log(x + eps) with eps = 1.0e-03"]),
    "a clip too large": (
        [("np.log(x)", "np.log(np.clip(x, 1e-2, 1))"), ("dx = -y / x / S", "dx = -y / np.clip(x, 1e-2, 1) / S")],
        ["CrossEntropyModule forward: loss matches x clipped from below (np.clip(x, eps, 1)) with eps = 1.0e-02, "
         "a numerical stabiliser, but it moves loss from the exact value by",
         "CrossEntropyModule backward: dL/dx matches x clipped from below"]),
    "ELU derivative exp(y)": (
        [("np.where(self.x > 0, 1.0, self.out + self.alpha)", "np.where(self.x > 0, 1.0, np.exp(self.out))")],
        ["ELUModule backward: dL/dx matches the derivative exp(y) where x <= 0"]),
    "softmax Jacobian diagonal only": (
        [("dx = y * (dout - np.sum(dout * y, axis=1, keepdims=True))", "dx = dout * y * (1 - y)")],
        ["SoftMaxModule backward: dL/dx matches only the diagonal of the Jacobian"]),
    "forward returns a list": (
        [("        self.out = np.where(x > 0, x, self.alpha * (np.exp(np.minimum(x, 0)) - 1))\n        return self.out",
          "        self.out = np.where(x > 0, x, self.alpha * (np.exp(np.minimum(x, 0)) - 1))\n"
          "        return self.out.tolist()")],
        ["ELUModule forward: returned list, not a NumPy array"]),
    "sys.exit in backward": (
        [("        y = self.out\n", "        raise SystemExit(3)\n")],
        ["SoftMaxModule backward: raised SystemExit: 3"]),
}


@pytest.mark.parametrize("name", VARIANTS, ids=list(VARIANTS))
def test_other_mistakes_are_named(tmp_path, name):
    pairs, expected = VARIANTS[name]
    code, out, _ = check(variant(tmp_path, *pairs))
    assert code == 1, out
    lines = diagnoses(out)
    assert len(lines) == len(expected), out
    for line, start in zip(lines, expected):
        assert line.startswith(start), (line, start)


def test_a_failure_is_shown_at_the_representative_shape():
    """Every shape fails without the 1/S: the row and the line show S=8, C=10, not S=1, C=1."""
    _, out, doc = check(FIXTURES / "course_bad_ce_no_mean")
    row = next(r for r in doc["rows"] if r["module"] == "CrossEntropyModule" and r["result"] == "FAIL")
    assert row["worst case"] == "dL/dx, S=8, C=10"
    assert abs(row["worst rel. error"] - 7 / 8) < 1e-9  # (S - 1)/S at S = 8


def test_messages_never_repeat_a_word():
    """The loss path's own lines name the module's method once: no "CrossEntropy CrossEntropy"."""
    with tempfile.TemporaryDirectory() as tmp:
        _, out, doc = check(variant(Path(tmp), ("        y = self.out\n", "        raise ValueError('x')\n")))
    for line in doc["diagnoses"] + [r["worst case"] for r in doc["rows"]]:
        words = line.split()
        assert all(a != b for a, b in zip(words, words[1:])), line


def test_an_exception_in_the_users_forward_is_a_failed_check(tmp_path):
    elu = "        self.out = np.where(x > 0, x, self.alpha * (np.exp(np.minimum(x, 0)) - 1))\n"
    code, out, _ = check(variant(tmp_path, (elu, "        raise ValueError('boom')\n")))
    assert code == 1
    assert failing(out) == ELU | {("ELUModule", "side effects")}
    assert "forward raised ValueError: boom" in out
    assert diagnoses(out)[0].startswith("ELUModule forward: raised ValueError: boom")


# ---------------------------------------------------------------- the mechanisms, on varying inputs

LINEAR_TEMPLATE = '''
class LinearModule(object):
    def __init__(self, in_features, out_features{flag}):
        self.params = {{'weight': np.zeros({w}), 'bias': np.zeros({b})}}
        self.grads = {{}}

    def forward(self, x):
        self.x = x
        return x @ {wt} + self.params['bias'].reshape(1, -1)

    def backward(self, dout):
        self.grads['weight'] = {dw}
        self.grads['bias'] = dout.sum(axis=0).reshape(self.params['bias'].shape)
        return dout @ {wb}
'''
LAYOUTS = {"(out, in)": ("(out_features, in_features)", "self.params['weight'].T", "dout.T @ self.x",
                         "self.params['weight']"),
           "(in, out)": ("(in_features, out_features)", "self.params['weight']", "self.x.T @ dout",
                         "self.params['weight'].T")}
BIASES = {"(out,)": "(out_features,)", "(1, out)": "(1, out_features)", "(out, 1)": "(out_features, 1)"}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(weight=st.sampled_from(list(LAYOUTS)), bias=st.sampled_from(list(BIASES)), flag=st.booleans())
def test_every_linear_layout_is_detected_and_checked_in_its_own_layout(weight, bias, flag):
    """Any combination of weight layout, bias layout and input_layer flag: detected from the code and
    passing; the same code with the weight gradient transposed fails on a non-square layer."""
    w, wt, dw, wb = LAYOUTS[weight]
    source = LINEAR_TEMPLATE.format(flag=", input_layer=False" if flag else "", w=w, b=BIASES[bias], wt=wt,
                                    dw=dw, wb=wb)
    start, end = OK_MODULES.index("class LinearModule"), OK_MODULES.index("class ELUModule")
    for transposed in (False, True):
        text = OK_MODULES[:start] + source.replace(dw, f"({dw}).T") if transposed else OK_MODULES[:start] + source
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "modules.py").write_text(text + "\n\n" + OK_MODULES[end:])
            iface = detect(load_course(tmp))
            assert (iface.weight, iface.bias, iface.input_layer) == (weight, bias, flag)
            outcomes = check_layer(specs(iface)[0], iface, np.random.default_rng(0))
        assert all(o.passed for o in outcomes) is not transposed


STABILISED = {"log": ("np.log(x + {eps})", "-y / (x + {eps}) / S", "log(x + eps)"),
              "clip": ("np.log(np.clip(x, {eps}, 1))", "-y / np.clip(x, {eps}, 1) / S", "x clipped from below")}


@settings(max_examples=16, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(list(STABILISED)), log10_eps=st.floats(min_value=-12, max_value=-1.5))
def test_a_stabiliser_is_explained_and_judged_by_its_size(kind, log10_eps):
    """Whatever the stabiliser and its eps: every deviation is explained as that stabiliser; the module
    passes exactly when the largest deviation is within the bound, and then carries a note with it."""
    eps = f"{10 ** log10_eps:.3e}"
    log, grad, name = STABILISED[kind]
    with tempfile.TemporaryDirectory() as tmp:
        variant(Path(tmp), ("np.log(x)", log.format(eps=eps)), ("-y / x / S", grad.format(eps=eps)))
        iface = detect(load_course(tmp))
        outcomes = check_layer(next(s for s in specs(iface) if s.name == "CrossEntropyModule"), iface,
                               np.random.default_rng(0))
    notes = mark_stabilisers(outcomes)
    deviating = [c for o in outcomes for c in o.comparisons if c.error > o.tol]
    assert all(c.stabiliser.startswith(name) for c in deviating), [(c.quantity, c.error) for c in deviating]
    size = max((c.error for c in deviating), default=0.0)
    assert all(o.passed for o in outcomes) == (size <= STABILISER_BOUND)
    assert bool(notes) == (0 < size <= STABILISER_BOUND)


# ---------------------------------------------------------------- loading and the interface


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


@pytest.mark.parametrize("name", ["code", "test"])
def test_a_folder_named_like_a_standard_module_is_loaded_as_a_folder(monkeypatch, tmp_path, name):
    (tmp_path / name).mkdir()
    (tmp_path / name / "modules.py").write_text(OK_MODULES)
    monkeypatch.chdir(tmp_path)
    impl = load_course(name)
    assert Path(impl.modules.__file__) == tmp_path / name / "modules.py"


INTERFACE_ERRORS = {  # edits of course_ok: the start of the one line
    "ELUModule with two arguments": (("def __init__(self, alpha):", "def __init__(self, alpha, beta):"),
                                     "ELUModule(alpha, beta) cannot be called as ELUModule(alpha) or ELUModule()"),
    "a flat weight": (("size=(out_features, in_features))", "size=out_features * in_features)"),
                      "LinearModule(4, 3).params['weight'] has shape (12,) (allowed: (out, in) = (3, 4) or "
                      "(in, out) = (4, 3))"),
    "a bias of another width": (("'bias': np.zeros((1, out_features))}", "'bias': np.zeros((2, out_features))}"),
                                "LinearModule(4, 3).params['bias'] has shape (2, 3)"),
    "no params dict": (("self.params = {", "self.parameters = {"), "LinearModule(4, 3) has no dict params"),
    "the weight under another key": (("{'weight': np.random", "{'weights': np.random"),
                                     "LinearModule(4, 3).params has no key 'weight' (its keys: 'weights', 'bias'"),
    "no bias": ((",\n                       'bias': np.zeros((1, out_features))}\n        self.grads",
                 "}\n        self.grads"), "LinearModule(4, 3).params has no key 'bias' (its keys: 'weight';"),
    "a loss without labels": (("    def forward(self, x, y):", "    def forward(self, x):"),
                              "CrossEntropyModule.forward(self, x) cannot be called as forward(x, y)"),
    "LinearModule with another constructor": (
        ("def __init__(self, in_features, out_features, input_layer=False):", "def __init__(self, shape):"),
        "LinearModule(shape) cannot be called as LinearModule(in_features, out_features[, input_layer])"),
}


@pytest.mark.parametrize("name", INTERFACE_ERRORS, ids=list(INTERFACE_ERRORS))
def test_an_interface_the_course_never_had_is_one_line_exit_2(tmp_path, name):
    (old, new), start = INTERFACE_ERRORS[name]
    code, message, _ = check(variant(tmp_path, (old, new)))
    assert code == 2 and "\n" not in message
    assert message.startswith(start), message


def test_an_unknown_name_is_a_user_error():
    with pytest.raises(UserError, match="neither an existing file or folder nor an importable module"):
        load_course("not_a_module_of_this_test")


@pytest.mark.parametrize("make", ["fifo", "modules-to-dev-zero"])
def test_what_is_not_a_regular_file_or_folder_is_named_so(capsys, tmp_path, make):
    """A FIFO or a modules.py linked to /dev/zero was "no such file or folder" (A7-F6)."""
    if make == "fifo":
        target = tmp_path / "fifo"
        os.mkfifo(target)
    else:
        target = tmp_path / "sub"
        target.mkdir()
        (target / "modules.py").symlink_to("/dev/zero")
    code, _, err = command(capsys, target)
    assert code == 2 and "is not a regular file" in err and "\n" not in err.strip()


# ---------------------------------------------------------------- the command: one implementation


LOAD_ERRORS = {
    "no modules.py": ({}, "modules.py is missing"),
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
    "random bytes": ({"modules.py": bytes(range(256)) * 8}, "modules.py: SyntaxError: source code"),
    "os._exit(0) at import": ({"modules.py": "import os\nos._exit(0)\n"},
                              "ended the checking process while loading (exit status 0), before any result"),
}


@pytest.mark.parametrize("files, needle", LOAD_ERRORS.values(), ids=LOAD_ERRORS.keys())
def test_load_errors_are_one_line_and_exit_2(capsys, tmp_path, files, needle):
    for name, text in files.items():
        (tmp_path / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    code, _, err = command(capsys, tmp_path)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "<frozen" not in err
    assert err.startswith(f"{PROG}: error: ") and needle in err, err


HOSTILE = {  # code put into ELUModule.forward: what the one result says
    "an endless loop": ("        while True:\n            pass\n",
                        "did not finish within 4 s (while checking ELUModule"),
    "a 3 GB allocation": ("        np.ones((400, 2**20))\n", "ELUModule forward: raised MemoryError"),
    "killing its parent": ("        import os, signal\n        os.kill(os.getppid(), signal.SIGKILL)\n",
                           "(killed by SIGKILL), before any result"),
    "killing its process group": ("        import os, signal\n        os.killpg(0, signal.SIGTERM)\n",
                                  "ended the checking process while checking ELUModule (killed by SIGTERM)"),
    "os._exit(0)": ("        import os\n        os._exit(0)\n",
                    "ended the checking process while checking ELUModule (exit status 0)"),
}


@pytest.mark.parametrize("name", HOSTILE, ids=list(HOSTILE))
def test_hostile_code_costs_one_result_never_the_command(capsys, tmp_path, name):
    code_line, needle = HOSTILE[name]
    elu = "    def forward(self, x):\n        self.x = x\n        self.out = np.where"
    target = variant(tmp_path, (elu, elu.replace("        self.x = x\n", "        self.x = x\n" + code_line)))
    code, out, err = command(capsys, target, "--timeout", "4", "--memory-mb", "512")
    assert code == 1, (out, err)
    assert needle in out, out


def _running(needle: str) -> list[int]:
    """Pids of the processes whose command line holds ``needle`` (zombies have none)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if needle.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            pass
    return found


@pytest.mark.parametrize("how", ["start_new_session", "double fork and setsid"])
def test_no_process_the_code_starts_outlives_its_check(capsys, tmp_path, how):
    """k04: a process that leaves the session (setsid) and its parent is killed with the check."""
    seconds = f"{300 + (tmp_path.stat().st_ino % 1000) / 1000 + (how == 'start_new_session'):.3f}"
    spawn = {"start_new_session": f"subprocess.Popen(['sleep', '{seconds}'], start_new_session=True)",
             "double fork and setsid": ("if os.fork() == 0:\n    os.setsid()\n    subprocess.Popen(['sleep', "
                                        f"'{seconds}'])\n    os._exit(0)\nos.wait()")}[how]
    (tmp_path / "modules.py").write_text(f"import os, subprocess\n{spawn}\n" + (FIXTURES / "course_ok"
                                         / "modules.py").read_text())
    try:
        command(capsys, tmp_path, "--timeout", "60")
        assert _running(f"sleep\0{seconds}") == []
    finally:
        for pid in _running(f"sleep\0{seconds}"):  # only what this test started, by its unique argument
            os.kill(pid, signal.SIGKILL)


def test_an_inherited_hard_memory_limit_caps_the_checks_limit(tmp_path):
    """k00: a hard ``ulimit -v`` below the checker's own limit is a check within it, not "does not load"."""
    proc = subprocess.run(["bash", "-c", f"ulimit -v 8000000; exec {sys.executable} -m bench.check "
                           f"{FIXTURES / 'course_ok'} --memory-mb 100000"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)


def test_json_is_written_atomically_and_never_through_a_link(capsys, tmp_path):
    code, _, _ = command(capsys, FIXTURES / "course_bad_bias_mean", "--json", tmp_path / "check.json")
    doc = json.loads((tmp_path / "check.json").read_text())
    assert code == 1 and doc["passed"] is False and doc["exit"] == 1
    bad = [r for r in doc["rows"] if r["result"] == "FAIL"]
    assert {r["module"] for r in bad} == {"LinearModule"} and bad[0]["worst rel. error"] > 0.1
    assert "averaged over the batch" in doc["diagnoses"][0]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (tmp_path / "link.json").symlink_to(target)
    code, out, err = command(capsys, FIXTURES / "course_ok", "--json", tmp_path / "link.json")
    assert code == 2 and "is a symbolic link" in err and len(err.strip().splitlines()) == 1
    assert target.read_text() == "keep me" and out == ""
    code, out, err = command(capsys, FIXTURES / "course_ok", "--json", "")  # X-F8: given, naming nothing
    assert code == 2 and "invalid --json ''" in err and out == ""
    odd = tmp_path / os.fsdecode(b"c\xffx")  # Y-F4: a folder name that is not UTF-8 is checked
    shutil.copytree(FIXTURES / "course_ok", odd)
    code, out, err = command(capsys, odd)
    assert code == 0 and "checks passed" in out, err
    shutil.copytree(FIXTURES / "course_ok", tmp_path / "sub")  # Y-F6: the report over the code checked
    source = (tmp_path / "sub" / "modules.py").read_bytes()
    code, out, err = command(capsys, tmp_path / "sub", "--json", tmp_path / "sub" / "modules.py")
    assert code == 2 and "inside the code being checked" in err
    assert (tmp_path / "sub" / "modules.py").read_bytes() == source


@pytest.mark.parametrize("line, name", [
    ("import numpy as _np; _np.linalg.norm = lambda *a, **k: 0.0", "numpy.linalg.norm"),  # A15-F3
    ("import torch as _t; _t.allclose = lambda *a, **k: True", "torch.allclose"),
])
def test_code_that_replaces_what_the_checks_compute_with_gets_no_verdict(capsys, tmp_path, line, name):
    """A15-F3: a submission failing 6 checks 'passed all 17' once it made np.linalg.norm return 0: the
    relative errors are computed with it. The checking process watches NumPy's and torch's callables
    from before the code loads; one replaced is exit 1 and named, never a pass."""
    shutil.copytree(FIXTURES / "course_bad_ce_no_mean", tmp_path / "sub")
    with open(tmp_path / "sub" / "modules.py", "a") as fh:
        fh.write("\n" + line + "\n")
    code, out, err = command(capsys, tmp_path / "sub")
    assert code == 1 and f"the code replaced {name}" in out
    assert "No verdict" in out or "checks failed" in out  # never "All ... checks passed"


def test_a_missing_target_with_out_is_named_missing(capsys, tmp_path):
    """A14-F3: a class folder that does not exist, with --out, was told '--out is for several submissions'."""
    code, out, err = command(capsys, tmp_path / "no_such_submissions", "--out", tmp_path / "o")
    assert code == 2 and f"no such file or folder: {tmp_path / 'no_such_submissions'}" in err
    assert not (tmp_path / "o").exists()


def test_help_warns_that_the_code_is_executed(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert exc.value.code == 0
    assert "run (imported) in a process of its own" in out


@pytest.mark.parametrize("args, needle", [
    (["--seed", "-1"], "invalid seed: -1"), (["--jobs", "0"], "invalid jobs: 0"),
    (["--timeout", "0"], "invalid timeout: 0"), (["--out", "x"], "--out is for several submissions"),
])
def test_bad_options_are_one_line(capsys, args, needle):
    code, out, err = command(capsys, FIXTURES / "course_ok", *args)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith(f"{PROG}: error: ") and needle in err, err


# ---------------------------------------------------------------- the command: a class


def test_a_class_is_one_table_whatever_its_submissions_do(capsys, tmp_path):
    subs = tmp_path / "subs"
    variant(subs / "alice", ("dx = -y / x / S", "dx = -y / x"))
    variant(subs / "bob" / "assignment1")  # a cloned repository: modules.py one level down
    (subs / "carol").mkdir()
    (subs / "carol" / "modules.py").write_text("while True:\n    pass\n")
    (subs / "dave").mkdir()
    (subs / "dave" / "modules.py").write_text("import os\nos._exit(0)\n")
    code, out, err = command(capsys, subs, "--out", tmp_path / "o", "--timeout", "5")
    assert code == 1, err
    import pandas as pd

    table = pd.read_csv(tmp_path / "o" / "check.csv").set_index("submission")
    assert list(table.index) == ["alice", "bob", "carol", "dave"]
    assert table["exit status"].to_dict() == {"alice": 1, "bob": 0, "carol": 2, "dave": 2}
    assert table.loc["alice", "CrossEntropy"] == "FAIL" and table.loc["alice", "Linear"] == "pass"
    assert "the 1/S of the mean is missing" in table.loc["alice", "diagnosis"]
    assert "did not finish within 5 s (while loading" in table.loc["carol", "diagnosis"]
    assert "ended the checking process while loading (exit status 0)" in table.loc["dave", "diagnosis"]
    assert "ELUModule(alpha)" in table.loc["bob", "interface"]
    report = (tmp_path / "o" / "report.md").read_text()
    assert "4 submissions, 1 passed every check" in report and "| alice |" in report
    assert "4 of 4 submissions checked" in out


def test_a_linked_submission_is_never_searched_below(tmp_path):
    """A12-F2: `root -> /` in a class folder graded another user's modules.py two levels below / (and ran
    it); a link is checked where it points, never searched below it."""
    from bench.checks.classwide import find_submissions

    subs = tmp_path / "subs"
    variant(subs / "alice")
    variant(tmp_path / "elsewhere" / "proj")  # modules.py one level below the link's target
    (subs / "bob").symlink_to(tmp_path / "elsewhere")
    variant(tmp_path / "direct")
    (subs / "carol").symlink_to(tmp_path / "direct")  # a link to a submission itself is checked
    found = dict(find_submissions([str(subs)]))
    assert found["alice"] == str(subs / "alice") and found["bob"] == str(subs / "bob")
    assert found["carol"] == str(subs / "carol")


@pytest.mark.parametrize("where", ["subs/report", "subs", "subs/alice/deeper"])
def test_results_inside_the_folders_checked_are_refused(capsys, tmp_path, monkeypatch, where):
    """--out inside the class folder made the next run check the report as a submission (A7-F5)."""
    subs = tmp_path / "subs"
    variant(subs / "alice")
    variant(subs / "bob")
    monkeypatch.chdir(tmp_path)
    code, _out, err = command(capsys, "subs", "--out", where)
    assert code == 2 and "inside subs, which this command reads" in err
    assert sorted(p.name for p in subs.iterdir()) == ["alice", "bob"]


@settings(max_examples=100, deadline=None)
@given(names=st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=4))
def test_any_submission_name_stays_on_its_row_of_the_report(names):
    """k07: a newline, a pipe or a backtick in a name neither splits nor breaks the Markdown table."""
    import re

    import pandas as pd

    from bench.checks.classwide import _markdown_safe
    from bench.report import md_table

    table = pd.DataFrame({"submission": names, "exit status": [1] * len(names), "diagnosis": names})
    lines = md_table(_markdown_safe(table)).split("\n")
    assert len(lines) == len(names) + 2
    for line in lines:
        bare = re.sub(r"\\.", "", line)  # what is left once every escaped character is dropped
        assert bare.count("|") == 4 and "`" not in bare, line


@pytest.mark.skipif(not COURSE_IMPLS.is_dir(), reason="no ../shared/course-impls next to the checkout")
def test_real_course_implementations_get_the_verdict_of_their_labels(capsys, tmp_path):
    """Every implementation of ../shared/course-impls: correct -> exit 0; bug -> exit 1 with its
    cause named (the phrase each kind of bug in labels.tsv must bring)."""
    import pandas as pd

    labels = pd.read_csv(COURSE_IMPLS / "labels.tsv", sep="\t").set_index("dir")
    command(capsys, COURSE_IMPLS, "--out", tmp_path / "o")
    table = pd.read_csv(tmp_path / "o" / "check.csv").set_index("submission")
    assert set(table.index) == set(labels.index)
    causes = {"one-hot": "the one-hot matrix is as wide as the labels present",
              "fused": "the fused softmax-cross-entropy gradient",
              "global": "shifted by the maximum of the whole array",
              "summed loss": "the summed loss instead of the mean"}
    for name, label in labels.iterrows():
        row = table.loc[name]
        if label["truth"] == "correct":
            assert row["exit status"] == 0, (name, row["diagnosis"])
            continue
        assert row["exit status"] == 1, name
        what = label.iloc[1].lower()
        expected = [phrase for key, phrase in causes.items() if key in what or
                    (key == "one-hot" and "max(y)" in what.replace(" ", "")) or
                    (key == "fused" and "(x - t)" in what)]
        assert expected, (name, what)
        for phrase in expected:
            assert phrase in row["diagnosis"], (name, phrase, row["diagnosis"])
