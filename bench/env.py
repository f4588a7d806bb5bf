"""What every result carries: machine, versions, threads, data and the exact command."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.threads import blas_info

REPO = Path(__file__).resolve().parents[1]


def dist_version(dist: str) -> str | None:
    """The installed version of distribution ``dist``, None when it is not installed."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def cupy_version() -> str | None:
    """CuPy's version, whichever wheel brought it (cupy, cupy-cuda12x, cupy-cuda13x, ...)."""
    module = sys.modules.get("cupy")
    if module is not None:
        return getattr(module, "__version__", None)
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name == "cupy" or name.startswith("cupy-cuda"):
            return dist.version
    return None


def cpu_model() -> str:
    from bench.errors import UserError
    from bench.io import read_bounded

    try:
        for line in read_bounded(Path("/proc/cpuinfo"), 64 * 2**20).decode(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, UserError):
        pass
    return platform.processor() or platform.machine()


def gpu_info() -> dict[str, Any] | None:
    """Name, driver and CUDA version of the first GPU, when torch sees one."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    info: dict[str, Any] = {"name": torch.cuda.get_device_name(0),
                            "count": torch.cuda.device_count(),
                            "cuda_runtime": torch.version.cuda,
                            "capability": ".".join(map(str, torch.cuda.get_device_capability(0)))}
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10).stdout.strip()
            info["driver"] = out.splitlines()[0] if out else None
        except (OSError, subprocess.SubprocessError):
            info["driver"] = None
    return info


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty else "")


def _command_line() -> list[str]:
    """The command as typed (``python -m bench.compare ...``), not the module's file path."""
    argv = list(getattr(sys, "orig_argv", sys.argv))
    if argv and Path(argv[0]).name.startswith("python"):
        argv[0] = "python"
    return argv


def collect_env(threads: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The environment record written as env.json next to every result."""
    env = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": {**{d: dist_version(d) for d in ("numpy", "torch", "scipy", "pandas", "scikit-learn",
                                                 "torchvision", "jax", "jaxlib")},
                     "cupy": cupy_version()},
        "cpu": {"model": cpu_model(), "logical_cores": os.cpu_count()},
        "threads": threads,
        "blas": blas_info(),
        "env_vars": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                                    "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                    "OPENBLAS_NUM_THREADS")},
        "gpu": gpu_info(),
        "git_commit": git_commit(),
        "command": _command_line(),
    }
    env.update(extra or {})
    return env
