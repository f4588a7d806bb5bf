"""Where the tasks of a sweep run: here, one after another (the default), or on a Dask cluster.

* :class:`LocalExecutor` runs the tasks sequentially in this process:
  parallel runs on one machine would share cores, caches and memory
  bandwidth and corrupt each other's timings.
* :class:`DaskExecutor` (the ``dask`` extra: ``pip install '.[dask]'``)
  submits every task to a Dask distributed cluster, either an existing one
  (``--scheduler tcp://host:port``) or a ``LocalCluster`` on 127.0.0.1 with N
  single-threaded worker processes (``--local-cluster N``, for trying it out).
  Each worker runs one task at a time: every task asks for one unit of the
  worker resource ``point``; workers of an existing cluster must be started
  with ``--resources point=1`` or ``--nthreads 1``, which is checked before
  anything is submitted. Workers need this project installed and the data at
  the path ``--data-dir`` names on *their* machine.

Both hand every finished task to ``on_result`` on this thread, in completion
order; a task whose worker died (after Dask's own retries) comes back as a
``worker_lost`` row.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

from bench.errors import UserError
from bench.run import one_line
from bench.sweep.point import Task, TaskResult, run_task

RESOURCE = "point"  # the Dask worker resource a task holds while it runs
CONNECT_TIMEOUT_S = 30  # seconds to reach a scheduler, or to wait for its first worker
EXTRA_HINT = "install the 'dask' extra: pip install '.[dask]'"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

OnResult = Callable[[TaskResult], None]


class LocalExecutor:
    """Every task in this process, one after another."""

    name = "local"

    def start(self) -> None:
        pass

    def run(self, tasks: Sequence[Task], on_result: OnResult) -> None:
        for task in tasks:
            result = run_task(task)
            result.row.update(executor=self.name, worker="")
            on_result(result)

    def close(self) -> None:
        pass


class DaskExecutor:
    """Every task on a Dask distributed cluster, one task per worker at a time."""

    def __init__(self, scheduler: str | None = None, local_workers: int | None = None):
        if (scheduler is None) == (local_workers is None):
            raise ValueError("give exactly one of scheduler and local_workers")
        cores = os.cpu_count() or 1
        if local_workers is not None and not 1 <= local_workers <= cores:
            raise UserError(f"invalid --local-cluster: {local_workers} (allowed: an integer from 1 to the "
                            f"{cores} cores of this machine)")
        self.scheduler = scheduler
        self.local_workers = local_workers
        self.name = "dask-local" if scheduler is None else f"dask {scheduler}"
        self.cluster = None
        self.client = None
        self._resources: dict[str, int] | None = None
        self._futures: list = []

    def start(self) -> None:
        """Connect (or start the LocalCluster) and check the workers; every problem is a UserError."""
        distributed = _import_distributed()
        if self.scheduler is None:
            import dask

            # NOTE: processes, one thread each and one "point" slot each: a worker never runs two tasks.
            # The nanny would set OMP/MKL/OPENBLAS_NUM_THREADS=1 in each worker; every task sets its
            # own thread count (Config.threads), so they are left unset, as in a local run.
            unset = {f"distributed.nanny.pre-spawn-environ.{v}": None for v in THREAD_VARS}
            with dask.config.set(unset):
                self.cluster = distributed.LocalCluster(
                    n_workers=self.local_workers, threads_per_worker=1, processes=True,
                    host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR,
                    resources={RESOURCE: 1})
            self.client = distributed.Client(self.cluster)
        else:
            try:
                self.client = distributed.Client(self.scheduler, timeout=CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError, ValueError) as exc:
                raise UserError(f"cannot connect to the Dask scheduler {self.scheduler} "
                                f"({one_line(exc)})") from None
        try:
            self.client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
        except TimeoutError:
            raise UserError(f"no Dask worker joined {self.scheduler or 'the local cluster'} within "
                            f"{CONNECT_TIMEOUT_S} s") from None
        self._resources = self._check_workers()

    def _check_workers(self) -> dict[str, int] | None:
        """Use the ``point`` resource when every worker has it; else every worker must have 1 thread."""
        workers = self.client.scheduler_info()["workers"]
        if all(w.get("resources", {}).get(RESOURCE, 0) >= 1 for w in workers.values()):
            return {RESOURCE: 1}
        busy = {a: w["nthreads"] for a, w in workers.items() if w["nthreads"] != 1}
        if busy:
            addr, n = next(iter(busy.items()))
            raise UserError(f"Dask worker {addr} runs {n} threads and has no '{RESOURCE}' resource, so "
                            "it would run several points at once and corrupt their timings; start "
                            f"workers with --resources {RESOURCE}=1 (or --nthreads 1)")
        return None

    def run(self, tasks: Sequence[Task], on_result: OnResult) -> None:
        distributed = _import_distributed()
        if self.client is None:
            self.start()
        by_key = {}
        for i, task in enumerate(tasks):
            # priority: the scheduler starts tasks in the order given (it would not otherwise)
            fut = self.client.submit(_on_worker, task, key=f"sweep-task-{i}-{_token()}", pure=False,
                                     resources=self._resources, priority=len(tasks) - i)
            by_key[fut.key] = task
            self._futures.append(fut)
        for fut in distributed.as_completed(self._futures):
            task = by_key[fut.key]
            try:
                result = fut.result()
            except distributed.KilledWorker as exc:
                result = _failed(task, "worker_lost", one_line(exc))
            except Exception as exc:  # noqa: BLE001 - a task's failure is a row, never the sweep's end
                result = _failed(task, "failed", one_line(exc))
            result.row["executor"] = self.name
            fut.release()
            on_result(result)
        self._futures = []

    def close(self) -> None:
        """Cancel what is still queued and shut the client (and the LocalCluster) down."""
        if self.client is not None:
            if self._futures:
                self.client.cancel(self._futures)
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        self.client = self.cluster = None


def _on_worker(task: Task) -> TaskResult:
    """What a Dask worker runs: the task, plus the worker's address in the row."""
    from distributed import get_worker

    result = run_task(task)
    result.row["worker"] = get_worker().address
    return result


def _failed(task: Task, status: str, message: str) -> TaskResult:
    """The row of a task that never returned (its worker died, or the result could not be fetched)."""
    return TaskResult({**task.point, "backend": task.backend, "seed": task.seed, "status": status,
                       "error": message, "worker": ""})


def _token() -> str:
    import uuid

    return uuid.uuid4().hex[:12]


def _import_distributed():
    try:
        import distributed
    except ImportError as exc:
        raise UserError(f"the Dask executor needs dask.distributed ({exc}); {EXTRA_HINT}") from None
    return distributed
