"""Summary statistics and significance tests across seeds (Welch's t, scipy)."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pandas as pd

from bench.timing import summarise_timing, trusted_epochs

ALPHA = 0.05  # significance level used in the report's sentences
FAILED = ("diverged", "failed", "oom")  # run statuses counted as failed (interrupted is counted apart)


def summarise(runs: pd.DataFrame, epochs: pd.DataFrame, flop: int | None = None,
              by: tuple[str, ...] = ("backend",)) -> pd.DataFrame:
    """The one summary: a row per backend (per group of ``by``): n, test accuracy mean/std, its epoch
    timing (``bench.timing``) and, given the ``flop`` of one epoch's matrix products, the GFLOP/s.

    Timing columns (``bench.timing.summarise_timing``): the median over all
    epochs (``*_all``), and over the trusted epochs (``*_trusted``) the median,
    minimum, quartiles, GEMM-only time and epoch/GEMM ratio, the fixed-cost
    floor, and a ``timing_quality`` verdict. ``achieved_gflops`` and
    ``gemm_gflops``: ``flop`` over the trusted median epoch and GEMM-only times.
    """
    rows = []
    keys = [k for k in by if k in runs]
    for key, r in runs.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        ep = epochs
        for k, v in zip(keys, key):
            ep = ep[ep[k] == v] if len(ep) else ep
        ok = r[r["status"] == "ok"]
        row = {
            **dict(zip(keys, key)),
            "n": len(ok),
            "n_failed": int(r["status"].isin(FAILED).sum()),
            "n_interrupted": int((r["status"] == "interrupted").sum()),
            "test_acc_mean": ok["test_acc"].mean() if len(ok) else math.nan,
            "test_acc_std": ok["test_acc"].std(ddof=1) if len(ok) > 1 else math.nan,
            # a compiling backend's compile time: its first run's (later seeds reuse what it compiled)
            "compile_seconds": r["compile_seconds"].max() if "compile_seconds" in r else math.nan,
            **summarise_timing(ep),
        }
        if flop is not None:
            for name, seconds in (("achieved_gflops", row["median_epoch_seconds_trusted"]),
                                  ("gemm_gflops", row.get("gemm_seconds_trusted", math.nan))):
                row[name] = flop / seconds / 1e9 if seconds > 0 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def welch(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(t, two-sided p) of Welch's unequal-variance t-test; NaN when either side has < 2 values."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2 or (np.var(a) == 0 and np.var(b) == 0):
        return math.nan, math.nan
    from scipy import stats  # here, not at import: sweep workers never test

    with warnings.catch_warnings():  # nearly identical values: scipy warns, the p-value stands
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_ind(a, b, equal_var=False)
    return float(res.statistic), float(res.pvalue)


def compare_pairs(runs: pd.DataFrame, epochs: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Every pair of backends: accuracy difference over seeds, speed over the trusted epochs, tested.

    The speed columns come from ``summary`` (the trusted medians) and the
    trusted epochs themselves (Welch's t): ``time_ratio_trusted`` is a / b of the
    median epoch times, and the difference of those medians is split into the
    GEMM-only time and everything else (``rest_diff_seconds`` = epoch difference
    − GEMM-only difference).
    """
    rows = []
    ok = runs[runs["status"] == "ok"]
    s = summary.set_index("backend")
    for a, b in itertools.combinations(list(dict.fromkeys(runs["backend"])), 2):
        acc_a = ok.loc[ok["backend"] == a, "test_acc"].to_numpy()
        acc_b = ok.loc[ok["backend"] == b, "test_acc"].to_numpy()
        t_a, t_b = (trusted_epochs(epochs[epochs["backend"] == x])["epoch_seconds"].to_numpy(float)
                    if len(epochs) else np.array([]) for x in (a, b))
        _, p_acc = welch(acc_a, acc_b)
        _, p_time = welch(t_a, t_b)
        med_a, med_b = (s.at[x, "median_epoch_seconds_trusted"] for x in (a, b))
        gemm_a, gemm_b = (s.at[x, "gemm_seconds_trusted"] if "gemm_seconds_trusted" in s else math.nan
                          for x in (a, b))
        rows.append({
            "a": a, "b": b,
            "acc_a": acc_a.mean() if len(acc_a) else math.nan,
            "acc_b": acc_b.mean() if len(acc_b) else math.nan,
            "acc_diff": (acc_a.mean() - acc_b.mean()) if len(acc_a) and len(acc_b) else math.nan,
            "acc_p": p_acc, "n_a": len(acc_a), "n_b": len(acc_b),
            "epoch_seconds_trusted_a": med_a, "epoch_seconds_trusted_b": med_b,
            "time_ratio_trusted": med_a / med_b, "time_p": p_time,
            "trusted_epochs_a": len(t_a), "trusted_epochs_b": len(t_b),
            "gemm_seconds_trusted_a": gemm_a, "gemm_seconds_trusted_b": gemm_b,
            "epoch_diff_seconds": med_a - med_b, "gemm_diff_seconds": gemm_a - gemm_b,
            "rest_diff_seconds": (med_a - med_b) - (gemm_a - gemm_b),
        })
    return pd.DataFrame(rows)


