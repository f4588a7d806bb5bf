"""bench.gradflow: per-layer gradients agree across implementations; residual beats plain on deep tanh;
the command runs end to end on tiny synthetic data and rejects bad input in one line."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from conftest import assert_one_line_error

from bench.theory import gradflow
from bench.errors import UserError
from bench.lockstep import parting_step
from bench.gradflow import main
from bench.theory.gradflow import max_rel_diff, weight_grad_norms
from bench.backends import IMPLS, Impl
from bench.theory.params import numpy_loss_grads, numpy_model, torch_loss_grads, torch_model
from conftest import REPO
from impl_common.arch import Arch
from impl_numpy.mlp import MLP

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(n: int, m: int, seed: int = 0, classes: int = 10):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, m)).astype(np.float32), rng.integers(0, classes, n)


@pytest.mark.parametrize("activation", ["elu", "tanh"])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("dtype,rtol", [(np.float32, 2e-5), (np.float64, 1e-12)])
def test_gradients_agree_across_implementations(activation, residual, dtype, rtol):
    """The same weights give the same dL/dW per layer in NumPy and PyTorch (shapes down to 1 unit)."""
    dims = (6, 1, 6, 3, 6)
    arch = Arch(20, dims, 4, activation, 0.7, residual)
    state = MLP(20, list(dims), 4, activation, alpha=0.7, rng=np.random.default_rng(3)).state_dict()
    x, y = _batch(17, 20, classes=4)
    loss_np, g_np = numpy_loss_grads(numpy_model(arch, state, dtype), x, y)
    loss_t, g_t = torch_loss_grads(torch_model(arch, state, dtype), x, y)
    rel, _ = max_rel_diff(g_np, g_t, arch.n_linears)
    assert rel < rtol
    assert loss_np == pytest.approx(loss_t, rel=rtol)
    norms_np, norms_t = weight_grad_norms(g_np, arch.n_linears), weight_grad_norms(g_t, arch.n_linears)
    np.testing.assert_allclose(norms_np, norms_t, rtol=rtol)
    # and the measure notices a real difference: one layer's gradient changed by 1e-3
    g_t["linears.2.weight"] = g_t["linears.2.weight"] * (1 + 1e-3)
    rel, layer = max_rel_diff(g_np, g_t, arch.n_linears)
    assert rel > 5e-4 and layer == 2


def test_residual_first_layer_gradient_exceeds_plain_on_deep_tanh():
    """docs/derivations.md §6: with the same weights, the identity paths carry more gradient to the
    first layer.

    Checked at the implementations' Kaiming init and with every weight scaled by 0.5 (the ordered
    phase of tanh). The plain and residual nets share every weight, so only the identity paths differ.
    """
    depth, width = 21, 32
    x, y = _batch(64, 48, seed=1)
    base = MLP(48, [width] * depth, 10, "tanh", rng=np.random.default_rng(0)).state_dict()
    for scale in (1.0, 0.5):
        state = {k: v * scale for k, v in base.items()}
        first = {}
        for residual in (False, True):
            arch = Arch(48, (width,) * depth, 10, "tanh", 1.0, residual)
            _, g = numpy_loss_grads(numpy_model(arch, state, np.float64), x, y)
            first[residual] = weight_grad_norms(g, arch.n_linears)[0]
        assert first[True] > 2 * first[False], (scale, first)


TINY = ["--dataset", "synthetic", "--train-subset", "192", "--val-size", "64", "--batch-size", "32",
        "--depth", "3", "--width", "8", "--epochs", "1", "--eval-every", "3", "--batch-examples", "40",
        "--lr", "0.01", "--threads", "1", "--quiet"]


def test_command_end_to_end(cli):
    proc = cli("bench.gradflow", *TINY, "--out", "gf")
    assert proc.returncode == 0, proc.stderr
    out = proc.cwd / "gf"
    norms = pd.read_csv(out / "gradflow.csv")
    assert {"impl", "arch", "activation", "stage", "layer", "grad_norm"} <= set(norms.columns)
    # 2 activations x 2 archs x 2 impls x 2 stages x 4 linear layers
    assert len(norms) == 2 * 2 * 2 * 2 * 4
    assert set(norms["stage"]) == {"init", "after 6 steps"}
    # every gradient is non-zero, but for the residual block's first layer at init: the block starts
    # as the identity (its last layer is zero, R2), so nothing flows back into it yet
    at_init_block = (norms["arch"] == "residual") & (norms["stage"] == "init") & (norms["layer"] == 1)
    assert (norms.loc[at_init_block, "grad_norm"] == 0).all()
    assert (norms.loc[~at_init_block, "grad_norm"] > 0).all()
    piv = norms.pivot_table(index=["activation", "arch", "stage", "layer"], columns="impl",
                            values="grad_norm")
    np.testing.assert_allclose(piv["numpy"], piv["torch"], rtol=1e-4)
    training = pd.read_csv(out / "training.csv")
    assert set(training["step"]) == {0, 3, 6}
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "epoch"} <= set(training.columns)
    agree = pd.read_csv(out / "agreement.csv")
    assert agree["ok"].all()
    # per network: init, first steps, horizon vs control, 2 x same weights after, trajectories
    assert len(agree) == 4 * 6
    assert (agree.dropna(subset=["rtol"])["max_rel_diff"] < 1e-4).all()
    steps = pd.read_csv(out / "steps.csv")
    assert len(steps) == 4 * 3 * 6 and np.isfinite(steps["loss"]).all()
    assert set(steps["impl"]) == {"numpy", "torch", "torch+1ulp"}
    networks = pd.read_csv(out / "networks.csv")
    assert list(networks["status"]) == ["ok"] * 4
    ratios = pd.read_csv(out / "ratios.csv")
    assert len(ratios) == 2 * 2 * 2 * 2 and (ratios["first_last"] > 0).all()
    for name in ("gradflow.png", "training.png"):
        img = mpimg.imread(out / name)
        assert img.ndim == 3 and img.shape[0] > 300
    report = (out / "report.md").read_text()
    assert "](gradflow.png)" in report and "](training.png)" in report and "hidden_first_last" in report
    env = json.loads((out / "env.json").read_text())
    assert {"versions", "cpu", "threads", "config", "data"} <= set(env)
    assert env["config"]["depth"] == 3 and env["config"]["eval_every"] == 3
    assert env["agreement_ok"] is True
    assert proc.stdout.strip().splitlines()[-1] == "results: gf"


def test_disagreement_exits_1_in_one_line(tmp_path, monkeypatch, capsys):
    """An impossible tolerance makes the same-weights check fail: exit 1, one line, files written."""
    monkeypatch.chdir(tmp_path)
    assert main([*TINY, "--activations", "tanh", "--grad-rtol", "1e-30", "--out", "gf"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "numpy and torch disagree" in err[0]
    assert (tmp_path / "gf" / "report.md").exists()
    # and a second run never overwrites the first
    with pytest.raises(UserError, match="already exists"):
        main([*TINY, "--out", "gf"])


def test_a_wrong_step_is_caught(tmp_path, monkeypatch, capsys):
    """NumPy stepping with a learning rate 1 % off: the lock-step losses part at step 2 -> exit 1."""
    monkeypatch.syspath_prepend(str(REPO / "tests"))
    monkeypatch.setitem(IMPLS, "skewed", Impl("fake_backends", "SkewedBackend", None, False))
    monkeypatch.setitem(gradflow.BACKEND_OF, "numpy", "skewed:cpu")
    monkeypatch.chdir(tmp_path)
    assert main([*TINY, "--activations", "tanh", "--lr", "0.1", "--out", "gf"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lock-step batch loss" in err[0]
    agree = pd.read_csv(tmp_path / "gf" / "agreement.csv")
    first = agree[agree["check"].str.startswith("lock-step batch loss")]
    assert (~first["ok"]).all() and (first["where"] == "step 2").all()
    assert agree[agree["stage"] == "init"]["ok"].all()  # the gradients themselves still agree


def test_lockstep_horizon():
    rows = [{"impl": impl, "step": s, "loss": loss}
            for s, (a, b) in enumerate([(1.0, 1.0), (1.0, 1.0000001), (1.0, 1.01), (np.nan, np.nan)], 1)
            for impl, loss in (("numpy", a), ("torch", b))]
    rel = gradflow.step_gap(rows, "numpy", "torch")
    assert rel.iloc[0] == 0 and 0 < rel.iloc[1] < 1e-6 and rel.iloc[3] == 0  # both NaN: no difference
    assert parting_step(rel) == 3
    assert parting_step(rel.iloc[:2]) is None
    rows[-1]["loss"] = 2.0  # only one side diverged
    assert np.isinf(gradflow.step_gap(rows, "numpy", "torch").iloc[3])


def test_bad_flag_is_one_line_exit_2(cli):
    assert_one_line_error(cli("bench.gradflow", "--depth", "4"), "invalid depth: 4")
    assert_one_line_error(cli("bench.gradflow", "--hidden-dims", "64"), "unrecognized arguments")


@pytest.mark.parametrize("args,needle", [
    (["--depth", "x"], "depth"),
    (["--depth", "1"], "invalid depth"),
    (["--activations", "elu,swish"], "invalid activations"),
    (["--hidden-dims", "64"], "unrecognized arguments: --hidden-dims"),
    (["--lockstep"], "unrecognized arguments: --lockstep"),
    (["--seeds", "1", "2"], "one seed"),
    (["--eval-every", "0"], "invalid eval_every"),
    (["--batch-examples", "100000"], "invalid batch_examples"),
    (["--no-such-flag"], "unrecognized arguments"),
])
def test_bad_input_is_a_user_error(tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=needle):
        main(["--dataset", "synthetic", "--train-subset", "256", "--val-size", "64", "--eval-every", "1",
              *args])
    assert not (tmp_path / "results").exists()  # nothing created for a bad request


def test_the_fixed_batch_counts_in_the_memory_estimate(cli):
    """A 20 000-row fixed batch through 201 layers passed the estimate, then ran out of memory (G07b)."""
    proc = cli("bench.gradflow", "--dataset", "synthetic", "--depth", "201", "--width", "256",
               "--batch-examples", "20000", "--train-subset", "20000", "--out", "g")
    assert_one_line_error(proc, "batch 20000", "--batch-examples")
    assert not (proc.cwd / "g").exists()
