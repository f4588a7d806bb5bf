"""Claims 1-5, on the training runs: the verdict rules (pure functions of measured numbers) and figures.

The measurements are :mod:`bench.claims.seed_runs`; :func:`judge` turns them
into per-run numbers (:func:`per_run`), then into verdicts. Only runs that
finished ``ok`` count; a rule with fewer than ``MIN_RUNS`` of them per
implementation says ``inconclusive``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from bench.claims import seed_runs
from bench.claims.context import Context
from bench.claims.verdict import (
    INCONCLUSIVE,
    MIN_RUNS,
    NOT_SUPPORTED,
    SUPPORTED,
    TYPICAL,
    Outcome,
    Verdict,
    decide,
    mean_ci,
    p_text,
    prediction_interval,
    share_ci,
    too_few,
)
from bench.plots import plt
from bench.stats import ALPHA, welch

CLAIMS = (1, 2, 3, 4, 5)
IMPLS = tuple(seed_runs.IMPLS)
NAMES = {"numpy": "NumPy", "torch": "PyTorch"}
REPORTED = {"numpy": 0.4988, "torch": 0.4789}  # the write-up's test accuracies (docs/reference.md)
STATEMENTS = {
    1: "Test accuracy is 49.88 % for NumPy and 47.89 % for PyTorch at the reference setup.",
    2: "The training loss falls every epoch, in both implementations.",
    3: "The validation accuracy rises, but not monotonically.",
    4: "PyTorch makes a bigger drop in loss in the first epoch.",
    5: "PyTorch's validation curve fluctuates and dips more.",
}
measure = seed_runs.measure


# ---------------------------------------------------------------- per-run numbers


def per_run(runs: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """One row per finished run: test_acc; ``falls`` (the training loss fell every epoch); ``rises``
    (last validation accuracy above the first) and ``dips`` (epochs whose validation accuracy fell);
    ``dip_total`` (the summed falls of the validation accuracy); ``drop`` (the validation loss before
    the first step minus after the first epoch)."""
    rows = []
    for r in runs[runs["status"] == "ok"].itertuples():
        e = epochs[(epochs["impl"] == r.impl) & (epochs["seed"] == r.seed)].sort_values("epoch")
        loss, acc = e["train_loss"].to_numpy(float), e["val_acc"].to_numpy(float)
        step = np.diff(acc)
        rows.append({"impl": r.impl, "seed": r.seed, "test_acc": r.test_acc,
                     "falls": bool(np.all(np.diff(loss) < 0)), "rises": bool(acc[-1] > acc[0]),
                     "dips": int((step < 0).sum()), "dip_total": float(-step[step < 0].sum()),
                     "drop": r.init_val_loss - float(e["val_loss"].iloc[0])})
    return pd.DataFrame(rows, columns=["impl", "seed", "test_acc", "falls", "rises", "dips", "dip_total",
                                       "drop"])


def by_impl(table: pd.DataFrame, column: str) -> dict[str, np.ndarray]:
    return {i: table.loc[table["impl"] == i, column].to_numpy() for i in IMPLS}


# ---------------------------------------------------------------- the rules


def claim1(acc: dict[str, np.ndarray], where: str) -> list[Verdict]:
    """1a, 1b: does each reported figure lie in its implementation's 95 % prediction interval of one
    run? 1c: is NumPy's mean test accuracy above PyTorch's (Welch)? On an unofficial copy the
    absolute figures cannot be tested (inconclusive) and every reason says so (``where``: what the
    data is, empty for the official CIFAR-10)."""
    official, out = not where, []
    for sub, impl in (("1a", "numpy"), ("1b", "torch")):
        a, what = acc[impl], f"{impl} test accuracy over seeds"
        if len(a) < MIN_RUNS:
            out.append(too_few(sub, what, len(a), MIN_RUNS))
            continue
        m, lo, hi = mean_ci(a)
        plo, phi = prediction_interval(a)
        inside = plo <= REPORTED[impl] <= phi
        says = (f"the reported {100 * REPORTED[impl]:.2f} % lies {'inside' if inside else 'outside'} the "
                f"95 % prediction interval of one run, {100 * plo:.2f}-{100 * phi:.2f} %")
        if official:
            verdict, reason = SUPPORTED if inside else NOT_SUPPORTED, says
        else:
            verdict, reason = INCONCLUSIVE, (f"{where}its pixels are not the official CIFAR-10's, so its "
                                            f"accuracies cannot test a figure from the official set; {says}")
        out.append(Verdict(sub, what, len(a), f"mean {100 * m:.2f} %",
                           f"95 % CI {100 * lo:.2f}-{100 * hi:.2f} %", verdict, reason))
    v, _ = _bigger("1c", "numpy minus torch mean test accuracy (Welch's t)",
                   {i: 100 * v for i, v in acc.items()}, "points", ahead="numpy")
    return out + [dataclasses.replace(v, reason=where + v.reason)]


def _shares(id: str, what: str, shows: dict[str, np.ndarray], how: str) -> Verdict:
    """A statement about what a run looks like: supported when at least TYPICAL of each
    implementation's runs show it."""
    n = min(len(v) for v in shows.values())
    if n < MIN_RUNS:
        return too_few(id, what, n, MIN_RUNS)
    k = {i: int(v.sum()) for i, v in shows.items()}
    ci = {i: share_ci(k[i], len(v)) for i, v in shows.items()}
    ok = all(k[i] / len(v) >= TYPICAL for i, v in shows.items())
    counts = ", ".join(f"{i} {k[i]}/{len(v)}" for i, v in shows.items())
    return Verdict(id, what, n, counts, "; ".join(f"{i} 95 % CI {lo:.2f}-{hi:.2f}" for i, (lo, hi) in ci.items()),
                   SUPPORTED if ok else NOT_SUPPORTED,
                   f"{how} in {counts} runs; the rule asks for at least {TYPICAL:.0%} in each")


