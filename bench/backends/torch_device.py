"""Torch devices: whether one can run here, waiting for it, what it is, and its TF32 switch."""

from __future__ import annotations

from typing import Any

import torch

from bench.env import cpu_model


def available(device: str) -> tuple[bool, str]:
    """(True, "") when torch can run on ``device`` ("cpu", "cuda", "cuda:1", "mps", ...), else the reason."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        return False, f"{device!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps)"
    if dev.type == "cpu":
        return True, ""
    if dev.type == "cuda":
        if torch.version.cuda is None:
            return False, f"this torch {torch.__version__} was built without CUDA"
        if not torch.cuda.is_available():
            return False, "no CUDA device or driver found (torch.cuda.is_available() is False)"
        n = torch.cuda.device_count()
        if (dev.index or 0) >= n:
            return False, f"{device} does not exist ({n} CUDA device(s))"
        return True, ""
    if dev.type == "mps":
        ok = torch.backends.mps.is_available()
        return ok, "" if ok else "torch.backends.mps.is_available() is False"
    try:
        torch.empty(1, device=dev)
    except Exception as exc:  # any other backend: the only test is to try it
        return False, f"cannot allocate on {device}: {_first_line(exc)}"
    return True, ""


def synchronize(dev: torch.device) -> None:
    """Wait for all queued work on ``dev`` (a no-op on CPU)."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type != "cpu":
        torch.accelerator.synchronize(dev)


def device_info(dev: torch.device) -> dict[str, Any]:
    """The hardware and library versions behind ``dev``, for the records."""
    info: dict[str, Any] = {"torch_version": torch.__version__, "threads": torch.get_num_threads()}
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        info.update(device_name=props.name, cuda_device_name=props.name,
                    cuda_capability=f"{props.major}.{props.minor}",
                    cuda_memory_bytes=props.total_memory, cuda_version=torch.version.cuda,
                    cudnn_version=torch.backends.cudnn.version(),
                    gemm_library=f"cuBLAS (CUDA {torch.version.cuda})")
    elif dev.type == "cpu":
        info.update(device_name=cpu_model(), gemm_library=cpu_gemm_library())
    else:
        info.update(device_name=dev.type)
    return info


class Tf32Matmul:
    """A reusable context that sets TF32 for cuBLAS/cuDNN to ``enabled`` and restores it on exit.

    Entered around every call that runs matmuls, so the setting holds for this
    backend only, both ways: tf32=False means true FP32 even if something else
    in the process turned TF32 on.
    """

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._saved: list[tuple[bool, bool]] = []

    def __enter__(self) -> "Tf32Matmul":
        self._saved.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        torch.backends.cuda.matmul.allow_tf32 = self.enabled
        torch.backends.cudnn.allow_tf32 = self.enabled
        return self

    def __exit__(self, *exc: object) -> None:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self._saved.pop()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def cpu_gemm_library() -> str:
    """The library torch's CPU matmuls run on, from its build configuration, e.g.
    ``MKL 2024.2 (BLAS_INFO=mkl, CPU capability AVX512, 2 threads)``."""
    import re

    cfg = torch.__config__.show()
    info = (re.search(r"BLAS_INFO=(\w+)", cfg) or [None, "unknown"])[1]
    mkl = re.search(r"Math Kernel Library Version ([\d.]+)", cfg)
    name = (f"MKL {mkl[1]}" if info == "mkl" and mkl else
            {"open": "OpenBLAS", "mkl": "MKL", "accelerate": "Accelerate"}.get(info, info))
    cap = torch.backends.cpu.get_cpu_capability()
    return f"{name} (BLAS_INFO={info}, CPU capability {cap}, {torch.get_num_threads()} threads)"
