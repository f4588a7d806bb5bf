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
below 1, which no epoch can be whose products cost what they cost alone (a
compiled ``--jax-scan`` epoch, whose products XLA schedules with the rest,
can); below its fixed-cost floor; or its two
brackets differ by more than ``BRACKET_TOLERANCE``: the load changed during
it). An epoch is *trusted* (:func:`trusted_mask`, the one decision every output
reads) when it comes after its run's first epoch (which pays one-off costs), ran
at nominal speed and its quality is ``ok``. :func:`summarise_timing` gives the
median, minimum and quartiles over the trusted epochs (``*_trusted``) beside the
median over all of them (``*_all``), and flags the summary when too few epochs
are trusted or their spread is too wide.
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
from bench.roofline import Gemm
from bench.run import BackendValueError, LoopHooks, epoch_order

NOMINAL_SLACK = 0.15      # an epoch whose bracket is this much above the fastest ran on a loaded machine
BRACKET_TOLERANCE = 0.25  # brackets before and after an epoch differing by more: the load changed
SPREAD_TOLERANCE = 0.25   # IQR / median of the summarised epoch times above this: too noisy
MIN_TIMED_EPOCHS = 3      # fewer summarised epochs than this: too few to trust
FIXED_WIDTH = 8           # features and hidden width of the model whose steps are all overhead
FIXED_EPOCHS = 5          # timed epochs of that model (after one warm-up epoch)
OK = "ok"
SPLIT_COLUMNS = ("data_seconds", "compute_seconds")  # epochs.csv columns some backends add


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
        self._timed(backend, max(1, self.steps // 10))  # warm-up round
        self.last = self._timed(backend, self.steps)

    def _timed(self, backend: Backend, repeats: int) -> float:
        """The backend's own clock of its products, checked: a finite number of seconds >= 0, else its run
        fails (a negative or NaN time would pass as a trusted epoch-to-GEMM ratio)."""
        seconds = backend.gemm_seconds(self.shapes, repeats)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float, np.integer, np.floating)) \
                or not (math.isfinite(seconds) and seconds >= 0):
            raise BackendValueError(f"{backend.impl}:{backend.device}: GEMM-only time {seconds!r:.40} "
                                    "(allowed: a finite number of seconds >= 0)")
        return float(seconds)

    def after_epoch(self, backend: Backend, row: dict[str, Any]) -> None:
        after = self._timed(backend, self.steps)
        before, self.last = self.last, after
        gemm = (before + after) / 2
        row.update(gemm_before_seconds=before, gemm_after_seconds=after, gemm_seconds=gemm,
                   epoch_to_gemm=row["epoch_seconds"] / gemm if gemm > 0 else math.nan,
                   fixed_step_seconds=self.fixed_step,
                   ratio_floor=ratio_floor(self.fixed_step, gemm, self.steps))
        row["timing_quality"] = quality_text(epoch_flags(row))


class GatherTime(LoopHooks):
    """Times one epoch's batch gathers alone after every epoch: ``gather_seconds`` in its row.

    The rows of the epoch just trained (``bench.run.epoch_order``), batch by
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
        flags.append(f"ratio {ratio:.3g} below 1 (the epoch beat its own GEMM-only time: noise, or products "
                     "that a compiled epoch runs faster than alone)")
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
    from bench.run import run_one

    tiny = dataclasses.replace(config, hidden_dims=[FIXED_WIDTH], residual=False, lockstep=False,
                               epochs=FIXED_EPOCHS + 1, eval_every=None, eval_batch_size=10_000,
                               reference_timing=False)
    data = make_synthetic(n_train, 10, 10, n_features=FIXED_WIDTH, n_classes=n_classes, seed=0,
                          dtype=config.dtype)
    result = run_one(make(tiny), tiny, data, seed)
    if result.interrupted:
        raise KeyboardInterrupt
    steps = n_train // config.batch_size
    times = [e["epoch_seconds"] / steps for e in result.epochs[1:]]
    return float(np.median(times)) if times else math.nan


def steady_epochs(epochs: pd.DataFrame) -> pd.DataFrame:
    """The epochs after each run's first (every epoch when no run got past its first)."""
    if epochs.empty:
        return epochs
    later = epochs[epochs["epoch"] > 1]
    return later if len(later) else epochs


def nominal_mask(gemm_seconds: pd.Series) -> pd.Series:
    """True for the epochs whose GEMM-only bracket is within NOMINAL_SLACK of the fastest one."""
    fastest = gemm_seconds.min()
    return gemm_seconds <= (1 + NOMINAL_SLACK) * fastest


def has_reference(epochs: pd.DataFrame) -> bool:
    """Whether these epochs were bracketed by GEMM-only times (reference timing on)."""
    return "gemm_seconds" in epochs and bool(epochs["gemm_seconds"].notna().any())


