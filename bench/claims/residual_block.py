"""Claim 9: the write-up's answers on the residual block Y = X + L2(h(L1(X))), checked numerically.

One block of NumPy's ``ResidualBlock`` (F = 4 features, N = 3 hidden units,
float64, random weights from the first seed) on a batch of S = 5 rows. With
a random upstream gradient G = dL/dY (L = Σ G ∘ Y), central differences of L
give dL/dX entry by entry (the check every layer of the suite passes), and
are compared with

* R1 (docs/derivations.md): dX = G + (G sent back through L2, h, L1), what
  ``ResidualBlock.backward`` computes;
* the write-up's dL/dX = dL/dY·W + I, read as generously as its shapes allow:
  G sent back through the block's layers plus the S × F identity (ones on the
  diagonal; S ≠ F here, so an F × F identity would not even add);
* G sent back through the layers alone (no identity path), for scale.

The width: the same block (N2 = F) takes batches of 1, S and 2S rows and
gives every row the same output, so no width depends on S; a second layer of
width S × F cannot be added to X (NumPy refuses the sum, and the block
refuses the layer).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.claims.context import Context
from bench.claims.verdict import INCONCLUSIVE, NOT_SUPPORTED, Outcome, Verdict
from bench.plots import plt
from impl_numpy.modules import LinearModule, ResidualBlock, make_activation

CLAIMS = (9,)
STATEMENT = ("In Y = X + L2(h(L1(X))) the second layer's width must be S × F, and dL/dX = dL/dY·W + I.")
S, F, N = 5, 4, 3
FD_EPS = 1e-6   # central-difference step (float64)
FD_RTOL = 1e-7  # a gradient agrees with the differences when its relative error is under this


def measure(ctx: Context) -> dict:
    cfg = ctx.config
    rng = np.random.default_rng([cfg.seeds[0], 9])
    block = ResidualBlock.build(F, N, cfg.activation, alpha=cfg.alpha, rng=rng)
    x, g = rng.standard_normal((S, F)), rng.standard_normal((S, F))  # X and G = dL/dY, (S, F)

    def loss(x_):
        return float((block.forward(x_.copy()) * g).sum())  # L = Σ G ∘ Y
    fd = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        e = np.zeros_like(x)
        e[idx] = FD_EPS
        fd[idx] = (loss(x + e) - loss(x - e)) / (2 * FD_EPS)
    block.forward(x.copy())
    r1 = block.backward(g)                                   # R1, (S, F)
    block.forward(x.copy())
    da = block.activation.backward(block.linear2.backward(g))
    through_f = block.linear1.backward(da)                  # G sent back through L2, h, L1, (S, F)
    grads = {"R1": r1, "write-up: dL/dY·W + I": through_f + np.eye(S, F), "through the layers alone": through_f}
    rel = {k: float(np.linalg.norm(v - fd) / np.linalg.norm(fd)) for k, v in grads.items()}
    wide = np.vstack([x, -x])                                # 2S rows: the first S are x
    rows = {s: block.forward(wide[:s].copy()) for s in (1, S, 2 * S)}
    row_diff = max(float(np.abs(rows[s] - rows[2 * S][:s]).max()) for s in rows)
    try:
        ResidualBlock(LinearModule(F, N), make_activation(cfg.activation, cfg.alpha), LinearModule(N, S * F))
        refused = ""
    except ValueError as exc:
        refused = str(exc)
    try:
        x + np.zeros((S, S * F))
        sum_refused = ""
    except ValueError as exc:
        sum_refused = str(exc)
    return {"fd": fd, "grads": grads, "rel": rel, "row_diff": row_diff, "refused": refused,
            "sum_refused": sum_refused}


def claim9a(row_diff: float, refused: str, sum_refused: str) -> Verdict:
    what = f"the block with N2 = F on batches of 1, {S} and {2 * S} rows; one with N2 = S × F = {S * F}"
    ok = row_diff == 0.0 and bool(refused) and bool(sum_refused)
    return Verdict("9a", what, 3, f"largest row difference {row_diff:.2g}", "", NOT_SUPPORTED if ok else
                   INCONCLUSIVE, "the second layer maps back to F, whatever S: the same weights give every row "
                   "the same output in every batch; a layer of S × F outputs cannot be added to X "
                   f"({sum_refused.split(':')[0] if sum_refused else 'NumPy added it'}), and the block refuses "
                   "it" if ok else "the block's output depends on the batch, or S × F was accepted: check the "
                   "measurement")


def claim9b(rel: dict[str, float]) -> Verdict:
    written, r1 = rel["write-up: dL/dY·W + I"], rel["R1"]
    what = "‖dL/dX − central differences‖ / ‖central differences‖: the write-up's formula and R1"
    ok = r1 < FD_RTOL and written > 100 * FD_RTOL
    return Verdict("9b", what, S * F, f"write-up {written:.3g}, R1 {r1:.2g}", f"tolerance {FD_RTOL:g}",
                   NOT_SUPPORTED if ok else INCONCLUSIVE,
                   f"R1 (dX = dY + dY sent back through the layers) matches the differences to {r1:.1g}; "
                   f"adding I instead of dY is off by {written:.2g} (the layers alone: "
                   f"{rel['through the layers alone']:.2g}): the + I belongs to the Jacobian, not the gradient"
                   if ok else "R1 itself does not match the differences: the check is broken")


def judge(m: dict, ctx: Context) -> list[Outcome]:
    fig, ax = plt.subplots(figsize=(5.6, 5.0))
    fd = m["fd"].ravel()
    for (name, g), marker in zip(m["grads"].items(), ("o", "s", "^")):
        ax.scatter(fd, g.ravel(), marker=marker, s=36, alpha=0.8, label=f"{name} (rel. error {m['rel'][name]:.2g})")
    lim = [min(fd.min(), -1.5), max(fd.max(), 1.5)]
    ax.plot(lim, lim, color="black", lw=0.6, label="equal")
    ax.set(xlabel="dL/dX by central differences", ylabel="dL/dX by the formula",
           title=f"residual block, S={S}, F={F}, N={N}: every entry")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    text = (f"A residual block of F = {F} features and N = {N} hidden units ({ctx.config.activation}) on S = {S} "
            "rows with random weights; the loss Σ G ∘ Y for a random upstream gradient G. Each point is one "
            "entry of dL/dX: on the diagonal, the formula agrees with central differences (step "
            f"{FD_EPS:g}). Correct: the second layer maps N back to F (N2 = F, no S), and dL/dX = dL/dY + "
            "dL/dY sent back through the layers (R1); the identity of ∂Y/∂X = I + ∂f/∂X contributes dL/dY "
            "itself.")
    table = pd.DataFrame({"formula": list(m["rel"]), "relative_error": list(m["rel"].values())})
    return [Outcome(9, STATEMENT, [claim9a(m["row_diff"], m["refused"], m["sum_refused"]), claim9b(m["rel"])],
                    text, fig, {"claim9_gradients.csv": table})]
