"""The numbers the sweep's plots and report draw: epoch-time ratios, accuracies, crossovers.

All functions take the rows of ``sweep.csv`` (``store.read_rows``: grid
columns as canonical text) and the grid from ``sweep.json`` (``{field:
[canonical values in grid order]}``). Only rows with status ``ok`` enter the
numbers; the others are shown by their status.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np
import pandas as pd

NUMPY, TORCH = "numpy", "torch"  # the two implementations whose epoch-time ratio is mapped


def split_backend(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with ``impl`` and ``device`` columns from ``backend`` (``impl:device``)."""
    parts = [str(b).partition(":") for b in rows["backend"]]
    return rows.assign(impl=[p[0] for p in parts], device=[p[2] for p in parts])


def ratio_frame(rows: pd.DataFrame, grid: dict[str, list[str]]) -> pd.DataFrame:
    """Per grid point and device: the median over seeds of NumPy's and PyTorch's median epoch time
    over the trusted epochs (``median_epoch_seconds_trusted``; a seed with none counts as missing).

    Columns: the grid fields, ``device``, ``numpy_seconds``, ``torch_seconds``,
    ``ratio`` (NumPy / PyTorch: above 1 PyTorch is faster), ``n_numpy``,
    ``n_torch`` (seeds that finished ``ok``), and ``flag``: empty when every
    timing behind the ratio is ``ok`` (``bench.timing``), else why not.
    Devices with only one of the two implementations are left out.
    """
    fields = list(grid)
    ok = split_backend(rows[rows["status"] == "ok"])
    ok = ok[ok["impl"].isin([NUMPY, TORCH])]
    cols = [*fields, "device", "numpy_seconds", "torch_seconds", "ratio", "n_numpy", "n_torch", "flag"]
    if ok.empty:
        return pd.DataFrame(columns=cols)
    g = ok.groupby([*fields, "device", "impl"])["median_epoch_seconds_trusted"]
    med = g.median().unstack("impl")
    n = g.count().unstack("impl")
    if NUMPY not in med or TORCH not in med:
        return pd.DataFrame(columns=cols)
    if "timing_quality" not in ok:
        ok = ok.assign(timing_quality="not recorded")
    bad = ok[ok["timing_quality"].fillna("not recorded").ne("ok")]
    flags = (bad.assign(what=bad["backend"] + " seed " + bad["seed"].astype(str) + ": "
                        + bad["timing_quality"].astype(str))
             .groupby([*fields, "device"])["what"].agg("; ".join))
    out = pd.DataFrame({"numpy_seconds": med[NUMPY], "torch_seconds": med[TORCH],
                        "n_numpy": n[NUMPY], "n_torch": n[TORCH]})
    out["flag"] = flags.reindex(out.index).fillna("")
    out = out.reset_index()
    out["ratio"] = out["numpy_seconds"] / out["torch_seconds"]
    out = out[out["device"].isin(paired_devices(rows))]
    return out[cols].reset_index(drop=True)


def paired_devices(rows: pd.DataFrame) -> list[str]:
    """Devices with both a numpy and a torch backend in the sweep, in order of first appearance."""
    b = split_backend(rows)
    devices = list(dict.fromkeys(b["device"]))
    return [d for d in devices
            if {NUMPY, TORCH} <= set(b.loc[b["device"] == d, "impl"])]


def accuracy_frame(rows: pd.DataFrame, grid: dict[str, list[str]]) -> pd.DataFrame:
    """Per grid point and backend: mean and std of test accuracy over the ``ok`` seeds, and the statuses."""
    fields = list(grid)
    out = []
    for key, r in rows.groupby([*fields, "backend"], sort=False):
        ok = r[r["status"] == "ok"]["test_acc"].astype(float)
        statuses = sorted(set(r["status"]) - {"ok"})
        out.append({**dict(zip([*fields, "backend"], key)), "test_acc_mean": ok.mean(),
                    "test_acc_std": ok.std(ddof=1) if len(ok) > 1 else math.nan, "n": len(ok),
                    "failed": ",".join(statuses)})
    return pd.DataFrame(out, columns=[*fields, "backend", "test_acc_mean", "test_acc_std", "n", "failed"])


def slices(grid: dict[str, list[str]]) -> Iterator[tuple[dict[str, str], str]]:
    """One 2-D slice per combination of the fields after the first two: ({field: value}, file suffix)."""
    rest = list(grid)[2:]
    for combo in itertools.product(*(grid[f] for f in rest)):
        fixed = dict(zip(rest, combo))
        suffix = "".join(f"__{f}-{v}" for f, v in fixed.items())
        yield fixed, suffix


