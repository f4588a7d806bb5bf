"""bench.hessian: the Hessian-vector products and Lanczos against the exact Hessian of a tiny model;
the command end to end on tiny synthetic data; bad input in one line."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from conftest import assert_one_line_error

from bench.errors import UserError
from bench.hessian import main
from bench.theory.hessian import tiny_points
from bench.theory.hvp import (
    DEFAULT_EPS,
    NumpyFiniteDifferenceHVP,
    TorchHVP,
    exact_hessian,
    lanczos,
)
from bench.theory.params import Arch, flatten, unflatten

pytestmark = pytest.mark.usefixtures("one_thread")


def _problem(activation: str, residual: bool = False, n: int = 200, seed: int = 0):
    """A tiny model (10 inputs, hidden 8, 5 classes) and a few hundred examples."""
    dims = (8, 3, 8) if residual else (8,)
    arch = Arch(10, dims, 5, activation, 1.0, residual)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 10))
    y = rng.integers(0, 5, n)
    return arch, x, y


@pytest.mark.parametrize("activation,residual", [("elu", False), ("tanh", False), ("elu", True)])
def test_top_and_bottom_eigenvalues_match_the_exact_hessian(activation, residual):
    """Lanczos on both products gives the exact Hessian's extreme eigenvalues to 1e-4 relative,
    at initialisation and after gradient descent (near a minimum, where λ_min is small)."""
    arch, x, y = _problem(activation, residual)
    n, k = arch.n_params(), 3
    v0 = np.random.default_rng(1).standard_normal(n)
    for point, state in tiny_points(arch, 0, x, y).items():
        exact = np.linalg.eigvalsh(exact_hessian(arch, state, x, y))  # (n,) ascending
        for op in (TorchHVP(arch, state, x, y), NumpyFiniteDifferenceHVP(arch, state, x, y)):
            top = lanczos(op, n, k, "LA", v0=v0)
            bottom = lanczos(op, n, k, "SA", v0=v0)
            assert top.converged and bottom.converged
            np.testing.assert_allclose(top.values, exact[-k:], rtol=1e-4, err_msg=f"{point} {op}")
            np.testing.assert_allclose(bottom.values, exact[:k], rtol=1e-4, err_msg=f"{point} {op}")
        assert exact[0] < 0 < exact[-1]  # both ends are informative: an indefinite Hessian


def test_products_match_the_exact_hessian_times_v():
    arch, x, y = _problem("elu")
    state = tiny_points(arch, 3, x, y)["init"]
    h = exact_hessian(arch, state, x, y)
    np.testing.assert_allclose(h, h.T, atol=1e-12)
    v = np.random.default_rng(2).standard_normal(arch.n_params())
    hv = h @ v
    scale = np.abs(hv).max()
    assert np.abs(TorchHVP(arch, state, x, y)(v) - hv).max() < 1e-12 * scale
    assert np.abs(NumpyFiniteDifferenceHVP(arch, state, x, y)(v) - hv).max() < 1e-7 * scale


def test_central_difference_step_is_near_the_optimum():
    """The truncation error dominates above DEFAULT_EPS, the rounding error below it."""
    arch, x, y = _problem("tanh")
    state = tiny_points(arch, 4, x, y)["init"]
    v = np.random.default_rng(5).standard_normal(arch.n_params())
    hv = TorchHVP(arch, state, x, y)(v)
    err = {eps: np.abs(NumpyFiniteDifferenceHVP(arch, state, x, y, eps=eps)(v) - hv).max()
           for eps in (1e-2, DEFAULT_EPS, 1e-9)}
    assert err[DEFAULT_EPS] < err[1e-2] / 100 and err[DEFAULT_EPS] < err[1e-9] / 10


def test_flatten_roundtrip_and_order():
    arch = Arch(3, (2,), 2)
    state = {n: np.arange(np.prod(s), dtype=np.float32).reshape(s) + i * 10
             for i, (n, s) in enumerate(arch.shapes().items())}
    flat = flatten(state, arch)
    assert flat.dtype == np.float64 and flat.size == arch.n_params() == 2 * 3 + 2 + 2 * 2 + 2
    assert list(flat[:6]) == list(range(6)) and flat[6] == 10  # linears.0.weight then linears.0.bias
    back = unflatten(flat, arch)
    for name in arch.names():
        np.testing.assert_array_equal(back[name], state[name])
    with pytest.raises(ValueError):
        unflatten(flat[:-1], arch)


def test_lanczos_on_a_known_spectrum():
    values = np.concatenate([np.linspace(-2, -1, 5), np.linspace(0, 1, 40), [3.0, 5.0]])
    d = np.diag(values)
    v0 = np.ones(len(values))
    assert lanczos(lambda v: d @ v, len(values), 2, "LA", v0=v0).values == pytest.approx([3.0, 5.0])
    bottom = lanczos(lambda v: d @ v, len(values), 2, "SA", v0=v0)
    assert bottom.values == pytest.approx([-2.0, -1.75]) and bottom.matvecs > 0
    with pytest.raises(ValueError):
        lanczos(lambda v: d @ v, len(values), 2, "LM", v0=v0)


TINY = ["--dataset", "synthetic", "--train-subset", "256", "--val-size", "64", "--batch-size", "32",
        "--hidden-dims", "4", "--epochs", "2", "--batch-examples", "64", "--k", "2",
        "--check-features", "6", "--check-hidden", "3", "--check-examples", "40", "--threads", "1",
        "--quiet"]


def test_command_end_to_end(cli):
    proc = cli("bench.hessian", *TINY, "--out", "hs")
    assert proc.returncode == 0, proc.stderr
    out = proc.cwd / "hs"
    ritz = pd.read_csv(out / "hessian.csv")
    assert {"stage", "impl", "which", "rank", "eigenvalue"} <= set(ritz.columns)
    assert len(ritz) == 2 * 2 * 2 * 2  # stages x impls x ends x k
    summary = pd.read_csv(out / "hessian_summary.csv")
    assert list(summary["stage"]) == ["init", "init", "trained", "trained"]
    assert (summary["lambda_max"] > 0).all() and (summary["lambda_min"] < summary["lambda_max"]).all()
    np.testing.assert_allclose(summary["ratio_min_max"], summary["lambda_min"] / summary["lambda_max"])
    agree = pd.read_csv(out / "agreement.csv")
    assert agree["ok"].all() and (agree["rel_diff"] < 1e-6).all()
    check = pd.read_csv(out / "exact_check.csv")
    assert check["ok"].all() and (check["rel_err"] < 1e-4).all()
    assert len(pd.read_csv(out / "epochs.csv")) == 2
    img = mpimg.imread(out / "hessian.png")
    assert img.ndim == 3 and img.shape[1] > 600
    report = (out / "report.md").read_text()
    assert "](hessian.png)" in report and "ratio_min_max" in report
    env = json.loads((out / "env.json").read_text())
    assert env["agreement_ok"] and env["exact_check_ok"] and env["run"]["status"] == "ok"
    assert env["config"]["hidden_dims"] == [4] and env["config"]["train_subset"] == 256
    assert proc.stdout.strip().splitlines()[-1] == "results: hs"


def test_failed_check_exits_1_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([*TINY, "--check-rtol", "1e-30", "--out", "hs"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exact check failed" in err[0]
    assert (tmp_path / "hs" / "report.md").exists()


def test_a_diverged_training_run_is_exit_1_and_keeps_the_exact_check(tmp_path, monkeypatch, capsys):
    """Not a usage error (it was exit 2 and left a folder: adversarial H10)."""
    monkeypatch.chdir(tmp_path)
    assert main([*TINY, "--lr", "1e30", "--out", "hs"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ended diverged before any validation" in err[0], err
    assert pd.read_csv(tmp_path / "hs" / "exact_check.csv")["ok"].all()
    assert (tmp_path / "hs" / "report.md").exists()


def test_bad_flag_is_one_line_exit_2(cli):
    assert_one_line_error(cli("bench.hessian", "--k", "0"), "invalid k: 0")


@pytest.mark.parametrize("args,needle", [
    (["--k", "x"], "invalid k"),
    (["--eps", "-1"], "invalid eps"),
    (["--backends", "numpy:cpu,torch:cpu"], "one backend"),
    (["--seeds", "1", "2"], "one seed"),
    (["--residual"], "invalid hidden_dims"),
    (["--batch-examples", "100000"], "invalid batch_examples"),
    (["--check-features", "5000", "--batch-examples", "64", "--check-examples", "40"],
     "invalid check_features"),
])
def test_bad_input_is_a_user_error(tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=needle):
        main(["--dataset", "synthetic", "--train-subset", "256", "--val-size", "64", "--quiet", *args])
    assert not (tmp_path / "results").exists()  # nothing created for a bad request
