"""One sweep task (a grid point × backend × seed) through the one run path, ``bench.run.run_one``.

:func:`run_task` is what every executor calls, in this process or on a Dask
worker. It runs exactly what ``bench.compare`` runs for one backend and one
seed (``bench.run.run_one``: the one loop, the GEMM-only brackets and the
fixed-cost floor of ``bench.timing``) and returns the records instead of
writing a results folder, so a point's results do not depend on the executor
that ran it.

A point that fails (non-finite loss, out of memory, any exception) comes back
as a result with its status and a one-line message; only Ctrl-C propagates.
"""

from __future__ import annotations

import gc
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
from bench.roofline import epoch_flop, gflops_columns
from bench.run import failure_status, one_line, run_one
from bench.stats import summarise
from bench.threads import limit_threads, resolve_threads

# the Config fields that decide the loaded data: points that agree on them share one load
DATA_FIELDS = ("dataset", "data_dir", "val_size", "train_subset", "mean", "std", "dtype")

_DATA: dict[tuple, Dataset] = {}  # this process's last loaded dataset (one entry, to bound memory)
_ENV: dict[int, dict[str, Any]] = {}  # this process's environment record, per thread count


@dataclass(frozen=True)
class Task:
    """One unit of work: the grid point (canonical values), the backend, the seed, the full config."""

    point: dict[str, str]  # {grid field: canonical value}, in grid order
    backend: str
    seed: int
    config: Config         # the base config with the point applied, seeds=[seed], backends=[backend]

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
    threads = resolve_threads(task.config.threads)
    import torch  # noqa: F401 - loaded before the limits, so that they cover its OpenMP pool too

    with limit_threads(threads):  # the record shows the thread pools as the task runs them
        env = process_env(threads)
    row: dict[str, Any] = {**task.point, "backend": task.backend, "seed": task.seed, "status": "failed",
                           "error": ""}
    epochs: list[dict[str, Any]] = []
    try:
        measured, epochs = _train(task, threads)
        row.update(measured)
    except KeyboardInterrupt:
        raise
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - every failure of a point is recorded
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


TIMING_COLUMNS = ("n_epochs_all", "median_epoch_seconds_all", "n_epochs_trusted",
                  "median_epoch_seconds_trusted", "epoch_seconds_min_trusted", "epoch_seconds_q25_trusted",
                  "epoch_seconds_q75_trusted", "gemm_seconds_trusted", "epoch_to_gemm_trusted",
                  "ratio_floor")


def _train(task: Task, threads: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One ``bench.run.run_one``; returns the measured columns and the epoch records."""
    config, seed = task.config, task.seed
    chosen, _ = resolve([task.backend])
    backend = chosen[0].make(config)  # the constructor checks the options
    with limit_threads(threads):
        data = dataset_for(config, seed)
        record = run_one(chosen[0], config, data, seed, backend=backend)
    if record.interrupted:
        raise KeyboardInterrupt
    run, epochs = record.run, record.epochs
    measured: dict[str, Any] = {"status": record.status, "error": record.error}
    if record.status == "diverged":
        measured["error"] = f"non-finite training loss in epoch {len(epochs)}"
    if epochs:
        s = summarise(pd.DataFrame([run]), pd.DataFrame(epochs)).iloc[0].to_dict()
        flop = epoch_flop(data.n_features, config.hidden_dims, data.n_classes, config.batch_size,
                          len(data.y_train))
        median, gemm = s["median_epoch_seconds_trusted"], s.get("gemm_seconds_trusted", float("nan"))
        measured.update({
            # the same definitions and names as bench.compare's summary.csv
            **{k: s.get(k, float("nan")) for k in TIMING_COLUMNS},
            **gflops_columns(median, gemm, flop), "timing_quality": s["timing_quality"]})
    measured.update({
        "test_acc": run["test_acc"], "test_loss": run["test_loss"], "best_val_acc": run["best_val_acc"],
        "epochs_done": run["epochs_done"], "total_train_seconds": run["total_train_seconds"],
        "peak_memory_bytes": run["peak_memory_bytes"], "compile_seconds": run.get("compile_seconds"),
        "n_train": len(data.y_train), "data_fingerprint": data.fingerprint,
    })
    del backend
    return measured, epochs


def dataset_for(config: Config, seed: int, *, progress: bool = False, quiet: bool = True) -> Dataset:
    """``load_for_config(config, seed)``, reusing this process's last load when the data fields agree.

    Quiet by default: a task (on a Dask worker too) never repeats the data notes; the sweep's own
    first load says them once.
    """
    key = (*(repr(getattr(config, f)) for f in DATA_FIELDS), seed)
    if key not in _DATA:
        _DATA.clear()  # drop the old copy before loading the new one
        _DATA[key] = load_for_config(config, seed, progress=progress, quiet=quiet)
    data = _DATA[key]
    config.validate(n_train=int(data.y_train.shape[0]))  # as load_for_config checks on a fresh load
    return data


def process_env(threads: int) -> dict[str, Any]:
    """``bench.env.collect_env`` for this process, plus its hostname (computed once per thread count)."""
    if threads not in _ENV:
        import torch  # noqa: F401 - imported so that gpu_info() can see the GPU

        _ENV[threads] = collect_env(threads, {"hostname": socket.gethostname()})
    return _ENV[threads]


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"
