"""The one training loop every backend runs under (no command line here).

The loop owns the batch order, the clocks and the records; a backend only
takes steps, evaluates, and exports/imports weights (``bench.backends.api``).
What each clock covers:

* ``epoch_seconds``: the training steps of one epoch, from a synchronised
  device to a synchronised device. Excluded: the one copy of the epoch's index
  order to the device, reading the step records back, evaluation (also the
  evaluations inside an epoch that ``Config.eval_every`` asks for: the clock
  stops for them).
* ``eval_seconds``: evaluating the validation split after that epoch.
* Excluded from every clock: data loading, model construction, the warm-up
  steps (taken on the initial weights, which are restored afterwards), the
  copies of the best weights, the final test evaluation, and whatever the
  hooks do (``LoopHooks``; the GEMM-only reference of ``bench.timing`` is one).

:class:`Training` runs one epoch per :meth:`Training.run_epoch` call, so
several runs can take turns epoch by epoch (``bench.epoch_ratio``);
:func:`train_run` runs one to the end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.backends.api import Backend
from bench.config import Config
from bench.data.dataset import Dataset

WARMUP_STEPS = 5  # steps taken, then undone, before the first clock (lazy init, BLAS threads, compile)
Clock = Callable[[], float]


def epoch_order(seed: int, epoch: int, n_train: int) -> np.ndarray:
    """The row order of one epoch: a function of the seed and the epoch alone, shared by all backends."""
    return np.random.default_rng([seed, epoch]).permutation(n_train)


def backend_name(backend: Backend) -> str:
    return f"{backend.impl}:{backend.device}"


class LoopHooks:
    """What a caller may do between the loop's clocks; every method is a no-op here.

    The order for one run: ``before_training`` (after the warm-up, before the
    first epoch's clock), then per epoch ``after_epoch`` (its clock stopped,
    its records read, before evaluation; may add columns to ``row``) and
    ``epoch_done`` (the row complete), then ``after_training`` (after the last
    epoch, before the best weights are restored for the test evaluation).
    """

    def before_training(self, backend: Backend) -> None:
        pass

    def after_epoch(self, backend: Backend, row: dict[str, Any]) -> None:
        pass

    def epoch_done(self, result: "RunResult") -> None:
        pass

    def after_training(self, backend: Backend, result: "RunResult") -> None:
        pass


@dataclass
class RunResult:
    """Everything recorded for one backend and one seed."""

    backend: str
    seed: int
    epochs: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)  # record_steps only: every step's loss
    evals: list[dict[str, Any]] = field(default_factory=list)  # eval_every only: the evaluations
    run: dict[str, Any] = field(default_factory=dict)
    status: str = "running"
    interrupted: bool = False


class Training:
    """One run of ``backend`` (data already loaded) for ``config.epochs`` epochs with ``seed``.

    The model starts from ``initial_state`` when given (lock-step mode), else
    from the backend's own init for ``seed``. The weights with the best
    validation accuracy are kept and evaluated on the test split. A NaN or
    infinite training loss ends the run as ``diverged``.
    """

    def __init__(self, backend: Backend, data: Dataset, config: Config, seed: int, *,
                 initial_state: dict[str, np.ndarray] | None = None, record_steps: bool = False,
                 hooks: Sequence[LoopHooks] = (), clock: Clock = time.perf_counter,
                 warmup_steps: int = WARMUP_STEPS):
        self.backend, self.data, self.config, self.seed = backend, data, config, seed
        self.initial_state, self.record_steps = initial_state, record_steps
        self.hooks, self.clock, self.warmup_steps = list(hooks), clock, warmup_steps
        self.n_train = int(data.y_train.shape[0])
        self.batch = config.batch_size
        self.n_steps = self.n_train // self.batch  # drop_last, as the reference does
        self.result = RunResult(backend=backend_name(backend), seed=seed)
        self.base = {"backend": self.result.backend, "impl": backend.impl, "device": backend.device,
                     "seed": seed}
        self.epoch = 0
        self.global_step = 0
        self.train_clock = 0.0
        self.best_acc, self.best_epoch, self.best_state = -1.0, None, None
        self.time_to_target: float | None = None
        self.finished = False

    # ------------------------------------------------------------ the run

    def start(self) -> None:
        """Fresh model, warm-up steps undone, then the hooks' ``before_training``."""
        b = self.backend
        b.init_model(self.seed)
        start_state = self.initial_state if self.initial_state is not None else b.export_state()
        self._warm_up(min(self.warmup_steps, self.n_steps))
        b.import_state(start_state)
        for h in self.hooks:
            h.before_training(b)

    def run_epoch(self) -> bool:
        """Train and evaluate one epoch; False once the run is over (all epochs done, or diverged)."""
        if self.finished:
            return False
        self.epoch += 1
        epoch, b, result = self.epoch, self.backend, self.result
        seconds, losses, correct, seen, extra = self._train_epoch(epoch)
        self.train_clock += seconds
        row = {**self.base, "epoch": epoch, "step": self.global_step, "steps": len(losses),
               "train_loss": float(np.mean(losses)) if len(losses) else math.nan,
               "train_acc": correct / seen if seen else math.nan,
               "val_loss": math.nan, "val_acc": math.nan,
               "epoch_seconds": seconds, "eval_seconds": math.nan,
               "samples_per_second": seen / seconds if seconds > 0 else math.nan, **extra}
        for h in self.hooks:
            h.after_epoch(b, row)
        if not np.all(np.isfinite(losses)):
            if self.config.eval_every is not None:
                self._evaluate_interval(epoch, self._last_interval)
            result.epochs.append(row)
            result.status = "diverged"
            self.finished = True
            return False
        t0 = time.perf_counter()
        val_loss, val_acc = b.evaluate("val")
        row.update(val_loss=val_loss, val_acc=val_acc, eval_seconds=time.perf_counter() - t0)
        if self.config.eval_every is not None:
            self._evaluate_interval(epoch, self._last_interval, (val_loss, val_acc))
        result.epochs.append(row)
        if val_acc > self.best_acc:
            self.best_acc, self.best_epoch, self.best_state = val_acc, epoch, b.export_state()
        if self.time_to_target is None and val_acc >= self.config.target_acc:
            self.time_to_target = self.train_clock
        for h in self.hooks:
            h.epoch_done(result)
        if epoch >= self.config.epochs:
            result.status = "ok"
            self.finished = True
        return not self.finished

    def interrupt(self) -> None:
        """Ctrl-C: the run ends as ``interrupted`` with what it recorded (the caller re-raises)."""
        self.result.status = "interrupted"
        self.result.interrupted = True
        self.finished = True

    def finish(self) -> RunResult:
        """``after_training`` hooks, the best weights on the test split, the run's row."""
        b, result = self.backend, self.result
        if not result.interrupted:
            for h in self.hooks:
                h.after_training(b, result)
        test_loss = test_acc = math.nan
        if self.best_state is not None and not result.interrupted:
            b.import_state(self.best_state)
            test_loss, test_acc = b.evaluate("test")
        epoch_times = [r["epoch_seconds"] for r in result.epochs]
        result.run = {**self.base, "status": result.status,
                      "test_acc": test_acc, "test_loss": test_loss,
                      "best_epoch": self.best_epoch,
                      "best_val_acc": self.best_acc if self.best_state is not None else math.nan,
                      "epochs_done": len(result.epochs),
                      "total_train_seconds": self.train_clock,
                      "median_epoch_seconds_all": float(np.median(epoch_times)) if epoch_times else math.nan,
                      "time_to_target_seconds": self.time_to_target,
                      "peak_memory_bytes": b.peak_memory_bytes()}
        return result

    # ------------------------------------------------------------ inside an epoch

    def _train_epoch(self, epoch: int) -> tuple[float, np.ndarray, int, int, dict[str, float]]:
        """Every step of one epoch, clocked in intervals of ``eval_every`` steps (one without it)."""
        b, batch = self.backend, self.batch
        idx = b.device_indices(epoch_order(self.seed, epoch, self.n_train))
        every = self.config.eval_every or self.n_steps
        seconds, losses, correct, seen = 0.0, [], 0, 0
        extra: dict[str, float] = {}
        for start in range(0, self.n_steps, every):
            stop = min(start + every, self.n_steps)
            b.synchronize()
            t0 = self.clock()
            for k in range(start, stop):
                b.train_batch(idx[k * batch:(k + 1) * batch])
            b.synchronize()
            seconds += self.clock() - t0
            rec = b.pop_step_records()
            if self.record_steps:
                self.result.steps.extend({**self.base, "epoch": epoch, "step": self.global_step + j,
                                          "loss": float(loss)} for j, loss in enumerate(rec.losses))
            self.global_step += len(rec.losses)
            losses.append(rec.losses)
            correct += rec.correct
            seen += rec.seen
            for key, value in rec.extra.items():
                extra[key] = extra.get(key, 0.0) + value
            self._last_interval = rec
            if self.config.eval_every is not None and stop < self.n_steps:
                self._evaluate_interval(epoch, rec)  # the epoch's end is evaluated by run_epoch
        return seconds, np.concatenate(losses) if losses else np.zeros(0), correct, seen, extra

    def _evaluate_interval(self, epoch: int, rec, val: tuple[float, float] | None = None) -> None:
        """One row of ``evals``: the interval's training loss and accuracy, and the validation split's
        (evaluated here unless ``val`` is given, and only while the losses are finite)."""
        train_loss = float(np.mean(rec.losses)) if len(rec.losses) else math.nan
        row = {**self.base, "epoch": epoch, "step": self.global_step, "train_loss": train_loss,
               "train_acc": rec.correct / rec.seen if rec.seen else math.nan,
               "val_loss": math.nan, "val_acc": math.nan}
        if val is None and np.all(np.isfinite(rec.losses)):
            val = self.backend.evaluate("val")
        if val is not None:
            row["val_loss"], row["val_acc"] = val
        self.result.evals.append(row)

    def _warm_up(self, steps: int) -> None:
        """A few steps on the first rows, then their records are dropped (the caller restores the weights)."""
        if steps <= 0:
            return
        b, batch = self.backend, self.batch
        idx = b.device_indices(np.arange(steps * batch, dtype=np.int64) % self.n_train)
        for k in range(steps):
            b.train_batch(idx[k * batch:(k + 1) * batch])
        b.synchronize()
        b.pop_step_records()


def train_run(backend: Backend, data: Dataset, config: Config, seed: int, **kwargs: Any) -> RunResult:
    """:class:`Training` from start to finish; Ctrl-C returns what was recorded as ``interrupted``."""
    training = Training(backend, data, config, seed, **kwargs)
    try:
        training.start()
        while training.run_epoch():
            pass
    except KeyboardInterrupt:
        training.interrupt()
    return training.finish()
