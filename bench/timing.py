"""The timing discipline of every command: how far an epoch time can be trusted, in words.

An epoch of the MLP is a fixed list of matrix products plus everything else a
step does. Three measurements, all outside the epoch clock, say how far a
measured epoch time can be trusted on a shared, noisy machine:

* **GEMM-only brackets** (:class:`GemmBrackets`): one epoch's matrix products
  alone (``bench.roofline``), timed with the backend's own library before the
  first epoch and after every epoch. Each epoch is divided by the mean of the
  bracket just before and just after it, so a load that drifts hits both
  sides: ``epoch_to_gemm``.
* **The fixed cost of a step** (:func:`fixed_step_seconds`): epochs of the
  same step count and batch size on a model too small for its arithmetic to
  matter (``FIXED_WIDTH`` features and units). What a step costs there
  (dispatch, autograd, optimizer, Python) it costs in the real model too, so
  ``1 + fixed / GEMM-only step`` is a floor under ``epoch_to_gemm``.
* **Gather-only time** (:class:`GatherTime`): the same epoch's batch gathers
  alone (the backend's ``gather``, on the epoch's own row order), timed after
  the epoch, so that the part of ``epoch_to_gemm`` above 1 that the data path
  costs is a figure of its own.
* **Nominal speed**: the epochs whose bracket is within ``NOMINAL_SLACK`` of
  the fastest bracket of the same backend ran on an unloaded machine.

Every epoch row gets a ``timing_quality``: ``ok``, or why not (its ratio is
below 1, which no honest epoch can be; below its fixed-cost floor; or its two
brackets differ by more than ``BRACKET_TOLERANCE``: the load changed during
it). :func:`summarise_timing` takes the median and minimum over the epochs at
nominal speed whose quality is ``ok`` (after each run's first epoch, which
pays one-off costs) and flags the summary when too few such epochs remain or
their spread is too wide.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from bench.backends.api import Backend
from bench.config import Config
from bench.loop import LoopHooks, epoch_order, train_run
from bench.roofline import Gemm

NOMINAL_SLACK = 0.15      # an epoch whose bracket is this much above the fastest ran on a loaded machine
BRACKET_TOLERANCE = 0.25  # brackets before and after an epoch differing by more: the load changed
SPREAD_TOLERANCE = 0.25   # IQR / median of the summarised epoch times above this: too noisy
MIN_TIMED_EPOCHS = 3      # fewer summarised epochs than this: too few to trust
FIXED_WIDTH = 8           # features and hidden width of the model whose steps are all overhead
FIXED_EPOCHS = 5          # timed epochs of that model (after one warm-up epoch)
OK = "ok"


class GemmBrackets(LoopHooks):
    """Times the epoch's matrix products alone before the first epoch and after every epoch.

    Adds to each epoch row: ``gemm_before_seconds``, ``gemm_after_seconds``,
    their mean ``gemm_seconds``, ``epoch_to_gemm``, ``fixed_step_seconds``,
    ``ratio_floor`` and ``timing_quality``.
    """

    def __init__(self, shapes: list[Gemm], steps: int, fixed_step: float = math.nan):
        self.shapes, self.steps, self.fixed_step = shapes, steps, fixed_step
        self.last = math.nan

    def before_training(self, backend: Backend) -> None:
        backend.gemm_seconds(self.shapes, max(1, self.steps // 10))  # warm-up round
        self.last = backend.gemm_seconds(self.shapes, self.steps)

    def after_epoch(self, backend: Backend, row: dict[str, Any]) -> None:
        after = backend.gemm_seconds(self.shapes, self.steps)
        before, self.last = self.last, after
        gemm = (before + after) / 2
        row.update(gemm_before_seconds=before, gemm_after_seconds=after, gemm_seconds=gemm,
                   epoch_to_gemm=row["epoch_seconds"] / gemm if gemm > 0 else math.nan,
                   fixed_step_seconds=self.fixed_step,
                   ratio_floor=ratio_floor(self.fixed_step, gemm, self.steps))
        row["timing_quality"] = quality_text(epoch_flags(row))


class GatherTime(LoopHooks):
    """Times one epoch's batch gathers alone after every epoch: ``gather_seconds`` in its row.

    The rows of the epoch just trained (``bench.loop.epoch_order``), batch by
    batch through the backend's ``gather``, between two device
    synchronisations, on the epoch's clock; NaN for a backend without a gather
    by row index.
    """

    def __init__(self, n_train: int, batch: int, clock: Callable[[], float] = time.perf_counter):
        self.n_train, self.batch, self.clock = n_train, batch, clock

    def after_epoch(self, backend: Backend, row: dict[str, Any]) -> None:
        gather = getattr(backend, "gather", None)
        if gather is None:
            row["gather_seconds"] = math.nan
            return
        b = self.batch
        idx = backend.device_indices(epoch_order(row["seed"], row["epoch"], self.n_train))
        backend.synchronize()
        t0 = self.clock()
        for k in range(self.n_train // b):
            gather(idx[k * b:(k + 1) * b])
        backend.synchronize()
        row["gather_seconds"] = self.clock() - t0


def ratio_floor(fixed_step: float, gemm_seconds: float, steps: int) -> float:
    """``1 + fixed cost of a step / GEMM-only time of a step``: the lowest epoch/GEMM ratio possible."""
    if not (steps > 0 and gemm_seconds > 0 and math.isfinite(fixed_step)):
        return math.nan
    return 1.0 + fixed_step / (gemm_seconds / steps)


def epoch_flags(row: dict[str, Any]) -> list[str]:
    """Why one epoch's ratio cannot be trusted (empty: it can)."""
    flags = []
    ratio, floor = row.get("epoch_to_gemm", math.nan), row.get("ratio_floor", math.nan)
    if ratio < 1:
        flags.append(f"ratio {ratio:.3g} below 1 (no epoch beats its own matrix products: noise)")
    elif floor > 1 and ratio < floor:
        flags.append(f"ratio {ratio:.3g} below its fixed-cost floor {floor:.3g}")
    before, after = row.get("gemm_before_seconds", math.nan), row.get("gemm_after_seconds", math.nan)
    if min(before, after) > 0:
        change = abs(after - before) / min(before, after)
        if change > BRACKET_TOLERANCE:
            flags.append(f"GEMM-only before and after differ by {change:.0%} (> "
                         f"{BRACKET_TOLERANCE:.0%}: the machine's load changed)")
    return flags


