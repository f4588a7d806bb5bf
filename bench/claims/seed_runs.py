"""Claims 1-5: the runs they share, and claim 4's lock-step reruns (no verdicts here).

Every seed of ``--seeds`` trains ``numpy:cpu`` and ``torch:cpu`` at the
config (the reference setup by default), each one run of the one run path
(``bench.run.run_one``). Both implementations of a seed take the same batches
in the same order on the same validation split; each starts from its own
initial weights. The validation loss is also taken once before the first
step, so the first epoch's drop in loss can be measured. For the first
``--lockstep-seeds`` seeds, PyTorch then reruns the first epoch from NumPy's
initial weights (lock-step): the same weights and batches, so what is left
of a difference is the framework's.

``runs.csv``, ``epochs.csv`` and ``lockstep.csv`` are rewritten after every
run, so Ctrl-C keeps every finished run.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bench.backends import resolve
from bench.claims.context import Context
from bench.theory.gradflow import Watch
from bench.theory.hessian import InitialWeights
from bench.run import RunRecord, one_line, run_one

IMPLS = {"numpy": "numpy:cpu", "torch": "torch:cpu"}
RUN_COLUMNS = ["impl", "seed", "status", "error", "test_acc", "best_epoch", "init_val_loss", "seconds"]
EPOCH_COLUMNS = ["impl", "seed", "epoch", "train_loss", "val_loss", "val_acc"]
LOCK_COLUMNS = ["seed", "init_val_loss_numpy", "init_val_loss_torch", "val_loss_numpy", "val_loss_torch"]


@dataclass
class SeedRuns:
    runs: pd.DataFrame      # one row per run (RUN_COLUMNS)
    epochs: pd.DataFrame    # one row per run and epoch (EPOCH_COLUMNS)
    lockstep: pd.DataFrame  # one row per lock-step seed (LOCK_COLUMNS): epoch-1 validation losses


@dataclass
class Trained:
    """One run's record, the hooks' captures and its backend (holding the best-validation weights)."""

    record: Any
    watch: Watch
    start: InitialWeights
    backend: Any
    seconds: float


def train(ctx: Context, impl: str, seed: int, *, epochs: int | None = None,
          initial_state: dict[str, np.ndarray] | None = None) -> Trained:
    """One run of ``impl`` at the config (``epochs`` of them when given); Ctrl-C raises."""
    cfg = ctx.config if epochs is None else dataclasses.replace(ctx.config, epochs=epochs)
    chosen = resolve([IMPLS[impl]])[0][0]
    watch, start = Watch(), InitialWeights()
    t0 = time.perf_counter()
    try:
        backend, data = chosen.make(cfg), ctx.data(seed)
    except MemoryError as exc:  # this seed's run is oom; the others go on
        return Trained(RunRecord(IMPLS[impl], seed, "oom", one_line(exc)), watch, start, None, 0.0)
    record = run_one(chosen, cfg, data, seed, backend=backend, initial_state=initial_state,
                     hooks=[watch, start])
    if record.interrupted:
        raise KeyboardInterrupt
    return Trained(record, watch, start, backend, time.perf_counter() - t0)


def measure(ctx: Context) -> SeedRuns:
    cfg, opts = ctx.config, ctx.settings
    runs: list[dict[str, Any]] = []
    epochs: list[dict[str, Any]] = []
    lock: list[dict[str, Any]] = []
    total = 2 * len(cfg.seeds)

    def result() -> SeedRuns:
        return SeedRuns(pd.DataFrame(runs, columns=RUN_COLUMNS), pd.DataFrame(epochs, columns=EPOCH_COLUMNS),
                        pd.DataFrame(lock, columns=LOCK_COLUMNS))

    def save() -> None:
        r = result()
        for name, table in (("runs.csv", r.runs), ("epochs.csv", r.epochs), ("lockstep.csv", r.lockstep)):
            ctx.folder.write_csv(name, table)

    try:
        for i, seed in enumerate(cfg.seeds):
            numpy_run = None
            for impl in IMPLS:
                t = train(ctx, impl, seed)
                rec = t.record
                runs.append({"impl": impl, "seed": seed, "status": rec.status, "error": rec.error,
                             "test_acc": rec.run.get("test_acc"), "best_epoch": rec.run.get("best_epoch"),
                             "init_val_loss": t.watch.initial[0] if t.watch.initial else np.nan,
                             "seconds": t.seconds})
                epochs.extend({"impl": impl, "seed": seed, **{k: e[k] for k in EPOCH_COLUMNS[2:]}}
                              for e in rec.epochs)
                if impl == "numpy" and rec.status == "ok":
                    numpy_run = t
                    if i == 0:  # claim 8 measures the Hessian at this run's best-validation weights
                        ctx.shared["reference"] = (seed, t.backend.export_state())
                save()
                ctx.log(f"claims 1-5: run {len(runs)}/{total}: {impl} seed {seed}: {rec.status}, test acc "
                        f"{rec.run.get('test_acc', np.nan):.4f} ({t.seconds:.0f} s)")
            if i < opts.lockstep_seeds and numpy_run is not None:
                t = train(ctx, "torch", seed, epochs=1, initial_state=numpy_run.start.state)
                if t.record.status == "ok":
                    lock.append({"seed": seed, "init_val_loss_numpy": numpy_run.watch.initial[0],
                                 "init_val_loss_torch": t.watch.initial[0],
                                 "val_loss_numpy": numpy_run.record.epochs[0]["val_loss"],
                                 "val_loss_torch": t.record.epochs[0]["val_loss"]})
                save()
                ctx.log(f"claim 4: lock-step first epoch, seed {seed}: {t.record.status} ({t.seconds:.0f} s)")
    except KeyboardInterrupt:
        ctx.interrupted = True
    save()
    return result()


def reference_state(ctx: Context) -> tuple[int, dict[str, np.ndarray]]:
    """(seed, best-validation weights) of NumPy at the first seed: claims 1-5's run, else one run now."""
    if "reference" not in ctx.shared:
        seed = ctx.config.seeds[0]
        t = train(ctx, "numpy", seed)
        if t.record.run.get("best_epoch") is None:
            return seed, {}
        ctx.shared["reference"] = (seed, t.backend.export_state())
    return ctx.shared["reference"]