def trusted_mask(epochs: pd.DataFrame, by: tuple[str, ...] = ("backend",)) -> pd.Series:
    """The one decision of which epoch times may be used: True for the *trusted* epochs.

    Trusted: after its run's first epoch (:func:`steady_epochs`) and, with reference
    timing, at nominal machine speed (judged against the fastest bracket of the same group
    of ``by``, a backend) with ``timing_quality`` ``ok``. Every output reads this decision:
    the ``trusted`` column of epochs.csv, the ``*_trusted`` columns of summary.csv, the pair
    tests, the plots and the reports' sentences.
    """
    mask = pd.Series(False, index=epochs.index)
    keys = [k for k in by if k in epochs]
    groups = epochs.groupby(keys, sort=False) if keys else [(None, epochs)]
    for _, ep in groups:
        steady = steady_epochs(ep)
        if has_reference(steady):
            steady = steady[steady["timing_quality"].eq(OK) & nominal_mask(steady["gemm_seconds"])]
        mask[steady.index] = True
    return mask


def trusted_epochs(epochs: pd.DataFrame) -> pd.DataFrame:
    """The trusted rows of ``epochs`` (:func:`trusted_mask`)."""
    return epochs[trusted_mask(epochs)] if len(epochs) else epochs


def left_out_text(epochs: pd.DataFrame) -> str:
    """Why one backend's epochs after the first are not trusted, counted (empty when all are)."""
    steady = steady_epochs(epochs)
    if steady.empty or not has_reference(steady):
        return ""
    flagged = ~steady["timing_quality"].eq(OK)
    slow = ~flagged & ~nominal_mask(steady["gemm_seconds"])
    parts = [f"{n} {what}" for n, what in ((int(flagged.sum()), "flagged"),
                                             (int(slow.sum()), "not at nominal machine speed")) if n]
    return (f"{int(flagged.sum() + slow.sum())} of {len(steady)} epochs after the first left out: "
            + ", ".join(parts)) if parts else ""


def summarise_timing(epochs: pd.DataFrame) -> dict[str, Any]:
    """One backend's epoch times and ratios, and the verdict on them.

    ``epochs`` holds that backend's rows (any number of runs). ``*_all``: over
    every epoch, the first of each run included (as ``median_epoch_seconds_all``
    of runs.csv). ``*_trusted`` and the ratios: over the trusted epochs
    (:func:`trusted_mask`), NaN when there are none; the summary is flagged when
    fewer than ``MIN_TIMED_EPOCHS`` are trusted or their IQR is too wide.
    """
    nan = math.nan
    times_all = epochs["epoch_seconds"].to_numpy(float) if len(epochs) else np.array([])
    used = trusted_epochs(epochs)
    times = used["epoch_seconds"].to_numpy(float) if len(used) else np.array([])
    q25, q50, q75 = np.percentile(times, [25, 50, 75]) if len(times) else (nan, nan, nan)
    out: dict[str, Any] = {
        "n_epochs_all": len(times_all),
        "median_epoch_seconds_all": float(np.median(times_all)) if len(times_all) else nan,
        "n_epochs_trusted": len(times), "median_epoch_seconds_trusted": float(q50),
        "epoch_seconds_min_trusted": float(times.min()) if len(times) else nan,
        "epoch_seconds_q25_trusted": float(q25), "epoch_seconds_q75_trusted": float(q75)}
    def median(col: str) -> float:
        v = used[col].dropna().to_numpy(float) if len(used) and col in used else np.array([])
        return float(np.median(v)) if len(v) else nan
    if has_reference(epochs):
        floors = epochs["ratio_floor"].to_numpy(float) if "ratio_floor" in epochs else np.array([])
        out.update(gemm_seconds_trusted=median("gemm_seconds"), epoch_to_gemm_trusted=median("epoch_to_gemm"),
                   epoch_to_gemm_min_trusted=float(used["epoch_to_gemm"].min()) if len(used) else nan,
                   gather_seconds_trusted=median("gather_seconds"),
                   ratio_floor=float(np.nanmedian(floors)) if np.isfinite(floors).any() else nan,
                   fixed_step_seconds=float(epochs["fixed_step_seconds"].median())
                   if "fixed_step_seconds" in epochs else nan)
    left = left_out_text(epochs)
    reasons = []
    if not len(times_all):
        reasons.append("no epoch was timed")
    elif not len(times):
        reasons.append("no trusted epoch" + (f" ({left})" if left else ""))
    elif len(times) < MIN_TIMED_EPOCHS:
        reasons.append(f"too few trusted epochs ({len(times)} < {MIN_TIMED_EPOCHS})")
    if len(times) and q50 > 0 and (q75 - q25) / q50 > SPREAD_TOLERANCE:
        reasons.append(f"spread too wide (IQR/median {(q75 - q25) / q50:.2f} > {SPREAD_TOLERANCE})")
    out["timing_quality"] = quality_text(reasons)
    out["epochs_left_out"] = left
    # per-epoch splits a backend records in StepRecords.extra (torch-dataloader: data/compute)
    out.update({f"median_{c}_trusted": median(c) for c in SPLIT_COLUMNS if c in epochs})
    return out