def claim2(falls: dict[str, np.ndarray]) -> Verdict:
    return _shares("2", "runs whose training loss fell every epoch", falls, "the training loss fell every epoch")


def claim3(rises: dict[str, np.ndarray], dips: dict[str, np.ndarray]) -> Verdict:
    shows = {i: rises[i] & (dips[i] > 0) for i in rises}
    v = _shares("3", "runs whose validation accuracy rose with at least one dip", shows,
                "the validation accuracy rose over the run and dipped at least once")
    if v.verdict == INCONCLUSIVE:
        return v
    mean = ", ".join(f"{i} {dips[i].mean():.1f}" for i in dips)
    return Verdict(v.id, v.measured, v.n, v.statistic, v.ci_or_p, v.verdict,
                   f"{v.reason}; dips per run: {mean} (mean)")


def _bigger(id: str, what: str, values: dict[str, np.ndarray], unit: str, ahead: str = "torch"
            ) -> tuple[Verdict, float]:
    """Is ``ahead``'s mean above the other implementation's (Welch's t, two-sided, at ALPHA)? Also the
    difference."""
    other = next(i for i in IMPLS if i != ahead)
    a, b = values[ahead], values[other]
    n = min(len(a), len(b))
    if n < MIN_RUNS:
        return too_few(id, what, n, MIN_RUNS), math.nan
    _, p = welch(a, b)
    diff = float(a.mean() - b.mean())
    sig = not math.isnan(p) and p < ALPHA
    reason = (f"{ahead} {a.mean():.4g} vs {other} {b.mean():.4g} {unit} (means): "
              + (f"significantly bigger in {NAMES[ahead]}" if sig and diff > 0 else
                 f"significantly bigger in {NAMES[other]}" if sig else f"not significant at {ALPHA}"))
    return Verdict(id, what, n, f"{ahead} − {other} {diff:+.4g} {unit}", p_text(p), decide(sig, diff > 0),
                   reason), diff


def claim4(drops: dict[str, np.ndarray], lock_gap: np.ndarray) -> Verdict:
    """Welch on the first-epoch drop of the validation loss; ``lock_gap`` (torch − numpy drop from the
    same weights and batches, per lock-step seed) splits the difference into the framework's part and
    the rest (initialisation and batch order)."""
    v, diff = _bigger("4", "first-epoch drop of the validation loss (Welch's t)", drops, "nats")
    if v.verdict == INCONCLUSIVE:
        return v
    if len(lock_gap):
        seeds = f"{len(lock_gap)} seed{'s' if len(lock_gap) > 1 else ''}"
        split = (f"; in lock-step (same weights and batches, {seeds}) the drops differ by "
                 f"{lock_gap.mean():+.2g} nats (largest {np.abs(lock_gap).max():.2g}): that much of the "
                 f"{diff:+.3g} is the framework's, {diff - lock_gap.mean():+.3g} initialisation and batch "
                 f"order (seed-to-seed std of the drop: numpy {drops['numpy'].std(ddof=1):.3g}, torch "
                 f"{drops['torch'].std(ddof=1):.3g})")
    else:
        split = "; no lock-step run finished, so the difference is not split"
    return Verdict(v.id, v.measured, v.n, v.statistic, v.ci_or_p, v.verdict, v.reason + split)


def claim5(dip_total: dict[str, np.ndarray]) -> Verdict:
    scaled = {i: 100 * v for i, v in dip_total.items()}  # accuracy points
    v, _ = _bigger("5", "summed dips of the validation accuracy per run (Welch's t)", scaled, "points")
    return v


# ---------------------------------------------------------------- claims.md


