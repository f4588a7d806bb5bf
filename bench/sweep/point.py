"""One sweep task (a grid point × backend × seed) run with the harness of ``bench.compare``.

:func:`run_task` is what every executor calls, in this process or on a Dask
worker. It does what ``bench.compare.run_compare`` does for one backend and
one seed, with the same functions (``resolve``, ``load_for_config``,
``measure_gemms``, ``train_run``, ``summarise``), and returns the records
instead of writing a results folder: the training loop, the batch order and
the clocks are the harness's, so a point's results do not depend on the
executor that ran it.

A point that fails (non-finite loss, out of memory, any exception) comes back
as a result with its status and a one-line message; only Ctrl-C propagates.
"""

from __future__ import annotations

import gc
import math
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bench.backends import resolve
from bench.config import Config
from bench.data.dataset import Dataset
from bench.datasource import load_for_config
from bench.env import collect_env
from bench.loop import train_run
from bench.roofline import epoch_flop, measure_gemms, roofline_columns
from bench.stats import summarise
from bench.threads import default_threads, limit_threads

# the Config fields that decide the loaded data: points that agree on them share one load
DATA_FIELDS = ("dataset", "data_dir", "val_size", "train_subset", "mean", "std", "dtype")
MAX_MESSAGE = 400  # characters of an error message kept in sweep.csv

_DATA: dict[tuple, Dataset] = {}  # this process's last loaded dataset (one entry, to bound memory)
_ENV: dict[int, dict[str, Any]] = {}  # this process's environment record, per thread count


@dataclass(frozen=True)
class Task:
    """One unit of work: the grid point (canonical values), the backend, the seed, the full config."""

    point: dict[str, str]  # {grid field: canonical value}, in grid order
    backend: str
    seed: int
    config: Config         # the base config with the point applied, seeds=[seed], backends=[backend]
    gemm: bool = True      # also time one epoch's matrix products alone (3 rounds), as bench.compare does

    @property
    def key(self) -> tuple[str, ...]:
        return (*self.point.values(), self.backend, str(self.seed))


@dataclass
class TaskResult:
    """sweep.csv's row, the run's per-epoch rows, and the environment of the process that ran it."""

    row: dict[str, Any]
    epochs: list[dict[str, Any]] = field(default_factory=list)
    env: dict[str, Any] = field(default_factory=dict)


def run_task(task: Task) -> TaskResult:
    """Train one backend on one point for one seed; failures come back as a status, not an exception."""
    started = time.time()
    threads = task.config.threads or default_threads()
    import torch  # noqa: F401 - loaded before the limits, so that they cover its OpenMP pool too

    with limit_threads(threads):  # the record shows the thread pools as the task runs them
        env = process_env(threads)
    row: dict[str, Any] = {**task.point, "backend": task.backend, "seed": task.seed, "status": "error",
                           "error": ""}
    epochs: list[dict[str, Any]] = []
    try:
        measured, epochs = _train(task, threads)
        row.update(measured)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure of a point is recorded, none stops the sweep
        row.update(status=failure_status(exc), error=one_line(exc))
    finally:
        gc.collect()
    row.update(hostname=env["hostname"], cpu_model=env["cpu"]["model"],
               logical_cores=env["cpu"]["logical_cores"], threads=threads,
               gpu=(env.get("gpu") or {}).get("name", ""), pid=os.getpid(),
               started_at=_stamp(started), finished_at=_stamp(time.time()),
               wall_seconds=time.time() - started)
    epochs = [{**task.point, **e} for e in epochs]
    return TaskResult(row, epochs, env)


def _train(task: Task, threads: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The harness for one backend and seed; returns the measured columns and the epoch records."""
    config, seed = task.config, task.seed
    chosen, _ = resolve([task.backend])
    backend = chosen[0].make(config)  # the constructor checks the options
    with limit_threads(threads):
        data = dataset_for(config, seed)
        backend.load_data(data)
        gemm = (measure_gemms(backend, config, data.n_features, data.n_classes, len(data.y_train))
                if task.gemm else math.nan)
        result = train_run(backend, data, config, seed)
    if result.interrupted:
        raise KeyboardInterrupt
    runs, ep = pd.DataFrame([result.run]), pd.DataFrame(result.epochs)
    s = summarise(runs, ep).iloc[0]
    run = result.run
    status = result.status
    error = f"non-finite training loss in epoch {len(result.epochs)}" if status == "diverged" else ""
    flop = epoch_flop(data.n_features, config.hidden_dims, data.n_classes, config.batch_size,
                      len(data.y_train))
    median = float(s["median_epoch_seconds"])
    measured = {
        "status": status, "error": error,
        "test_acc": run["test_acc"], "test_loss": run["test_loss"], "best_val_acc": run["best_val_acc"],
        "epochs_done": run["epochs_done"],
        # the same definitions as bench.compare's summary.csv
        "median_epoch_seconds": median, "epoch_seconds_iqr": float(s["epoch_seconds_iqr"]),
        "total_train_seconds": run["total_train_seconds"],
        "gemm_seconds": gemm, **roofline_columns(median, gemm, flop),  # NaN gemm: no GEMM timing
        "peak_memory_bytes": run["peak_memory_bytes"],
        "n_train": len(data.y_train), "data_fingerprint": data.fingerprint,
    }
    del backend
    return measured, result.epochs


def dataset_for(config: Config, seed: int, *, progress: bool = False) -> Dataset:
    """``load_for_config(config, seed)``, reusing this process's last load when the data fields agree."""
    key = (*(repr(getattr(config, f)) for f in DATA_FIELDS), seed)
    if key not in _DATA:
        _DATA.clear()  # drop the old copy before loading the new one
        _DATA[key] = load_for_config(config, seed, progress=progress)
    data = _DATA[key]
    config.validate(n_train=int(data.y_train.shape[0]))  # as load_for_config checks on a fresh load
    return data


def process_env(threads: int) -> dict[str, Any]:
    """``bench.env.collect_env`` for this process, plus its hostname (computed once per thread count)."""
    if threads not in _ENV:
        import torch  # noqa: F401 - imported so that gpu_info() can see the GPU

        _ENV[threads] = collect_env(threads, {"hostname": socket.gethostname()})
    return _ENV[threads]


def failure_status(exc: BaseException) -> str:
    """``oom`` for any out-of-memory error (host or device), else ``error``."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" \
            or "out of memory" in str(exc).lower():
        return "oom"
    return "error"


def one_line(exc: BaseException) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 1] + "…"


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"
