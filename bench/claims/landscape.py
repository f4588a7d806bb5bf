"""Claim 7: residual connections give a smoother loss landscape.

For every theory seed, a plain and a residual net of ``--landscape-dims``
(the same linear layers) each train on NumPy through the one run path at the
config; at the run's initial and best-validation weights, ``bench.hessian``'s
Lanczos on PyTorch double-backward products gives the largest (λ_max, the
sharpness) and most negative (λ_min) eigenvalues of the Hessian of the mean
loss on the first ``--batch-examples`` training rows. Smoother means a
smaller λ_max; per stage, the rule is a paired t-test over seeds on
log(λ_max residual / λ_max plain). A value whose Lanczos did not converge,
or a run that diverged, leaves its pair out.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from bench.backends import resolve
from bench.claims.context import Context
from bench.claims.verdict import MIN_SEEDS, Outcome, Verdict, decide, p_text, too_few
from bench.theory.hessian import InitialWeights, hessian_ends
from bench.plots import plt
from bench.run import run_one
from bench.stats import ALPHA
from impl_common.arch import Arch

CLAIMS = (7,)
STATEMENT = "Residual connections give a smoother loss landscape."
STAGES = ("init", "trained")


def measure(ctx: Context) -> pd.DataFrame:
    """One row per (seed, arch, stage): λ_max, λ_min, the run's status."""
    cfg, opts = ctx.config, ctx.settings
    data = ctx.data(cfg.seeds[0])
    x = np.asarray(data.x_train[:opts.batch_examples], dtype=np.float64)
    y = data.y_train[:opts.batch_examples]
    chosen = resolve(["numpy:cpu"])[0][0]
    rows = []
    for seed in ctx.theory_seeds:
        for name in ("plain", "residual"):
            c = dataclasses.replace(cfg, hidden_dims=list(opts.landscape_dims), residual=name == "residual")
            arch = Arch(data.n_features, tuple(c.hidden_dims), data.n_classes, c.activation, c.alpha,
                        c.residual)
            backend, start = chosen.make(c), InitialWeights()
            record = run_one(chosen, c, data, seed, backend=backend, hooks=[start])
            if record.interrupted:
                raise KeyboardInterrupt
            trained = record.run.get("best_epoch") is not None
            for stage, state in (("init", start.state), ("trained", backend.export_state() if trained else None)):
                ends = hessian_ends(arch, state, x, y, opts, seed) if state is not None else \
                    {"lambda_max": math.nan, "lambda_min": math.nan, "matvecs": 0}
                ends.pop("ritz", None)
                rows.append({"seed": seed, "arch": name, "stage": stage, "status": record.status,
                             "test_acc": record.run.get("test_acc"), **ends})
            ctx.log(f"claim 7: seed {seed} {name}: {record.status}, λ_max init {rows[-2]['lambda_max']:.4g}, "
                    f"trained {rows[-1]['lambda_max']:.4g}")
    return pd.DataFrame(rows)


def claim7(table: pd.DataFrame, stage: str, id: str) -> Verdict:
    """Paired over seeds: is λ_max of the residual net below the plain net's (t-test on the log ratio)?"""
    from scipy import stats

    what = f"λ_max residual / plain at {stage}, geometric mean over seeds (paired t on the log)"
    t = table[table["stage"] == stage].pivot_table(index="seed", columns="arch", values=["lambda_max",
                                                                                         "lambda_min"])
    t = t.dropna()
    if len(t) < MIN_SEEDS:
        return too_few(id, what, len(t), MIN_SEEDS, "seeds with both nets measured")
    log_ratio = np.log(t["lambda_max"]["residual"] / t["lambda_max"]["plain"]).to_numpy()
    p = float(stats.ttest_1samp(log_ratio, 0.0).pvalue) if np.ptp(log_ratio) > 0 else 0.0
    ratio = float(np.exp(log_ratio.mean()))
    neg = np.exp(np.mean(np.log(np.abs(t["lambda_min"]["residual"]) / np.abs(t["lambda_min"]["plain"]))))
    sig = p < ALPHA
    return Verdict(id, what, len(t), f"{ratio:.3g}", p_text(p), decide(sig, ratio < 1),
                   f"the residual net's sharpness is {ratio:.3g}× the plain net's "
                   + (f"({'smaller' if ratio < 1 else 'larger'}, significant at {ALPHA})" if sig
                      else f"(not significant at {ALPHA})")
                   + f"; its |λ_min| is {neg:.3g}× the plain net's")


def judge(table: pd.DataFrame, ctx: Context) -> list[Outcome]:
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 4.0))
    for ax, q in zip(axes, ("lambda_max", "lambda_min")):
        for j, stage in enumerate(STAGES):
            t = table[table["stage"] == stage].pivot_table(index="seed", columns="arch", values=q)
            for arch in ("plain", "residual"):
                if arch not in t:
                    t[arch] = math.nan
            for _, r in t.iterrows():  # one line per seed joins its plain and residual nets
                ax.plot([2 * j, 2 * j + 1], [r["plain"], r["residual"]], color="tab:gray", marker="o", ms=4)
        ax.set_xticks(range(4), [f"{a}\n{s}" for s in STAGES for a in ("plain", "residual")])
        if q == "lambda_max":
            ax.set_yscale("log")
        else:
            ax.set_yscale("symlog", linthresh=1e-2)
            ax.axhline(0, color="black", lw=0.6)
        ax.set_title("λ_max (sharpness)" if q == "lambda_max" else "λ_min")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    cfg, opts = ctx.config, ctx.settings
    text = (f"Plain and residual nets with hidden widths {opts.landscape_dims} ({cfg.activation}), "
            f"{len(ctx.theory_seeds)} seeds, each trained by NumPy for {cfg.epochs} epochs at lr {cfg.lr}. "
            f"Hessian of the mean loss on the first {opts.batch_examples} training rows, at the initial "
            "and the best-validation weights; each grey line joins the two nets of one seed.")
    return [Outcome(7, STATEMENT, [claim7(table, "init", "7a"), claim7(table, "trained", "7b")], text, fig,
                    {"claim7_hessian.csv": table})]
