"""The one training loop every backend runs under (no command line here).

The loop owns the batch order, the clocks and the records; a backend only
takes steps, evaluates, and exports/imports weights (``bench.backend_api``).
What each clock covers:

* ``epoch_seconds``: the training steps of one epoch, from a synchronised
  device to a synchronised device. Excluded: the one copy of the epoch's index
  order to the device, reading the step records back, evaluation.
* ``eval_seconds``: evaluating the validation split after that epoch.
* Excluded from every clock: data loading, model construction, the warm-up
  steps (taken on the initial weights, which are restored afterwards), the
  copies of the best weights, the final test evaluation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.backend_api import Backend
from bench.config import Config
from bench.data.dataset import Dataset

WARMUP_STEPS = 5  # steps taken, then undone, before the first clock (lazy init, BLAS threads, compile)


def epoch_order(seed: int, epoch: int, n_train: int) -> np.ndarray:
    """The row order of one epoch: a function of the seed and the epoch alone, shared by all backends."""
    return np.random.default_rng([seed, epoch]).permutation(n_train)


def backend_name(backend: Backend) -> str:
    return f"{backend.impl}:{backend.device}"


@dataclass
class RunResult:
    """Everything recorded for one backend and one seed."""

    backend: str
    seed: int
    epochs: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)  # lock-step mode only
    run: dict[str, Any] = field(default_factory=dict)
    status: str = "running"
    interrupted: bool = False


def train_run(backend: Backend, data: Dataset, config: Config, seed: int, *,
              initial_state: dict[str, np.ndarray] | None = None, record_steps: bool = False,
              on_epoch: Callable[[RunResult], None] | None = None,
              warmup_steps: int = WARMUP_STEPS) -> RunResult:
    """Train ``backend`` (data already loaded) for ``config.epochs`` epochs with ``seed``.

    The model starts from ``initial_state`` when given (lock-step mode), else
    from the backend's own init for ``seed``. The weights with the best
    validation accuracy are kept and evaluated on the test split. A NaN or
    infinite training loss ends the run as ``diverged``; Ctrl-C ends it as
    ``interrupted`` and returns what was recorded (the caller re-raises).
    ``on_epoch`` is called after every epoch (to write partial results).
    """
    name = backend_name(backend)
    impl, device = backend.impl, backend.device
    result = RunResult(backend=name, seed=seed)
    n_train = int(data.y_train.shape[0])
    batch = config.batch_size
    n_steps = n_train // batch  # drop_last, as the reference does
    base = {"backend": name, "impl": impl, "device": device, "seed": seed}

    best_acc, best_epoch, best_state = -1.0, None, None
    train_clock = 0.0
    time_to_target = None
    global_step = 0
    try:
        backend.init_model(seed)
        start_state = initial_state if initial_state is not None else backend.export_state()
        _warm_up(backend, n_train, batch, min(warmup_steps, n_steps))
        backend.import_state(start_state)

        for epoch in range(1, config.epochs + 1):
            epoch_seconds = timed_epoch(backend, seed, epoch, n_train, batch)
            train_clock += epoch_seconds

            rec = backend.pop_step_records()
            train_loss = float(np.mean(rec.losses)) if len(rec.losses) else math.nan
            if record_steps:
                for j, loss in enumerate(rec.losses):
                    result.steps.append({**base, "epoch": epoch, "step": global_step + j,
                                         "loss": float(loss)})
            global_step += len(rec.losses)

            row = {**base, "epoch": epoch, "train_loss": train_loss,
                   "train_acc": rec.correct / rec.seen if rec.seen else math.nan,
                   "val_loss": math.nan, "val_acc": math.nan,
                   "epoch_seconds": epoch_seconds, "eval_seconds": math.nan,
                   "samples_per_second": rec.seen / epoch_seconds if epoch_seconds > 0 else math.nan,
                   **rec.extra}
            if not np.all(np.isfinite(rec.losses)):
                result.epochs.append(row)
                result.status = "diverged"
                break

            t0 = time.perf_counter()
            val_loss, val_acc = backend.evaluate("val")
            row.update(val_loss=val_loss, val_acc=val_acc, eval_seconds=time.perf_counter() - t0)
            result.epochs.append(row)
            if val_acc > best_acc:
                best_acc, best_epoch, best_state = val_acc, epoch, backend.export_state()
            if time_to_target is None and val_acc >= config.target_acc:
                time_to_target = train_clock
            if on_epoch is not None:
                on_epoch(result)
        else:
            result.status = "ok"
    except KeyboardInterrupt:
        result.status = "interrupted"
        result.interrupted = True

    test_loss = test_acc = math.nan
    if best_state is not None and not result.interrupted:
        backend.import_state(best_state)
        test_loss, test_acc = backend.evaluate("test")
    epoch_times = [r["epoch_seconds"] for r in result.epochs]
    result.run = {**base, "status": result.status,
                  "test_acc": test_acc, "test_loss": test_loss,
                  "best_epoch": best_epoch, "best_val_acc": best_acc if best_state is not None else math.nan,
                  "epochs_done": len(result.epochs),
                  "total_train_seconds": train_clock,
                  "median_epoch_seconds": float(np.median(epoch_times)) if epoch_times else math.nan,
                  "time_to_target_seconds": time_to_target,
                  "peak_memory_bytes": backend.peak_memory_bytes()}
    return result


def timed_epoch(backend: Backend, seed: int, epoch: int, n_train: int, batch: int) -> float:
    """Seconds of one epoch's training steps, between two device synchronisations.

    The copy of the epoch's order to the device happens before the clock
    starts; the step records stay on the backend for ``pop_step_records``.
    """
    idx = backend.device_indices(epoch_order(seed, epoch, n_train))
    backend.synchronize()
    t0 = time.perf_counter()
    for k in range(n_train // batch):  # drop_last, as the reference does
        backend.train_batch(idx[k * batch:(k + 1) * batch])
    backend.synchronize()
    return time.perf_counter() - t0


def _warm_up(backend: Backend, n_train: int, batch: int, steps: int) -> None:
    """A few steps on the first rows, then their records are dropped (the caller restores the weights)."""
    if steps <= 0:
        return
    idx = backend.device_indices(np.arange(steps * batch, dtype=np.int64) % n_train)
    for k in range(steps):
        backend.train_batch(idx[k * batch:(k + 1) * batch])
    backend.synchronize()
    backend.pop_step_records()
