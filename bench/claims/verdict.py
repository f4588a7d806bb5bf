"""A claim's verdict and the statistics every verdict rule shares (no measurement here).

A verdict is ``supported``, ``not supported`` or ``inconclusive``, always with
its reason. A rule never gives one of the first two on fewer values than its
test needs: it says ``inconclusive`` and how many it had (:func:`too_few`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from bench.stats import ALPHA

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
MIN_RUNS = 10   # runs per implementation a claim about the seed distribution needs (claims 1-5)
MIN_SEEDS = 3   # seeds a claim measured per seed needs (claims 6-8; a paired t-test: 2 degrees of freedom)
TYPICAL = 0.8   # a statement about what a run looks like holds when this share of the runs shows it
COLUMNS = ("id", "measured", "n", "statistic", "ci_or_p", "verdict", "reason")


@dataclass(frozen=True)
class Verdict:
    """One row of claims.csv."""

    id: str          # the claim's id, e.g. "1a"
    measured: str    # what was measured, in words
    n: int           # how many values the test rests on
    statistic: str
    ci_or_p: str
    verdict: str     # SUPPORTED, NOT_SUPPORTED or INCONCLUSIVE
    reason: str


@dataclass
class Outcome:
    """A claim as claims.md shows it: its statement, verdicts, a paragraph and a figure."""

    number: int
    statement: str
    verdicts: list[Verdict]
    text: str
    figure: Any = None             # a matplotlib Figure, saved by the command as claim<number>.png
    tables: dict[str, Any] = field(default_factory=dict)  # extra CSVs: {file name: DataFrame}


def too_few(id: str, measured: str, n: int, need: int, unit: str = "runs per implementation") -> Verdict:
    return Verdict(id, measured, n, "", "", INCONCLUSIVE,
                   f"{n} {unit}; the test needs at least {need}")


def provisional(v: Verdict) -> Verdict:
    """The --quick form: less data and smaller nets, so every verdict says it is provisional."""
    return replace(v, reason=f"provisional (--quick: less data, smaller nets): {v.reason}")


DATA_CLAIMS = (1, 2, 3, 4, 5, 7)  # about networks trained on CIFAR-10: no verdict from synthetic data


def on_synthetic(v: Verdict) -> Verdict:
    """--dataset synthetic: a smoke test of the command; no claim about CIFAR-10 is decided by it."""
    return replace(v, verdict=INCONCLUSIVE, reason=f"on synthetic data, a smoke test of the command and "
                                                  f"not CIFAR-10 (as measured: {v.verdict}): {v.reason}")


def decide(significant: bool, right_way: bool) -> str:
    """A directional claim: supported only when the difference is significant and the right way round."""
    return SUPPORTED if significant and right_way else NOT_SUPPORTED


def mean_ci(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and its 95 % t-interval (NaN bounds with fewer than 2 values)."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    m = float(v.mean()) if len(v) else math.nan
    if len(v) < 2:
        return m, math.nan, math.nan
    half = stats.t.ppf(1 - ALPHA / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return m, m - half, m + half


def prediction_interval(values: np.ndarray) -> tuple[float, float]:
    """95 % interval for one more run from the same distribution: mean ± t s √(1 + 1/n)."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    half = stats.t.ppf(1 - ALPHA / 2, len(v) - 1) * v.std(ddof=1) * math.sqrt(1 + 1 / len(v))
    return float(v.mean() - half), float(v.mean() + half)


def share_ci(k: int, n: int) -> tuple[float, float]:
    """Clopper-Pearson 95 % interval of a share k/n."""
    from scipy import stats

    ci = stats.binomtest(k, n).proportion_ci(confidence_level=1 - ALPHA)
    return float(ci.low), float(ci.high)


def p_text(p: float) -> str:
    return "p n/a" if math.isnan(p) else f"p = {p:.2g}"
