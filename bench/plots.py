"""Every figure's one matplotlib set-up (headless), and the comparison's figures; each returns a Figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.lockstep import CONTROL_SUFFIX  # noqa: E402
from bench.timing import OK  # noqa: E402


def _per_epoch(epochs: pd.DataFrame, column: str, ylabel: str, title: str):
    """Mean over seeds per backend and epoch, with a min-max band across seeds."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for backend, ep in epochs.groupby("backend", sort=False):
        g = ep.groupby("epoch")[column]
        mean, lo, hi, n = g.mean(), g.min(), g.max(), int(ep["seed"].nunique())
        (line,) = ax.plot(mean.index, mean.to_numpy(), marker="o", ms=3, label=f"{backend} (n={n})")
        if n > 1:
            ax.fill_between(mean.index, lo.to_numpy(), hi.to_numpy(), color=line.get_color(), alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title + (" — mean, band = min..max over seeds" if epochs["seed"].nunique() > 1 else ""))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def train_loss(epochs: pd.DataFrame):
    return _per_epoch(epochs, "train_loss", "training loss (mean over the epoch's batches)",
                      "Training loss")


def val_acc(epochs: pd.DataFrame):
    return _per_epoch(epochs, "val_acc", "validation accuracy", "Validation accuracy")


def epoch_time(summary: pd.DataFrame):
    """Per backend the median over the trusted epochs, whiskers from the first to the third quartile,
    against its GEMM-only time and fixed-cost floor (over the same epochs).

    A backend whose timing is flagged gets a hatched bar; one with no trusted epoch gets no bar, only
    the words.
    """
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    x = np.arange(len(summary))
    med = summary["median_epoch_seconds_trusted"].to_numpy(float)
    q25 = summary["epoch_seconds_q25_trusted"].to_numpy(float)
    q75 = summary["epoch_seconds_q75_trusted"].to_numpy(float)
    flagged = ~summary.get("timing_quality", pd.Series([OK] * len(summary))).eq(OK).to_numpy()
    bars = ax.bar(x, np.nan_to_num(med), yerr=np.nan_to_num([med - q25, q75 - med]), capsize=4,
                  color="tab:blue", alpha=0.7, label="median of the trusted epochs (whiskers Q1–Q3)")
    for i, (bar, bad) in enumerate(zip(bars, flagged)):
        if bad:
            bar.set_hatch("//")
            bar.set_alpha(0.35)
        if np.isnan(med[i]):
            ax.text(i, 0, "no trusted\nepoch", ha="center", va="bottom", fontsize=8)
    labelled = set()
    for i, row in enumerate(summary.to_dict("records")):
        gemm = row.get("gemm_seconds_trusted", np.nan)
        if np.isfinite(gemm):
            ax.hlines(gemm, i - 0.4, i + 0.4, colors="tab:red", linestyles="--",
                      label=None if "gemm" in labelled else "GEMM-only time (median, trusted epochs)")
            labelled.add("gemm")
            floor = row.get("ratio_floor", np.nan)
            if np.isfinite(floor):
                ax.hlines(gemm * floor, i - 0.4, i + 0.4, colors="black", linestyles=":",
                          label=None if "floor" in labelled else "fixed-cost floor")
                labelled.add("floor")
    names = [b + ("\n(flagged, see report)" if bad else "") for b, bad in zip(summary["backend"], flagged)]
    ax.set_xticks(x, names, rotation=15, fontsize=8)
    ax.set_ylabel("seconds per epoch")
    title = "Epoch time (training only, device synchronised), trusted epochs"
    if flagged.any():
        title += "\nhatched: timing flagged, not a finding (report.md says why)"
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def lockstep(steps: pd.DataFrame):
    """Per-step loss of every backend and its absolute difference to the first backend."""
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(6.4, 5.2), sharex=True)
    seed = steps["seed"].iloc[0]
    s = steps[steps["seed"] == seed]
    ref_name = s["backend"].iloc[0]
    ref = s[s["backend"] == ref_name].set_index("step")["loss"]
    for backend, st in s.groupby("backend", sort=False):
        loss = st.set_index("step")["loss"]
        ax1.plot(loss.index, loss.to_numpy(), lw=0.8, label=backend)
        if backend != ref_name:
            diff = (loss - ref).abs().to_numpy()
            control = backend.endswith(CONTROL_SUFFIX)
            ax2.semilogy(loss.index, np.maximum(diff, 1e-12), lw=0.8, ls="--" if control else "-",
                         color="0.5" if control else None,
                         label=f"|{backend} − {ref_name}|" + (" (float32 control)" if control else ""))
    ax1.set_ylabel("batch loss")
    ax1.set_title(f"Lock-step run, seed {seed}")
    ax1.legend()
    ax2.set_xlabel("step")
    ax2.set_ylabel("absolute loss difference")
    ax2.legend()
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
