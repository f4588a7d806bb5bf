"""pytest-benchmark set-up for benchmarks/: one thread count for all, machine info, backends, the timing helper.

Run it as::

    pytest benchmarks [--bench-threads N] [pytest-benchmark options]

* ``--bench-threads N`` (default: the cores this process may run on) is set
  once for the whole session in every BLAS/OpenMP pool (threadpoolctl) and in
  torch (``torch.set_num_threads``), so NumPy and PyTorch get the same
  threads; it is recorded in every benchmark's ``extra_info`` and in the
  saved machine info.
* The ``backend`` fixture runs each test on numpy:cpu, torch:cpu, jax:cpu,
  numpy:cuda, torch:cuda and jax:cuda, skipping those this machine lacks with
  the reason (and jax:cpu when ``--bench-threads`` is not every core: XLA's
  CPU pool cannot be resized).
* The ``measure`` fixture names the group ``"<op> b<batch> h<hidden>"`` (so the
  backends of one op and size share a table), records what is timed in
  ``extra_info``, and hands the call to pytest-benchmark; on a GPU the call
  ends with a device synchronisation.

Rounds: pytest-benchmark's own calibration sizes the rounds from its fastest
calibration call; on a busy machine the later calls are many times slower
and one op can run for a minute (a first full run here took 10 minutes).
``measure`` therefore makes ``WARMUP_CALLS`` untimed calls, takes the median
of their times ``t``, and runs ``benchmark.pedantic`` with
``iterations = ceil(--benchmark-min-time / t)`` and
``rounds = ceil(--benchmark-max-time / (t * iterations))``, at least
``--benchmark-min-rounds`` and at most ``MAX_ROUNDS``. ``--benchmark-timer``
applies; ``--benchmark-warmup`` and ``--benchmark-precision`` do not (the
warm-up is the fixed one above). Everything else of pytest-benchmark (save,
compare, JSON, CSV, histogram, sorting, grouping) works as documented.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from bench.env import cupy_version, dist_version, gpu_info
from bench.threads import blas_info, default_threads, limit_threads
from benchmarks.inputs import BACKENDS, DTYPE_NAME, BackendSpec, unavailable_reason

WARMUP_CALLS = 3  # untimed calls before measuring: first-touch allocations, lazy CUDA/cuBLAS init
MAX_ROUNDS = 1000  # plenty for a median; bounds the fastest ops on a busy machine

THREADS = pytest.StashKey[int]()
LIMITS = pytest.StashKey[contextlib.ExitStack]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mlpbench", "NumPy-vs-PyTorch micro-benchmarks (benchmarks/)")
    group.addoption("--bench-threads", type=int, default=None, metavar="N",
                    help="CPU threads for BLAS and torch, the same for every backend "
                         f"(default: the cores this process may run on, {default_threads()} here)")


def pytest_configure(config: pytest.Config) -> None:
    n = config.getoption("bench_threads")
    n = default_threads() if n is None else n
    if n < 1:
        raise pytest.UsageError(f"--bench-threads must be at least 1, got {n}")
    # NOTE: threadpoolctl limits only the libraries loaded when it is called: import
    # both implementations first so every BLAS/OpenMP pool they use is loaded.
    import bench.backends.numpy_backend  # noqa: F401
    import bench.backends.torch_backend  # noqa: F401

    stack = contextlib.ExitStack()
    stack.enter_context(limit_threads(n))
    config.stash[THREADS] = n
    config.stash[LIMITS] = stack


def pytest_unconfigure(config: pytest.Config) -> None:
    stack = config.stash.get(LIMITS, None)
    if stack is not None:
        stack.close()


def pytest_report_header(config: pytest.Config) -> str:
    return (f"mlpbench: {config.stash.get(THREADS, '?')} threads for every backend "
            f"(--bench-threads); numpy {np.__version__}, torch {torch.__version__}")


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    """Add the GPU (None without one), library versions, BLAS pools, threads and OPENBLAS_CORETYPE.

    Everything here is the same on every run on the same machine, so that ``--benchmark-compare``
    warns only when the machine or its software changed: the BLAS pools in a fixed order, and the
    CPU's momentary clock (py-cpuinfo's ``hz_actual``) left out.
    """
    for key in ("hz_actual", "hz_actual_friendly"):
        machine_info.get("cpu", {}).pop(key, None)
    machine_info["gpu"] = gpu_info()  # {"name": torch.cuda.get_device_name(0), ...} or None
    machine_info["mlpbench"] = {
        "threads": config.stash.get(THREADS, None),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "jax": dist_version("jax"),
        "cupy": cupy_version(),
        "blas": blas_info(),  # threadpoolctl: every BLAS/OpenMP pool, its version and thread count
        "torch_parallel": torch.__config__.parallel_info().splitlines()[:4],
        "openblas_coretype_set": "OPENBLAS_CORETYPE" in os.environ,
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
    }


@pytest.fixture(scope="session")
def bench_threads(pytestconfig: pytest.Config) -> int:
    return pytestconfig.stash[THREADS]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, bench_threads: int) -> BackendSpec:
    """Each backend in turn; skipped with the reason where this machine cannot run it."""
    reason = unavailable_reason(request.param)
    if request.param == "jax:cpu" and reason is None and bench_threads != default_threads():
        reason = f"XLA's CPU pool runs on all {default_threads()} cores, not --bench-threads {bench_threads}"
    if reason is not None:
        pytest.skip(f"{request.param}: {reason}")
    return BackendSpec.parse(request.param)


@pytest.fixture
def measure(benchmark, bench_threads: int, pytestconfig: pytest.Config) -> Callable[..., None]:
    """``measure(fn, spec, op=..., batch=..., hidden=..., shapes=..., timed=...)``: time ``fn()``.

    ``fn`` must only run the operation: every input is built before. ``hidden``
    is None for ops that do not depend on it (the loss); ``shapes`` names each
    operand's shape; ``timed`` says in words what the call covers. Returns
    what the last call of ``fn`` returned, for the test to check.
    """
    def run(fn: Callable[[], Any], spec: BackendSpec, *, op: str, batch: int, hidden: int | None,
            shapes: dict[str, tuple[int, ...]], timed: str) -> Any:
        benchmark.group = f"{op} b{batch}" + ("" if hidden is None else f" h{hidden}")
        benchmark.extra_info.update(
            op=op, backend=spec.name, impl=spec.impl, device=spec.device, batch=batch,
            hidden=hidden, dtype=DTYPE_NAME, threads=bench_threads,
            shapes={k: list(v) for k, v in shapes.items()}, timed=timed)
        call = spec.synchronized(fn)
        if benchmark.disabled:  # --benchmark-disable: the body runs exactly once
            return benchmark(call)
        iterations, rounds = _plan(call, pytestconfig)
        benchmark.extra_info.update(warmup_calls=WARMUP_CALLS)
        return benchmark.pedantic(call, rounds=rounds, iterations=iterations)

    return run


def _plan(call: Callable[[], Any], config: pytest.Config) -> tuple[int, int]:
    """(iterations, rounds) from the median of ``WARMUP_CALLS`` untimed calls and the session options."""
    times = []
    for _ in range(WARMUP_CALLS):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    t = max(statistics.median(times), 1e-9)
    min_time = float(config.getoption("benchmark_min_time"))
    max_time = float(config.getoption("benchmark_max_time"))
    min_rounds = int(config.getoption("benchmark_min_rounds"))
    iterations = max(1, math.ceil(min_time / t))
    rounds = min(max(math.ceil(max_time / (t * iterations)), min_rounds), MAX_ROUNDS)
    return iterations, rounds
