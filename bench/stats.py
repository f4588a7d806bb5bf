"""Summary statistics and significance tests across seeds (Welch's t, scipy)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

ALPHA = 0.05  # significance level used in the report's sentences
SPLIT_COLUMNS = ("data_seconds", "compute_seconds")  # epochs.csv columns some backends add


def summarise(runs: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """One row per backend: n, test accuracy mean/std, median epoch time and its spread.

    Epoch times are pooled over every seed's epochs after the first (the first
    epoch of a run is kept out of the spread: it pays one-off costs the warm-up
    may not cover); with one epoch per run, that epoch is used.
    """
    rows = []
    for backend, r in runs.groupby("backend", sort=False):
        ok = r[r["status"] == "ok"]
        ep = epochs[epochs["backend"] == backend]
        times = _steady_epoch_times(ep)
        q25, q50, q75 = (np.percentile(times, [25, 50, 75]) if len(times) else (math.nan,) * 3)
        rows.append({
            "backend": backend,
            "n": len(ok),
            "n_failed": len(r) - len(ok),
            "test_acc_mean": ok["test_acc"].mean() if len(ok) else math.nan,
            "test_acc_std": ok["test_acc"].std(ddof=1) if len(ok) > 1 else math.nan,
            "median_epoch_seconds": q50,
            "epoch_seconds_iqr": q75 - q25,
            "epoch_seconds_min": float(np.min(times)) if len(times) else math.nan,
            "n_epochs_timed": len(times),
            # per-epoch splits a backend records in StepRecords.extra (torch-dataloader: data/compute)
            **{f"median_{c}": _steady_median(ep, c) for c in SPLIT_COLUMNS if c in ep},
        })
    return pd.DataFrame(rows)


def _steady_median(ep: pd.DataFrame, column: str) -> float:
    """Median of ``column`` over the same epochs as the epoch times; NaN where never recorded."""
    later = ep[ep["epoch"] > 1]
    values = (later if len(later) else ep)[column].dropna()
    return float(values.median()) if len(values) else math.nan


def _steady_epoch_times(ep: pd.DataFrame) -> np.ndarray:
    if ep.empty:
        return np.array([])
    later = ep[ep["epoch"] > 1]
    use = later if len(later) else ep
    return use["epoch_seconds"].to_numpy(dtype=float)


def welch(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(t, two-sided p) of Welch's unequal-variance t-test; NaN when either side has < 2 values."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2 or (np.var(a) == 0 and np.var(b) == 0):
        return math.nan, math.nan
    from scipy import stats  # here, not at import: sweep workers never test

    res = stats.ttest_ind(a, b, equal_var=False)
    return float(res.statistic), float(res.pvalue)


def compare_pairs(runs: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Every pair of backends: accuracy difference over seeds and speed difference over epochs, tested."""
    rows = []
    ok = runs[runs["status"] == "ok"]
    for a, b in itertools.combinations(list(dict.fromkeys(runs["backend"])), 2):
        acc_a = ok.loc[ok["backend"] == a, "test_acc"].to_numpy()
        acc_b = ok.loc[ok["backend"] == b, "test_acc"].to_numpy()
        t_a = _steady_epoch_times(epochs[epochs["backend"] == a])
        t_b = _steady_epoch_times(epochs[epochs["backend"] == b])
        _, p_acc = welch(acc_a, acc_b)
        _, p_time = welch(t_a, t_b)
        rows.append({
            "a": a, "b": b,
            "acc_diff": (acc_a.mean() - acc_b.mean()) if len(acc_a) and len(acc_b) else math.nan,
            "acc_p": p_acc, "n_a": len(acc_a), "n_b": len(acc_b),
            "time_ratio": (np.median(t_a) / np.median(t_b)) if len(t_a) and len(t_b) else math.nan,
            "time_p": p_time, "epochs_a": len(t_a), "epochs_b": len(t_b),
        })
    return pd.DataFrame(rows)


def verdict(p: float) -> str:
    if math.isnan(p):
        return "cannot be tested (fewer than two values on a side)"
    return (f"significant (p = {p:.3g} < {ALPHA})" if p < ALPHA
            else f"not significant (p = {p:.3g} >= {ALPHA})")


def pair_sentences(pairs: pd.DataFrame) -> list[str]:
    """The report's plain-words reading of :func:`compare_pairs`."""
    out = []
    for r in pairs.itertuples():
        out.append(f"{r.a} vs {r.b}: test accuracy differs by {100 * r.acc_diff:+.2f} points "
                   f"(n = {r.n_a} vs {r.n_b} seeds, Welch's t): {verdict(r.acc_p)}. "
                   f"Median epoch time ratio {r.time_ratio:.3g} ({r.epochs_a} vs {r.epochs_b} epochs, "
                   f"Welch's t on epoch times): {verdict(r.time_p)}.")
    return out
