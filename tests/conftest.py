"""Shared test helpers: the real command line in a subprocess, and where the real data lives."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_CIFAR = REPO.parent / "shared" / "cifar10"

# Architectures every model is checked on: activation, hidden_dims, residual, alpha
# (residual nets in the [F, N1, F, ...] layout, inner widths below and above F).
ARCH_CASES = [
    ("elu", [32], False, 1.0),
    ("elu", [24, 16], False, 0.5),
    ("relu", [32, 16], False, 1.0),
    ("tanh", [24], False, 1.0),
    ("elu", [16, 8, 16], True, 1.0),
    ("relu", [12, 20, 12, 6, 12], True, 1.0),
    ("tanh", [10, 4, 10], True, 1.0),
]


@pytest.fixture(autouse=True)
def _signal_state_per_test():
    """Each test starts as a fresh command: no signal came (the record lives for a command's process)."""
    from bench import errors

    saved = dict(errors._signal)
    errors._signal.update(came=False, held=False, pending=False)
    yield
    errors._signal.clear()
    errors._signal.update(saved)


def real_data_dir() -> Path | None:
    """The CIFAR-10 copy for real-data tests: $MLPBENCH_DATA_DIR, else ../shared/cifar10."""
    env = os.environ.get("MLPBENCH_DATA_DIR")
    for cand in ([Path(env)] if env else []) + [SHARED_CIFAR]:
        if cand.is_dir() and any(cand.iterdir()):
            return cand
    return None


@pytest.fixture
def cli(tmp_path):
    """Run ``python -m <module> args`` in a subprocess from a temp cwd (``proc.cwd``)."""
    def run(module: str, *args: str, timeout: float = 300, env: dict | None = None):
        full_env = {**os.environ, "MLPBENCH_CACHE_DIR": str(tmp_path / "cache"), **(env or {})}
        proc = subprocess.run([sys.executable, "-m", module, *args], cwd=tmp_path, env=full_env,
                              capture_output=True, text=True, timeout=timeout)
        proc.cwd = tmp_path  # where relative outputs went
        return proc
    return run


def _default_signals() -> None:
    """In the child, before exec: SIGINT and SIGTERM at their defaults and no signal blocked, whatever
    this test run inherited (pytest started in the background runs with SIGINT ignored, and an ignored
    SIGINT stays ignored in the child, where Python then never raises KeyboardInterrupt)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


@contextlib.contextmanager
def started(args: list[str], cwd: Path, **popen) -> Iterator[subprocess.Popen]:
    """``python -m`` + ``args`` in ``cwd``, in a process group of its own with the default signal
    dispositions; on every way out of the block the group is killed and the child reaped."""
    popen = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **popen}
    proc = subprocess.Popen([sys.executable, "-m", *args], cwd=cwd, start_new_session=True,
                            preexec_fn=_default_signals, **popen)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # the child and anything it started
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        proc.wait()


@contextlib.contextmanager
def started_until_epochs(args: list[str], cwd: Path, epochs_csv: Path,
                         n: int = 2) -> Iterator[subprocess.Popen]:
    """:func:`started`, entered once ``epochs_csv`` holds ``n`` epochs (or after 120 s): a long run to
    send a signal to."""
    import pandas as pd

    with started(args, cwd) as proc:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None \
                and not (epochs_csv.exists() and len(pd.read_csv(epochs_csv)) >= n):
            time.sleep(0.2)
        yield proc


def assert_one_line_error(proc, *needles: str) -> None:
    """Exit status 2, one line on stderr naming what was wrong, no traceback."""
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, (n, err)


@pytest.fixture
def one_torch_thread():
    """Tiny models run on one thread: on busy shared cores a parallel region around a
    tiny GEMM can wait milliseconds for its second thread."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def one_thread():
    """One BLAS and torch thread (bench.threads.limit_threads): for tiny problems, where extra
    threads only spin on a busy machine."""
    from bench.threads import limit_threads

    with limit_threads(1):
        yield
