"""The one run path: one (config, backend, seed) trained by the one loop, timed by the one discipline.

Every command that trains calls this (``compare``, ``sweep``,
``epoch_ratio``, ``gpu_check``, ``gradflow``, ``hessian``): build the backend
(or take the one given), load the data onto its device, measure the fixed
cost of a step, then train through ``bench.loop`` with the GEMM-only brackets
and the gather-only time of ``bench.timing`` around every epoch (unless
``Config.reference_timing`` is off). :class:`Run` takes one epoch per
:meth:`Run.step`, so several runs can take turns; :func:`run_one` runs one to
the end.

A run that fails (an exception in the backend, out of memory) comes back as a
record with status ``failed`` or ``oom`` and a one-line message, holding what
it recorded before; Ctrl-C comes back as ``interrupted`` (the caller stops).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.backends import Chosen, options_of
from bench.backends.api import Backend
from bench.config import Config
from bench.data.dataset import Dataset
from bench.loop import Clock, LoopHooks, Training
from bench.memory import check_memory
from bench.roofline import step_gemms
from bench.timing import GatherTime, GemmBrackets, fixed_step_seconds

MAX_MESSAGE = 400  # characters of an error message kept in the records
CONTROL_SUFFIX = "+1ulp"  # names a float32 control: a backend started from weights one rounding step apart


@dataclass
class RunRecord:
    """What one run produced: its rows for runs.csv, epochs.csv, steps.csv and the evaluations."""

    backend: str
    seed: int
    status: str                     # ok, diverged, interrupted, failed, oom
    error: str = ""
    run: dict[str, Any] = field(default_factory=dict)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)  # the backend's describe()

    @property
    def interrupted(self) -> bool:
        return self.status == "interrupted"


class Run:
    """One backend, one seed: :meth:`start`, then :meth:`step` until it returns False, then :meth:`finish`."""

    def __init__(self, chosen: Chosen, config: Config, data: Dataset, seed: int, *,
                 backend: Backend | None = None, initial_state: dict[str, np.ndarray] | None = None,
                 record_steps: bool = False, hooks: Sequence[LoopHooks] = (),
                 clock: Clock = time.perf_counter):
        self.chosen, self.config, self.data, self.seed = chosen, config, data, seed
        self.backend = backend
        self.initial_state, self.record_steps = initial_state, record_steps
        self.hooks, self.clock = list(hooks), clock
        self.training: Training | None = None
        self.status, self.error = "running", ""
        self.options: dict[str, Any] = {}

    def start(self) -> bool:
        """Build, load, measure the fixed cost, warm up; False if that already failed."""
        return self._guard(self._start)

    def step(self) -> bool:
        """One epoch; False once the run is over (done, diverged, failed or interrupted)."""
        if self.training is None or self.status != "running":
            return False
        return self._guard(self.training.run_epoch)

    def finish(self) -> RunRecord:
        """The record; the test evaluation of the best weights when the run trained."""
        t = self.training
        if t is not None and self.status == "running":
            self._guard(t.finish)  # the after-training hooks and the test evaluation may fail too
        result = t.result if t is not None else None
        status = self.status if self.status != "running" else (result.status if result else "failed")
        base = {"backend": self.chosen.name, "impl": self.chosen.impl, "device": self.chosen.device,
                "seed": self.seed}
        run = dict(result.run) if result is not None and result.run else {**base}
        if not result or not result.run:  # failed before the loop could write its row
            done = result.epochs if result else []
            run.update(test_acc=math.nan, test_loss=math.nan, best_epoch=None, best_val_acc=math.nan,
                       epochs_done=len(done),
                       total_train_seconds=float(sum(e["epoch_seconds"] for e in done)),
                       median_epoch_seconds_all=float(np.median([e["epoch_seconds"] for e in done]))
                       if done else math.nan, time_to_target_seconds=None, peak_memory_bytes=None)
        # a compiling backend's compile time, before the first epoch and outside every clock
        run.update(status=status, error=self.error,
                   compile_seconds=self.options.get("compile_seconds", math.nan))
        return RunRecord(backend=self.chosen.name, seed=self.seed, status=status, error=self.error,
                         run=run, epochs=list(result.epochs) if result else [],
                         steps=list(result.steps) if result else [],
                         evals=list(result.evals) if result else [], options=self.options)

    # ------------------------------------------------------------ inside

    def _start(self) -> bool:
        c, data = self.config, self.data
        check_memory(c, int(self.chosen.device == "cpu"), data=False)  # a sweep point too big: oom
        if self.backend is None:
            self.backend = self.chosen.make(c)
        self.backend.load_data(data)
        hooks: list[LoopHooks] = []
        if c.reference_timing:
            n_train = int(len(data.y_train))
            try:
                fixed = fixed_step_seconds(self.chosen.make, c, n_train, data.n_classes, self.seed)
            except KeyboardInterrupt:
                raise
            except Exception:  # noqa: BLE001 - e.g. a backend that needs CIFAR-shaped images
                fixed = math.nan
            shapes = step_gemms(data.n_features, c.hidden_dims, data.n_classes, c.batch_size)
            hooks += [GemmBrackets(shapes, n_train // c.batch_size, fixed),
                      GatherTime(n_train, c.batch_size, self.clock)]
        self.training = Training(self.backend, data, c, self.seed, initial_state=self.initial_state,
                                 record_steps=self.record_steps, hooks=hooks + self.hooks,
                                 clock=self.clock)
        self.options = options_of(self.backend)
        self.training.start()
        self.options = options_of(self.backend)  # again: what the start did (compile_seconds)
        return True

    def _guard(self, fn) -> bool:
        """Run one stage; an exception or Ctrl-C ends the run with its status instead of propagating."""
        try:
            going = fn() is True
        except KeyboardInterrupt:
            self.status = "interrupted"
            if self.training is not None:
                self.training.interrupt()
            return False
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a failing backend must not end the others
            self.status, self.error = failure_status(exc), one_line(exc)
            return False
        if self.training is not None and self.training.finished and self.status == "running":
            return False
        return going


def run_one(chosen: Chosen, config: Config, data: Dataset, seed: int, **kwargs: Any) -> RunRecord:
    """One :class:`Run` from start to finish."""
    run = Run(chosen, config, data, seed, **kwargs)
    if run.start():
        while run.step():
            pass
    return run.finish()


def failure_status(exc: BaseException) -> str:
    """``oom`` for any out-of-memory error (host or device), else ``failed``."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" \
            or "out of memory" in str(exc).lower():
        return "oom"
    return "failed"


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line, at most MAX_MESSAGE characters."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 1] + "…"


def one_ulp_apart(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every weight times (1 + machine epsilon of its dtype): the start of a float32 control, whose
    drift from the unperturbed run is what rounding alone does to this trajectory."""
    return {k: (v * (1 + np.finfo(v.dtype).eps)).astype(v.dtype) for k, v in state.items()}
