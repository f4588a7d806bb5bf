"""Summary statistics and significance tests across seeds (Welch's t, scipy)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from bench.timing import steady_epochs, summarise_timing, trusted_epochs

ALPHA = 0.05  # significance level used in the report's sentences
SPLIT_COLUMNS = ("data_seconds", "compute_seconds")  # epochs.csv columns some backends add
FAILED = ("diverged", "failed", "oom")  # run statuses counted as failed (interrupted is counted apart)


def summarise(runs: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """One row per backend: n, test accuracy mean/std, and its epoch timing (``bench.timing``).

    Timing columns: median and minimum epoch time and epoch/GEMM ratio over
    the epochs that can be trusted, their spread, the fixed-cost floor and a
    ``timing_quality`` verdict (``bench.timing.summarise_timing``).
    """
    rows = []
    for backend, r in runs.groupby("backend", sort=False):
        ok = r[r["status"] == "ok"]
        ep = epochs[epochs["backend"] == backend] if len(epochs) else epochs
        rows.append({
            "backend": backend,
            "n": len(ok),
            "n_failed": int(r["status"].isin(FAILED).sum()),
            "n_interrupted": int((r["status"] == "interrupted").sum()),
            "test_acc_mean": ok["test_acc"].mean() if len(ok) else math.nan,
            "test_acc_std": ok["test_acc"].std(ddof=1) if len(ok) > 1 else math.nan,
            # a compiling backend's compile time: its first run's (later seeds reuse what it compiled)
            "compile_seconds": r["compile_seconds"].max() if "compile_seconds" in r else math.nan,
            **summarise_timing(ep),
            # per-epoch splits a backend records in StepRecords.extra (torch-dataloader: data/compute)
            **{f"median_{c}": _steady_median(ep, c) for c in SPLIT_COLUMNS if c in ep},
        })
    return pd.DataFrame(rows)


def _steady_median(ep: pd.DataFrame, column: str) -> float:
    """Median of ``column`` over the steady epochs; NaN where never recorded."""
    values = steady_epochs(ep)[column].dropna()
    return float(values.median()) if len(values) else math.nan


def _trusted_epoch_times(ep: pd.DataFrame) -> np.ndarray:
    """The epoch times a summary uses (``bench.timing.trusted_epochs``)."""
    return trusted_epochs(ep)["epoch_seconds"].to_numpy(dtype=float) if len(ep) else np.array([])


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
        t_a = _trusted_epoch_times(epochs[epochs["backend"] == a])
        t_b = _trusted_epoch_times(epochs[epochs["backend"] == b])
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


def pair_sentences(pairs: pd.DataFrame, flagged: set[str] = frozenset()) -> list[str]:
    """The report's plain-words reading of :func:`compare_pairs`; no speed verdict for a flagged timing."""
    out = []
    for r in pairs.itertuples():
        acc = (f"{r.a} vs {r.b}: test accuracy differs by {100 * r.acc_diff:+.2f} points "
               f"(n = {r.n_a} vs {r.n_b} seeds, Welch's t): {verdict(r.acc_p)}.")
        bad = sorted({r.a, r.b} & set(flagged))
        if bad:
            speed = (f" Median epoch time ratio {r.time_ratio:.3g}, not a finding: the timing of "
                     f"{' and '.join(bad)} is flagged.")
        else:
            speed = (f" Median epoch time ratio {r.time_ratio:.3g} ({r.epochs_a} vs {r.epochs_b} "
                     f"trusted epochs, Welch's t on epoch times): {verdict(r.time_p)}.")
        out.append(acc + speed)
    return out
