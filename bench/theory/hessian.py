"""What ``bench.hessian`` measures: the extreme eigenvalues of the loss Hessian, by PyTorch double
backward and by NumPy central differences, each through Lanczos, and both against the exact Hessian of a
tiny model (docs/theory-measured.md).

:func:`measure_point` gives the top-k and bottom-k Ritz values of both
implementations at one point; :func:`agreement` compares them;
:func:`exact_check` validates both Hessian-vector products against
``numpy.linalg.eigvalsh`` of the exact Hessian of a tiny model at two points
(:func:`tiny_points`); :func:`check_sizes` refuses, before any work, what
would not fit; :func:`plot_hessian` and :func:`sections` draw and word it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np
import pandas as pd

from bench.config import CIFAR10_N_CLASSES, CIFAR10_N_FEATURES, Config, HessianSettings
from bench.errors import UserError
from bench.memory import check_memory
from bench.report import md_table
from bench.run import LoopHooks
from bench.theory.hvp import NumpyFiniteDifferenceHVP, TorchHVP, exact_hessian, lanczos
from bench.theory.params import flatten, initial_state, unflatten
from impl_common.arch import Arch

IMPL_LABELS = {"torch": "torch (double backward)", "numpy": "numpy (central differences)"}
CHECK_TRAIN_STEPS = 500  # full-batch gradient steps of the tiny model before its second check
CHECK_LR = 0.5
MAX_EXACT_PARAMS = 5000  # the exact check forms the tiny model's whole Hessian: 200 MB in float64
# eigenvalues at each end at most: each is a Lanczos vector kept, and converged, per end (the field's cap)
MAX_K = next(f for f in dataclasses.fields(HessianSettings) if f.name == "k").metadata["most"]


class InitialWeights(LoopHooks):
    """Keeps the weights the run starts from (after the warm-up is undone)."""

    state: dict[str, np.ndarray] | None = None

    def before_training(self, backend) -> None:
        self.state = backend.export_state()


def ncv_for(k: int, n: int) -> int:
    """Lanczos basis size: ARPACK's default max(2k + 1, 20), at most n."""
    return min(n, max(2 * k + 1, 20))