def quality_text(flags: list[str]) -> str:
    return "; ".join(flags) if flags else OK


def fixed_step_seconds(make: Callable[[Config], Backend], config: Config, n_train: int,
                       n_classes: int, seed: int) -> float:
    """Median seconds per step of ``FIXED_EPOCHS`` epochs of a ``FIXED_WIDTH`` model (after one more).

    The same step count and batch size as ``config``, on synthetic data of
    ``FIXED_WIDTH`` features, through the one training loop.
    """
    from bench.data import make_synthetic

    tiny = dataclasses.replace(config, hidden_dims=[FIXED_WIDTH], residual=False, lockstep=False,
                               epochs=FIXED_EPOCHS + 1, eval_every=None, eval_batch_size=10_000)
    data = make_synthetic(n_train, 10, 10, n_features=FIXED_WIDTH, n_classes=n_classes, seed=0,
                          dtype=config.dtype)
    backend = make(tiny)
    backend.load_data(data)
    result = train_run(backend, data, tiny, seed)
    if result.interrupted:
        raise KeyboardInterrupt
    steps = n_train // config.batch_size
    times = [e["epoch_seconds"] / steps for e in result.epochs[1:]]
    return float(np.median(times)) if times else math.nan


def steady_epochs(epochs: pd.DataFrame) -> pd.DataFrame:
    """The epochs that enter a summary: each run's epochs after its first (its only one if just one)."""
    if epochs.empty:
        return epochs
    later = epochs[epochs["epoch"] > 1]
    return later if len(later) else epochs


