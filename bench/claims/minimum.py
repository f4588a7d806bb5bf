"""Claim 8 (H1): at a local minimum the Hessian has no negative eigenvalue; SGD's best point is no minimum.

The tiny model (``--check-features`` inputs, ``--check-hidden`` units, 10
classes; the first ``--check-examples`` training rows) has the objective
J(θ) = L(θ) + (λ/2)‖θ‖², λ = ``--tiny-weight-decay``, whose Hessian is
H + λI. Without the decay L has no finite minimum here: saturating ELU units
let it fall for ever as the weights grow (measured: L-BFGS took the weight
norm past 300 with the gradient still at 1e-2). The model first trains by SGD
(with that decay) through the one run path, in float64 at the config; its
best-validation weights are the *SGD point*. From there, L-BFGS
(``scipy.optimize``) takes J down to a gradient norm under ``--grad-tol``: the
*minimum*. Why not the one loop: it runs SGD for a fixed number of epochs,
and a gradient norm of 1e-6 with eigenvalues spread over five orders of
magnitude would take plain gradient steps millions of iterations; L-BFGS
gets there in a few thousand, and never looks at the Hessian it is tested
on. At both points the exact Hessian (``torch.func.hessian``, ``eigvalsh``)
gives the whole spectrum, and Lanczos the ends; the "Lanczos error" is their
difference at λ_min.

The reference model's best-validation point (NumPy, the first seed; claims
1-5's run when they ran; no weight decay) gets Lanczos alone; a converged
Ritz value θ lies within ``--tol`` × |θ| of an eigenvalue.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from bench.backends import resolve
from bench.claims.context import Context
from bench.claims.seed_runs import reference_state
from bench.claims.verdict import INCONCLUSIVE, MIN_SEEDS, NOT_SUPPORTED, SUPPORTED, Outcome, Verdict, too_few
from bench.plots import plt
from bench.run import run_one
from bench.theory.hessian import hessian_ends, tiny_arch, tiny_data
from bench.theory.hvp import exact_hessian
from bench.theory.params import flatten, numpy_loss_grads, numpy_model, unflatten
from impl_common.arch import Arch

CLAIMS = (8,)
STATEMENT = ("At a local minimum the Hessian has only positive eigenvalues (H1), and the trained model "
             "is at one.")
EIG_RTOL = 1e-12  # the exact spectrum's rounding, relative to λ_max (eigvalsh of a few hundred rows: ~1e-14)
MAX_ITER = 20_000  # L-BFGS iterations at most
TINY_COLUMNS = ["seed", "point", "status", "grad_norm", "lbfgs_iterations", "exact_min", "exact_max",
                "lanczos_min", "lanczos_max"]


def to_minimum(arch: Arch, state: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, decay: float,
               grad_tol: float) -> tuple[dict[str, np.ndarray], float, int]:
    """L-BFGS from ``state`` on J = L + (decay/2)‖θ‖², full batch; (weights, ‖∇J‖ there, iterations)."""
    def objective(theta):
        loss, grads = numpy_loss_grads(numpy_model(arch, unflatten(theta, arch), np.float64), x, y)
        return loss + 0.5 * decay * theta @ theta, flatten(grads, arch) + decay * theta  # J, ∇J
    res = minimize(objective, flatten(state, arch), jac=True, method="L-BFGS-B",
                   options={"maxiter": MAX_ITER, "ftol": 0.0, "gtol": grad_tol / math.sqrt(arch.n_params()),
                            "maxcor": 50})
    return unflatten(res.x, arch), float(np.linalg.norm(objective(res.x)[1])), int(res.nit)


def measure(ctx: Context) -> dict:
    cfg, opts = ctx.config, ctx.settings
    decay = opts.tiny_weight_decay
    arch = tiny_arch(cfg, opts)
    data = tiny_data(ctx.data(cfg.seeds[0]), arch, opts.check_examples)
    x, y = data.x_train, data.y_train
    c = dataclasses.replace(cfg, hidden_dims=[opts.check_hidden], residual=False, dtype="float64",
                            weight_decay=decay)
    chosen = resolve(["numpy:cpu"])[0][0]
    rows, spectra = [], {}
    for seed in ctx.theory_seeds:
        backend = chosen.make(c)
        record = run_one(chosen, c, data, seed, backend=backend)
        if record.interrupted:
            raise KeyboardInterrupt
        if record.run.get("best_epoch") is None:
            rows.append({"seed": seed, "point": "sgd", "status": record.status})
            continue
        sgd = backend.export_state()
        best, grad_norm, iters = to_minimum(arch, sgd, x, y, decay, opts.grad_tol)
        for point, state in (("sgd", sgd), ("minimum", best)):
            exact = np.linalg.eigvalsh(exact_hessian(arch, state, x, y)) + decay  # of J, ascending
            ends = hessian_ends(arch, state, x, y, opts, seed)
            spectra[(seed, point)] = exact
            rows.append({"seed": seed, "point": point, "status": record.status,
                         "grad_norm": grad_norm if point == "minimum" else math.nan, "lbfgs_iterations": iters,
                         "exact_min": exact[0], "exact_max": exact[-1],
                         "lanczos_min": ends["lambda_min"] + decay, "lanczos_max": ends["lambda_max"] + decay})
        ctx.log(f"claim 8: tiny model seed {seed}: λ_min at the SGD point {rows[-2]['exact_min']:.3g}, at the "
                f"minimum {rows[-1]['exact_min']:.3g} (gradient norm {grad_norm:.2g}, {iters} L-BFGS iterations)")
    ref_seed, ref_state = reference_state(ctx)
    ref = {}
    if ref_state:
        d = ctx.data(ref_seed)
        ref_arch = Arch(d.n_features, tuple(cfg.hidden_dims), d.n_classes, cfg.activation, cfg.alpha, False)
        x = np.asarray(d.x_train[:opts.batch_examples], dtype=np.float64)
        ref = hessian_ends(ref_arch, ref_state, x, d.y_train[:opts.batch_examples], opts, ref_seed)
        ref = {"seed": ref_seed, **{k: v + cfg.weight_decay if k != "matvecs" else v for k, v in ref.items()}}
        ctx.log(f"claim 8: reference model, best-validation point: λ_min {ref['lambda_min']:.4g}, "
                f"λ_max {ref['lambda_max']:.4g}")
    return {"tiny": pd.DataFrame(rows, columns=TINY_COLUMNS), "spectra": spectra, "reference": ref}


def claim8a(tiny: pd.DataFrame, grad_tol: float) -> Verdict:
    """H1 at the minima the gradient norm certifies: exact λ_min ≥ −(Lanczos error + rounding)."""
    what = "λ_min of the exact Hessian at the tiny model's minimum (gradient norm ≤ grad_tol)"
    m = tiny[(tiny["point"] == "minimum") & (tiny["grad_norm"] <= grad_tol)]
    if len(m) < MIN_SEEDS:
        return too_few("8a", what, len(m), MIN_SEEDS, "minima reached")
    err = (m["lanczos_min"] - m["exact_min"]).abs().fillna(0) + EIG_RTOL * m["exact_max"]
    holds = (m["exact_min"] >= -err).to_numpy()
    worst = m.loc[(m["exact_min"] / err).idxmin()]
    return Verdict("8a", what, len(m), f"λ_min {m['exact_min'].min():.2g} to {m['exact_min'].max():.2g}",
                   f"error ≤ {err.max():.2g}", SUPPORTED if holds.all() else NOT_SUPPORTED,
                   f"at {int(holds.sum())} of {len(m)} minima λ_min ≥ 0 within the error (worst: seed "
                   f"{int(worst['seed'])}, λ_min {worst['exact_min']:.2g}, λ_max {worst['exact_max']:.3g})")


def claim8b(ref: dict, tiny: pd.DataFrame, tol: float) -> Verdict:
    """Is SGD's best-validation point a minimum? Not when a converged λ_min is below −tol |λ_min|."""
    what = "λ_min / λ_max at the reference model's best-validation point (Lanczos)"
    lo, hi = ref.get("lambda_min", math.nan), ref.get("lambda_max", math.nan)
    if math.isnan(lo) or math.isnan(hi):
        return Verdict("8b", what, 0, "", "", INCONCLUSIVE, "no converged Lanczos value at the reference model's "
                       "best-validation point (no run finished, or Lanczos hit --max-matvecs)")
    sgd = tiny[tiny["point"] == "sgd"].dropna(subset=["exact_min"])
    saddles = int((sgd["exact_min"] < -EIG_RTOL * sgd["exact_max"]).sum())
    is_min = lo >= -tol * abs(lo)
    return Verdict("8b", what, 1, f"λ_min {lo:.4g}, λ_max {hi:.4g}", f"Lanczos error ≤ {tol * abs(lo):.1g}",
                   SUPPORTED if is_min else NOT_SUPPORTED,
                   (f"λ_min < 0 ({abs(lo / hi):.0%} of λ_max): a saddle, not a minimum" if not is_min else
                    "no negative eigenvalue beyond the error") + f"; the tiny model's SGD point is a saddle "
                   f"at {saddles} of {len(sgd)} seeds")


