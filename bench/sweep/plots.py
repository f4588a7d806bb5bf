"""The sweep's PNGs (matplotlib, headless): the epoch-time ratio map per device, accuracy per point.

Both are heatmaps over the first two grid fields (x: the first, y: the
second); a grid with more fields gets one PNG per combination of the others.
Cells are equally spaced whatever the values, so a log-spaced grid
(32, 128, 512, ...) is drawn on a log scale. A figure is at most
``MAX_INCHES`` wide and high whatever the grid (cells shrink instead), and
cells are annotated only while there is room for the text.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from bench.io import FIGURE_INCHES as MAX_INCHES  # the largest width or height of a figure
from bench.plots import plt
from bench.sweep.analysis import flag_matrix, matrix

MAX_ANNOTATED = 400  # cells with a number written in them, at most


def _size(width: float, height: float) -> tuple[float, float]:
    return min(width, MAX_INCHES), min(height, MAX_INCHES)


def _axes_labels(ax, grid: dict[str, list[str]], ylabel: bool = True) -> None:
    fields = list(grid)
    ax.set_xticks(range(len(grid[fields[0]])), grid[fields[0]])
    ax.set_xlabel(fields[0])
    if len(fields) > 1:
        ax.set_yticks(range(len(grid[fields[1]])), grid[fields[1]])
        if ylabel:
            ax.set_ylabel(fields[1])
    else:
        ax.set_yticks([])


def _title_suffix(fixed: dict[str, str]) -> str:
    return (" — " + ", ".join(f"{k}={v}" for k, v in fixed.items())) if fixed else ""


def crosses_one(z: np.ndarray) -> bool:
    """Whether a level-1 contour exists: 2-D, with finite ratios on both sides of 1."""
    finite = z[np.isfinite(z)]
    return bool(z.shape[0] >= 2 and z.shape[1] >= 2 and (finite < 1).any() and (finite > 1).any())


def plot_ratio(ratios: pd.DataFrame, grid: dict[str, list[str]], device: str, fixed: dict[str, str],
               subtitle: str = ""):
    """Heatmap of NumPy / PyTorch median epoch time on ``device``, annotated, with the ratio-1 contour.

    Colour is log2 of the ratio, centred on 1 (white): blue where PyTorch is
    faster (ratio > 1), red where NumPy is. Grey cells have no finished pair
    with trusted epochs; a "?" marks a cell whose timing is flagged (not a
    finding), and the contour never passes through one.
    """
    sel = ratios[ratios["device"] == device]
    z = matrix(sel, grid, "ratio", fixed)
    flags = flag_matrix(sel, grid, fixed)
    nx, ny = z.shape[1], z.shape[0]
    fig, ax = plt.subplots(figsize=_size(max(6.4, 1.3 * nx + 2.8), 1.0 * ny + 2.4))
    logz = np.log2(z)
    span = max(1.0, float(np.nanmax(np.abs(logz)))) if np.isfinite(logz).any() else 1.0
    cmap = plt.get_cmap("RdBu").with_extremes(bad="0.85")
    im = ax.imshow(np.ma.masked_invalid(logz), cmap=cmap, vmin=-span, vmax=span, origin="lower",
                   aspect="auto")
    for i in range(ny if nx * ny <= MAX_ANNOTATED else 0):
        for j in range(nx):
            text = (f"{z[i, j]:.3g}×" if np.isfinite(z[i, j]) else "" if flags[i][j] else "—") \
                + ("?" if flags[i][j] else "")
            dark = np.isfinite(logz[i, j]) and abs(logz[i, j]) > 0.6 * span
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if dark else "black")
    contour = False
    clean = np.where([[bool(f) for f in row] for row in flags], np.nan, z)  # no line through a "?"
    if crosses_one(clean):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # masked cells may leave no segment in a corner
            cs = ax.contour(np.arange(nx), np.arange(ny), np.ma.masked_invalid(np.log2(clean)),
                            levels=[0.0], colors="black", linewidths=2.0)
        contour = bool(cs.allsegs and any(len(seg) for seg in cs.allsegs[0]))
    step = max(1.0, np.ceil(span / 4))  # at most nine ticks, at powers of two
    ticks = np.arange(-np.floor(span / step), np.floor(span / step) + 1) * step
    cbar = fig.colorbar(im, ax=ax, ticks=ticks)
    cbar.ax.set_yticklabels([f"{2.0 ** t:g}×" for t in ticks])
    cbar.set_label("NumPy / PyTorch (>1: PyTorch faster)")
    _axes_labels(ax, grid)
    finite = z[np.isfinite(z)]
    note = ("black line: ratio = 1, drawn between unflagged cells only (see report.md)" if contour
            else "the ratio crosses 1 (see report.md)" if (finite < 1).any() and (finite > 1).any()
            else "the ratio does not cross 1")
    if any(f for row in flags for f in row):
        note += "; ?: timing flagged, not a finding"
    ax.set_title("\n".join([f"NumPy / PyTorch median epoch time on {device}{_title_suffix(fixed)}",
                            *([subtitle] if subtitle else []), note]), fontsize=9)
    return fig


def plot_accuracy(acc: pd.DataFrame, grid: dict[str, list[str]], fixed: dict[str, str]):
    """One heatmap per backend of the mean test accuracy (%) per point; failed cells show their status."""
    backends = list(dict.fromkeys(acc["backend"]))
    fields = list(grid)
    nx = len(grid[fields[0]])
    ny = len(grid[fields[1]]) if len(fields) > 1 else 1
    fig, axes = plt.subplots(1, len(backends), figsize=_size(len(backends) * (1.1 * nx + 1.6) + 1.2,
                                                             0.9 * ny + 2.0), squeeze=False)
    values = acc["test_acc_mean"].astype(float)
    vmin = float(np.nanmin(values)) * 100 if values.notna().any() else 0.0
    vmax = float(np.nanmax(values)) * 100 if values.notna().any() else 100.0
    im = None
    for k, (ax, backend) in enumerate(zip(axes[0], backends)):
        sel = acc[acc["backend"] == backend]
        z = matrix(sel, grid, "test_acc_mean", fixed) * 100
        failed = matrix(sel.assign(f=sel["failed"].ne("").astype(float)), grid, "f", fixed)
        status = {(r[fields[1]] if len(fields) > 1 else "", r[fields[0]]): r["failed"]
                  for r in _select(sel, fixed).to_dict("records")}
        cmap = plt.get_cmap("viridis").with_extremes(bad="0.85")
        im = ax.imshow(np.ma.masked_invalid(z), cmap=cmap, vmin=vmin, vmax=max(vmax, vmin + 1e-9),
                       origin="lower", aspect="auto")
        ys = grid[fields[1]] if len(fields) > 1 else [""]
        for i, yv in enumerate(ys if nx * len(ys) <= MAX_ANNOTATED else []):
            for j, xv in enumerate(grid[fields[0]]):
                if np.isfinite(z[i, j]):
                    text = f"{z[i, j]:.1f}" + ("*" if failed[i, j] == 1 else "")
                else:
                    text = status.get((yv, xv)) or "—"
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if np.isfinite(z[i, j]) and z[i, j] < (vmin + vmax) / 2 else "black")
        _axes_labels(ax, grid, ylabel=k == 0)
        ax.set_title(backend, fontsize=10)
    fig.colorbar(im, ax=list(axes[0]), label="test accuracy %")
    fig.suptitle(f"Test accuracy per grid point (mean over seeds){_title_suffix(fixed)}; "
                 "* = some seeds failed", fontsize=10)
    return fig


def _select(frame: pd.DataFrame, fixed: dict[str, str]) -> pd.DataFrame:
    for f, v in fixed.items():
        frame = frame[frame[f] == v]
    return frame
