"""The one run layer: one (config, backend, seed) trained by the one loop, timed by the one discipline.

Every command that trains goes through :class:`Run`: it builds the backend
(or takes the one given), loads the data onto its device, measures the fixed
cost of a step and brackets every epoch with its GEMM-only time and follows it
with its gather-only time (``bench.timing``; not with
``Config.reference_timing`` off), then trains one
epoch per :meth:`Run.step`, so several runs can take turns, and
:meth:`Run.finish` returns its :class:`RunRecord`; :func:`run_one` runs one to
the end. :class:`Recorder` keeps a command's records, rewrites ``epochs.csv``
and ``runs.csv`` as they grow, and gives the one summary of them.

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
  hooks do (:class:`LoopHooks`; the GEMM-only brackets are one).

The weights with the best validation accuracy are kept and evaluated on the
test split. A NaN or infinite training loss ends a run as ``diverged``; an
exception in the backend as ``failed`` (``oom`` when out of memory) with a
one-line message; Ctrl-C as ``interrupted`` (the caller stops). Each keeps
what it recorded before.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bench.backends import Chosen, StageTimeout, deadline, options_of, stage_limit
from bench.backends.api import Backend
from bench.backends.isolated import Isolated
from bench.config import Config
from bench.data.dataset import Dataset
from bench.errors import out_of_memory, shorten, stop_if_signalled
from bench.provenance import replaced

WARMUP_STEPS = 5  # steps taken, then undone, before the first clock (lazy init, BLAS threads, compile)
MAX_MESSAGE = 400  # characters of an error message kept in the records
Clock = Callable[[], float]
# the one row schema: the columns an empty table still gets, so that every CSV can be read back
EPOCH_COLUMNS = ["backend", "impl", "device", "seed", "epoch", "step", "steps", "train_loss",
                 "train_acc", "val_loss", "val_acc", "epoch_seconds", "eval_seconds",
                 "samples_per_second", "timing_quality"]
OWN_SECONDS = {"epoch_seconds", "eval_seconds", "gemm_seconds", "gemm_before_seconds", "gemm_after_seconds",
               "fixed_step_seconds", "gather_seconds"}  # the harness's clocks: a backend never writes them
MAX_EXTRA = 8  # columns a backend adds to epochs.csv (StepRecords.extra): data_seconds, compute_seconds
RUN_COLUMNS = ["backend", "impl", "device", "seed", "status", "error", "test_acc", "test_loss",
               "best_epoch", "best_val_acc", "epochs_done", "total_train_seconds",
               "median_epoch_seconds_all", "time_to_target_seconds", "peak_memory_bytes",
               "compile_seconds", "replaced"]


def epoch_order(seed: int, epoch: int, n_train: int) -> np.ndarray:
    """The row order of one epoch: a function of the seed and the epoch alone, shared by all backends."""
    return np.random.default_rng([seed, epoch]).permutation(n_train)


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

    def epoch_done(self, record: "RunRecord") -> None:
        pass

    def after_training(self, backend: Backend, record: "RunRecord") -> None:
        pass


@dataclass
class RunRecord:
    """What one run produced: its row of runs.csv, its rows of epochs.csv and steps.csv, its evaluations."""

    backend: str
    seed: int
    status: str = "running"          # then ok, diverged, interrupted, failed or oom
    error: str = ""
    run: dict[str, Any] = field(default_factory=dict)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)  # record_steps: every step's loss
    evals: list[dict[str, Any]] = field(default_factory=list)  # eval_every: the evaluations
    options: dict[str, Any] = field(default_factory=dict)      # the backend's describe()

    @property
    def interrupted(self) -> bool:
        return self.status == "interrupted"


class Run:
    """One backend, one seed: :meth:`start`, then :meth:`step` until it returns False, then :meth:`finish`.

    ``who`` is a :class:`~bench.backends.Chosen` (built at :meth:`start`, unless
    ``backend`` is its backend built already) or a backend alone. The model starts from ``initial_state`` when given (lock-step),
    else from the backend's own init for ``seed``; ``labels`` are columns added
    to every row (a variant, a grid point).
    """

    def __init__(self, who: Chosen | Backend, config: Config, data: Dataset, seed: int, *,
                 backend: Backend | None = None, initial_state: dict[str, np.ndarray] | None = None, record_steps: bool = False,
                 hooks: Sequence[LoopHooks] = (), clock: Clock = time.perf_counter,
                 warmup_steps: int = WARMUP_STEPS, labels: dict[str, Any] | None = None):
        self.chosen = who if isinstance(who, Chosen) else None
        self.backend: Backend | None = backend if self.chosen else who
        self.config, self.data, self.seed = config, data, seed
        self.initial_state, self.record_steps = initial_state, record_steps
        self.hooks, self.clock, self.warmup_steps = list(hooks), clock, warmup_steps
        name = who.name if self.chosen else f"{who.impl}:{who.device}"
        self.base = {"backend": name, "impl": who.impl, "device": who.device, "seed": seed, **(labels or {})}
        self.record = RunRecord(name, seed)
        self.n_train = int(data.y_train.shape[0])
        self.n_steps = self.n_train // config.batch_size  # drop_last, as the reference does
        self.epoch = self.global_step = 0
        self.train_clock = 0.0
        self.best_acc, self.best_epoch, self.best_state = -1.0, None, None
        self.time_to_target: float | None = None
        self.test, self.peak = (math.nan, math.nan), None
        self.started = False

    def start(self) -> bool:
        """Build, load, measure the fixed cost, warm up; False if that already failed."""
        return self._guard(self._start)

    def step(self) -> bool:
        """One epoch; False once the run is over (done, diverged, failed or interrupted)."""
        return self.started and self.record.status == "running" and self._guard(self._epoch)

    def finish(self) -> RunRecord:
        """The record: after the ``after_training`` hooks, the best weights on the test split."""
        r = self.record
        if r.status == "running":  # abandoned between two epochs: another run was interrupted
            r.status = "interrupted"
        if r.status in ("ok", "diverged"):
            self._guard(self._after)  # the hooks and the test evaluation may fail too
        times = [e["epoch_seconds"] for e in r.epochs]
        r.run = {**self.base, "status": r.status, "error": r.error, "test_acc": self.test[1],
                 "test_loss": self.test[0], "best_epoch": self.best_epoch,
                 "best_val_acc": self.best_acc if self.best_state is not None else math.nan,
                 "epochs_done": len(r.epochs), "total_train_seconds": self.train_clock,
                 "median_epoch_seconds_all": float(np.median(times)) if times else math.nan,
                 "time_to_target_seconds": self.time_to_target, "peak_memory_bytes": self.peak}
        own = self.backend.replaced() if isinstance(self.backend, Isolated) else []  # in its own process
        r.run["replaced"] = ",".join(replaced() + own)  # NumPy callables a backend replaced: not to be trusted
        r.options = options_of(self.backend) if self.backend is not None else {}
        # a compiling backend's compile time, before the first epoch and outside every clock
        r.run["compile_seconds"] = _seconds(r.options.get("compile_seconds"))
        return r

    # ------------------------------------------------------------ the stages

    def _start(self) -> bool:
        from bench.memory import check_memory
        from bench.roofline import step_gemms
        from bench.timing import GatherTime, GemmBrackets, fixed_step_seconds

        c, data = self.config, self.data
        if self.chosen is not None:
            check_memory(c, int(self.chosen.device == "cpu"), data=False)  # a sweep point too big: oom
            self.backend = self.backend or self.chosen.make(c)
        b = self.backend
        b.load_data(data)
        if c.reference_timing:
            try:
                make = self.chosen.make if self.chosen else (lambda cfg: type(b)(cfg, b.device))
                fixed = fixed_step_seconds(make, c, self.n_train, data.n_classes, self.seed)
            except KeyboardInterrupt:
                raise
            except Exception:  # noqa: BLE001 - e.g. a backend that needs CIFAR-shaped images
                fixed = math.nan
            shapes = step_gemms(data.n_features, c.hidden_dims, data.n_classes, c.batch_size)
            self.hooks[:0] = [GemmBrackets(shapes, self.n_steps, fixed),
                              GatherTime(self.n_train, c.batch_size, self.clock)]
        b.init_model(self.seed)
        start_state = self.initial_state if self.initial_state is not None else b.export_state()
        self._warm_up(min(self.warmup_steps, self.n_steps))
        b.import_state(start_state)
        for h in self.hooks:
            h.before_training(b)
        self.started = True
        return True

    def _epoch(self) -> bool:
        """Train and evaluate one epoch; False once the run is over (all epochs done, or diverged)."""
        self.epoch += 1
        epoch, b, r = self.epoch, self.backend, self.record
        seconds, losses, correct, seen, extra = self._train_epoch(epoch)
        self.train_clock += seconds
        row = {**self.base, "epoch": epoch, "step": self.global_step, "steps": len(losses),
               "train_loss": float(np.mean(losses)) if len(losses) else math.nan,
               "train_acc": correct / seen if seen else math.nan, "val_loss": math.nan, "val_acc": math.nan,
               "epoch_seconds": seconds, "eval_seconds": math.nan,
               "samples_per_second": seen / seconds if seconds > 0 else math.nan, **extra}
        for h in self.hooks:
            h.after_epoch(b, row)
        if not np.all(np.isfinite(losses)):
            if self.config.eval_every is not None:
                self._evaluate_interval(epoch, self._last_interval)
            r.epochs.append(row)
            r.status, r.error = "diverged", f"non-finite training loss in epoch {epoch}"
            return False
        t0 = time.perf_counter()
        val_loss, val_acc = self._evaluate("val")
        row.update(val_loss=val_loss, val_acc=val_acc, eval_seconds=time.perf_counter() - t0)
        if self.config.eval_every is not None:
            self._evaluate_interval(epoch, self._last_interval, (val_loss, val_acc))
        r.epochs.append(row)
        if not math.isfinite(val_loss):
            r.status, r.error = "diverged", f"non-finite validation loss in epoch {epoch}"
            return False
        if val_acc > self.best_acc:
            self.best_acc, self.best_epoch, self.best_state = val_acc, epoch, b.export_state()
        if self.time_to_target is None and val_acc >= self.config.target_acc:
            self.time_to_target = self.train_clock
        for h in self.hooks:
            h.epoch_done(r)
        if epoch >= self.config.epochs:
            r.status = "ok"
        return r.status == "running"

    def _after(self) -> None:
        b = self.backend
        for h in self.hooks:
            h.after_training(b, self.record)
        if self.best_state is not None:
            b.import_state(self.best_state)
            self.test = self._evaluate("test")
        self.peak = b.peak_memory_bytes()
        if self.peak is not None and not (isinstance(self.peak, (int, np.integer)) and 0 <= self.peak < 2**50):
            raise BackendValueError(f"{self.base['backend']}: peak memory {shorten(repr(self.peak), 40)} "
                                    "(allowed: None or a whole number of bytes below 1 PiB)")

    def _guard(self, stage: Callable[[], Any]) -> bool:
        """Run one stage; an exception or Ctrl-C ends the run with its status instead of propagating."""
        armed, what = False, f"{self.base['backend']}'s {stage.__name__.strip('_')}"
        try:
            with deadline(stage_limit(self.base["impl"]), what) as armed:  # code nobody here wrote
                done = stage() is True
            stop_if_signalled()  # a Ctrl-C that code or a gc callback swallowed stops the run here
            return done
        except StageTimeout as exc:
            if not armed:  # an outer stage's deadline: its guard records it
                raise
            self.record.status, self.record.error = "failed", one_line(exc)
        except KeyboardInterrupt:
            self.record.status = "interrupted"
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a failing backend must not end the others
            self.record.status, self.record.error = failure_status(exc), one_line(exc)
        return False

    # ------------------------------------------------------------ inside an epoch

    def _train_epoch(self, epoch: int) -> tuple[float, np.ndarray, int, int, dict[str, float]]:
        """Every step of one epoch, clocked in intervals of ``eval_every`` steps (one without it)."""
        b, batch = self.backend, self.config.batch_size
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
            self._check_steps(rec, stop - start)
            stop_if_signalled()
            if self.record_steps:
                self.record.steps.extend({**self.base, "epoch": epoch, "step": self.global_step + j,
                                          "loss": float(loss)} for j, loss in enumerate(rec.losses))
            self.global_step += len(rec.losses)
            losses.append(rec.losses)
            correct += rec.correct
            seen += rec.seen
            for key, value in rec.extra.items():
                extra[key] = extra.get(key, 0.0) + value
            self._last_interval = rec
            if self.config.eval_every is not None and stop < self.n_steps:
                self._evaluate_interval(epoch, rec)  # the epoch's end is evaluated by _epoch
        return seconds, np.concatenate(losses) if losses else np.zeros(0), correct, seen, extra

    def _evaluate_interval(self, epoch: int, rec, val: tuple[float, float] | None = None) -> None:
        """One row of ``evals``: the interval's training loss and accuracy, and the validation split's
        (evaluated here unless ``val`` is given, and only while the losses are finite)."""
        row = {**self.base, "epoch": epoch, "step": self.global_step,
               "train_loss": float(np.mean(rec.losses)) if len(rec.losses) else math.nan,
               "train_acc": rec.correct / rec.seen if rec.seen else math.nan,
               "val_loss": math.nan, "val_acc": math.nan}
        if val is None and np.all(np.isfinite(rec.losses)):
            val = self._evaluate("val")
        if val is not None:
            row["val_loss"], row["val_acc"] = val
        self.record.evals.append(row)

    def _evaluate(self, split: str) -> tuple[float, float]:
        """The backend's (loss, accuracy) on ``split``, checked: nonsense fails the run, naming the value
        (a loss of inf or NaN is left to the caller: a divergence)."""
        value = self.backend.evaluate(split)
        try:
            loss, acc = (float(v) for v in value)
        except (TypeError, ValueError):
            raise BackendValueError(f"{self.base['backend']}: evaluate({split!r}) returned "
                                    f"{shorten(repr(value), 80)} (allowed: (loss, accuracy), two numbers)") from None
        if not 0 <= acc <= 1:
            raise BackendValueError(f"{self.base['backend']}: evaluate({split!r}) returned accuracy {acc!r} "
                                    "(allowed: a number from 0 to 1)")
        if not loss >= 0 and not math.isnan(loss):
            raise BackendValueError(f"{self.base['backend']}: evaluate({split!r}) returned loss {loss!r} "
                                    "(allowed: a number >= 0)")
        return loss, acc

    def _check_steps(self, rec, steps: int) -> None:
        """A backend's step records, checked: a loss per step taken, none negative, as many rows as it was
        sent, and no more right answers than rows; else the run fails."""
        if np.asarray(rec.losses).dtype.kind != "f":
            raise BackendValueError(f"{self.base['backend']}: training losses of dtype "
                                    f"{np.asarray(rec.losses).dtype} (allowed: floating point)")
        losses = np.asarray(rec.losses, dtype=float)
        if losses.shape != (steps,):
            raise BackendValueError(f"{self.base['backend']}: {losses.size} training losses for {steps} steps "
                                    "(allowed: one loss a step)")
        if np.any(losses < 0):
            raise BackendValueError(f"{self.base['backend']}: a training loss of {losses[losses < 0][0]!r} "
                                    "(allowed: >= 0, or inf/NaN: a divergence)")
        rows = steps * self.config.batch_size  # what it was sent
        if not (isinstance(rec.correct, (int, np.integer)) and isinstance(rec.seen, (int, np.integer))
                and rec.seen == rows and 0 <= rec.correct <= rec.seen):
            raise BackendValueError(f"{self.base['backend']}: {rec.correct!r} right of {rec.seen!r} training "
                                    f"rows (allowed: integers, 0 <= right <= rows = {rows}, the rows it was sent)")
        extra = rec.extra
        if not isinstance(extra, dict) or len(extra) > MAX_EXTRA or not all(
                isinstance(k, str) and re.fullmatch(r"[a-z][a-z0-9_]{0,60}_seconds", k) and k not in OWN_SECONDS
                and isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                and math.isfinite(v) and v >= 0 for k, v in extra.items()):
            raise BackendValueError(f"{self.base['backend']}: epoch columns of its own {shorten(repr(extra), 120)} "
                                    f"(allowed: at most {MAX_EXTRA} names ending in _seconds, none of the "
                                    "harness's, each a finite number >= 0)")

    def _warm_up(self, steps: int) -> None:
        """A few steps on the first rows, then their records are dropped (the caller restores the weights)."""
        if steps <= 0:
            return
        b, batch = self.backend, self.config.batch_size
        idx = b.device_indices(np.arange(steps * batch, dtype=np.int64) % self.n_train)
        for k in range(steps):
            b.train_batch(idx[k * batch:(k + 1) * batch])
        b.synchronize()
        b.pop_step_records()


class BackendValueError(ValueError):
    """A backend returned a value that cannot be (an accuracy of 7.5): its run is ``failed``."""


def run_one(who: Chosen | Backend, config: Config, data: Dataset, seed: int, **kwargs: Any) -> RunRecord:
    """One :class:`Run` from start to finish."""
    run = Run(who, config, data, seed, **kwargs)
    if run.start():
        while run.step():
            pass
    return run.finish()


def _seconds(value: Any) -> float:
    """A duration a backend reported, or NaN when it is not a number of seconds."""
    return float(value) if isinstance(value, (int, float, np.number)) and value >= 0 else math.nan


def failure_status(exc: BaseException) -> str:
    """``oom`` for any out-of-memory error (host or device), else ``failed``."""
    return "oom" if out_of_memory(exc) else "failed"


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line, at most MAX_MESSAGE printable characters."""
    return shorten(f"{type(exc).__name__}: {exc}", MAX_MESSAGE)


def frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """``rows`` as a table; with no rows, the header alone."""
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=columns)


class Recorder(LoopHooks):
    """A command's records; with a results folder, ``epochs.csv`` and ``runs.csv`` are rewritten as
    they grow (pass it to every :class:`Run` as a hook, and :meth:`add` each record)."""

    def __init__(self, folder=None):
        self.folder = folder
        self.records: list[RunRecord] = []
        self.current: list[dict[str, Any]] = []  # the epochs of the run in progress

    def epochs(self) -> pd.DataFrame:
        return frame([e for r in self.records for e in r.epochs] + self.current, EPOCH_COLUMNS)

    def runs(self) -> pd.DataFrame:
        return frame([r.run for r in self.records], RUN_COLUMNS)

    def epoch_done(self, record: RunRecord) -> None:
        self.current = list(record.epochs)
        self._write()

    def add(self, record: RunRecord) -> RunRecord:
        self.current = []
        self.records.append(record)
        self._write(runs=True)
        return record

    def _write(self, runs: bool = False) -> None:
        if self.folder is not None:
            self.folder.write_csv("epochs.csv", self.epochs())
            if runs:
                self.folder.write_csv("runs.csv", self.runs())

    def tables(self, flop: int | None = None, by: tuple[str, ...] = ("backend",)) -> dict[str, pd.DataFrame]:
        """``epochs.csv`` (with ``trusted``, the one decision every output reads), ``runs.csv`` and
        ``summary.csv`` (``bench.stats.summarise``, GFLOP/s from ``flop`` an epoch)."""
        from bench.stats import summarise
        from bench.timing import trusted_mask

        epochs, runs = self.epochs(), self.runs()
        if len(epochs):
            epochs["trusted"] = trusted_mask(epochs, by)
        return {"epochs.csv": epochs, "runs.csv": runs, "summary.csv": summarise(runs, epochs, flop, by)}