def judge(m: seed_runs.SeedRuns, ctx: Context) -> list[Outcome]:
    official = ctx.official
    t = per_run(m.runs, m.epochs)
    acc, drops = by_impl(t, "test_acc"), by_impl(t, "drop")
    lock = m.lockstep
    gap = ((lock["init_val_loss_torch"] - lock["val_loss_torch"])
           - (lock["init_val_loss_numpy"] - lock["val_loss_numpy"])).to_numpy(float)
    n_ok = {i: len(v) for i, v in acc.items()}
    ran = (f"{len(ctx.config.seeds)} seeds × numpy:cpu and torch:cpu at the config "
           f"({ctx.config.epochs} epochs), {n_ok['numpy']} and {n_ok['torch']} runs finished ok")
    return [
        Outcome(1, STATEMENTS[1], claim1(acc, ctx.data_words),
                f"Test accuracy of the best-validation model of each run ({ran}). The band is the 95 % "
                "prediction interval of one more run; the stars are the write-up's two figures."
                + ("" if official else f" Measured {ctx.data_words.rstrip(': ')}, so the absolute "
                                       "accuracies are not those of the official CIFAR-10."),
                _strip(acc, "test accuracy", reported=REPORTED), {"per_run.csv": t}),
        Outcome(2, STATEMENTS[2], [claim2(by_impl(t, "falls"))],
                f"The mean training loss of every epoch, one line per run ({ran}).",
                _curves(m, "train_loss", "training loss (mean over the epoch)")),
        Outcome(3, STATEMENTS[3], [claim3(by_impl(t, "rises"), by_impl(t, "dips"))],
                f"The validation accuracy after every epoch, one line per run; a dot marks a dip ({ran}).",
                _curves(m, "val_acc", "validation accuracy", dips=True)),
        Outcome(4, STATEMENTS[4], [claim4(drops, gap)],
                "The validation loss before the first step minus after the first epoch, per run. The third "
                "column is PyTorch's drop minus NumPy's at the same seed (the same batches, each its own "
                "initial weights); the fourth the same difference in lock-step, PyTorch rerun from NumPy's "
                "initial weights: what is left there is the framework's.",
                _strip({**drops, "torch − numpy,\nsame seed": _paired(t, "drop"),
                        "torch − numpy,\nlock-step": gap}, "first-epoch drop of the val loss (nats)")),
        Outcome(5, STATEMENTS[5], [claim5(by_impl(t, "dip_total"))],
                "Per run, the summed falls of the validation accuracy from one epoch to the next (0: it "
                "never fell).", _strip({i: 100 * v for i, v in by_impl(t, "dip_total").items()},
                                      "summed dips of the val accuracy (points)")),
    ]


def _paired(t: pd.DataFrame, column: str) -> np.ndarray:
    """torch − numpy of ``column`` at every seed where both finished."""
    wide = t.pivot_table(index="seed", columns="impl", values=column).dropna()
    return (wide["torch"] - wide["numpy"]).to_numpy() if set(IMPLS) <= set(wide) else np.zeros(0)


def _strip(groups: dict[str, np.ndarray], ylabel: str, reported: dict[str, float] | None = None):
    """One column of points per group, its mean and 95 % CI; ``reported`` values as stars, with the
    95 % prediction interval of one run as a band."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    rng = np.random.default_rng(0)  # the jitter only
    for j, (name, v) in enumerate(groups.items()):
        v = np.asarray(v, float)
        ax.scatter(j + rng.uniform(-0.12, 0.12, len(v)), v, s=18, alpha=0.7)
        if len(v) > 1:
            m, lo, hi = mean_ci(v)
            ax.errorbar(j + 0.25, m, yerr=[[m - lo], [hi - m]], fmt="o", color="black", capsize=4)
        if reported and name in reported and len(v) > 1:
            plo, phi = prediction_interval(v)
            ax.fill_between([j - 0.3, j + 0.3], plo, phi, color="tab:gray", alpha=0.2)
            ax.scatter([j], [reported[name]], marker="*", s=220, color="tab:red", zorder=3,
                       label="the write-up's figure" if j == 0 else None)
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if reported:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _curves(m: seed_runs.SeedRuns, column: str, ylabel: str, dips: bool = False):
    """``column`` per epoch, a thin line per run, one colour per implementation."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ok = m.runs.loc[m.runs["status"] == "ok", ["impl", "seed"]]
    for colour, impl in zip(("tab:blue", "tab:orange"), IMPLS):
        for j, seed in enumerate(ok.loc[ok["impl"] == impl, "seed"]):
            e = m.epochs[(m.epochs["impl"] == impl) & (m.epochs["seed"] == seed)].sort_values("epoch")
            y = e[column].to_numpy(float)
            ax.plot(e["epoch"], y, color=colour, lw=0.8, alpha=0.6, label=None if j else impl)
            if dips:
                fell = np.flatnonzero(np.diff(y) < 0) + 1
                ax.scatter(e["epoch"].to_numpy()[fell], y[fell], color=colour, s=10)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