def judge(m: dict, ctx: Context) -> list[Outcome]:
    cfg, opts, tiny, ref = ctx.config, ctx.settings, m["tiny"], m["reference"]
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 4.2))
    ax = axes[0]
    first = next((s for s, p in m["spectra"] if p == "minimum"), None)
    for point, colour in (("sgd", "tab:gray"), ("minimum", "tab:green")):
        ev = m["spectra"].get((first, point))
        if ev is not None:
            ax.plot(np.arange(len(ev)), ev, color=colour, lw=1.4, label=f"exact, {point}")
            row = tiny[(tiny["seed"] == first) & (tiny["point"] == point)].iloc[0]
            ax.scatter([0, len(ev) - 1], [row["lanczos_min"], row["lanczos_max"]], color=colour, marker="x",
                       s=60, label=f"Lanczos ends, {point}")
    ax.set(yscale="symlog", xlabel="eigenvalue index (ascending)", ylabel="eigenvalue",
           title=f"tiny model, seed {first}: whole spectrum")
    ax.set_yscale("symlog", linthresh=1e-6)
    ax.axhline(0, color="black", lw=0.6)
    ax.legend(fontsize=8)
    ax = axes[1]
    if ref:
        r = ref["ritz"]
        k = len(r) // 2
        ax.scatter(np.arange(len(r)), r, color=np.where(r < 0, "tab:blue", "tab:red"), s=40)
        ax.set_xticks([(k - 1) / 2, k + (k - 1) / 2], [f"{k} most negative", f"{k} largest"])
        ax.set_yscale("symlog", linthresh=1e-2)
        ax.axhline(0, color="black", lw=0.6)
    ax.set(ylabel="Ritz value", title="reference model, best-validation point: both ends")
    for a in axes:
        a.grid(alpha=0.3)
    fig.tight_layout()
    text = (f"The tiny model ({opts.check_features} inputs, {opts.check_hidden} hidden units, "
            f"{opts.check_examples} training rows, weight decay {opts.tiny_weight_decay:g}) after SGD ({cfg.epochs} "
            f"epochs, lr {cfg.lr}) and after L-BFGS from there to a gradient norm under {opts.grad_tol:g}; the "
            "exact Hessian of its objective at both points (left, the first seed: every eigenvalue, symlog "
            "scale; the softmax's flat directions, one per hidden unit and one more, get the weight decay as "
            "their curvature). Right: the most negative and the largest Ritz values "
            f"of the reference model's Hessian on {opts.batch_examples} training rows at its best-validation "
            "weights.")
    verdicts = [claim8a(tiny, opts.grad_tol), claim8b(ref, tiny, opts.tol)]
    return [Outcome(8, STATEMENT, verdicts, text, fig, {"claim8_tiny.csv": tiny})]
