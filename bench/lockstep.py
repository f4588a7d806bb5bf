"""Lock-step runs: two implementations from the same weights on the same batches, compared step by step.

The one measure of how far two lock-step runs are apart is the relative
difference of their batch losses at each step, ``|l_a − l_b| / |l_b|``
(:func:`relative_gap`); they have *parted* at the first step where it exceeds
:data:`LOCKSTEP_RTOL` (:func:`parting_step`). ``bench.compare --lockstep`` and
``bench.gradflow`` both judge that against a rounding control: the same run
from weights one rounding step apart (:func:`one_ulp_apart`, named with
:data:`CONTROL_SUFFIX`), whose parting is what float rounding alone does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

LOCKSTEP_RTOL = 1e-4  # relative batch-loss difference from which two lock-step runs have parted
CONTROL_SUFFIX = "+1ulp"  # names a control: a backend started from weights one rounding step apart


def one_ulp_apart(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every weight times (1 + machine epsilon of its dtype): the start of a rounding control, whose
    drift from the unperturbed run is what rounding alone does to this trajectory."""
    return {k: (v * (1 + np.finfo(v.dtype).eps)).astype(v.dtype) for k, v in state.items()}


def relative_gap(a: pd.Series, b: pd.Series) -> pd.Series:
    """|a − b| / |b| per step; 0 where both are not finite (both diverged), inf where only one is."""
    x, y = a.to_numpy(float), b.to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.abs(x - y) / np.maximum(np.abs(y), 1e-12)
    both_bad = ~np.isfinite(x) & ~np.isfinite(y)
    return pd.Series(np.where(both_bad, 0.0, np.where(np.isfinite(rel), rel, np.inf)), index=a.index)


def parting_step(rel: pd.Series) -> int | None:
    """The first step whose relative gap exceeds LOCKSTEP_RTOL (None: they never part)."""
    above = rel[rel > LOCKSTEP_RTOL]
    return int(above.index[0]) if len(above) else None


def divergence(steps: pd.DataFrame, reference: str) -> dict[str, Any]:
    """Every backend's step losses against the reference's (the rounding control's too): per backend
    the largest relative gap and where, and where it first parts."""
    control = reference + CONTROL_SUFFIX
    lock = {"reference": reference, "control": control if control in set(steps["backend"]) else None,
            "steps": 0, "backends": {}}
    for seed, s in steps.groupby("seed"):
        table = s.pivot_table(index="step", columns="backend", values="loss", dropna=False)
        lock["steps"] = max(lock["steps"], len(table))
        if reference not in table:
            continue
        ref = table[reference]
        for b in table.columns.drop(reference):
            rel = relative_gap(table[b], ref)
            mine = lock["backends"].setdefault(b, {"max_rel": 0.0, "where": "", "parted": ""})
            step = parting_step(rel)
            if step is not None and not mine["parted"]:
                mine["parted"] = (f"step {step} (seed {seed}): loss {table[b][step]:.6g} ({b}) vs "
                                  f"{ref[step]:.6g} ({reference}), relative {rel[step]:.3g}")
            if rel.max() >= mine["max_rel"]:
                mine["max_rel"], mine["where"] = float(rel.max()), f"seed {seed}, step {int(rel.idxmax())}"
    return lock


def sentences(lock: dict[str, Any]) -> list[str]:
    """Per backend: its drift from the reference, and beside it the rounding control's drift."""
    ref, control = lock["reference"], lock.get("control")
    yard = lock["backends"].get(control) if control else None
    out = []
    for b, d in lock["backends"].items():
        if b == control:
            continue
        text = (f"`{b}` against `{ref}`: largest relative loss difference {d['max_rel']:.3g} "
                f"({d['where']}); " + (f"parts (relative difference above {LOCKSTEP_RTOL:g}) first at "
                                       f"{d['parted']}" if d["parted"] else
                                       f"never parts (never above {LOCKSTEP_RTOL:g})"))
        if yard is not None:
            text += (f". Yardstick, the rounding control `{control}` ({ref} from its own weights × "
                     f"(1 + machine epsilon)): largest {yard['max_rel']:.3g}, "
                     + (f"parts first at {yard['parted']}" if yard["parted"] else "never parts"))
        out.append(text + ".")
    return out
