"""The models sit at the bottom: impl_common, impl_numpy and impl_torch import nothing of the harness."""

from __future__ import annotations

import ast
import io
import subprocess
import sys
import tokenize

import pytest

from conftest import REPO

MODEL_PACKAGES = ("impl_common", "impl_numpy", "impl_torch")


def _sources():
    return [p for pkg in MODEL_PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))]


@pytest.mark.parametrize("path", _sources(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_model_module_imports_the_harness(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        for name in names:
            assert name.split(".")[0] not in ("bench", "benchmarks", "tests"), \
                f"{path.relative_to(REPO)}:{node.lineno} imports {name}"


@pytest.mark.parametrize("path", _sources(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_bench_appears_in_model_code_only_in_comments_and_docstrings(path):
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    code = [t for t in tokens if t.type == tokenize.NAME and t.string == "bench"]
    assert not code, f"{path.relative_to(REPO)}:{code[0].start[0]} names bench in code"


def test_importing_the_models_loads_no_harness_module():
    probe = ("import sys, impl_common, impl_numpy, impl_torch; "
             "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('bench', 'benchmarks')); "
             "print(','.join(bad)); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, f"importing the models loaded {proc.stdout.strip()} {proc.stderr}"


def test_both_models_provide_every_activation_the_architecture_names():
    from impl_common.arch import ACTIVATIONS
    from impl_numpy.activations import ACTIVATIONS as NUMPY_ACTIVATIONS
    from impl_numpy.modules import make_activation as numpy_activation
    from impl_torch.model import make_activation as torch_activation

    assert set(NUMPY_ACTIVATIONS) == set(ACTIVATIONS)
    for name in ACTIVATIONS:
        numpy_activation(name)
        torch_activation(name)