def cells(frame: pd.DataFrame, grid: dict[str, list[str]], column: str, fixed: dict[str, str],
          empty: object = math.nan) -> list[list]:
    """``column`` laid out as rows = values of the second grid field, columns = values of the first,
    in the slice ``fixed`` of the further fields; ``empty`` where there is no row."""
    fields = list(grid)
    xs = grid[fields[0]]
    ys = grid[fields[1]] if len(fields) > 1 else [""]
    out = [[empty for _ in xs] for _ in ys]
    for f, v in fixed.items():
        frame = frame[frame[f] == v]
    for r in frame.to_dict("records"):
        i = ys.index(r[fields[1]]) if len(fields) > 1 else 0
        value = r.get(column, empty)
        out[i][xs.index(r[fields[0]])] = empty if value is None or value == "" else value
    return out


def matrix(frame: pd.DataFrame, grid: dict[str, list[str]], column: str,
           fixed: dict[str, str]) -> np.ndarray:
    """A number ``column`` as a (len(y values), len(x values)) array (:func:`cells`); NaN where empty."""
    return np.array(cells(frame, grid, column, fixed), dtype=float)


def flag_matrix(frame: pd.DataFrame, grid: dict[str, list[str]], fixed: dict[str, str]) -> list[list[str]]:
    """The ``flag`` text of every cell (:func:`cells`): '' where unflagged or empty."""
    return cells(frame, grid, "flag", fixed, empty="")


def crossover_sentences(ratios: pd.DataFrame, grid: dict[str, list[str]], device: str,
                        fixed: dict[str, str]) -> list[str]:
    """Where the ratio crosses 1 along the first field, for each value of the second, in words.

    A crossing is stated only between two points whose timings are both
    unflagged; next to a flagged point it is "inconclusive", with the reason.
    """
    fields = list(grid)
    x = fields[0]
    sel = ratios[ratios["device"] == device]
    z = matrix(sel, grid, "ratio", fixed)
    flags = flag_matrix(sel, grid, fixed)
    ys = grid[fields[1]] if len(fields) > 1 else [""]
    out = []
    for i, yv in enumerate(ys):
        where = f"{fields[1]}={yv}" if len(fields) > 1 else "the grid"
        have = [(xv, r, flags[i][j]) for j, (xv, r) in enumerate(zip(grid[x], z[i])) if np.isfinite(r)]
        if not have:
            out.append(f"{where}: no finished pair")
            continue
        clean = [r for _, r, f in have if not f]
        n_flagged = len(have) - len(clean)
        note = f"; {n_flagged} flagged point(s) not counted" if n_flagged else ""
        if not clean:
            out.append(f"{where}: inconclusive, the timing is flagged at every {x} measured "
                       f"(first: {have[0][2]})")
            continue
        lo, hi = min(clean), max(clean)
        if (lo > 1 or hi < 1) and not _crosses(have):
            out.append(f"{where}: {'PyTorch' if lo > 1 else 'NumPy'} faster at every unflagged {x} measured "
                       f"(ratio {lo:.2f}–{hi:.2f}{note})")
            continue
        steps = []
        for (xa, ra, fa), (xb, rb, fb) in zip(have, have[1:]):
            if (ra - 1) * (rb - 1) >= 0:
                continue
            if fa or fb:
                reason = fa or fb
                steps.append(f"inconclusive between {x}={xa} ({ra:.2f}) and {x}={xb} ({rb:.2f}): "
                             f"timing flagged ({reason})")
                continue
            faster = "PyTorch" if rb > 1 else "NumPy"
            steps.append(f"crosses 1 between {x}={xa} ({ra:.2f}) and {x}={xb} ({rb:.2f}), {faster} "
                         f"faster from {xb}")
        out.append(f"{where}: " + "; ".join(steps) if steps else
                   f"{where}: no crossing between unflagged points (ratio {lo:.2f}–{hi:.2f}{note})")
    return out


def _crosses(have: list[tuple[str, float, str]]) -> bool:
    """Whether consecutive measured points (flagged ones included) lie on both sides of 1."""
    return any((ra - 1) * (rb - 1) < 0 for (_, ra, _), (_, rb, _) in zip(have, have[1:]))