def spectrum_ends(op, n: int, k: int, v0: np.ndarray, opts: HessianSettings | Any) -> dict[str, Any]:
    """Top-k (LA) and bottom-k (SA) Ritz values of ``op`` with the matvec cap of ``opts``."""
    ncv = ncv_for(k, n)
    maxiter = max(1, opts.max_matvecs // max(1, ncv - k))
    return {which: lanczos(op, n, k, which, v0=v0, tol=opts.tol, maxiter=maxiter, ncv=ncv)
            for which in ("LA", "SA")}


def hessian_ends(arch: Arch, state: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, opts, seed: int
                 ) -> dict[str, Any]:
    """λ_max and λ_min (NaN where Lanczos did not converge), the products used, and the Ritz values
    of both ends (``ritz``, ascending), by Lanczos on double-backward products (claims 7 and 8)."""
    n = arch.n_params()
    v0 = np.random.default_rng([seed, 1]).standard_normal(n)
    ends = spectrum_ends(TorchHVP(arch, state, x, y), n, min(opts.k, n - 1), v0, opts)
    top, bottom = ends["LA"], ends["SA"]
    return {"lambda_max": float(top.values[-1]) if top.converged else math.nan,
            "lambda_min": float(bottom.values[0]) if bottom.converged else math.nan,
            "matvecs": top.matvecs + bottom.matvecs, "ritz": np.concatenate([bottom.values, top.values])}


def tiny_arch(config: Config, opts, n_classes: int = CIFAR10_N_CLASSES) -> Arch:
    """The tiny model whose whole Hessian is formed (the exact check here, claim 8): ``check_hidden``
    units on the first ``check_features`` inputs, the config's activation, no residual."""
    return Arch(opts.check_features, (opts.check_hidden,), n_classes, config.activation, config.alpha, False)


def tiny_data(data, arch: Arch, rows: int):
    """``data`` cut to the tiny model: the first ``rows`` training rows and every val/test row, the
    first ``arch.n_inputs`` features, float64 (no uint8 images: they hold every feature)."""
    def cut(x):
        return np.ascontiguousarray(x[:, :arch.n_inputs], dtype=np.float64)
    return dataclasses.replace(data, x_train=cut(data.x_train[:rows]), y_train=data.y_train[:rows],
                               x_val=cut(data.x_val), x_test=cut(data.x_test), raw_train=None, raw_val=None,
                               raw_test=None)


def measure_point(arch: Arch, state: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
                  opts: HessianSettings, v0: np.ndarray, stage: str, say) -> tuple[list[dict], list[dict]]:
    """Ritz rows and summary rows of both implementations at one point."""
    n = arch.n_params()
    k = min(opts.k, n - 1)
    ritz, summary = [], []
    for impl in ("torch", "numpy"):
        t0 = time.perf_counter()
        op = TorchHVP(arch, state, x, y) if impl == "torch" else \
            NumpyFiniteDifferenceHVP(arch, state, x, y, eps=opts.eps)
        loss, grad = (op.loss.item() if impl == "torch" else math.nan), op.gradient()
        ends = spectrum_ends(op, n, k, v0, opts)
        seconds = time.perf_counter() - t0
        for which, e in ends.items():
            for rank, value in enumerate(e.values[::-1] if which == "LA" else e.values):
                ritz.append({"stage": stage, "impl": impl, "method": IMPL_LABELS[impl], "which": which,
                             "rank": rank, "eigenvalue": float(value), "converged": e.converged,
                             "matvecs": e.matvecs, "seconds": e.seconds})
        top, bottom = ends["LA"], ends["SA"]
        lam_max = float(top.values[-1]) if len(top.values) else math.nan
        lam_min = float(bottom.values[0]) if len(bottom.values) else math.nan
        summary.append({"stage": stage, "impl": impl, "method": IMPL_LABELS[impl], "n_params": n,
                        "batch_examples": len(y), "loss": loss, "grad_norm": float(np.linalg.norm(grad)),
                        "lambda_max": lam_max, "lambda_min": lam_min, "ratio_min_max": lam_min / lam_max,
                        "converged": top.converged and bottom.converged,
                        "matvecs": top.matvecs + bottom.matvecs, "seconds": seconds})
        say(f"{stage:>7} {impl:<5}: lambda_max {lam_max:.6g}, lambda_min {lam_min:.6g} "
            f"({top.matvecs + bottom.matvecs} products, {seconds:.1f} s)")
    for row in summary:  # the loss is the same function on both sides; report torch's for both rows
        row["loss"] = summary[0]["loss"]
    return ritz, summary


def agreement(summary: pd.DataFrame, rtol: float) -> pd.DataFrame:
    """|numpy − torch| / |torch| of λ_max and λ_min at each stage."""
    rows = []
    for stage, g in summary.groupby("stage", sort=False):
        by = g.set_index("impl")
        for q in ("lambda_max", "lambda_min"):
            t, nmp = float(by.loc["torch", q]), float(by.loc["numpy", q])
            rel = abs(nmp - t) / abs(t) if t != 0 else (0.0 if nmp == 0 else math.inf)
            rows.append({"stage": stage, "quantity": q, "torch": t, "numpy": nmp, "rel_diff": rel,
                         "rtol": rtol, "ok": bool(rel <= rtol)})
    return pd.DataFrame(rows)


def tiny_points(arch: Arch, seed: int, x: np.ndarray, y: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """The tiny model's initial weights (the NumPy MLP's draw from ``seed``) and its weights after
    ``CHECK_TRAIN_STEPS`` full-batch gradient-descent steps on (x, y), in float64.

    NOTE: this descent does not run through the one loop (``bench.run``), and cannot: the loop trains
    a backend on a dataset's splits, a minibatch per step, with warm-up steps, an evaluation after
    every epoch and the best-validation weights kept, whereas the exact check needs the plain
    iterate θ ← θ − η ∇L(θ) of one fixed float64 batch of ``check_features`` inputs, exactly
    ``CHECK_TRAIN_STEPS`` times, as the point whose exact Hessian it forms. The descent is a test
    input for the Hessian-vector products, not a training run to be timed or compared. Nor is it
    claim 8's L-BFGS (``bench.claims.minimum``): that minimises L + (λ/2)‖θ‖², and this check is of L
    alone, which has no finite minimum here (the weights grow for ever), so a fixed step count it is.
    """
    init = initial_state(arch, seed, np.float64)
    grad = NumpyFiniteDifferenceHVP(arch, init, x, y).gradient  # the analytic gradient at any θ
    theta = flatten(init, arch)
    for _ in range(CHECK_TRAIN_STEPS):
        theta = theta - CHECK_LR * grad(theta)  # θ ← θ − η ∇L(θ)
    return {"init": init, f"after {CHECK_TRAIN_STEPS} GD steps": unflatten(theta, arch)}


def exact_check(arch: Arch, points: dict[str, dict[str, np.ndarray]], x: np.ndarray, y: np.ndarray,
                opts: HessianSettings, seed: int) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Lanczos on both products vs ``eigvalsh`` of the exact Hessian, per point and end."""
    n = arch.n_params()
    k = min(opts.k, n - 1)
    v0 = np.random.default_rng([seed, 2]).standard_normal(n)
    rows, spectra = [], {}
    for point, state in points.items():
        exact = spectra[point] = np.linalg.eigvalsh(exact_hessian(arch, state, x, y))  # (n,) ascending
        ops = {"torch": TorchHVP(arch, state, x, y),
               "numpy": NumpyFiniteDifferenceHVP(arch, state, x, y, eps=opts.eps)}
        for impl, op in ops.items():
            for which, e in spectrum_ends(op, n, k, v0, opts).items():
                ritz = e.values[::-1] if which == "LA" else e.values
                ref = exact[::-1][:k] if which == "LA" else exact[:k]
                for rank, (r, x_ref) in enumerate(zip(ritz, ref)):
                    rel = abs(r - x_ref) / abs(x_ref)
                    rows.append({"point": point, "impl": impl, "method": IMPL_LABELS[impl], "which": which,
                                 "rank": rank, "exact": float(x_ref), "lanczos": float(r),
                                 "rel_err": float(rel), "rtol": opts.check_rtol, "ok": bool(rel <= opts.check_rtol)})
    return pd.DataFrame(rows), spectra


def check_sizes(config: Config, opts: HessianSettings) -> None:
    """What the command allocates beyond a training run, refused before any work when too large."""
    for name, value in (("batch_examples", opts.batch_examples), ("check_examples", opts.check_examples)):
        if value > config.n_train:
            raise UserError(f"invalid {name}: {value} (allowed: at most the {config.n_train} training rows)")
    if opts.check_features > CIFAR10_N_FEATURES:
        raise UserError(f"invalid check_features: {opts.check_features} (allowed: at most the "
                        f"{CIFAR10_N_FEATURES} input features)")
    tiny = tiny_arch(config, opts)
    if tiny.n_params() > MAX_EXACT_PARAMS:
        raise UserError(f"the exact check's model has {tiny.n_params()} parameters (check_features "
                        f"{opts.check_features} x check_hidden {opts.check_hidden}); its Hessian is "
                        f"formed whole, so at most {MAX_EXACT_PARAMS} are allowed: lower them")
    most = min(MAX_K, tiny.n_params() // 2 - 1)  # Lanczos needs a basis larger than 2k
    if opts.k > most:
        raise UserError(f"invalid k: {opts.k} (allowed: 1 to {most}, the most Lanczos can resolve "
                        f"at each end of the exact check's {tiny.n_params()} eigenvalues, and at most {MAX_K})")
    n = Arch(CIFAR10_N_FEATURES, tuple(config.hidden_dims), CIFAR10_N_CLASSES, config.activation,
             config.alpha, config.residual).n_params()
    basis = 8 * n * ncv_for(min(opts.k, n - 1), n) * 2  # the Lanczos vectors of eigsh, and a copy
    check_memory(config, 1, extra=basis, flags="--hidden-dims, --k, --batch-size or --train-subset")


def plot_hessian(ritz: pd.DataFrame, spectra: dict[str, np.ndarray], check: pd.DataFrame):
    """Ritz values per implementation and stage, and the tiny model's exact spectrum (symlog)."""
    from bench.plots import plt

    stages = list(dict.fromkeys(ritz["stage"]))
    fig, axes = plt.subplots(1, len(stages) + 1, figsize=(4.6 * (len(stages) + 1), 4.2), squeeze=False)
    colours = {"LA": "tab:red", "SA": "tab:blue"}
    for ax, stage in zip(axes[0], stages):
        s = ritz[ritz.stage == stage]
        for j, impl in enumerate(("torch", "numpy")):
            for which in ("LA", "SA"):
                v = s[(s.impl == impl) & (s.which == which)]["eigenvalue"].to_numpy()
                ax.scatter(np.full(v.shape, j) + (0.08 if which == "SA" else -0.08), v,
                           color=colours[which], marker="_" if impl == "torch" else "x", s=160,
                           label=("top-k" if which == "LA" else "bottom-k") if j == 0 else None)
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xticks([0, 1], ["torch\ndouble backward", "numpy\ncentral diff."])
        ax.set_xlim(-0.6, 1.6)
        ax.set_title(f"{stage}: Ritz values")
        ax.set_ylabel("eigenvalue of H")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax = axes[0][-1]
    for (point, ev), c in zip(spectra.items(), ("tab:gray", "tab:green")):
        ax.plot(np.arange(len(ev)), ev, color=c, lw=1.2, label=f"exact, {point}")
        sub = check[(check.point == point) & (check.impl == "numpy")]
        pos = np.where(sub.which == "LA", len(ev) - 1 - sub["rank"], sub["rank"])
        ax.scatter(pos, sub["lanczos"], color=c, marker="x", s=40, label=f"Lanczos (numpy), {point}")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("index (ascending)")
    ax.set_title("tiny model: exact spectrum")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def sections(config: Config, opts: HessianSettings, arch: Arch, run: dict[str, Any], data: dict[str, Any],
             summary: pd.DataFrame, agree: pd.DataFrame, check: pd.DataFrame, tiny: Arch, scipy: str | None
             ) -> tuple[list[str], list[tuple[str | None, list[str]]]]:
    """The report's setup lines and sections (what is done so far, after a signal)."""
    setup = [f"- Model: {arch.n_inputs} → {list(arch.hidden_dims)} → {arch.n_classes}, {arch.activation}"
             + (", residual" if arch.residual else "") + f"; {arch.n_params():,} parameters."]
    if run:
        setup.append(
            f"- Run: `{run['backend']}`, seed {run['seed']}, {config.epochs} epochs of SGD lr {config.lr}, batch "
            f"{config.batch_size}, on {data['n_train']} training images; status {run['status']}, best "
            f"validation accuracy {run['best_val_acc']:.4f} at epoch {run['best_epoch']}, test accuracy "
            f"{run['test_acc']:.4f}. `trained` is that best-validation model; `init` the same run's initial weights.")
    setup += [f"- Hessian of the mean cross-entropy (no weight-decay term) on a fixed batch: the first "
              f"{opts.batch_examples} training rows, float64. PyTorch: double backward. NumPy: central "
              f"differences of the analytic gradient, ε = {opts.eps:g} along a unit direction. Lanczos: "
              f"`scipy.sparse.linalg.eigsh`, k = {opts.k} at each end, tol {opts.tol:g}, at most "
              f"{opts.max_matvecs} products per end, the same start vector for both implementations.",
              f"- SciPy {scipy} (Lanczos)."]
    out: list[tuple[str | None, list[str]]] = []
    if len(agree) and not (agree["ok"].all() and check["ok"].all()):
        out.append((None, ["**A check failed: see below.**"]))
    if len(summary):
        out.append(("Extreme eigenvalues", [
            "`ratio_min_max` = λ_min / λ_max. A strict minimum has every eigenvalue > 0; a negative λ_min "
            "that is small against λ_max is a point that is only approximately a minimum, as SGD usually "
            "leaves a network (docs/theory-measured.md).", "",
            md_table(summary.drop(columns=["method"]), floatfmt=".6g")]))
    if len(agree):
        out.append(("NumPy versus PyTorch", [
            "Within the tolerance at every stage." if agree["ok"].all()
            else "**Disagreement beyond the tolerance; the command exits 1.**", "", md_table(agree, floatfmt=".6g")]))
    if len(check):
        worst = check.groupby(["point", "impl"], sort=False)["rel_err"].max().reset_index()
        out.append(("Exact check on a tiny model", [
            f"{tiny.n_inputs} inputs (the first {tiny.n_inputs} features) → {list(tiny.hidden_dims)} → "
            f"{tiny.n_classes}, {tiny.activation}, {tiny.n_params()} parameters, on the first "
            f"{opts.check_examples} training rows; the exact Hessian by `torch.func.hessian` (forward over "
            "reverse, a different route from the double backward) and `numpy.linalg.eigvalsh`; points: its "
            f"initialisation and after {CHECK_TRAIN_STEPS} full-batch gradient steps (lr {CHECK_LR}). Largest "
            f"relative error of the {opts.k} Ritz values at each end:", "", md_table(worst), "",
            "Every Ritz value within the tolerance." if check["ok"].all()
            else f"**Some Ritz values are off by more than {opts.check_rtol:g}; the command exits 1.**", "",
            "`hessian.csv`: every Ritz value; `epochs.csv`: the training run."]))
    return setup, out
