"""Claim 6: residual connections keep the gradient from vanishing (docs/derivations.md R1).

Measured with ``bench.gradflow``'s pieces at initialisation: for every depth of
``--depths`` and every theory seed, a plain and a residual net of ``--width``
(each its own init for the seed: Kaiming, the residual blocks by R2) take one
NumPy gradient on the first ``--batch-examples`` training rows; ``first_last``
is ‖dL/dW‖ of the input layer over the output layer's. Both nets have these
two layers in the same shapes, so their ratios compare. (The blocks' own
first layers get no gradient at init under R2, so gradflow's
``hidden_first_last`` is 0 for every residual net and is not used here.)
"""

from __future__ import annotations

import pandas as pd

from bench.claims.context import Context
from bench.claims.verdict import INCONCLUSIVE, MIN_SEEDS, NOT_SUPPORTED, SUPPORTED, Outcome, Verdict, too_few
from bench.plots import plt
from bench.theory.gradflow import first_last_ratios, grads_of, weight_grad_norms
from bench.theory.params import initial_state
from impl_common.arch import Arch

CLAIMS = (6,)
STATEMENT = "Residual connections keep the gradient from vanishing, through the identity path."
VANISH = 0.01  # a net's gradient has vanished when its input layer gets under 1 % of the output layer's


def measure(ctx: Context) -> pd.DataFrame:
    """One row per (depth, arch, seed): first_last and hidden_first_last at init."""
    cfg, opts = ctx.config, ctx.settings
    data = ctx.data(cfg.seeds[0])
    x, y = data.x_train[:opts.batch_examples], data.y_train[:opts.batch_examples]
    rows = []
    for depth in opts.depths:
        for seed in ctx.theory_seeds:
            for name in ("plain", "residual"):
                arch = Arch(data.n_features, (opts.width,) * depth, data.n_classes, cfg.activation,
                            cfg.alpha, name == "residual")
                _, grads = grads_of("numpy", arch, initial_state(arch, seed, cfg.dtype), x, y, cfg.dtype)
                norms = pd.DataFrame({"activation": cfg.activation, "arch": name, "stage": "init",
                                      "impl": seed, "layer": range(arch.n_linears),
                                      "grad_norm": weight_grad_norms(grads, arch.n_linears)})
                rows.append({"depth": depth, **first_last_ratios(norms, depth).iloc[0].to_dict()})
        ctx.log(f"claim 6: depth {depth} measured")
    return pd.DataFrame(rows).rename(columns={"impl": "seed"})


def claim6(ratios: pd.DataFrame) -> Verdict:
    """At the shallowest depth where the plain net's median first_last is under VANISH: supported when
    the residual net's median is not. No such depth: inconclusive (nothing to rescue)."""
    what = "‖dL/dW‖ input layer / output layer at init, plain vs residual (median over seeds)"
    n = int(ratios.groupby("depth")["seed"].nunique().min()) if len(ratios) else 0
    if n < MIN_SEEDS:
        return too_few("6", what, n, MIN_SEEDS, "seeds per depth")
    med = ratios.groupby(["depth", "arch"])["first_last"].median().unstack()  # (depths, plain/residual)
    vanished = med.index[med["plain"] < VANISH]
    shown = "; ".join(f"depth {d}: plain {r.plain:.3g}, residual {r.residual:.3g}" for d, r in med.iterrows())
    if not len(vanished):
        return Verdict("6", what, n, shown, "", INCONCLUSIVE,
                       f"at this init no depth up to {med.index.max()} makes the plain net's gradient "
                       f"vanish (under {VANISH} of the output layer's), so the residual net has nothing to "
                       "rescue here")
    d = vanished[0]
    kept = med.loc[d, "residual"] >= VANISH
    return Verdict("6", what, n, shown, "", SUPPORTED if kept else NOT_SUPPORTED,
                   f"at depth {d} the plain net's gradient has vanished ({med.loc[d, 'plain']:.3g}) and the "
                   f"residual net's {'has not' if kept else 'has too'} ({med.loc[d, 'residual']:.3g})")


def judge(ratios: pd.DataFrame, ctx: Context) -> list[Outcome]:
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, colour in (("plain", "tab:blue"), ("residual", "tab:red")):
        r = ratios[ratios["arch"] == name]
        ax.scatter(r["depth"], r["first_last"], color=colour, s=14, alpha=0.6)
        med = r.groupby("depth")["first_last"].median()
        ax.plot(med.index, med.to_numpy(), color=colour, marker="o", label=f"{name} (median)")
    ax.axhline(VANISH, color="black", ls=":", label=f"vanished: < {VANISH}")
    ax.set(xscale="log", yscale="log", xlabel="hidden layers", ylabel="‖dW input‖ / ‖dW output‖ at init")
    ax.set_xticks(sorted(ratios["depth"].unique()), [str(d) for d in sorted(ratios["depth"].unique())])
    ax.minorticks_off()
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    cfg, opts = ctx.config, ctx.settings
    text = (f"Plain and residual nets of width {opts.width}, {cfg.activation}, at depths "
            f"{', '.join(map(str, opts.depths))}, each at its own initialisation for {len(ctx.theory_seeds)} "
            f"seeds (Kaiming; the residual blocks by R2, every block the identity at first). One gradient "
            f"on the first {opts.batch_examples} training rows; the ratio is the input layer's ‖dL/dW‖ over "
            "the output layer's (the same shapes in both nets).")
    return [Outcome(6, STATEMENT, [claim6(ratios)], text, fig, {"claim6_ratios.csv": ratios})]
