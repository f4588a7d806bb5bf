"""One sweep task (a grid point × backend × seed) through the one run layer, ``bench.run.run_one``.

:func:`run_task` is what every executor calls, in this process or on a Dask
worker. It runs exactly what ``bench.compare`` runs for one backend and one
seed (``bench.run.run_one``: the one loop, the GEMM-only brackets and the
fixed-cost floor of ``bench.timing``) and summarises it as ``bench.compare``
does (``bench.run.Recorder``, ``bench.stats.summarise``): its row of
``sweep.csv`` is the run's row of ``runs.csv`` and its backend's row of
``summary.csv``, with the grid point, GFLOP/s and the machine. The records
come back instead of a results folder, so a point's results do not depend on
the executor that ran it.

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

from bench.backends import resolve
from bench.config import Config
from bench.data.dataset import Dataset
from bench.datasource import load_for_config
from bench.env import collect_env
from bench.roofline import epoch_flop
from bench.run import Recorder, failure_status, one_line, run_one
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
    return TaskResult(row, epochs, env)


def _train(task: Task, threads: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One ``bench.run.run_one``; returns its run row with its summary row, and its epoch rows."""
    config, seed = task.config, task.seed
    chosen, _ = resolve([task.backend])
    backend = chosen[0].make(config)  # the constructor checks the options
    with limit_threads(threads):
        data = dataset_for(config, seed)
        rec = Recorder()
        record = rec.add(run_one(chosen[0], config, data, seed, backend=backend, labels=task.point))
    if record.interrupted:
        raise KeyboardInterrupt
    flop = epoch_flop(data.n_features, config.hidden_dims, data.n_classes, config.batch_size, len(data.y_train))
    summary = rec.tables(flop)["summary.csv"].iloc[0].to_dict()
    return {**record.run, **summary, "n_train": len(data.y_train), "data_fingerprint": data.fingerprint}, \
        record.epochs


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