def nominal_mask(gemm_seconds: pd.Series) -> pd.Series:
    """True for the epochs whose GEMM-only bracket is within NOMINAL_SLACK of the fastest one."""
    fastest = gemm_seconds.min()
    return gemm_seconds <= (1 + NOMINAL_SLACK) * fastest


def trusted_epochs(epochs: pd.DataFrame) -> pd.DataFrame:
    """One backend's steady epochs at nominal speed whose own quality is ``ok`` (all steady epochs
    when reference timing was off); empty when none is left."""
    steady = steady_epochs(epochs)
    if steady.empty or "gemm_seconds" not in steady or steady["gemm_seconds"].isna().all():
        return steady
    return steady[steady["timing_quality"].eq(OK) & nominal_mask(steady["gemm_seconds"])]


def summarise_timing(epochs: pd.DataFrame) -> dict[str, Any]:
    """One backend's epoch times and ratios: median and minimum, how many epochs, and the verdict.

    ``epochs`` holds that backend's rows (any number of runs). The figures
    come from the steady epochs at nominal speed whose own quality is ``ok``
    ("used"); where none is left they come from every steady epoch, flagged.
    """
    steady = steady_epochs(epochs)
    out: dict[str, Any] = {"n_epochs_timed": len(steady)}
    if steady.empty:
        return {**out, "n_epochs_used": 0, "median_epoch_seconds": math.nan,
                "epoch_seconds_min": math.nan, "epoch_seconds_iqr": math.nan,
                "timing_quality": "no epoch was timed"}
    reasons = []
    has_reference = "gemm_seconds" in steady and steady["gemm_seconds"].notna().any()
    used = trusted_epochs(epochs)
    if used.empty:
        reasons.append("no epoch ran at nominal machine speed with consistent GEMM-only brackets")
        used = steady
    times = used["epoch_seconds"].to_numpy(float)
    q25, q50, q75 = np.percentile(times, [25, 50, 75])
    out.update(n_epochs_used=len(used), median_epoch_seconds=float(q50),
               epoch_seconds_min=float(times.min()), epoch_seconds_iqr=float(q75 - q25))
    if has_reference:
        ratios, gemm = used["epoch_to_gemm"].to_numpy(float), used["gemm_seconds"].to_numpy(float)
        floors = used["ratio_floor"].to_numpy(float) if "ratio_floor" in used else np.array([math.nan])
        gather = used["gather_seconds"].dropna() if "gather_seconds" in used else pd.Series(dtype=float)
        out.update(gemm_seconds=float(np.median(gemm)), gemm_seconds_min=float(gemm.min()),
                   epoch_to_gemm=float(np.median(ratios)), epoch_to_gemm_min=float(ratios.min()),
                   ratio_floor=float(np.nanmedian(floors)) if np.isfinite(floors).any() else math.nan,
                   fixed_step_seconds=float(used["fixed_step_seconds"].median())
                   if "fixed_step_seconds" in used else math.nan,
                   gather_seconds=float(gather.median()) if len(gather) else math.nan)
        if out["epoch_to_gemm"] < 1:
            reasons.append(f"median ratio {out['epoch_to_gemm']:.3g} below 1")
        flagged = int((~steady["timing_quality"].eq(OK)).sum())
        if flagged and len(used) < len(steady):
            reasons_epochs = f"{flagged} of {len(steady)} epochs flagged and left out"
        else:
            reasons_epochs = ""
        out["epochs_left_out"] = reasons_epochs
    if len(used) < MIN_TIMED_EPOCHS:
        reasons.append(f"too few timed epochs ({len(used)} < {MIN_TIMED_EPOCHS})")
    if q50 > 0 and (q75 - q25) / q50 > SPREAD_TOLERANCE:
        reasons.append(f"spread too wide (IQR/median {(q75 - q25) / q50:.2f} > {SPREAD_TOLERANCE})")
    out["timing_quality"] = quality_text(reasons)
    return out