def verdict(p: float) -> str:
    if math.isnan(p):
        return "cannot be tested (fewer than two values on a side)"
    return (f"significant (p = {p:.3g} < {ALPHA})" if p < ALPHA
            else f"not significant (p = {p:.3g} >= {ALPHA})")


def _which(p: float, diff: float, a: str, b: str, better: str, neither: str) -> str:
    """The conclusion of a test: which side is ``better`` when significant, else ``neither``."""
    return f"{a if diff > 0 else b} is {better}" if p < ALPHA else neither


def accuracy_sentence(r) -> str:
    """The accuracy verdict of one row of :func:`compare_pairs`."""
    none = [x for x, n in ((r.a, r.n_a), (r.b, r.n_b)) if n == 0]
    if none:
        return f"{r.a} vs {r.b}: no accuracy verdict, {' and '.join(none)} finished no run."
    head = (f"{r.a} vs {r.b}: test accuracy {100 * r.acc_a:.2f} % vs {100 * r.acc_b:.2f} % "
            f"({100 * r.acc_diff:+.2f} points")
    if min(r.n_a, r.n_b) < 2:
        return (f"{head}, n = {r.n_a} vs {r.n_b} seeds): no accuracy verdict, Welch's t needs at "
                "least two seeds on each side.")
    return (f"{head}, n = {r.n_a} vs {r.n_b} seeds, Welch's t): {verdict(r.acc_p)}"
            + ("" if math.isnan(r.acc_p) else ", so " + _which(
                r.acc_p, r.acc_diff, r.a, r.b, "more accurate",
                f"no evidence that either is more accurate at n = {min(r.n_a, r.n_b)}")) + ".")


def speed_sentence(r, flagged: set[str] = frozenset(), libraries: dict[str, str] | None = None) -> str:
    """The speed verdict of one row of :func:`compare_pairs`: none for a flagged timing; with the
    split of the difference into GEMM-only time (on ``libraries``) and everything else."""
    none = [x for x, n in ((r.a, r.trusted_epochs_a), (r.b, r.trusted_epochs_b)) if n == 0]
    if none:
        return f"No speed verdict: {' and '.join(none)} had no trusted epoch."
    medians = (f"median epoch time over the trusted epochs {r.epoch_seconds_trusted_a:.4g} s vs "
               f"{r.epoch_seconds_trusted_b:.4g} s (ratio {r.time_ratio_trusted:.3g}; "
               f"{r.trusted_epochs_a} vs {r.trusted_epochs_b} trusted epochs)")
    bad = sorted({r.a, r.b} & set(flagged))
    if bad:
        return f"No speed verdict: {medians}, not a finding: the timing of {' and '.join(bad)} is flagged."
    text = (f"Speed: {medians}, Welch's t on the epoch times: {verdict(r.time_p)}"
            + ("" if math.isnan(r.time_p) else ", so " + _which(
                r.time_p, -r.epoch_diff_seconds, r.a, r.b, "faster", "no evidence that either is "
                "faster")) + ".")
    if math.isfinite(r.gemm_diff_seconds):
        libs = libraries or {}
        on = (f" ({libs[r.a]} vs {libs[r.b]})" if r.a in libs and r.b in libs else "")
        text += (f" Of the {r.epoch_diff_seconds:+.3g} s difference, the GEMM-only time{on} accounts "
                 f"for {r.gemm_diff_seconds:+.3g} s ({r.gemm_seconds_trusted_a:.4g} vs "
                 f"{r.gemm_seconds_trusted_b:.4g} s) and everything else for "
                 f"{r.rest_diff_seconds:+.3g} s.")
    return text


def pair_sentences(pairs: pd.DataFrame, flagged: set[str] = frozenset(),
                   libraries: dict[str, str] | None = None) -> list[str]:
    """The plain-words reading of :func:`compare_pairs`, one sentence pair per pair of backends."""
    return [f"{accuracy_sentence(r)} {speed_sentence(r, flagged, libraries)}" for r in pairs.itertuples()]
